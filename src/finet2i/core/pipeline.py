"""The pipeline, declared once: which stages there are, in which order, what each reads and where it writes.

Everything that needs the pipeline's shape reads it from here: the rule files' input functions and the report's
inputs (``rules/common.smk``), the report's funnel order, the models a run needs (``finet2i.workflow.config``), and the
tests. The names are one name each: **stage name = rule name = results folder** (``results/<stage>/...``)
and the ``stage`` field of its stats JSONs. ``package`` and ``package_real`` write each shard's finished samples
(JPEG, json, txt); the ``assemble`` rule, after every stage, cuts them into the release's tars in
``results/dataset/<release folder>/`` (finet2i.release.layout, finet2i.stages.assemble).

A stage reads the kept rows of the stage before it in its branch that writes a record table, skipping stages
that the config switches off: insert a stage into the tuple and the stage after it reads from the new one.
Pure data and standard library: the Snakefile reads this while planning, so it must stay light.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SYNTHETIC = "synthetic"
CURATED = "curated"


@dataclass(frozen=True)
class Stage:
    name: str
    branch: str = SYNTHETIC
    per_subset: bool = False  # one output per (subset, shard): results/<stage>/<subset>/<shard>.parquet
    all_subsets_in_one_job: bool = False  # per-subset outputs, but one job per shard writes them all
    table: bool = True  # writes a record table (kept + drop_reason) that the next stage reads
    reads: str | None = None  # the record table it reads, when not simply the previous stage's
    # Dotted config key(s), each a boolean ("a.b") or a test of a value ("a.b=value"); the stage runs only if
    # all hold.
    switch: str | tuple[str, ...] | None = None
    models: tuple[str, ...] = ()  # keys of config["models"] it loads
    # Several shards per GPU job (gpu_jobs; finet2i.core.batching): rules/batching.smk derives <stage>_batch and
    # <stage>_publish from the stage's rule. Its workflow script then has a `shared(run)` (finet2i.workflow.batch).
    batchable: bool = False
    images: bool = False  # its table holds each record's image bytes (read for pictures of later stages' drops)

    @property
    def results(self) -> str:
        return f"results/{self.name}"


# In pipeline order. `reads` is given only where a stage does not read the table just above it.
STAGES: tuple[Stage, ...] = (
    Stage("specs"),
    Stage("prompts", models=("prompt_generator",), batchable=True),
    Stage("embed", table=False, models=("embedder",), batchable=True),
    Stage("dedup", reads="prompts"),
    Stage("guard", models=("guard",), batchable=True),
    Stage("attributes", switch="attributes.enabled", models=("verifier",), batchable=True),
    Stage("enhance", models=("enhancer",), batchable=True),
    Stage("guard_enhanced", switch="guard_enhanced.enabled", models=("guard",), batchable=True),  # beyond the paper
    Stage("generate", per_subset=True, images=True,
          models=("z_image", "flux2", "aesthetic_encoder", "aesthetic_head"), batchable=True),
    Stage("pair_filter", per_subset=True, all_subsets_in_one_job=True, models=("judge",),
          batchable=True),  # one judge load per job
    Stage("package", per_subset=True),  # finished samples; `assemble` cuts them into the release's tars
    Stage("curated_ingest", branch=CURATED, switch="curated.enabled", images=True),
    Stage("curated_dedup", branch=CURATED, switch="curated.enabled"),  # one photo from two sites: kept once
    Stage("curated_score", branch=CURATED, switch="curated.enabled",
          models=("aesthetic_encoder", "aesthetic_head"), batchable=True),
    Stage("curated_caption", branch=CURATED, switch="curated.enabled", models=("captioner",),
          batchable=True),
    Stage("curated_enhance", branch=CURATED, switch=("curated.enabled", "curated.long_prompt=enhancer"),
          models=("enhancer",), batchable=True),  # by default the captioner writes the long caption too
    Stage("curated_guard", branch=CURATED, switch=("curated.enabled", "curated_guard.enabled"),
          models=("guard",), batchable=True),  # beyond the paper
    Stage("package_real", branch=CURATED, switch="curated.enabled"),
)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


@dataclass(frozen=True)
class Target:
    """A rule after the dataset that uses it, not a stage: it reads ``results/dataset/`` (and what the target
    before it wrote), writes no record table, and runs when its switch holds (or when asked for by name)."""

    name: str
    switch: str
    models: tuple[str, ...] = ()
    # Models needed only when a setting holds: {model key: dotted boolean config key}.
    model_switches: tuple[tuple[str, str], ...] = ()


# Paper section 5 (docs/finetune.md): does the dataset make a model better? Off by default.
TARGETS: tuple[Target, ...] = (
    Target("finetune", "finetune.enabled", models=("finetune_base",)),
    Target("evaluate", "finetune.enabled",
           models=("finetune_base", "aesthetic_encoder", "aesthetic_head", "clip_scorer", "judge"),
           model_switches=(("clip_scorer", "evaluate.clip_score"), ("judge", "evaluate.judge.enabled"))),
)


def enabled_targets(config: Mapping[str, Any]) -> list[Target]:
    return [t for t in TARGETS if _holds(config, t.switch)]


def stage(name: str) -> Stage:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no stage {name!r} in finet2i.core.pipeline.STAGES ({', '.join(BY_NAME)})") from None


def _holds(config: Mapping[str, Any], switch: str) -> bool:
    """``"a.b"``: the config's boolean at a.b; ``"a.b=value"``: whether the config's a.b is ``value``. A key the
    config lacks (a config not validated, e.g. a test's) reads as the schema's default."""
    from finet2i.core.settings import lookup  # reads the schema (YAML) only when a key is missing

    key, test, want = switch.partition("=")
    value = lookup(config, key)
    return str(value) == want if test else bool(value)


def enabled(name: str, config: Mapping[str, Any]) -> bool:
    """Whether the config runs the stage. The curated branch also needs at least one source."""
    s = stage(name)
    switches = (s.switch,) if isinstance(s.switch, str) else s.switch or ()
    if not all(_holds(config, key) for key in switches):
        return False
    if s.branch == CURATED and not (config.get("curated") or {}).get("sources"):
        return False
    return True


def enabled_stages(config: Mapping[str, Any]) -> list[Stage]:
    return [s for s in STAGES if enabled(s.name, config)]


def upstream(name: str, config: Mapping[str, Any]) -> Stage | None:
    """The stage whose kept rows ``name`` reads under this config (None for a branch's first stage)."""
    me = stage(name)
    if me.reads is not None:
        return stage(me.reads)
    before = [s for s in STAGES[: STAGES.index(me)] if s.branch == me.branch and s.table]
    for s in reversed(before):
        if enabled(s.name, config):
            return s
    # A switched-off branch (no curated sources): its rules are still defined, never run; name their tables.
    return before[-1] if before else None


def table_path(name: str, shard: str, subset: str | None = None) -> str:
    """``results/<stage>/[<subset>/]<shard>.parquet``: the record table of one shard of a stage."""
    s = stage(name)
    if s.per_subset and subset is None:
        raise ValueError(f"stage {name} writes one table per subset; give the subset")
    return f"{s.results}/{subset}/{shard}.parquet" if s.per_subset else f"{s.results}/{shard}.parquet"


def stats_path(name: str, shard: str, subset: str | None = None) -> str:
    return table_path(name, shard, subset).removesuffix(".parquet") + ".stats.json"


def model_keys(config: Mapping[str, Any], targets: bool = True) -> list[str]:
    """The ``models`` keys that the enabled stages (then, with ``targets``, the enabled targets) load, in pipeline
    order, each once.

    A generator with weight 0 renders nothing and needs no weights; without the judge, pair_filter loads none.
    """
    from finet2i.core.settings import lookup

    keys: list[str] = []
    generators = (config.get("generate") or {}).get("generators") or {}
    judge_on = bool(lookup(config, "pair_filter.judge.enabled"))
    for s in enabled_stages(config):
        for key in s.models:
            if key in generators and float(generators[key]["weight"]) <= 0:
                continue
            if s.name == "pair_filter" and not judge_on:
                continue
            if key not in keys:
                keys.append(key)
    for t in enabled_targets(config) if targets else ():
        needed = dict(t.model_switches)
        for key in t.models:
            if key not in keys and (key not in needed or _holds(config, needed[key])):
                keys.append(key)
    return keys


def judged_images(config: Mapping[str, Any]) -> list[tuple[Stage, Stage]]:
    """(stage, the stage whose table holds its records' images) for every enabled stage that decides on records
    after their images exist and before they are packaged (the branch's last stage): the stages whose drops can
    be shown with their picture (the report's thumbnails)."""
    out: list[tuple[Stage, Stage]] = []
    for branch in (SYNTHETIC, CURATED):
        mine = [s for s in enabled_stages(config) if s.branch == branch and s.table]
        holders = [i for i, s in enumerate(mine) if s.images]
        if holders:
            out += [(s, mine[holders[0]]) for s in mine[holders[0] + 1:-1]]
    return out


def stage_order() -> tuple[str, ...]:
    """Stage names in pipeline order (the report's funnel order)."""
    return tuple(s.name for s in STAGES)
