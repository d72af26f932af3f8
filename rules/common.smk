# Helpers shared by the rule files. Rule files hold rules; anything computed lives here.
# Nothing here touches the filesystem: the DAG is built from the config alone, so `snakemake -n` stays
# fast at 4,480 shards x 128 groups. The pipeline's shape (stages, order, what each reads, what the config
# switches off) is declared once, in finet2i.core.pipeline; the input functions below read it.

import os

import yaml

from finet2i.core import batching, pipeline
from finet2i.core.batching import publish_shard
from finet2i.core.codehash import script_fingerprint
from finet2i.release import layout as release
from finet2i.sources import is_listed, listed_name, manifest_path
from finet2i.workflow.config import source_path
from finet2i.workflow.params import (
    RunOnly,
    card_models as _card_models,
    internal_subsets as _internal_subsets,
    output_settings,
    report_settings,
    runtime_settings,
)

SHARDS = [f"{i:05d}" for i in range(config["shards"]["count"])]
CURATED_SHARDS = [f"{i:05d}" for i in range(config["curated"]["shards"])]
SUBSETS = list(config["generate"]["subsets"])
GROUPS = [f"{g:03d}" for g in range(config["dedup"]["groups"])]
# Sources that curated_list turns into manifests first (Unsplash Lite, Pexels, Pixabay), by name.
LISTED = {listed_name(s): s for s in config["curated"]["sources"] if is_listed(s)}
# Keys of a listed source that set how its listing runs (pace, patience, bounds), never what it lists; and its
# terms (finet2i.sources.terms), which decide whether it may run at all and what the release does with its
# photos (package_real's `rights`), not what the listing writes: stating them re-lists and re-downloads nothing.
LISTING_RUNTIME_KEYS = (
    "timeout_s",
    "retries",
    "backoff_s",
    "max_wait_s",
    "rate_limit",
    "deadline_s",
    "max_answer_bytes",
    "terms",
)


wildcard_constraints:
    shard=r"\d{5}",
    cshard=r"\d{5}",
    group=r"\d{3}",
    subset="|".join(SUBSETS + ["real", release.INTERNAL]),
    source="|".join(LISTED) or "no-listed-source",
    batch=r"\d{5}",


# What each rule's job needs (threads, GPUs, memory, runtime), stated once in rules/resources.yaml.
with open(os.path.join(workflow.basedir, "rules", "resources.yaml")) as _f:
    NEEDS = yaml.safe_load(_f)


def threads_of(rule):
    return NEEDS["rules"][rule]["threads"]


def resources_of(rule, runtime=None):
    """The rule's `resources:` from rules/resources.yaml: GPUs, runtime, and memory that grows with each retry
    (attempt x the first attempt's), capped at the largest node of its kind."""
    need = NEEDS["rules"][rule]
    base, cap = need["mem_mb"], NEEDS["max_mem_mb"]["gpu" if need.get("gpu") else "cpu"]
    out = {
        "mem_mb": lambda wildcards, attempt: min(base * attempt, cap),
        "runtime": runtime or need["runtime"],
    }
    if need.get("gpu"):
        out["gpu"] = need["gpu"]
    return out


def stage_settings(section, without=()):
    """A rule's `settings` param: the config section as far as it decides the rule's outputs (a change reruns)."""
    return output_settings(config, section, without)


def tuning(section, keys=()):
    """A rule's `tuning` param: the section's keys that only set how the job runs (chunk and batch sizes, plus
    `keys`); passed beside `settings` without being a rerun trigger (finet2i.workflow.params).
    """
    node = config
    for part in section.split("."):
        node = node[part]
    return RunOnly(
        {**runtime_settings(config, section), **{k: node[k] for k in keys if k in node}}
    )


def model_specs(*keys):
    """A rule's `models` param: the config entries of the models its script loads."""
    return {key: config["models"][key] for key in keys}


def guard_settings(stage):
    """The guard's settings as `stage` applies them: the guard section with the stage's own word limit
    (guard.max_words for the original prompts; <stage>.max_words, 0 = none, for model-written text).
    """
    return {
        **stage_settings("guard", without=("max_words",)),
        "max_words": config[stage]["max_words"],
    }


def script_code(script):
    """A params value that changes when the package code the rule's script runs changes (finet2i.core.codehash):
    Snakemake tracks the script file itself; an edited stage module reruns the stage, an edited comment or
    docstring does not."""
    return script_fingerprint(os.path.join(workflow.basedir, script))


def is_enabled(stage):
    return pipeline.enabled(stage, config)


def upstream_table(stage):
    """The input pattern of the record table(s) that `stage` reads: those of the enabled stage before it
    (finet2i.core.pipeline), decided once at parse time (a plain pattern plans faster than an input function).
    An upstream stage with one table per subset gives the job's {subset}, or every subset's table (in SUBSETS
    order) to a stage that judges all subsets in one job (pair_filter)."""
    me, up = pipeline.stage(stage), pipeline.upstream(stage, config)
    shard = "{cshard}" if up.branch == pipeline.CURATED else "{shard}"
    if not up.per_subset:
        return pipeline.table_path(up.name, shard)
    if me.all_subsets_in_one_job:
        return [pipeline.table_path(up.name, shard, subset) for subset in SUBSETS]
    return pipeline.table_path(up.name, shard, "{subset}")


def package_settings():
    """The package section as the package rules see it: samples_per_tar only cuts tars (assemble), so changing
    it reassembles without finishing every sample again."""
    return stage_settings("package", without=("samples_per_tar",))


# curated_ingest's keys: those that decide what a kept photo becomes, and those that only set how patiently and
# from where it downloads (its `tuning`: not a rerun trigger).
INGEST_OUTPUT = ("max_pixels", "min_side", "max_bytes", "jpeg_quality")
INGEST_PATIENCE = (
    "timeout_s",
    "deadline_s",
    "retries",
    "backoff_s",
    "allow_private_addresses",
)


def ingest_settings():
    return {key: config["curated"][key] for key in INGEST_OUTPUT}


def packaged_subsets():
    """Pipeline subset codes that reach the dataset, in release order: the synthetic ones, then real."""
    return SUBSETS + (["real"] if is_enabled("package_real") else [])


def package_tables(subset):
    """Every finished-sample table of one subset (the package or package_real outputs)."""
    if subset in ("real", release.INTERNAL):
        return [pipeline.table_path("package_real", s) for s in CURATED_SHARDS]
    return [pipeline.table_path("package", s, subset) for s in SHARDS]


def assemble_inputs(wildcards):
    """The finished-sample tables, and for the real subsets their shards' credits (gathered per subset)."""
    out = {"tables": package_tables(wildcards.subset)}
    if wildcards.subset in ("real", release.INTERNAL):
        out["credits"] = [
            f"results/package_real/{s}.credits.jsonl" for s in CURATED_SHARDS
        ]
    return out


def assemble_manifests():
    """The shareable dataset's subsets (what the dataset card describes)."""
    return [f"results/assemble/{subset}.json" for subset in packaged_subsets()]


def final_outputs():
    return (
        assemble_manifests()
        + [f"results/assemble/{subset}.json" for subset in internal_subsets()]
        + [
            "results/report/report.html",
            "results/dataset/README.md",
        ]
    )


def stage_stats():
    """The stats JSON of every shard of every enabled stage."""
    stats = []
    for stage in pipeline.enabled_stages(config):
        shards = CURATED_SHARDS if stage.branch == pipeline.CURATED else SHARDS
        subsets = SUBSETS if stage.per_subset else [None]
        stats += [
            pipeline.stats_path(stage.name, s, sub) for sub in subsets for s in shards
        ]
    return stats


def report_inputs(wildcards):
    """Named input lists of the report: small files, or the small columns of the finished-sample tables."""
    return {
        "stats": stage_stats(),
        "indexes": [t for subset in packaged_subsets() for t in package_tables(subset)],
        "similarity_histogram": ["results/dedup/similarity_histogram.json"],
    }


def ingest_sources():
    """curated.sources as curated_ingest's params: without the terms (they decide where a photo ships, in
    package_real, not what ingest downloads)."""
    return [
        {k: v for k, v in s.items() if k != "terms"} if isinstance(s, dict) else s
        for s in config["curated"]["sources"]
    ]


def source_rights():
    """package_real's `rights` param: per source name, the license and redistribution status its samples carry
    (finet2i.sources.terms), and where non-redistributable ones go (curated.non_redistributable).
    """
    from finet2i.sources.terms import rights_by_name

    return rights_by_name(config["curated"]["sources"])


def internal_subsets():
    """The subset of photos that may not be redistributed (finet2i.workflow.params.internal_subsets), if any."""
    return _internal_subsets(config)


def card_models():
    """The dataset card's `models` param: each used model, what it wrote and the terms on its outputs."""
    return _card_models(config)


def dataset_dir(wildcards):
    return release.dataset_dir(wildcards.subset)


def curated_inputs():
    """What curated_ingest reads: each folder or URL list, and each listed source's manifest."""
    return [
        manifest_path(listed_name(s)) if is_listed(s) else source_path(s)
        for s in config["curated"]["sources"]
    ]


def listing_input(wildcards):
    """The Unsplash Lite table a listing reads (a rerun follows a new release of it); nothing for an API."""
    entry = LISTED[wildcards.source]
    return [entry["path"]] if entry.get("path") else []


def listed_entry(wildcards):
    """The listed source's entry without the keys that only pace the listing: what its manifest depends on."""
    return {
        k: v
        for k, v in LISTED[wildcards.source].items()
        if k not in LISTING_RUNTIME_KEYS
    }


def listed_pacing(wildcards):
    """The keys that only pace the listing (a `tuning` param: changing them reruns nothing)."""
    return RunOnly(
        {k: v for k, v in LISTED[wildcards.source].items() if k in LISTING_RUNTIME_KEYS}
    )


# Several shards per GPU job (gpu_jobs; docs/job-sizing.md, finet2i.core.batching). A batched stage runs as
# <stage>_batch (GPU, one job per batch, writes each shard's result into results/<stage>/.batched/) and
# <stage>_publish (local, one job per shard: the cached result at results/<stage>/{shard}.*, byte for byte).
# Unbatched, those two rules match nothing and <stage> runs one GPU job per shard as before.
BATCHES = {
    stage: batching.batches(SHARDS, batching.shards_per_job(config, stage))
    for stage in batching.BATCHABLE
}


def batched_shard(stage):
    """The {shard} constraint of <stage>_publish: any shard when the stage is batched, none otherwise."""
    return r"\d{5}" if batching.is_batched(config, stage) else "(?!x)x"


def batch_tables(stage):
    """Input function of <stage>_batch: the upstream tables of the batch's shards, in shard order."""
    pattern = upstream_table(stage)

    def tables(wildcards):
        return [pattern.format(shard=s) for s in BATCHES[stage][int(wildcards.batch)]]

    return tables


def batch_shards(stage):
    """Params function of <stage>_batch: the batch's shard ids (the order of its input tables)."""

    def shard_ids(wildcards):
        return BATCHES[stage][int(wildcards.batch)]

    return shard_ids


def batch_manifest(stage):
    """Input function of <stage>_publish: the manifest of the batch that holds the shard (shard ids are their
    index, rules/common.smk's SHARDS)."""
    per_job = batching.shards_per_job(config, stage)

    def manifest(wildcards):
        return f"results/{stage}/batches/{int(wildcards.shard) // per_job:05d}.json"

    return manifest


def batch_runtime(stage):
    """A batch job's runtime request: the stage's per-shard request times its shards, at most 24 h (a cluster
    with a shorter limit lowers gpu_jobs; preflight says which rule does not fit)."""
    return min(
        NEEDS["rules"][stage]["runtime"] * batching.shards_per_job(config, stage), 1440
    )
