"""Test helpers for the real single-node Slurm cluster (scripts/slurm-up.sh).

Use in a test module (tests/conftest.py registers the `slurm_cluster` fixture):

    from support.slurm import SlurmCluster, sacct_jobs

    @pytest.mark.slurm
    def test_x(slurm_cluster: SlurmCluster, tmp_path): ...

The fixture brings the cluster up when it can (root on Debian) and skips with the reason otherwise;
FINET2I_SLURM=0 disables the Slurm tests, FINET2I_SLURM=1 (CI) turns a skip into a failure. A cluster the
fixture started is stopped again at the end of the session unless FINET2I_SLURM_KEEP=1.

How plugin 2.8 names jobs (submit_string.py): `--job-name <run uuid>` (one uuid per Snakemake run, also
printed as "SLURM run ID"), `--comment rule_<rule>` or `rule_<rule>_wildcards_<w1>_<w2>`; group jobs get
`rule_<group id>`. The comment reaches sacct only with AccountingStoreFlags=job_comment (slurm-up.sh sets it).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SLURM_UP = ROOT / "scripts" / "slurm-up.sh"
SLURM_DOWN = ROOT / "scripts" / "slurm-down.sh"
ACCOUNT = "finet2i"
CPU_PARTITION = "cpu"
GPU_PARTITION = "gpu"

# Columns sacct_jobs() returns; Comment last because it is free text.
SACCT_FIELDS = ["JobIDRaw", "JobName", "Partition", "Account", "AllocTRES", "ReqMem", "State", "ExitCode",
                "Submit", "Start", "End", "Elapsed", "NodeList", "Comment"]
MEM_UNIT_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                "BOOT_FAIL", "DEADLINE"}


@dataclass(frozen=True)
class SlurmCluster:
    """What a test needs to target the local cluster."""

    account: str = ACCOUNT
    cpu_partition: str = CPU_PARTITION
    gpu_partition: str = GPU_PARTITION
    up_seconds: float = 0.0     # how long slurm-up.sh took in this session
    started_here: bool = False  # False when the cluster was already up before the session


def slurm_available() -> tuple[bool, str]:
    """Whether this machine can run the Slurm tests, and why (or why not)."""
    if os.environ.get("FINET2I_SLURM") == "0":
        return False, "FINET2I_SLURM=0 disables the Slurm tests"
    if os.geteuid() != 0:
        return False, "the local Slurm cluster needs root (scripts/slurm-up.sh installs and starts daemons)"
    if not Path("/etc/debian_version").exists():
        return False, "the local Slurm cluster is built from Debian packages; this is not Debian"
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        return False, "neither apt-get nor an installed slurmctld: cannot build the local Slurm cluster"
    return True, "root on Debian: scripts/slurm-up.sh can bring up the local cluster"


def _cluster_is_up() -> bool:
    if not shutil.which("scontrol"):
        return False
    try:
        proc = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
        return proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# The test node looks like a GPU node of a real cluster, so that profiles/slurm runs UNCHANGED on it: its
# per-rule memory (generate: 128 GB x attempt) and threads (up to 8) must fit one node, or sbatch rejects the
# job. Nothing enforces memory here (no cgroups); the 2-core machine runs what Slurm schedules side by side.
NODE_CPUS = "32"
NODE_MEM_MB = "1000000"


def slurm_up(timeout: int = 900) -> float:
    """Run scripts/slurm-up.sh; return its wall time. Raises RuntimeError with its output when it fails."""
    t0 = time.monotonic()
    env = {**os.environ}
    env.setdefault("FINET2I_SLURM_CPUS", NODE_CPUS)
    env.setdefault("FINET2I_SLURM_MEM_MB", NODE_MEM_MB)
    proc = subprocess.run(["bash", str(SLURM_UP)], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/slurm-up.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    log.info("slurm-up.sh: %s", proc.stdout.strip())
    return time.monotonic() - t0


def slurm_down(timeout: int = 120) -> None:
    subprocess.run(["bash", str(SLURM_DOWN)], capture_output=True, text=True, timeout=timeout, check=False)


# Registered as `slurm_cluster`; the function has another name so that importing it into a test module (which
# is how a module outside conftest.py gets a fixture) does not shadow the test's `slurm_cluster` argument.
@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture() -> Iterator[SlurmCluster]:
    """The local cluster, up for the whole session (skips with the reason where it cannot run)."""
    ok, reason = slurm_available()
    if not ok:
        if os.environ.get("FINET2I_SLURM") == "1":
            pytest.fail(f"FINET2I_SLURM=1 but the Slurm tests cannot run: {reason}")
        pytest.skip(reason)
    was_up = _cluster_is_up()
    try:
        seconds = slurm_up()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        # Root on Debian is where the tests must run (CI): a broken bring-up is a failure, not a skip.
        pytest.fail(f"could not bring up the local Slurm cluster: {exc}")
    yield SlurmCluster(up_seconds=seconds, started_here=not was_up)
    if not was_up and os.environ.get("FINET2I_SLURM_KEEP") != "1":
        slurm_down()


def _fmt_time(since: datetime | str) -> str:
    return since.strftime("%Y-%m-%dT%H:%M:%S") if isinstance(since, datetime) else since


def _parse_sacct(text: str) -> list[dict]:
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|", len(SACCT_FIELDS) - 1)
        if len(values) != len(SACCT_FIELDS):
            raise ValueError(f"unexpected sacct line (expected {len(SACCT_FIELDS)} fields): {line!r}")
        row = dict(zip(SACCT_FIELDS, values, strict=True))
        comment = row["Comment"]
        rule, _, wildcards = comment.removeprefix("rule_").partition("_wildcards_")
        row["rule"] = rule if comment.startswith("rule_") else None
        row["wildcards"] = wildcards or None
        gpus = re.search(r"gres/gpu=(\d+)", row["AllocTRES"])
        row["gpus"] = int(gpus.group(1)) if gpus else 0
        # sacct prints memory in the largest whole unit: mem=8000M, mem=125G (128000 MB), mem=62.50G.
        mem = re.search(r"mem=([\d.]+)([KMGT])", row["AllocTRES"])
        row["mem_mb"] = round(float(mem.group(1)) * MEM_UNIT_MB[mem.group(2)]) if mem else None
        row["state"] = row["State"].split()[0]  # "CANCELLED by 0" -> "CANCELLED"
        jobs.append(row)
    return jobs


def sacct_jobs(since: datetime | str, name: str | None = None, wait_final: bool = True,
               timeout: float = 60.0) -> list[dict]:
    """Jobs (allocations, no steps) started after `since`, optionally only those of one Snakemake run
    (`name` = the run uuid, which the plugin uses as job name).

    Each dict has the sacct columns in SACCT_FIELDS plus: `rule` (from the plugin's `rule_<name>` comment),
    `wildcards`, `gpus` (gres/gpu in AllocTRES), `mem_mb`, `state` (first word of State). With wait_final it
    re-queries until every job is in a final state with its record complete: slurmdbd lags the controller
    by a moment, and a just-finished job can briefly show JobName "allocation" and no partition.
    """
    cmd = ["sacct", "-X", "--parsable2", "--noheader", "--starttime", _fmt_time(since),
           "--format", ",".join(f"{f}%-1000" if f == "Comment" else f for f in SACCT_FIELDS)]
    if name:
        cmd += ["--name", name]
    deadline = time.monotonic() + timeout
    while True:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
        jobs = _parse_sacct(proc.stdout)
        complete = all(j["state"] in FINAL_STATES and j["Partition"] and j["JobName"] != "allocation"
                       and j["End"] not in ("", "Unknown") for j in jobs)
        if not wait_final or complete or time.monotonic() > deadline:
            return jobs
        time.sleep(0.5)


def cancel_jobs(name: str | None = None) -> None:
    """scancel the jobs of one run (job name = run uuid) or all jobs: after a killed Snakemake its jobs keep
    running and would write the same files as the rerun."""
    cmd = ["scancel", "--name", name] if name else ["scancel", "--user", "root"]
    subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def run_uuid(snakemake_output: str) -> str | None:
    """The plugin's run uuid (= Slurm job name of every job of that run) from Snakemake's log."""
    m = re.search(r"SLURM run ID: ([0-9a-f-]{36})", snakemake_output)
    return m.group(1) if m else None


def run_snakemake_slurm(workdir: Path, *args: str, timeout: int = 600, check: bool = True,
                        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m snakemake <args>` in workdir (the caller passes --executor slurm or a profile). On a
    timeout the run's jobs are cancelled, so a hung test does not leave jobs on the cluster."""
    cmd = [sys.executable, "-m", "snakemake", *args]
    started = datetime.now()
    try:
        proc = subprocess.run(cmd, cwd=workdir, env={**os.environ, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                      for x in (exc.stdout, exc.stderr))
        uuid = run_uuid(out)
        if uuid:
            cancel_jobs(uuid)
        jobs = sacct_jobs(started, name=uuid, wait_final=False) if uuid else []
        raise AssertionError(f"{' '.join(cmd)} did not finish in {timeout} s; cancelled its jobs {jobs}:\n"
                             f"{out[-4000:]}") from exc
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc
