"""The live cluster, read with Slurm's own tools (``scontrol``, ``sacctmgr``, ``sbatch --test-only``).

Nothing here submits a job: ``sbatch --test-only`` asks slurmctld whether a job would be accepted (account,
partition, association, node configuration) and answers without queueing anything.

Nothing here trusts the tools' output either: a value that is not in the expected format (memory with a unit
Slurm does not print, a malformed time, bytes that are not UTF-8, a count that is not a number) never raises.
It becomes an :class:`Unreadable` (the command, the record, the field and the raw text, escaped), which preflight
reports as a NO-GO row; the value is taken as unknown, so no check passes on a guess.
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
class Unreadable:
    """A value a Slurm tool printed that preflight could not read."""

    command: str  # e.g. "scontrol show node -o"
    record: str  # e.g. "node gpu01"
    field: str  # e.g. "RealMemory"
    raw: str  # the text as printed (undecodable bytes as \xNN)
    why: str

    def __str__(self) -> str:
        return (f"`{self.command}`: {self.record}: cannot read {self.field}={self.raw!r} ({self.why}); preflight "
                f"takes it as unknown: check the value with your site's admins")


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int | None  # None: unreadable (an Unreadable was reported)
    mem_mb: int | None
    gpus: int
    state: str
    partitions: tuple[str, ...]
    gpu_types: tuple[tuple[str, int], ...] = ()  # ("a100", 4) per typed GPU GRES
    features: tuple[str, ...] = ()  # AvailableFeatures (what --constraint matches)

    @property
    def usable(self) -> bool:
        return not any(s in self.state for s in UNUSABLE)

    def gpus_of(self, model: str | None) -> int:
        return self.gpus if not model else sum(n for t, n in self.gpu_types if t == model)


@dataclass(frozen=True)
class Qos:
    """A QOS as ``sacctmgr show qos`` shows its limits (None: none set, or unreadable)."""

    name: str
    max_wall_min: int | None
    max_tres: dict[str, int] = field(default_factory=dict)  # per job: cpu, mem (MB), gres/gpu, node


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
    max_mem_per_cpu: int | None = None
    allow_qos: tuple[str, ...] | None = None  # None: ALL

    def largest(self, attr: str) -> Node | None:
        known = [n for n in self.nodes if getattr(n, attr) is not None]
        return max(known, key=lambda n: (getattr(n, attr), n.name)) if known else None


@dataclass
class Cluster:
    partitions: dict[str, Partition] = field(default_factory=dict)
    associations: list[tuple[str, str]] | None = None  # (account, partition or ""), None: unknown
    user: str = ""
    unreadable: list[Unreadable] = field(default_factory=list)
    qos: dict[str, Qos] | None = None  # None: sacctmgr could not be asked

    @property
    def default_partition(self) -> str | None:
        return next((p.name for p in self.partitions.values() if p.default), None)

    def associated(self, account: str, partition: str) -> bool | None:
        if self.associations is None:
            return None
        return any(a == account and p in ("", partition) for a, p in self.associations)


def _decode(data: bytes | str | None) -> str:
    """A tool's output as text: undecodable bytes kept as surrogates (:func:`shown` writes them as \\xNN)."""
    if isinstance(data, str):
        return data
    return (data or b"").decode("utf-8", "surrogateescape")


def shown(text: str) -> str:
    """Text as a message may show it: undecodable bytes as \\xNN escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _undecodable(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """The command's result with stdout and stderr as text (bytes that are not UTF-8 kept, never fatal)."""
    if shutil.which(cmd[0]) is None:
        raise SlurmUnavailable(f"`{cmd[0]}` not found: run preflight on the cluster's login node, where Slurm's "
                               f"commands are installed")
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"`{' '.join(cmd)}` did not answer in {TIMEOUT_S} s") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, _decode(proc.stdout), _decode(proc.stderr))


def _records(text: str) -> list[dict[str, str]]:
    """``scontrol show ... -o``: one record per line, ``Key=Value`` pairs (values without spaces, except the
    last pairs of a node line such as OS=..., which we do not read)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            out.append(dict(re.findall(r"(\w+)=(\S*)", line)))
    return out


class ValueUnreadable(ValueError):
    """A Slurm value in a format preflight does not read (the message says what was expected)."""


def parse_time_min(text: str) -> int | None:
    """Slurm's time limit (``UNLIMITED``, ``60``, ``1:00:00``, ``2-00:00:00``, ``30:00``) in minutes; raises
    :class:`ValueUnreadable` for anything else."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NONE"):
        return None
    m = re.fullmatch(r"(?:(\d{1,6})-)?(\d{1,9})(?::(\d{1,2}))?(?::(\d{1,2}))?", text)
    if not m:
        raise ValueUnreadable("not a Slurm time: minutes, MM:SS, HH:MM:SS or D-HH:MM:SS")
    days = int(m.group(1) or 0)
    nums = [int(g) for g in m.group(2, 3, 4) if g is not None]
    if m.group(1) is not None:  # D-HH[:MM[:SS]]
        h, mi, sec = (nums + [0, 0])[:3]
    elif len(nums) == 3:
        h, mi, sec = nums
    elif len(nums) == 2:
        h, mi, sec = 0, nums[0], nums[1]
    else:
        h, mi, sec = 0, nums[0], 0
    return days * 1440 + h * 60 + mi + (1 if sec else 0)


_UNIT_MB = {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024, "K": 1 / 1024}


def parse_mb(text: str) -> int:
    """A memory amount as Slurm prints it (megabytes, or with a K/M/G/T unit) in MB; else ValueUnreadable."""
    m = re.fullmatch(r"(\d{1,15})([KMGT]?)B?", text.strip(), re.IGNORECASE)
    if not m:
        raise ValueUnreadable("not megabytes (a number, optionally with a K, M, G or T unit)")
    return int(int(m.group(1)) * _UNIT_MB[m.group(2).upper()])


def parse_count(text: str) -> int:
    m = re.fullmatch(r"\d{1,9}", text.strip())
    if not m:
        raise ValueUnreadable("not a whole number")
    return int(text)


def gpu_gres(gres: str) -> tuple[int, tuple[tuple[str, int], ...]]:
    """(GPUs, typed GPUs) in a node's Gres string (``gpu:2``, ``gpu:a100:4(S:0-1)``, ``gpu:a100:2,gpu:v100:1``,
    ``(null)``); raises ValueUnreadable for a gpu item it cannot read."""
    total, typed = 0, []
    for item in gres.split(","):
        item = item.strip()
        if not item.startswith("gpu") or item.startswith("gpu_"):
            continue
        m = re.fullmatch(r"gpu(?::([\w.-]+))?(?::(\d+))?(?:\([^)]*\))?", item)
        if not m:
            raise ValueUnreadable(f"{item!r} is not gpu[:type][:count]")
        kind, count = m.group(1), int(m.group(2)) if m.group(2) else 1
        if kind is not None and kind.isdigit() and m.group(2) is None:  # gpu:4
            kind, count = None, int(kind)
        total += count
        if kind:
            typed.append((kind, count))
    return total, tuple(typed)


def _gpus(gres: str) -> int:
    """GPUs in a node's Gres string (see :func:`gpu_gres`)."""
    return gpu_gres(gres)[0]


class _Reader:
    """Reads the fields of one record, reporting what it cannot read (never raising)."""

    def __init__(self, command: str, record: str, values: dict[str, str], out: list[Unreadable]) -> None:
        self.command, self.record, self.values, self.out = command, record, values, out

    def get(self, key: str, parse, default: str | None = None):  # type: ignore[no-untyped-def]
        raw = self.values.get(key, default)
        if raw is None:
            return None
        if _undecodable(raw):
            self.out.append(Unreadable(self.command, self.record, key, shown(raw), "bytes that are not UTF-8"))
            return None
        try:
            return parse(raw)
        except ValueUnreadable as e:
            self.out.append(Unreadable(self.command, self.record, key, shown(raw), str(e)))
            return None


def _accounts(value: str | None) -> tuple[str, ...] | None:
    if value is None or value.upper() == "ALL":
        return None
    return tuple(a for a in value.split(",") if a)


def read_cluster() -> Cluster:
    """Partitions with their nodes, the user's associations and the QOS limits, from the live cluster; what
    cannot be read is in ``Cluster.unreadable``."""
    part = _run(["scontrol", "show", "partition", "-o"])
    if part.returncode != 0:
        raise SlurmUnavailable(f"`scontrol show partition` failed: {shown(part.stderr.strip() or part.stdout.strip())}")
    nodes_out = _run(["scontrol", "show", "node", "-o"])
    if nodes_out.returncode != 0:
        raise SlurmUnavailable(f"`scontrol show node` failed: {shown(nodes_out.stderr.strip())}")
    cluster = Cluster(user=os.environ.get("USER") or _whoami())
    bad = cluster.unreadable
    nodes = []
    for r in _records(nodes_out.stdout):
        if "NodeName" not in r:
            continue
        read = _Reader("scontrol show node -o", f"node {shown(r['NodeName'])}", r, bad)
        gres = read.get("Gres", gpu_gres, "") or (0, ())
        nodes.append(Node(name=shown(r["NodeName"]), cpus=read.get("CPUTot", parse_count, "0"),
                          mem_mb=read.get("RealMemory", parse_mb, "0"), gpus=gres[0], gpu_types=gres[1],
                          state=shown(r.get("State", "?")).upper(),
                          partitions=tuple(p for p in shown(r.get("Partitions", "")).split(",") if p),
                          features=tuple(f for f in shown(r.get("AvailableFeatures", "")).split(",")
                                         if f and f != "(null)")))
    for r in _records(part.stdout):
        name = r.get("PartitionName")
        if not name:
            continue
        read = _Reader("scontrol show partition -o", f"partition {shown(name)}", r, bad)
        name = shown(name)
        max_mem = r.get("MaxMemPerNode", "UNLIMITED")
        per_cpu = r.get("MaxMemPerCPU", "UNLIMITED")
        cluster.partitions[name] = Partition(
            name=name, state=shown(r.get("State", "?")), up=r.get("State", "").upper() == "UP",
            default=r.get("Default", "NO").upper() == "YES",
            max_time_min=read.get("MaxTime", parse_time_min, "UNLIMITED"),
            nodes=tuple(n for n in nodes if name in n.partitions),
            allow_accounts=_accounts(shown(r["AllowAccounts"]) if "AllowAccounts" in r else None),
            deny_accounts=_accounts(shown(r["DenyAccounts"]) if "DenyAccounts" in r else None) or (),
            max_mem_per_node=None if max_mem.upper() == "UNLIMITED" else read.get("MaxMemPerNode", parse_mb),
            max_mem_per_cpu=None if per_cpu.upper() == "UNLIMITED" else read.get("MaxMemPerCPU", parse_mb),
            allow_qos=_accounts(shown(r["AllowQos"]) if "AllowQos" in r else None))
    cluster.associations = _associations(cluster.user)
    cluster.qos = _qos(bad)
    return cluster


def _whoami() -> str:
    import getpass

    return getpass.getuser()


def _sacctmgr(args: list[str]) -> str | None:
    """sacctmgr's output, or None when the accounting database cannot be asked (no slurmdbd, no command)."""
    if shutil.which("sacctmgr") is None:
        return None
    try:
        proc = subprocess.run(["sacctmgr", "-nP", *args], capture_output=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    return _decode(proc.stdout) if proc.returncode == 0 else None


def _associations(user: str) -> list[tuple[str, str]] | None:
    """(account, partition) pairs the user may submit to ("" partition: every partition); None when the
    accounting database cannot be asked (no slurmdbd): sbatch --test-only still decides."""
    text = _sacctmgr(["show", "assoc", f"where user={user}", "format=account,partition"])
    if text is None:
        return None
    pairs = []
    for line in text.splitlines():
        account, _, partition = line.strip().partition("|")
        if account:
            pairs.append((shown(account), shown(partition)))
    return pairs


QOS_COMMAND = "sacctmgr -nP show qos format=name,maxwall,maxtres"


def parse_tres(text: str) -> dict[str, int]:
    """``cpu=16,mem=64G,gres/gpu=2,node=1`` -> {"cpu": 16, "mem": 65536 (MB), "gres/gpu": 2, ...}."""
    out: dict[str, int] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, eq, value = item.strip().partition("=")
        if not eq:
            raise ValueUnreadable(f"{item!r} is not name=value")
        out[key] = parse_mb(value) if key == "mem" else parse_count(value)
    return out


def _qos(bad: list[Unreadable]) -> dict[str, Qos] | None:
    """Every QOS with the limits preflight checks a job against (MaxWall, MaxTRES per job)."""
    text = _sacctmgr(QOS_COMMAND.split()[2:])
    if text is None:
        return None
    out = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, wall, tres = (line.split("|") + ["", ""])[:3]
        read = _Reader(QOS_COMMAND, f"qos {shown(name)}", {"MaxWall": wall, "MaxTRES": tres}, bad)
        out[shown(name)] = Qos(shown(name), read.get("MaxWall", parse_time_min) if wall else None,
                               (read.get("MaxTRES", parse_tres) or {}) if tres else {})
    return out


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
    text = shown((proc.stderr or proc.stdout).strip())
    lines = [ln.removeprefix("sbatch: error: ").removeprefix("allocation failure: ") for ln in text.splitlines()]
    return "; ".join(dict.fromkeys(ln for ln in lines if ln)) or f"sbatch exited {proc.returncode}"
