"""Run the real workflow in a throwaway copy of the repository (so tests never touch ./results)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_PARTS = ["Snakefile", "rules", "workflow_scripts", "config", "profiles", "envs", "report", "scripts"]

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


# ----------------------------------------------------------------------------------------------------------
# The demo, run once per test session
# ----------------------------------------------------------------------------------------------------------

DEMO_CONFIG = "config/demo.yaml"


def demo_yaml() -> dict:
    """config/demo.yaml as written (not validated), a fresh copy (tests/conftest.py: the demo_config fixture)."""
    import yaml

    return yaml.safe_load((ROOT / DEMO_CONFIG).read_text())


def demo_resources() -> Path:
    """Demo models are built once per machine (resources/demo) and shared by tests and `make demo`."""
    return ROOT / "resources" / "demo"


def demo_workdir(dest: Path) -> Path:
    """A copy of the workflow with the shared demo models linked in (built first if missing)."""
    from finet2i.demo.build import build_all

    build_all(demo_resources(), seed=0)  # skips what `make demo` or an earlier test already built
    wd = make_workdir(dest)
    (wd / "resources").mkdir(exist_ok=True)
    (wd / "resources" / "demo").symlink_to(demo_resources())
    return wd


class LocalDemo:
    """The whole demo DAG with the local executor, as `finet2i demo` runs it, started in the background.

    One run per pytest process serves test_slurm_workflow (the reference the Slurm run must equal),
    test_workflow (checks the dataset) and test_workflow_reruns (plans changes against it): the demo is the
    suite's most expensive step. Its users only read it; a test that changes files works on copy_workdir() of
    it. test_slurm_workflow comes first in file order on purpose: it starts this run in the background and
    runs the Slurm demo beside it, which mostly waits on the queue and its polls (measured sequentially: local
    453 s + Slurm 701 s).
    FINET2I_DEMO_FINISHED=<workdir of a finished run> skips the run (for iterating on those tests).
    """

    def __init__(self, root: Path) -> None:
        reuse = os.environ.get("FINET2I_DEMO_FINISHED")
        self.started = time.monotonic()
        self.seconds: float | None = None
        if reuse:
            self.workdir = copy_workdir(Path(reuse), root / "run")
            self.log = self.workdir / "snakemake.log"
            self.proc: subprocess.Popen[bytes] | None = None
            return
        self.workdir = demo_workdir(root / "run")
        self.log = self.workdir / "snakemake.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "snakemake", "--profile", "profiles/local", "--configfile", DEMO_CONFIG,
                 "--cores", "2"], cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self._stop)  # a session that fails before wait() leaves no demo running behind it

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # Snakemake and the jobs it started
            self.proc.wait()

    def wait(self, timeout: float = 3000) -> Path:
        """The finished workdir; fails with the log's tail if the run failed."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.started)))
            except subprocess.TimeoutExpired:
                self._stop()
            if self.seconds is None:
                self.seconds = time.monotonic() - self.started
                print(f"\nshared demo run (local executor): {self.seconds:.0f} s")
            assert self.proc.returncode == 0, f"the demo failed ({self.proc.returncode}):\n" \
                                              f"{self.log.read_text()[-6000:]}"
        return self.workdir


_LOCAL_DEMO: list[LocalDemo] = []


def local_demo(tmp_path_factory) -> LocalDemo:  # type: ignore[no-untyped-def]
    """The session's LocalDemo, started on first use (pass pytest's session-scoped tmp_path_factory)."""
    if not _LOCAL_DEMO:
        _LOCAL_DEMO.append(LocalDemo(tmp_path_factory.mktemp("local-demo")))
    return _LOCAL_DEMO[0]
