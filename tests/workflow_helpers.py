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
