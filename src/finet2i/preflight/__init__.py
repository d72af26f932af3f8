"""``finet2i preflight``: before the first GPU-hour, check the run against the real cluster, models and disk.

Run on the login node. Each check gives GO, WARN or NO-GO with what to do; any NO-GO makes the command exit 1.
What is checked (and with what):

- the config (the schema, as the Snakefile does) and the curated sources;
- every model the enabled stages load: present in the Hugging Face cache or at its path, pinned to a commit,
  and on a filesystem that compute nodes see (a cache under /tmp is node-local);
- the profile against the live cluster (``scontrol``, ``sacctmgr``, ``sbatch --test-only``; nothing is
  submitted): each partition exists and is up, each (account, partition) pair is accepted, GPU rules go to
  partitions with GPUs and CPU rules ask for none, and for every rule and every attempt up to retries + 1 the
  request (cpus, memory, GPUs, runtime) fits at least one node of its partition and the partition's limit;
- GPU memory: each GPU stage's model (weights and what it holds at the configured batch, from its config or
  published sizes) against the GPU type of its partition's nodes (``finet2i.preflight.gpu_memory``);
- disk: the run's size per stage (finet2i.preflight.disk) against the results folder's free space;
- network: which rules download, and whether they run where the internet is (a localrule runs on the login
  node; a partition is the user's to know).

The rules' threads and resources come from Snakemake's own parse of the Snakefile (no DAG is built), so the
check takes seconds at any plan size.

This module runs the checks in order; each lives with what it checks: ``report`` (the rows, their table and
JSON), ``models`` (models and curated sources), ``plan`` (the rules and their jobs), ``cluster`` (the profile
against the live cluster; ``profile`` and ``slurm`` read each), ``network`` and ``disk``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from finet2i.preflight.cluster import _check_profile
from finet2i.preflight.disk import _check_disk
from finet2i.preflight.models import _check_models, _check_sources
from finet2i.preflight.network import _check_network
from finet2i.preflight.plan import _check_workflow
from finet2i.preflight.probe import _check_environment
from finet2i.preflight.report import GO, NOGO, WARN, Check, Report

__all__ = ["GO", "NOGO", "WARN", "Check", "Report", "run_preflight"]


def run_preflight(configfiles: Iterable[str | Path], *, profile: str | Path | None, workdir: Path = Path("."),
                  snakefile: Path | None = None, results: Path | None = None, probe_gpu: bool = False,
                  echo: Callable[[str], None] | None = None, gpus: int | None = None) -> Report:
    """Every check; never raises for a problem it can name (it becomes a NO-GO row). ``probe_gpu``: also submit
    one short job per GPU partition through the profile (finet2i.preflight.probe). ``gpus``: the GPU jobs expected
    at once (the disk estimate's generate tables in flight)."""
    from finet2i.workflow.config import ConfigError, load_config

    t0 = time.monotonic()
    report = Report()
    workdir = Path(workdir)
    files = [Path(f) if Path(f).is_absolute() else workdir / f for f in configfiles]
    try:
        config = load_config(*files, base_dir=workdir, check_models=False)
    except ConfigError as e:
        report.add(NOGO, "config", str(e))
        report.seconds = time.monotonic() - t0
        return report
    report.add(GO, "config", f"{', '.join(map(str, files))}: valid")
    _check_models(config, workdir, report)
    rules = _check_workflow(snakefile or workdir / "Snakefile", files, workdir, config, report)
    # After the Snakefile's parse, as in a run: the workflow sets up its own environment first (the demo's fake
    # photo APIs take a key that rules/demo.smk sets).
    _check_sources(config, workdir, report)
    if profile is not None:
        executor = _check_profile(Path(profile), rules, config, report, workdir)
    else:
        executor = None
        report.add(WARN, "cluster", "cluster not checked: no --profile given; add --profile profiles/slurm to check "
                                    "partitions, accounts and every rule's request against the live cluster")
    _check_environment(executor, rules, report)
    _check_network(rules, config, workdir, profile if executor == "slurm" else None, report)
    _check_disk(config, results or workdir / "results", workdir, report, **({"in_flight": gpus} if gpus else {}))
    if probe_gpu:
        _probe(profile, executor, rules, workdir, report, echo)
    report.seconds = time.monotonic() - t0
    return report


# Rows that would make the probe's own job fail the same way: fix them first.
_CLUSTER_ROWS = ("profile", "cluster", "partition", "account")


def _probe(profile: str | Path | None, executor: str | None, rules: dict, workdir: Path, report: Report,
           echo: Callable[[str], None] | None) -> None:
    from finet2i.preflight.probe import _check_probe
    from finet2i.preflight.profile import Profile
    from finet2i.preflight.slurm import SlurmUnavailable, read_cluster

    if profile is None or executor != "slurm":
        report.add(NOGO, "gpu probe", "--probe-gpu submits one job per GPU partition through the Slurm profile: "
                                      "add --profile profiles/slurm")
        return
    blocking = [c for c in report.checks if c.status == NOGO and
                (c.check in _CLUSTER_ROWS or c.check.startswith("rule "))]
    if blocking:
        report.add(NOGO, "gpu probe", f"not submitted: the cluster would refuse it like the rows above "
                                      f"({', '.join(dict.fromkeys(c.check for c in blocking))}); fix them first")
        return
    try:
        default = read_cluster().default_partition
    except SlurmUnavailable as e:
        report.add(NOGO, "gpu probe", str(e))
        return
    _check_probe(Path(profile), Profile.load(profile), rules, default, workdir, report, echo)
