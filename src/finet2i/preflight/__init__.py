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
- disk: the run's size per stage (finet2i.preflight.disk) against the results folder's free space;
- network: which rules download, and whether they run where the internet is (a localrule runs on the login
  node; a partition is the user's to know).

The rules' threads and resources come from Snakemake's own parse of the Snakefile (no DAG is built), so the
check takes seconds at any plan size.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GO, WARN, NOGO = "GO", "WARN", "NO-GO"
# Paths that are local to each node (a cache there is empty on the compute nodes).
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/scratch/local", "/local", "/localscratch")


@dataclass(frozen=True)
class Check:
    status: str
    check: str  # what was checked: "config", "model", "partition", "rule <name>", "account", "disk", ...
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    jobs: dict[str, int] = field(default_factory=dict)  # rule -> jobs in the plan
    disk: list[dict[str, Any]] = field(default_factory=list)

    def add(self, status: str, check: str, detail: str) -> None:
        self.checks.append(Check(status, check, detail))

    @property
    def ok(self) -> bool:
        return not any(c.status == NOGO for c in self.checks)

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.checks)

    def table(self) -> str:
        width = max([len(c.check) for c in self.checks] + [5])
        lines = [f"{'STATUS':6}  {'CHECK':{width}}  DETAIL"]
        for c in sorted(self.checks, key=lambda c: {NOGO: 0, WARN: 1, GO: 2}[c.status]):
            first, *rest = c.detail.splitlines() or [""]
            lines.append(f"{c.status:6}  {c.check:{width}}  {first}")
            lines += [f"{'':6}  {'':{width}}  {line}" for line in rest]
        verdict = ("GO" if self.ok else f"NO-GO: {self.count(NOGO)} problem(s) to fix") + \
            f" ({self.count(WARN)} warning(s); {sum(self.jobs.values()):,} jobs planned; {self.seconds:.1f} s)"
        return "\n".join(lines + ["", verdict])

    def to_json(self) -> str:
        return json.dumps({"ok": self.ok, "seconds": round(self.seconds, 2), "jobs": self.jobs,
                           "disk": self.disk, "checks": [asdict(c) for c in self.checks]}, indent=2)


def run_preflight(configfiles: Iterable[str | Path], *, profile: str | Path | None, workdir: Path = Path("."),
                  snakefile: Path | None = None, results: Path | None = None,
                  echo: Callable[[str], None] | None = None) -> Report:
    """Every check; never raises for a problem it can name (it becomes a NO-GO row)."""
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
    _check_sources(config, workdir, report)
    rules = _rules(snakefile or workdir / "Snakefile", files, workdir, config, report)
    executor = _check_profile(Path(profile), rules, config, report) if profile is not None else None
    _check_network(rules, config, workdir, profile if executor == "slurm" else None, report)
    _check_disk(config, results or workdir / "results", workdir, report)
    report.seconds = time.monotonic() - t0
    return report


# --- models -------------------------------------------------------------------------------------------------

def _node_local(path: Path) -> str | None:
    resolved = str(path.resolve())
    tmp = os.environ.get("TMPDIR")
    for prefix in (*NODE_LOCAL, *([tmp] if tmp else [])):
        if resolved == prefix or resolved.startswith(prefix.rstrip("/") + "/"):
            return prefix
    return None


def _check_models(config: dict[str, Any], workdir: Path, report: Report) -> None:
    from huggingface_hub import constants

    from finet2i.models.fetch import GATED_IDS, TOKEN_VAR, license_page
    from finet2i.models.spec import ModelNotAvailable, ModelSpec, is_pinned
    from finet2i.workflow.config import used_model_keys

    keys = used_model_keys(config)
    missing, hub = [], False
    for key in keys:
        spec = ModelSpec.from_config(f"models.{key}", config["models"][key], base_dir=workdir)
        hub = hub or spec.id is not None
        try:
            where = Path(spec.local_path())
        except ModelNotAvailable as e:
            detail = str(e)
            if spec.id in GATED_IDS:
                detail += (f"; {spec.id} is gated: accept its license at {license_page(spec.id)} (logged in) and "
                           f"put a read token in {TOKEN_VAR} before fetching")
            report.add(NOGO, "model", detail)
            missing.append(key)
            continue
        if spec.id is not None and not is_pinned(spec.revision):
            report.add(WARN, "model", f"{spec.key}: {spec.label} is in the cache but not pinned to a commit: run "
                                      f"`finet2i fetch-models --pin <config>` so that moved weights rerun stages")
        else:
            report.add(GO, "model", f"{spec.key}: {spec.label}" + (f" ({where})" if spec.id else ""))
        local = None if spec.id else _node_local(where)  # hub models: the cache's row below says it once
        if local:
            report.add(WARN, "model", f"{spec.key}: {where} is under {local}, which is local to each node: "
                                      f"compute nodes will not find it; use a shared filesystem")
    if hub:
        cache = Path(constants.HF_HUB_CACHE)
        local = _node_local(cache)
        if local:
            report.add(WARN, "model cache", f"the Hugging Face cache {cache} is under {local}, local to each node: "
                                            f"set HF_HOME to a shared filesystem (project or scratch space) that "
                                            f"the compute nodes mount, and fetch into it")
        else:
            report.add(GO, "model cache", f"{cache} (set HF_HOME to move it; it must be on a filesystem the "
                                          f"compute nodes mount)")
    if missing:
        report.add(NOGO, "models", f"{len(missing)} of {len(keys)} model(s) missing ({', '.join(missing)}): on a "
                                   f"node with network run `finet2i fetch-models <your config>` (add --pin, and "
                                   f"--accept-license aesthetic_head after reading its license)")


def _check_sources(config: dict[str, Any], workdir: Path, report: Report) -> None:
    from finet2i.workflow.config import missing_sources

    for problem in missing_sources(config, workdir):
        report.add(NOGO, "curated source", problem)


# --- the plan -----------------------------------------------------------------------------------------------

def _rules(snakefile: Path, files: list[Path], workdir: Path, config: dict[str, Any],
           report: Report) -> dict[str, Any]:
    from finet2i.preflight.plan import job_count, parse_rules, rule_enabled

    try:
        parsed = parse_rules(snakefile.resolve(), [f.resolve() for f in files], workdir.resolve())
    except Exception as e:  # noqa: BLE001 - a Snakefile that does not parse is a NO-GO with its message
        report.add(NOGO, "workflow", f"{snakefile}: Snakemake cannot parse it: {e}")
        return {}
    rules = {name: info for name, info in parsed.items() if rule_enabled(name, config)}
    report.jobs = {name: job_count(info, config) for name, info in rules.items()}
    report.add(GO, "workflow", f"{len(rules)} rules, {sum(report.jobs.values()):,} jobs in a full run")
    return rules


# --- the profile against the cluster ------------------------------------------------------------------------

def _check_profile(path: Path, rules: dict[str, Any], config: dict[str, Any], report: Report) -> str | None:
    """Check the profile against the live cluster; return its executor (None when it cannot be read)."""
    from finet2i.preflight.profile import PLACEHOLDER, Profile, ProfileError
    from finet2i.preflight.slurm import SlurmUnavailable, read_cluster, test_only

    try:
        profile = Profile.load(path)
    except ProfileError as e:
        report.add(NOGO, "profile", str(e))
        return None
    if profile.executor != "slurm":
        report.add(GO, "profile", f"{profile.path}: executor {profile.executor}: no cluster to check")
        return profile.executor
    attempts = profile.retries + 1
    requests = []
    try:
        for name, info in rules.items():
            if info.local:
                continue
            for attempt in range(1, attempts + 1):
                requests.append((info, profile.request(name, info.resources, info.threads, attempt)))
    except ProfileError as e:
        report.add(NOGO, "profile", str(e))
        return profile.executor
    placeholders = profile.placeholders()
    if placeholders:
        report.add(NOGO, "profile", f"{profile.path}: set your own values where it says {PLACEHOLDER}: "
                                    f"{', '.join(placeholders)} (your accounts: sacctmgr show assoc user=$USER "
                                    f"format=account,partition; partitions: sinfo -s)")
        return profile.executor
    try:
        cluster = read_cluster()
    except SlurmUnavailable as e:
        report.add(NOGO, "cluster", str(e))
        return profile.executor
    default = cluster.default_partition
    bad_partitions: set[str] = set()
    for partition in sorted({r.partition or default or "" for _, r in requests}):
        users = sorted({r.rule for _, r in requests if (r.partition or default) == partition})
        p = cluster.partitions.get(partition)
        if p is None:
            bad_partitions.add(partition)
            report.add(NOGO, "partition", f"{partition or '(none)'}: no such partition (used by "
                                          f"{_names(users)}); the cluster has {', '.join(cluster.partitions)}")
        elif not p.up:
            bad_partitions.add(partition)
            report.add(NOGO, "partition", f"{partition}: state {p.state}, not UP (used by {_names(users)})")
        elif not any(n.usable for n in p.nodes):
            report.add(WARN, "partition", f"{partition}: up, but no node can take jobs now "
                                          f"({', '.join(f'{n.name} {n.state}' for n in p.nodes) or 'no nodes'})")
        else:
            report.add(GO, "partition", f"{partition}: up, {len(p.nodes)} node(s), time limit "
                                        f"{_minutes(p.max_time_min)}")
    _check_accounts(requests, cluster, default, bad_partitions, report, test_only)
    for name in rules:
        mine = [r for info, r in requests if info.name == name]
        if mine:
            _check_rule(rules[name], mine, profile, cluster, default, bad_partitions, report)
    return profile.executor


def _names(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _minutes(value: int | None) -> str:
    if value is None:
        return "unlimited"
    return f"{value} min" if value < 120 else f"{value / 60:g} h"


def _check_accounts(requests: list[tuple[Any, Any]], cluster: Any, default: str | None,
                    bad_partitions: set[str], report: Report, test_only: Callable[..., str | None]) -> None:
    pairs: dict[tuple[str | None, str], list[str]] = {}
    for _, r in requests:
        partition = r.partition or default or ""
        if partition in bad_partitions:
            continue
        pairs.setdefault((r.account, partition), [])
        if r.rule not in pairs[(r.account, partition)]:
            pairs[(r.account, partition)].append(r.rule)
    for (account, partition), users in sorted(pairs.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        if account is None:
            report.add(WARN, "account", f"no slurm_account for {_names(users)}: the plugin guesses one (and "
                                        f"warns at every submission); set default-resources.slurm_account")
        reason = test_only(account, partition)
        if reason is None:
            report.add(GO, "account", f"{account or '(default)'} may submit to {partition} ({_names(users)})")
            continue
        if not re.search(r"account|association|qos|policy|not permitted|denied", reason, re.I):
            # A node problem (a powered-down or too small node): the rule rows say which request does not fit.
            report.add(WARN, "account", f"{account or '(default)'} in {partition}: a minimal test job is not "
                                        f"accepted either: {reason}")
            continue
        known = cluster.associations
        hint = ""
        if known is not None:
            mine = [f"{a} ({p or 'all partitions'})" for a, p in known]
            hint = f"; your associations: {', '.join(mine) or 'none'}"
        report.add(NOGO, "account", f"account {account} in partition {partition} (rules {_names(users)}): "
                                    f"sbatch says: {reason}{hint}")


def _check_rule(info: Any, requests: list[Any], profile: Any, cluster: Any, default: str | None,
                bad_partitions: set[str], report: Report) -> None:
    """One row per rule: GO with its request, or the first problem of each kind, naming the attempt."""
    name = info.name
    declared_gpus = int(info.resources.get("gpu", 0) or 0) + int(info.resources.get("gpus", 0) or 0)
    problems: list[str] = []
    warnings: list[str] = []
    group = profile.group_size(name)
    for r in requests:
        partition = r.partition or default or ""
        if partition in bad_partitions:
            return
        p = cluster.partitions[partition]
        cpus, mem = r.cpus * group, None if r.mem_mb is None else r.mem_mb * group
        what = f"attempt {r.attempt}" + (f" (a group job of {group})" if group > 1 else "")
        if r.gpus and not any(n.gpus for n in p.nodes):
            problems.append(f"asks {r.gpus} GPU(s) in partition {partition}, whose nodes have no GPUs (GRES): "
                            f"send it to a GPU partition (set-resources.{name}.slurm_partition)")
            break
        if r.gpus and not declared_gpus:
            problems.append(f"a CPU rule that asks for {r.gpus} GPU(s) (set-resources.{name}): remove the gpu/gres "
                            f"setting, it holds a GPU idle for the whole job")
            break
        if declared_gpus and not r.gpus:
            warnings.append(f"declares gpu={declared_gpus} but the profile asks none: it runs on CPUs only")
        if r.runtime_min is not None and p.max_time_min is not None and r.runtime_min > p.max_time_min:
            problems.append(f"{what}: runtime {r.runtime_min} min is over partition {partition}'s limit of "
                            f"{p.max_time_min} min: lower set-resources.{name}.runtime or use a partition with "
                            f"a longer limit")
            break
        if mem is not None and p.max_mem_per_node is not None and mem > p.max_mem_per_node:
            problems.append(f"{what}: mem_mb {mem} is over partition {partition}'s MaxMemPerNode "
                            f"{p.max_mem_per_node}")
            break
        fits = [n for n in p.nodes if n.cpus >= cpus and n.gpus >= r.gpus and (mem is None or n.mem_mb >= mem)]
        if not fits and p.nodes:
            big_mem, big_cpu = p.largest("mem_mb"), p.largest("cpus")
            if mem is not None and big_mem.mem_mb < mem:
                cap = f"min({_first_factor(r)} * attempt, {big_mem.mem_mb})" if r.attempt > 1 else str(big_mem.mem_mb)
                problems.append(f"{what}: mem_mb {mem} ({r.mem_from}) is more than any node of partition "
                                f"{partition} has (largest: {big_mem.name}, {big_mem.mem_mb} MB); "
                                f"cap it in the profile: mem_mb: {cap}")
            elif big_cpu.cpus < cpus:
                problems.append(f"{what}: {cpus} cpus is more than any node of partition {partition} has "
                                f"(largest: {big_cpu.name}, {big_cpu.cpus} CPUs)")
            else:
                problems.append(f"{what}: no node of partition {partition} has {cpus} CPUs, {mem} MB and "
                                f"{r.gpus} GPU(s) together")
            break
    check = f"rule {name}"
    if problems:
        report.add(NOGO, check, "; ".join(problems))
        return
    r_first, r_last = requests[0], requests[-1]
    mem_text = "default" if r_first.mem_mb is None else (
        f"{r_first.mem_mb}" + (f"..{r_last.mem_mb}" if r_last.mem_mb != r_first.mem_mb else "") + " MB")
    gpus = f", {r_first.gpus} GPU" if r_first.gpus else ""
    detail = (f"{r_first.partition or default}: {r_first.cpus} cpus, {mem_text}{gpus}, "
              f"{_minutes(r_first.runtime_min)}; attempts 1-{len(requests)} fit")
    report.add(GO, check, detail + ("" if not warnings else "; " + warnings[0]))
    if warnings:
        report.add(WARN, check, warnings[0])


def _first_factor(r: Any) -> str:
    """The per-attempt memory of a request (its attempt-1 value), for the suggested cap."""
    return str(r.mem_mb // r.attempt) if r.mem_mb else "N"


# --- disk ---------------------------------------------------------------------------------------------------

def _check_disk(config: dict[str, Any], results: Path, workdir: Path, report: Report) -> None:
    from finet2i.preflight.disk import estimate, free_bytes, human, used_bytes

    sizes = estimate(config, workdir)
    total = sum(s.bytes for s in sizes)
    used = used_bytes(results) if results.exists() else 0
    free, fs = free_bytes(results)
    need = max(total - used, 0)
    report.disk = [{"stage": s.stage, "records": s.records, "bytes": s.bytes, "sources": list(s.sources)}
                   for s in sizes]
    biggest = ", ".join(f"{s.stage} {human(s.bytes)}" for s in sorted(sizes, key=lambda s: -s.bytes)[:3])
    detail = (f"the run writes ~{human(total)} under {results} ({biggest}; per stage: --json); "
              f"{human(used)} already there; {human(free)} free on {fs}")
    if need > free:
        report.add(NOGO, "disk", detail + f": short by {human(need - free)}; point results/ at a larger "
                                          f"filesystem (run from a workdir there)")
    elif need > 0.8 * free:
        report.add(WARN, "disk", detail + ": less than 20% headroom")
    else:
        report.add(GO, "disk", detail)


# --- network ------------------------------------------------------------------------------------------------

def network_rules(config: dict[str, Any], workdir: Path) -> dict[str, str]:
    """Rules that reach the internet under this config, and why."""
    from finet2i.core import pipeline
    from finet2i.workflow.config import source_path

    out: dict[str, str] = {}
    if not pipeline.enabled("curated_ingest", config):
        return out
    entries = config["curated"]["sources"]
    kind = [e.get("type") if isinstance(e, dict) else None for e in entries]
    apis = sorted({str(k) for k in kind if k in ("pexels", "pixabay")})
    if apis:
        out["curated_list"] = f"asks the {' and '.join(apis)} API(s) for their photo lists"
    remote = [source_path(e) if k in (None, "folder", "url_list") else str(e.get("name", k))
              for e, k in zip(entries, kind, strict=True)
              if k in ("url_list", "unsplash_lite", "pexels", "pixabay")
              or (k in (None, "folder") and ("://" in source_path(e) or (workdir / source_path(e)).is_file()))]
    if remote:
        out["curated_ingest"] = f"downloads the photos of {_names(remote, 3)}"
    return out


def _check_network(rules: dict[str, Any], config: dict[str, Any], workdir: Path, profile: str | Path | None,
                   report: Report) -> None:
    needs = network_rules(config, workdir)
    if not needs:
        report.add(GO, "network", "no rule downloads anything (models are fetched beforehand by fetch-models)")
        return
    for name, why in needs.items():
        info = rules.get(name)
        if info is not None and info.local:
            report.add(GO, "network", f"rule {name} {why}; it is a localrule: it runs where Snakemake runs "
                                      f"(the login node, which has network)")
        elif profile is None:
            report.add(GO, "network", f"rule {name} {why}; it runs on this machine (no cluster profile)")
        else:
            report.add(WARN, "network", f"rule {name} {why} and is submitted to a compute node: if your compute "
                                        f"nodes are offline, run `snakemake --profile {profile} --until {name} "
                                        f"--executor local` (or `--cores N` without the profile) on the login node "
                                        f"first, then the full run")
