"""Preflight's check of the profile against the live cluster (``scontrol``, ``sacctmgr``, ``sbatch --test-only``;
nothing is submitted): each partition exists and is up, each (account, partition) pair is accepted, GPU rules go
to partitions with GPUs and CPU rules ask for none, and for every rule and every attempt up to retries + 1 the
request (cpus, memory, GPUs, runtime) fits at least one node of its partition and the partition's limit; and each GPU
stage's model fits the GPUs of its partition (finet2i.preflight.gpu_memory)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finet2i.preflight.report import GO, NOGO, WARN, Report, names


def _check_profile(path: Path, rules: dict[str, Any], config: dict[str, Any], report: Report,
                   workdir: Path = Path(".")) -> str | None:
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
                                          f"{names(users)}); the cluster has {', '.join(cluster.partitions)}")
        elif not p.up:
            bad_partitions.add(partition)
            report.add(NOGO, "partition", f"{partition}: state {p.state}, not UP (used by {names(users)})")
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
    from finet2i.preflight.gpu_memory import _check_gpu_memory

    _check_gpu_memory(rules, requests, cluster, default, config, workdir, report)
    return profile.executor


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
            report.add(WARN, "account", f"no slurm_account for {names(users)}: the plugin guesses one (and "
                                        f"warns at every submission); set default-resources.slurm_account")
        reason = test_only(account, partition)
        if reason is None:
            report.add(GO, "account", f"{account or '(default)'} may submit to {partition} ({names(users)})")
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
        report.add(NOGO, "account", f"account {account} in partition {partition} (rules {names(users)}): "
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
