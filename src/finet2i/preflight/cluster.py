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
    for unreadable in cluster.unreadable:  # a value preflight could not read: no check passes on a guess
        report.add(NOGO, "cluster value", str(unreadable))
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


def constraint_matcher(expr: str) -> Callable[[tuple[str, ...]], bool] | None:
    """A test of a node's features for a ``--constraint`` expression of plain features joined by ``&``/``,``
    (all) and ``|`` (any); None for forms preflight does not evaluate (counts ``*n``, brackets, exclusive ORs)."""
    if re.search(r"[\[\]*()!]", expr):
        return None
    any_of = [[f.strip() for f in re.split(r"[&,]", alt) if f.strip()] for alt in expr.split("|")]
    if not all(any_of):
        return None
    return lambda features: any(all(f in features for f in alt) for alt in any_of)


def _qos_problems(r: Any, cpus: int, mem: int | None, cluster: Any, p: Any, what: str) -> list[str]:
    """What a QOS (as sacctmgr shows its limits) and the partition's AllowQos refuse of a request."""
    out = []
    if p.allow_qos is not None and r.qos not in p.allow_qos:
        out.append(f"{what}: qos {r.qos} is not allowed in partition {p.name} (AllowQos {', '.join(p.allow_qos)})")
    if cluster.qos is None:
        return out
    q = cluster.qos.get(r.qos)
    if q is None:
        return [*out, f"{what}: qos {r.qos!r} does not exist (sacctmgr show qos: {', '.join(sorted(cluster.qos))})"]
    if q.max_wall_min is not None and r.runtime_min is not None and r.runtime_min > q.max_wall_min:
        out.append(f"{what}: runtime {r.runtime_min} min is over qos {q.name}'s MaxWall of {q.max_wall_min} min")
    for tres, asked in (("cpu", cpus), ("mem", mem), ("gres/gpu", r.gpus)):
        limit = q.max_tres.get(tres)
        if limit is not None and asked is not None and asked > limit:
            out.append(f"{what}: {tres} {asked} is over qos {q.name}'s MaxTRES per job ({tres}={limit})")
    return out


def _check_rule(info: Any, requests: list[Any], profile: Any, cluster: Any, default: str | None,
                bad_partitions: set[str], report: Report) -> None:
    """One row per rule: GO with its request, or the first problem of each kind, naming the attempt."""
    name = info.name
    declared_gpus = int(info.resources.get("gpu", 0) or 0)
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
        if r.problems:
            problems += list(dict.fromkeys(r.problems))
            break
        if r.unchecked:
            warnings.append(f"sets {', '.join(r.unchecked)}, which the plugin passes to sbatch and preflight does "
                            f"not evaluate: sbatch --test-only with these options is the check")
        if r.gpu_model and r.gpus and not any(n.gpus_of(r.gpu_model) for n in p.nodes):
            types = sorted({t for n in p.nodes for t, _ in n.gpu_types}) or ["none typed"]
            problems.append(f"asks {r.gpus} GPU(s) of type {r.gpu_model} in partition {partition}, whose nodes "
                            f"have GPU types {', '.join(types)}: fix gres/gpu_model in set-resources.{name}")
            break
        if r.constraint:
            test = constraint_matcher(r.constraint)
            if test is None:
                warnings.append(f"constraint {r.constraint!r} is a form preflight does not evaluate")
            elif not any(test(n.features) for n in p.nodes):
                features = sorted({f for n in p.nodes for f in n.features}) or ["none"]
                problems.append(f"constraint {r.constraint!r} matches no node of partition {partition} (features: "
                                f"{', '.join(features)})")
                break
        if r.mem_per_cpu is not None and p.max_mem_per_cpu is not None and r.mem_per_cpu > p.max_mem_per_cpu:
            problems.append(f"{what}: mem_mb_per_cpu {r.mem_per_cpu} is over partition {partition}'s MaxMemPerCPU "
                            f"{p.max_mem_per_cpu}")
            break
        if r.qos:
            qos_problems = _qos_problems(r, cpus, mem, cluster, p, what)
            if qos_problems:
                problems += qos_problems
                break
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
        test = constraint_matcher(r.constraint) if r.constraint else None
        known = [n for n in p.nodes if n.cpus is not None and n.mem_mb is not None]
        fits = [n for n in known if n.cpus >= cpus and n.gpus_of(r.gpu_model) >= r.gpus
                and (mem is None or n.mem_mb >= mem) and (test is None or test(n.features))]
        if not fits and not known and p.nodes:
            problems.append(f"no node of partition {partition} has a readable size (see the cluster value rows)")
            break
        if not fits and p.nodes:
            big_mem, big_cpu = p.largest("mem_mb"), p.largest("cpus")
            if mem is not None and big_mem.mem_mb < mem:
                cap = f"min({_first_factor(r)} * attempt, {big_mem.mem_mb})" if r.attempt > 1 else str(big_mem.mem_mb)
                fix = f"mem_mb_per_cpu: {big_mem.mem_mb // max(1, cpus)}" if r.mem_per_cpu is not None else \
                    f"mem_mb: {cap}"
                problems.append(f"{what}: mem_mb {mem} ({r.mem_from}) is more than any node of partition "
                                f"{partition} has (largest: {big_mem.name}, {big_mem.mem_mb} MB); "
                                f"cap it in the profile: {fix}")
            elif big_cpu.cpus < cpus:
                problems.append(f"{what}: {cpus} cpus is more than any node of partition {partition} has "
                                f"(largest: {big_cpu.name}, {big_cpu.cpus} CPUs)")
            else:
                problems.append(f"{what}: no node of partition {partition} has {cpus} CPUs, {mem} MB and "
                            f"{r.gpus} GPU(s){' of type ' + r.gpu_model if r.gpu_model else ''}"
                            f"{' with ' + repr(r.constraint) if r.constraint else ''} together")
            break
    check = f"rule {name}"
    if problems:
        report.add(NOGO, check, "; ".join(problems))
        return
    r_first, r_last = requests[0], requests[-1]
    mem_text = "default" if r_first.mem_mb is None else (
        f"{r_first.mem_mb}" + (f"..{r_last.mem_mb}" if r_last.mem_mb != r_first.mem_mb else "") + " MB")
    gpus = f", {r_first.gpus} GPU" + (f" ({r_first.gpu_model})" if r_first.gpu_model else "") if r_first.gpus else ""
    detail = (f"{r_first.partition or default}: {r_first.cpus} cpus, {mem_text}{gpus}, "
              f"{_minutes(r_first.runtime_min)}; attempts 1-{len(requests)} fit")
    report.add(GO, check, detail + ("" if not warnings else "; " + warnings[0]))
    if warnings:
        report.add(WARN, check, warnings[0])


def _first_factor(r: Any) -> str:
    """The per-attempt memory of a request (its attempt-1 value), for the suggested cap."""
    return str(r.mem_mb // r.attempt) if r.mem_mb else "N"
