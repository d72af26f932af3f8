"""The workflow's rules as Snakemake parses them (threads, declared resources, local or not) and how many
jobs each has under a config, without building the DAG (which takes ~45 s at production size)."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finet2i.core import batching, pipeline
from finet2i.preflight.report import GO, NOGO, Report

# Rules that are not a stage of finet2i.core.pipeline (a stage's rule is named for it) nor a stage's batch rules
# (batch_rules), and the stage whose switch they follow (None: always run).
AUXILIARY = {"dedup_centroids": "dedup", "dedup_assign": "dedup", "dedup_manifest": "dedup",
             "dedup_group": "dedup", "dedup_cross": "dedup", "curated_list": None, "report": None,
             "assemble": None, "dataset_card": None}


LISTED = ("unsplash_lite", "pexels", "pixabay")  # source types with a listing job each (rules/curated_list.smk)


@dataclass(frozen=True)
class RuleInfo:
    name: str
    threads: int
    resources: dict[str, Any]  # the rule's own constant resources (callables are left out)
    computed: tuple[str, ...]  # resources the rule computes per job (not checkable before planning)
    local: bool  # a localrule: runs in the Snakemake process on the login node, never submitted
    wildcards: tuple[str, ...]


def parse_rules(snakefile: Path, configfiles: list[Path], workdir: Path) -> dict[str, RuleInfo]:
    """Parse the Snakefile with the config (no DAG): every rule with its threads and resources."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

    quiet = logging.getLogger("snakemake")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), SnakemakeApi(OutputSettings(quiet=None)) as api:
            wf_api = api.workflow(resource_settings=ResourceSettings(),
                                  config_settings=ConfigSettings(configfiles=configfiles),
                                  storage_settings=StorageSettings(), snakefile=snakefile, workdir=workdir)
            wf = wf_api._workflow  # parsing only; the public API goes on to build the DAG
            out = {}
            for rule in wf.rules:
                if rule.name == "all":
                    continue
                constants, computed = {}, []
                for name, res in rule.resources.items():
                    if name.startswith("_") or name == "tmpdir":
                        continue
                    raw = getattr(res, "raw", None)
                    if raw is None:  # a function: Snakemake keeps it as the resource's value
                        raw = getattr(res, "_value", None)
                    if isinstance(raw, int | str) and not callable(raw):
                        constants[name] = raw
                    elif callable(raw) and per_attempt(raw):
                        constants[name] = raw  # e.g. memory that grows with each retry (rules/resources.yaml)
                    else:
                        computed.append(name)
                cores = rule.resources.get("_cores")
                threads = int(getattr(cores, "raw", 1) or 1) if cores is not None else 1
                out[rule.name] = RuleInfo(name=rule.name, threads=threads, resources=constants,
                                          computed=tuple(computed), local=rule.name in wf._localrules,
                                          wildcards=tuple(sorted(rule.wildcard_names)))
            return out
    finally:
        quiet.setLevel(level)


def per_attempt(value: Any) -> bool:
    """Whether a rule's resource is a function of the attempt only (and wildcards it does not read), which
    preflight can evaluate for every attempt before anything is planned."""
    try:
        params = set(inspect.signature(value).parameters)
    except (TypeError, ValueError):
        return False
    return params <= {"wildcards", "attempt"}


def batch_rules() -> dict[str, str]:
    """Several shards per GPU job (finet2i.core.batching, rules/batching.smk): <stage>_batch and <stage>_publish,
    each with its stage, run instead of <stage>."""
    return {f"{stage}_{part}": stage for stage in batching.BATCHABLE for part in ("batch", "publish")}


def rule_enabled(rule: str, config: Mapping[str, Any]) -> bool:
    """Whether the config runs any job of ``rule`` (a switched-off stage's rules exist but never run)."""
    batched = batch_rules().get(rule)
    if batched is not None:
        return pipeline.enabled(batched, config) and batching.is_batched(config, batched)
    if rule in pipeline.BY_NAME:
        return pipeline.enabled(rule, config) and not batching.is_batched(config, rule)
    if rule in {t.name for t in pipeline.TARGETS}:  # finetune, evaluate: finetune.enabled
        return rule in {t.name for t in pipeline.enabled_targets(config)}
    stage = AUXILIARY.get(rule)
    return True if stage is None else pipeline.enabled(stage, config)


def job_count(rule: RuleInfo, config: Mapping[str, Any]) -> int:
    """Jobs of ``rule`` in a full run: the product of its wildcards' domains (rules/common.smk)."""
    from finet2i.workflow.params import internal_subsets

    subsets = len(config["generate"]["subsets"])
    real = (1 if pipeline.enabled("package_real", config) else 0) + len(internal_subsets(config))
    batched = batch_rules().get(rule.name)
    domains = {"shard": int(config["shards"]["count"]), "cshard": int(config["curated"]["shards"]),
               "group": int(config["dedup"]["groups"]),
               "batch": batching.batch_count(batching.shard_count(config, batched),
                                             batching.shards_per_job(config, batched)) if batched else 1,
               "subset": subsets + real if rule.name == "assemble" else subsets,
               "source": sum(isinstance(e, dict) and e.get("type") in LISTED
                             for e in config["curated"].get("sources") or [])}
    return math.prod(domains.get(w, 1) for w in rule.wildcards)


def _check_workflow(snakefile: Path, files: list[Path], workdir: Path, config: dict[str, Any],
                    report: Report) -> dict[str, RuleInfo]:
    """The enabled rules, each with its threads and resources; the jobs of each in ``report.jobs``."""
    try:
        parsed = parse_rules(snakefile.resolve(), [f.resolve() for f in files], workdir.resolve())
    except Exception as e:  # noqa: BLE001 - a Snakefile that does not parse is a NO-GO with its message
        report.add(NOGO, "workflow", f"{snakefile}: Snakemake cannot parse it: {e}")
        return {}
    rules = {name: info for name, info in parsed.items() if rule_enabled(name, config)}
    report.jobs = {name: job_count(info, config) for name, info in rules.items()}
    report.add(GO, "workflow", f"{len(rules)} rules, {sum(report.jobs.values()):,} jobs in a full run")
    return rules
