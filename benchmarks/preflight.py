"""Preflight benchmark: `finet2i preflight` beside `snakemake -n` (the baseline: what a user runs today to see
the plan) on the same config, in the same script.

    .venv/bin/python benchmarks/preflight.py                                  # production config, no profile
    .venv/bin/python benchmarks/preflight.py --profile profiles/slurm         # + the cluster checks (needs Slurm)
    .venv/bin/python benchmarks/preflight.py --configfile config/demo.yaml

Both run as child processes from the repository root (an empty results/ folder is not needed: the dry run is
`--forceall`, so every job is planned). Preflight's exit status is reported, not required: without models it
is a NO-GO, which is what it should say. The target (issue 15): under 30 s for the production plan.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return time.monotonic() - t0, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--profile", default=None)
    args = parser.parse_args()

    cmd = [str(BIN / "finet2i"), "preflight", "--configfile", args.configfile, "--json"]
    if args.profile:
        cmd += ["--profile", args.profile]
    pre_s, pre = timed(cmd)
    report = json.loads(pre.stdout)
    jobs = sum(report["jobs"].values())
    counts = {s: sum(c["status"] == s for c in report["checks"]) for s in ("GO", "WARN", "NO-GO")}

    dry_s, dry = timed([sys.executable, "-m", "snakemake", "-n", "--forceall", "--quiet", "rules",
                        "--configfile", args.configfile])
    m = re.search(r"^total\s+(\d+)$", dry.stdout, re.M)
    planned = int(m.group(1)) - 1 if m else None  # without the `all` job

    print(f"config {args.configfile}, profile {args.profile or '(none)'}")
    print(f"{'':28}{'wall s':>8}  jobs")
    print(f"{'finet2i preflight':28}{pre_s:8.1f}  {jobs:,} (rules x wildcards; exit {pre.returncode}: "
          f"{counts['GO']} GO, {counts['WARN']} WARN, {counts['NO-GO']} NO-GO; its own timer {report['seconds']} s)")
    print(f"{'snakemake -n --forceall':28}{dry_s:8.1f}  {planned:,} (the DAG; exit {dry.returncode})"
          if planned is not None else f"snakemake -n failed ({dry.returncode}): {dry.stderr[-2000:]}")
    if planned is not None and planned != jobs:
        print(f"MISMATCH: preflight counts {jobs:,} jobs, the DAG has {planned:,}")


if __name__ == "__main__":
    main()
