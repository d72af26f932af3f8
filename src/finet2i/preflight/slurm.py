"""The live cluster, read with Slurm's own tools (``scontrol``, ``sacctmgr``, ``sbatch --test-only``).

Nothing here submits a job: ``sbatch --test-only`` asks slurmctld whether a job would be accepted (account,
partition, association, node configuration) and answers without queueing anything.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

TIMEOUT_S = 30
# Node states in which no new job starts (a node "drained" or "down" still counts for the table, with a note).
UNUSABLE = ("DOWN", "DRAIN", "FAIL", "INVALID", "NOT_RESPONDING", "FUTURE")


class SlurmUnavailable(RuntimeError):
    """Slurm's commands are missing or the controller does not answer."""


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int
    state: str
    partitions: tuple[str, ...]
    gpu_types: tuple[str, ...] = ()  # GRES type names (gpu:a100:4 -> "a100"); empty for a typeless gpu:2

    @property
    def usable(self) -> bool:
        return not any(s in self.state for s in UNUSABLE)


@dataclass(frozen=True)
class Partition:
    name: str
    up: bool
    state: str
    default: bool
    max_time_min: int | None  # None: unlimited
    nodes: tuple[Node, ...]
    allow_accounts: tuple[str, ...] | None  # None: ALL
    deny_accounts: tuple[str, ...]
    max_mem_per_node: int | None

    def largest(self, attr: str) -> Node | None:
        return max(self.nodes, key=lambda n: (getattr(n, attr), n.name)) if self.nodes else None


@dataclass
class Cluster:
    partitions: dict[str, Partition] = field(default_factory=dict)
    associations: list[tuple[str, str]] | None = None  # (account, partition or ""), None: unknown
    user: str = ""

    @property
    def default_partition(self) -> str | None:
        return next((p.name for p in self.partitions.values() if p.default), None)

    def associated(self, account: str, partition: str) -> bool | None:
        if self.associations is None:
            return None
        return any(a == account and p in ("", partition) for a, p in self.associations)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which(cmd[0]) is None:
        raise SlurmUnavailable(f"`{cmd[0]}` not found: run preflight on the cluster's login node, where Slurm's "
                               f"commands are installed")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"`{' '.join(cmd)}` did not answer in {TIMEOUT_S} s") from None


def _records(text: str) -> list[dict[str, str]]:
    """``scontrol show ... -o``: one record per line, ``Key=Value`` pairs (values without spaces, except the
    last pairs of a node line such as OS=..., which we do not read)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            out.append(dict(re.findall(r"(\w+)=(\S*)", line)))
    return out


def parse_time_min(text: str) -> int | None:
    """Slurm's time limit (``UNLIMITED``, ``60``, ``1:00:00``, ``2-00:00:00``, ``30:00``) in minutes."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NONE"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 3:
        h, m, s = parts
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = 0, parts[0], 0
    return days * 1440 + h * 60 + m + (1 if s else 0)


def _gpus(gres: str) -> int:
    """GPUs in a node's Gres string (``gpu:2``, ``gpu:a100:4(S:0-1)``, ``gpu:a100:2,gpu:v100:1``)."""
    total = 0
    for item in gres.split(","):
        m = re.match(r"gpu(?::[\w.-]+)?:(\d+)", item.strip())
        if m:
            total += int(m.group(1))
    return total


def _gpu_types(gres: str) -> tuple[str, ...]:
    """The GPU type names in a node's Gres string (``gpu:a100:4(S:0-1)`` -> a100; ``gpu:2`` has none)."""
    types = []
    for item in gres.split(","):
        m = re.match(r"gpu:([A-Za-z][\w.-]*):\d+", item.strip())
        if m and m.group(1) not in types:
            types.append(m.group(1))
    return tuple(types)


def _accounts(value: str | None) -> tuple[str, ...] | None:
    if value is None or value.upper() == "ALL":
        return None
    return tuple(a for a in value.split(",") if a)


def read_cluster() -> Cluster:
    """Partitions with their nodes, and the user's associations, from the live cluster."""
    part = _run(["scontrol", "show", "partition", "-o"])
    if part.returncode != 0:
        raise SlurmUnavailable(f"`scontrol show partition` failed: {part.stderr.strip() or part.stdout.strip()}")
    nodes_out = _run(["scontrol", "show", "node", "-o"])
    if nodes_out.returncode != 0:
        raise SlurmUnavailable(f"`scontrol show node` failed: {nodes_out.stderr.strip()}")
    nodes = []
    for r in _records(nodes_out.stdout):
        if "NodeName" not in r:
            continue
        nodes.append(Node(name=r["NodeName"], cpus=int(r.get("CPUTot", "0") or 0),
                          mem_mb=int(r.get("RealMemory", "0") or 0), gpus=_gpus(r.get("Gres", "")),
                          state=r.get("State", "?").upper(),
                          partitions=tuple(p for p in r.get("Partitions", "").split(",") if p),
                          gpu_types=_gpu_types(r.get("Gres", ""))))
    cluster = Cluster(user=os.environ.get("USER") or _whoami())
    for r in _records(part.stdout):
        name = r.get("PartitionName")
        if not name:
            continue
        max_mem = r.get("MaxMemPerNode", "UNLIMITED")
        cluster.partitions[name] = Partition(
            name=name, state=r.get("State", "?"), up=r.get("State", "").upper() == "UP",
            default=r.get("Default", "NO").upper() == "YES",
            max_time_min=parse_time_min(r.get("MaxTime", "UNLIMITED")),
            nodes=tuple(n for n in nodes if name in n.partitions),
            allow_accounts=_accounts(r.get("AllowAccounts")),
            deny_accounts=_accounts(r.get("DenyAccounts")) or (),
            max_mem_per_node=int(max_mem) if max_mem.isdigit() else None)
    cluster.associations = _associations(cluster.user)
    return cluster


def _whoami() -> str:
    import getpass

    return getpass.getuser()


def _associations(user: str) -> list[tuple[str, str]] | None:
    """(account, partition) pairs the user may submit to ("" partition: every partition); None when the
    accounting database cannot be asked (no slurmdbd): sbatch --test-only still decides."""
    if shutil.which("sacctmgr") is None:
        return None
    try:
        proc = subprocess.run(["sacctmgr", "-nP", "show", "assoc", f"where user={user}",
                               "format=account,partition"], capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        return None
    pairs = []
    for line in proc.stdout.splitlines():
        account, _, partition = line.strip().partition("|")
        if account:
            pairs.append((account, partition))
    return pairs


def test_only(account: str | None, partition: str, *, gpus: int = 0) -> str | None:
    """None when slurmctld would accept a minimal job for (account, partition); else its reason, verbatim."""
    cmd = ["sbatch", "--test-only", "-p", partition, "-n", "1", "-t", "1", "--mem=1", "-J", "finet2i-preflight",
           "--wrap", "true", "-o", "/dev/null"]
    if account:
        cmd[2:2] = ["-A", account]
    if gpus:
        cmd += [f"--gpus={gpus}"]
    proc = _run(cmd)
    if proc.returncode == 0:
        return None
    text = (proc.stderr or proc.stdout).strip()
    lines = [ln.removeprefix("sbatch: error: ").removeprefix("allocation failure: ") for ln in text.splitlines()]
    return "; ".join(dict.fromkeys(ln for ln in lines if ln)) or f"sbatch exited {proc.returncode}"
