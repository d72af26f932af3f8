"""A GPU node's answer to `finet2i preflight --probe-gpu`, faked: the build machines have no GPU.

``H100`` is what the pinned GPU environment reports on an H100 node with an R580 driver (the shape of
finet2i.preflight.gpu.collect()). ``fake_cuda_env`` gives the environment under which a probe job on the local
Slurm cluster answers with it: a test-only sitecustomize on PYTHONPATH replaces collect() in that job only (its
argument ends in .gpu-probe.json), keeping the job's own environment and interpreter in the answer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ENV = "/shared/envs/finet2i-gpu"
H100: dict = {
    "node": "gpu042", "python": f"{ENV}/bin/python", "environment": ENV, "python_version": "3.11.7",
    "cuda_visible_devices": "0",
    "packages": {"vllm": "vllm 0.33.0", "torch": "torch 2.14.0", "transformers": "transformers 5.19.0",
                 "diffusers": "diffusers 0.42.1"},
    "nvml": {"driver": "580.95.05", "driver_max_cuda": "13.0",
             "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "capability": "9.0"}]},
    "torch": {"version": "2.14.0+cu130", "cuda": "13.0", "available": True, "warnings": [],
              "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "capability": "9.0"}]},
    "vllm_platform": {"name": "CudaPlatform", "device": "cuda", "cuda": True},
    "tiny_model": {"torch": "forward pass on cuda:0 (0.4 s)",
                   "vllm": "engine started and generated 4 tokens (21.3 s)"},
}

FAKE_CUDA_HOOK = '''\
# Test-only (tests/support/gpu.py): the probe job's facts are an H100's. Loaded through PYTHONPATH by every
# Python process of the run; acts only in the probe job (its argument ends in .gpu-probe.json).
import json, os, sys
_fake = os.environ.get("FINET2I_TEST_FAKE_GPU")
if _fake and sys.argv and sys.argv[-1].endswith(".gpu-probe.json"):
    import finet2i.preflight.gpu as _gpu
    _answer = json.loads(open(_fake).read())
    _answer["environment"], _answer["python"] = sys.prefix, sys.executable
    _gpu.collect = lambda: _answer
'''


def fake_cuda_env(folder: Path) -> dict[str, str]:
    """Environment variables under which a probe job answers like ``H100`` (add them to the run's)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(FAKE_CUDA_HOOK)
    (folder / "h100.json").write_text(json.dumps(H100))
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p),
            "FINET2I_TEST_FAKE_GPU": str(folder / "h100.json")}
