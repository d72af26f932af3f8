"""Run the real workflow in a throwaway copy of the repository (so tests never touch ./results)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ["Snakefile", "rules", "workflow_scripts", "config", "profiles", "envs", "report"]

# Modules that must never be imported while Snakemake parses the workflow (dry runs, --lint, planning).
HEAVY_MODULES = ["torch", "vllm", "diffusers", "transformers", "sentence_transformers", "faiss"]


def make_workdir(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, dest / part)
    return dest


def poison_heavy_imports(dest: Path) -> Path:
    """A folder that shadows the heavy modules with ones that raise on import (put it first on PYTHONPATH)."""
    poison = dest / "_poison"
    for mod in HEAVY_MODULES:
        (poison / mod).mkdir(parents=True, exist_ok=True)
        (poison / mod / "__init__.py").write_text(
            f"raise ImportError('{mod} was imported while Snakemake only planned the workflow')\n")
    return poison


def snakemake(workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 1800,
              check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.run(cmd, cwd=workdir, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def copy_workdir(src: Path, dest: Path) -> Path:
    """A copy of a finished workdir that keeps mtimes (copy2) and symlinks (resources/demo), so Snakemake's
    rerun triggers (mtime, params, input, code) see the copy exactly as they see the original."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def planned_jobs(workdir: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """`snakemake -n` in workdir: {job: reason} for every job it would run, a job named "rule" or
    "rule[key=value,...]" (wildcards sorted by key). Empty when there is nothing to be done."""
    import re

    proc = snakemake(workdir, "-n", *args, env=env, timeout=600)
    out = proc.stdout + proc.stderr
    jobs: dict[str, str] = {}
    heads = list(re.finditer(r"^(?:local)?rule (\w+):$", out, re.M))
    for head, nxt in zip(heads, [*heads[1:], None], strict=False):
        block = out[head.end():nxt.start() if nxt else len(out)]
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        reason = re.search(r"^\s+reason: (.*)$", block, re.M)
        name = head.group(1)
        if wildcards:
            name += f"[{','.join(sorted(p.strip() for p in wildcards.group(1).split(',')))}]"
        jobs[name] = reason.group(1) if reason else ""
    if not jobs and "Nothing to be done" not in out:
        raise AssertionError(f"snakemake -n planned no job, nor said 'Nothing to be done':\n{out[-4000:]}")
    return jobs
