"""A Snakemake profile as the Slurm executor plugin reads it: what each rule's job asks Slurm for, per attempt.

Snakemake evaluates a profile's resource values as Python expressions with ``attempt`` (1 for the first
submission, +1 per retry), ``threads`` and ``input`` in scope; a value that is not an expression (``gpu``, a
partition name) is kept as a string. The plugin (snakemake-executor-plugin-slurm 2.8: ``submit_string.py``,
``utils.set_gres_string``, the jobstep plugin's ``get_cpu_setting``) turns a job's resources into sbatch
options; :data:`PLUGIN_KEYS` lists every one, and this module reproduces them without Snakemake, so that
preflight can check every (rule, attempt) against the cluster in milliseconds:

``slurm_partition`` -> ``-p``, ``slurm_account`` -> ``-A``, ``runtime`` (minutes) -> ``-t``, ``mem_mb_per_cpu`` ->
``--mem-per-cpu`` (it wins over ``mem_mb``), else ``mem_mb`` -> ``--mem``, ``cpus_per_task`` (else, for a GPU job,
``cpus_per_gpu`` -> ``--cpus-per-gpu``, else the rule's threads) -> ``--cpus-per-task``, ``gpu`` (with
``gpu_model``) -> ``--gpus=[model:]n``, ``gres`` -> ``--gres`` (``gpu:2``, ``gpu:a100:2``; ``gpu`` and a gpu
``gres`` together are refused by the plugin), ``constraint`` -> ``-C``, ``qos`` (and the profile's
``slurm-qos``) -> ``--qos``, ``nodes``, ``tasks``, ``tasks_per_gpu``, ``slurm_extra`` (passed verbatim),
``slurm_cluster``/``cluster``/``clusters`` -> ``--clusters``. Keys the plugin never reads (``gpus``: the plugin
asks ``gpu``) are reported as such, not taken for a request.
"""

from __future__ import annotations

import inspect
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROFILE_FILES = ("config.v9+.yaml", "config.v8+.yaml", "config.yaml")
PLACEHOLDER = "CHANGE_ME"


class ProfileError(ValueError):
    """A profile that cannot be read or evaluated; the message names the file and key."""


# Every resource key the Slurm plugin turns into an sbatch option (see the module docstring); the checks that
# preflight runs for each: "checked" ones against the cluster, "passed" ones are reported, not evaluated.
PLUGIN_KEYS = {
    "slurm_partition": "checked", "slurm_account": "checked", "runtime": "checked", "mem_mb": "checked",
    "mem_mb_per_cpu": "checked", "cpus_per_task": "checked", "cpus_per_gpu": "checked", "gpu": "checked",
    "gpu_model": "checked", "gres": "checked", "constraint": "checked", "qos": "checked",
    "nodes": "passed", "tasks": "passed", "tasks_per_gpu": "passed", "tasks_per_node": "passed",
    "mpi": "passed", "slurm_extra": "passed", "slurm_cluster": "passed", "cluster": "passed",
    "clusters": "passed",
}
NOT_READ_BY_PLUGIN = {"gpus": "the plugin reads `gpu` (and `gpu_model`), never `gpus`: this asks for no GPU"}


@dataclass(frozen=True)
class Request:
    """What one job of a rule asks Slurm for at one attempt (None: not set; Slurm's default applies)."""

    rule: str
    attempt: int
    partition: str | None
    account: str | None
    cpus: int
    mem_mb: int | None  # the job's memory: --mem, or --mem-per-cpu x cpus
    gpus: int
    runtime_min: int | None
    jobs_in_group: int = 1  # >1: a group job of this many members (their cores and memory add up)
    mem_from: str = ""  # where mem_mb was set (profile key or rule), for messages
    gpu_model: str | None = None  # a typed GPU request (gpu_model, or gres gpu:<type>:n)
    mem_per_cpu: int | None = None  # --mem-per-cpu (mem_mb_per_cpu)
    constraint: str | None = None  # -C
    qos: str | None = None  # --qos
    unchecked: tuple[str, ...] = ()  # plugin keys set for this rule that preflight passes on unevaluated
    problems: tuple[str, ...] = ()  # what the plugin would refuse, or keys it never reads


class _NoInput(list):  # type: ignore[type-arg]
    """``input`` while planning: no files are known, so an expression over input sizes cannot be checked."""

    @property
    def size_mb(self) -> float:
        raise ProfileError("depends on input size")

    size = size_mb


def evaluate(value: Any, *, attempt: int, threads: int, where: str) -> Any:
    """A profile resource value as Snakemake evaluates it (resources.Resource.cli_evaluator)."""
    if not isinstance(value, str):
        return value
    namespace = {"attempt": attempt, "threads": threads, "input": _NoInput(),
                 "system_tmpdir": tempfile.gettempdir()}
    try:
        return eval(value, namespace)  # noqa: S307 - the user's own profile, exactly as Snakemake evals it
    except (NameError, SyntaxError):
        return value  # a plain string: "gpu", "a100"
    except ProfileError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ProfileError(f"{where}: {value!r} fails at attempt {attempt}: {e.__class__.__name__}: {e}") from e


def _as_mapping(value: Any, key: str, path: Path) -> dict[str, Any]:
    """A profile section given as a mapping or as Snakemake's CLI list form (``["a=1", "rule:b=2"]``)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):
        out: dict[str, Any] = {}
        for item in value:
            name, eq, val = str(item).partition("=")
            if not eq:
                raise ProfileError(f"{path}: {key}: {item!r} is not name=value")
            out[name.strip()] = val.strip()
        return out
    raise ProfileError(f"{path}: {key} must be a mapping (or a list of name=value), not {type(value).__name__}")


@dataclass
class Profile:
    path: Path  # the profile's config file
    settings: dict[str, Any]
    default_resources: dict[str, Any] = field(default_factory=dict)
    set_resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    set_threads: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    group_components: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: str | Path) -> Profile:
        folder = Path(directory)
        if folder.is_file():
            path = folder
        else:
            found = [folder / name for name in PROFILE_FILES if (folder / name).is_file()]
            if not found:
                raise ProfileError(f"{folder}: no profile here (expected {folder / 'config.yaml'})")
            path = found[0]
        try:
            settings = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ProfileError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(settings, dict):
            raise ProfileError(f"{path}: expected a mapping of Snakemake options")
        set_resources: dict[str, dict[str, Any]] = {}
        raw = settings.get("set-resources")
        if isinstance(raw, list):  # ["rule:name=value", ...]
            for item in raw:
                rule, colon, rest = str(item).partition(":")
                name, eq, val = rest.partition("=")
                if not (colon and eq):
                    raise ProfileError(f"{path}: set-resources: {item!r} is not rule:name=value")
                set_resources.setdefault(rule.strip(), {})[name.strip()] = val.strip()
        else:
            for rule, values in _as_mapping(raw, "set-resources", path).items():
                set_resources[rule] = _as_mapping(values, f"set-resources.{rule}", path)
        components = {}
        for group, n in _as_mapping(settings.get("group-components"), "group-components", path).items():
            try:
                components[group] = int(n)
            except (TypeError, ValueError):
                raise ProfileError(f"{path}: group-components.{group}: {n!r} is not a number") from None
        return cls(path=path, settings=settings,
                   default_resources=_as_mapping(settings.get("default-resources"), "default-resources", path),
                   set_resources=set_resources,
                   set_threads=_as_mapping(settings.get("set-threads"), "set-threads", path),
                   groups={str(k): str(v) for k, v in
                           _as_mapping(settings.get("groups"), "groups", path).items()},
                   group_components=components)

    @property
    def executor(self) -> str:
        return str(self.settings.get("executor", "local"))

    @property
    def retries(self) -> int:
        return int(self.settings.get("retries", 0) or 0)

    def raw(self, rule: str, name: str) -> tuple[Any, str]:
        """A resource's profile value for a rule and where it came from (set-resources, then defaults)."""
        if name in self.set_resources.get(rule, {}):
            return self.set_resources[rule][name], f"set-resources.{rule}.{name}"
        if name in self.default_resources:
            return self.default_resources[name], f"default-resources.{name}"
        return None, ""

    def request(self, rule: str, declared: Mapping[str, Any], threads: int, attempt: int) -> Request:
        """The sbatch request of one job of ``rule`` at ``attempt``. ``declared``: the rule's own resources
        (rules/*.smk); a profile's set-resources value replaces the rule's, a default fills in what it lacks."""
        threads_raw = self.set_threads.get(rule)
        if threads_raw is not None:
            threads = int(evaluate(threads_raw, attempt=attempt, threads=threads, where=f"{self.path}: "
                                   f"set-threads.{rule}"))

        def value(name: str) -> tuple[Any, str]:
            """(evaluated value, where it came from: set-resources beats the rule, the rule beats defaults)."""
            if name in self.set_resources.get(rule, {}):
                raw, where = self.set_resources[rule][name], f"set-resources.{rule}.{name}"
            elif name in declared:
                raw = declared[name]
                if callable(raw):  # a function of the attempt (finet2i.preflight.plan.per_attempt)
                    raw = raw(**{k: attempt if k == "attempt" else None for k in inspect.signature(raw).parameters})
                return raw, f"rule {rule} (rules/resources.yaml)"
            else:
                raw, where = self.raw(rule, name)
            return evaluate(raw, attempt=attempt, threads=threads, where=f"{self.path}: {where}"), where

        problems: list[str] = []
        gpus, gpu_model = 0, None
        n, _ = value("gpu")
        if n not in (None, "", 0):
            gpus = _count(n, f"{rule}: gpu")
            model, _ = value("gpu_model")
            gpu_model = None if model in (None, "") else str(model)
        gres, gres_where = value("gres")
        if gres not in (None, ""):
            gres_gpus, gres_model = _gres_gpus(str(gres), f"{self.path}: {gres_where}")
            if gres_gpus and gpus:
                problems.append(f"both gpu and a gpu gres ({gres!r}): the plugin refuses the job (they are "
                                f"mutually exclusive); keep one")
            elif gres_gpus:
                gpus, gpu_model = gres_gpus, gres_model
        for key, why in NOT_READ_BY_PLUGIN.items():
            n, where = value(key)
            if n not in (None, "", 0):
                problems.append(f"{where or key}: {why}")
        cpus_raw, _ = value("cpus_per_task")
        per_gpu, _ = value("cpus_per_gpu")
        if cpus_raw not in (None, ""):
            cpus = max(1, _count(cpus_raw, f"{rule}: cpus_per_task"))
        elif gpus and per_gpu not in (None, "") and _count(per_gpu, f"{rule}: cpus_per_gpu") > 0:
            cpus = _count(per_gpu, f"{rule}: cpus_per_gpu") * gpus  # --cpus-per-gpu
        else:
            cpus = threads
        per_cpu, per_cpu_where = value("mem_mb_per_cpu")
        if per_cpu not in (None, ""):  # the plugin sends --mem-per-cpu and drops mem_mb
            per_cpu = _count(per_cpu, f"{rule}: mem_mb_per_cpu")
            mem, mem_where = per_cpu * cpus, f"{per_cpu_where or 'mem_mb_per_cpu'} ({per_cpu} MB) x {cpus} cpus"
        else:
            per_cpu = None
            mem, mem_where = value("mem_mb")
        runtime, _ = value("runtime")
        partition, _ = value("slurm_partition")
        account, _ = value("slurm_account")
        constraint, _ = value("constraint")
        qos, _ = value("qos")
        if qos in (None, "") and self.settings.get("slurm-qos"):
            qos = self.settings["slurm-qos"]
        unchecked = tuple(k for k, how in PLUGIN_KEYS.items() if how == "passed" and value(k)[0] not in (None, ""))
        return Request(rule=rule, attempt=attempt,
                       partition=None if partition in (None, "") else str(partition),
                       account=None if account in (None, "") else str(account),
                       cpus=int(cpus), mem_mb=None if mem in (None, "") else _count(mem, f"{rule}: mem_mb"),
                       gpus=gpus, runtime_min=None if runtime in (None, "") else int(_minutes(runtime)),
                       mem_from=mem_where, gpu_model=gpu_model, mem_per_cpu=per_cpu,
                       constraint=None if constraint in (None, "") else str(constraint),
                       qos=None if qos in (None, "") else str(qos), unchecked=unchecked, problems=tuple(problems))

    def placeholders(self) -> list[str]:
        """Profile keys whose value still contains the CHANGE_ME placeholder."""
        found = [f"default-resources.{k}" for k, v in self.default_resources.items() if PLACEHOLDER in str(v)]
        found += [f"set-resources.{rule}.{k}" for rule, values in self.set_resources.items()
                  for k, v in values.items() if PLACEHOLDER in str(v)]
        return found

    def group_size(self, rule: str) -> int:
        group = self.groups.get(rule)
        return self.group_components.get(group, 1) if group else 1


def _count(value: Any, where: str) -> int:
    """A whole number of a resource (an int, or a float or text that is one); else ProfileError."""
    if isinstance(value, bool):
        raise ProfileError(f"{where}: {value!r} is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    raise ProfileError(f"{where}: {value!r} is not a whole number")


def _gres_gpus(gres: str, where: str) -> tuple[int, str | None]:
    """(GPUs, GPU type) a gres value asks for, as the plugin parses it (``gpu``, ``gpu:2``, ``gpu:a100:2``)."""
    if not re.fullmatch(r"[A-Za-z0-9_]+(:[A-Za-z0-9_.]+)?(:\d+[TGM]?)?", gres):
        raise ProfileError(f"{where}: {gres!r} is not a gres the plugin accepts (name, name:count or "
                           f"name:type:count)")
    parts = gres.split(":")
    if parts[0] != "gpu":
        return 0, None
    if len(parts) == 1:
        return 1, None
    if len(parts) == 2:
        return (int(parts[1]), None) if parts[1].isdigit() else (1, parts[1])
    return int(re.match(r"\d+", parts[2]).group(0)), parts[1]  # type: ignore[union-attr]


def _minutes(value: Any) -> int:
    """Snakemake's runtime: minutes as a number, or a human string ("2h", "30m", "1d")."""
    if isinstance(value, int | float):
        return int(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
    if not m:
        raise ProfileError(f"runtime {value!r} is not minutes or a duration like 2h")
    n, unit = float(m.group(1)), m.group(2) or "m"
    return int(n * {"s": 1 / 60, "m": 1, "h": 60, "d": 1440}[unit])
