# Helpers shared by the rule files. Rule files hold rules; anything computed lives here.
# Nothing here touches the filesystem (but for one file's existence: the human votes, see VOTES): the DAG is
# built from the config alone, so `snakemake -n` stays fast at 4,480 shards x 128 groups. The pipeline's shape (stages, order, what each reads, what the config
# switches off) is declared once, in finet2i.core.pipeline; the input functions below read it.

import os

import yaml
from snakemake.io import is_flagged

from finet2i.core import batching, pipeline
from finet2i.core.batching import publish_unit
from finet2i.core.codehash import script_fingerprint, source_digest
from finet2i.finetune.settings import FINETUNE_TUNING
from finet2i.release import layout as release
from finet2i.sources import is_listed, listed_name, manifest_path
from finet2i.workflow.config import check_available, source_path
from finet2i.workflow.params import (
    RunOnly,
    card_models as _card_models,
    internal_subsets as _internal_subsets,
    output_settings,
    report_settings,
    runtime_settings,
)

def check_before_the_first_job():
    """Models, curated sources and their terms, checked when a run starts (the Snakefile's onstart and the demo's),
    after planning and before the first job; an error names the config file that set the key."""
    check_available(config, base_dir=".", files=CONFIG_FILES)


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
    """A rule's `models` param: the config entries of the models its script loads (None for an optional model
    the config does not name: finetune and evaluate exist in every run, and fail with the key's name if asked
    for without it; with finetune.enabled the config check names it first)."""
    return {key: config["models"].get(key) for key in keys}


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


# Disk (docs/disk.md): unless pair_filter.keep_dropped_images, a generate table (every chosen image, kept or not)
# is temp(): Snakemake deletes it once its shard's pair_filter job has cut the kept pairs' images out of it.
KEEP_DROPPED_IMAGES = config["pair_filter"]["keep_dropped_images"]


def unless_images_kept(pattern):
    """A generate table's pattern: temp() unless pair_filter.keep_dropped_images."""
    return pattern if KEEP_DROPPED_IMAGES else temp(pattern)


def kept_images_outputs():
    """pair_filter's extra outputs: the kept pairs' images per subset (none while the generate tables are kept)."""
    if KEEP_DROPPED_IMAGES:
        return {}
    return {
        "images": expand(
            "results/pair_filter/{subset}/{{shard}}.images.parquet", subset=SUBSETS
        )
    }


def images_table(subset, shard):
    """The table that holds a synthetic sample's image bytes once its pair is filtered: the package tables refer
    to it instead of copying the bytes (the release tars are cut from it)."""
    if KEEP_DROPPED_IMAGES:
        return f"results/generate/{subset}/{shard}.parquet"
    return f"results/pair_filter/{subset}/{shard}.images.parquet"


def package_images(wildcards):
    return images_table(wildcards.subset, wildcards.shard)


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


def assemble_images(wildcards):
    """The tables the finished samples of a subset refer to for their image bytes (package, package_real)."""
    if wildcards.subset in ("real", release.INTERNAL):
        return [f"results/curated_ingest/{s}.parquet" for s in CURATED_SHARDS]
    return [images_table(wildcards.subset, s) for s in SHARDS]


def assemble_manifests():
    """The shareable dataset's subsets (what the dataset card describes)."""
    return [f"results/assemble/{subset}.json" for subset in packaged_subsets()]


def finetune_outputs():
    """What finetune.enabled adds to the run: the adapter and the evaluation (the report shows them)."""
    if not any(t.name == "evaluate" for t in pipeline.enabled_targets(config)):
        return []
    return [
        "results/finetune/finetune.json",
        "results/evaluate/metrics.json",
        "results/evaluate/pairs.parquet",
    ]


def final_outputs():
    return (
        assemble_manifests()
        + [f"results/assemble/{subset}.json" for subset in internal_subsets()]
        + [
            "results/report/report.html",
            "results/dataset/README.md",
        ]
        + finetune_outputs()
    )


# People's votes on the evaluation (`finet2i explore`'s /vote page): appended by the explorer, never by a rule, so
# no rule declares it; the report reads it when it exists, and a new vote reruns the report (its mtime).
VOTES = "results/human_votes/votes.jsonl"


def evaluate_inputs(wildcards):
    """The adapter, and the prompt file when the config names one (PartiPrompts ships in the package)."""
    prompts = config["evaluate"]["prompts"]
    return {
        "adapter": "results/finetune/adapter",
        "finetune": "results/finetune/finetune.json",
        "prompts": [prompts] if prompts else [],
    }


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
    """Named input lists of the report: small files, or the small columns of the finished-sample tables; for
    the pictures of dropped records, the first shard's tables of the stages that judge images (the report reads
    a few rows of each: finet2i.reporting.thumbnails)."""
    dropped, images = [], []
    for judge, holder in pipeline.judged_images(config):
        if holder.name == "generate" and not KEEP_DROPPED_IMAGES:
            # The generate tables are temp(): as the report's input, a report rerun would render shard 1 again.
            continue
        first = (CURATED_SHARDS if judge.branch == pipeline.CURATED else SHARDS)[0]
        for subset in SUBSETS if judge.per_subset else [None]:
            dropped.append(pipeline.table_path(judge.name, first, subset))
            images.append(pipeline.table_path(holder.name, first, subset))
    evaluation = finetune_outputs()
    return {
        "stats": stage_stats(),
        "indexes": [t for subset in packaged_subsets() for t in package_tables(subset)],
        "similarity_histogram": ["results/dedup/similarity_histogram.json"],
        "dropped": dropped,
        "dropped_images": images,
        "evaluation": evaluation,
        # the one input decided by a file's existence: votes come from people, whenever they come
        "votes": [VOTES] if evaluation and os.path.exists(VOTES) else [],
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


# Several shards per GPU job (gpu_jobs; docs/job-sizing.md, finet2i.core.batching). rules/batching.smk derives,
# for every stage that opts in (pipeline.STAGES: batchable), <stage>_batch (GPU, one job per batch of shards, per
# subset for generate: each unit's result into results/<stage>/.batched/) and <stage>_publish (local, one job
# per unit: the cached result at the stage's declared paths, byte for byte) from the stage's own rule: its
# inputs, outputs and params. Unbatched, those two rules match nothing and <stage> runs one job per shard.
def stage_shards(stage):
    return (
        CURATED_SHARDS if pipeline.stage(stage).branch == pipeline.CURATED else SHARDS
    )


def shard_wildcard(stage):
    return "cshard" if pipeline.stage(stage).branch == pipeline.CURATED else "shard"


def per_subset_jobs(stage):
    """Whether the stage runs one job per (subset, shard): its batches are per subset too."""
    s = pipeline.stage(stage)
    return s.per_subset and not s.all_subsets_in_one_job


BATCHES = {
    stage: batching.batches(stage_shards(stage), batching.shards_per_job(config, stage))
    for stage in batching.BATCHABLE
}


def unit_pattern(stage, part):
    """The path part that names one batch ({batch}) or one unit ({shard}/{cshard}), with its subset."""
    return ("{subset}/" if per_subset_jobs(stage) else "") + part


def unit_log(stage, rule):
    """logs/<rule>/[{subset}/]{shard}.log (or {cshard}): one log per unit."""
    return f"logs/{rule}/{unit_pattern(stage, '{%s}' % shard_wildcard(stage))}.log"


def batch_manifest(stage):
    return f"results/{stage}/batches/{unit_pattern(stage, '{batch}')}.json"


def shard_rule(stage):
    """The stage's own (per-shard) rule as Snakemake parsed it."""
    return getattr(rules, stage)


def shard_outputs_are_temp(stage):
    return any(is_flagged(f, "temp") for f in workflow.get_rule(stage).output)


def batched_shard(stage):
    """The shard constraint of <stage>_publish: any shard when the stage is batched, none otherwise."""
    return r"\d{5}" if batching.is_batched(config, stage) else "(?!x)x"


def _format(files, wildcards):
    """Patterns filled in, as plain strings: a Snakemake IOFile carries its rule, which does not pickle."""
    return {
        name: (
            [str(f).format(**wildcards) for f in value]
            if isinstance(value, list)
            else str(value).format(**wildcards)
        )
        for name, value in files.items()
    }


def _unit_wildcards(stage, wildcards, shard):
    out = {shard_wildcard(stage): shard}
    if per_subset_jobs(stage):
        out["subset"] = wildcards.subset
    return out


def batch_units(stage):
    """Params function of <stage>_batch: per unit of the batch, its wildcards, inputs and declared outputs (the
    stage rule's patterns, filled in)."""
    inputs, outputs = dict(shard_rule(stage).input.items()), dict(
        shard_rule(stage).output.items()
    )
    bad = [n for n, v in inputs.items() if callable(v)]
    if bad:
        raise ValueError(
            f"{stage}'s rule has input {bad} as a function; a batchable stage's inputs are patterns"
        )

    def units(wildcards):
        out = []
        for shard in BATCHES[stage][int(wildcards.batch)]:
            wc = _unit_wildcards(stage, wildcards, shard)
            unit = f"{wc['subset']}/{shard}" if "subset" in wc else shard
            out.append(
                {
                    "unit": unit,
                    "wildcards": wc,
                    "input": _format(inputs, wc),
                    "output": _format(outputs, wc),
                }
            )
        return out

    return units


def batch_inputs(stage):
    """Input function of <stage>_batch: every file its units read, each once."""
    units = batch_units(stage)

    def files(wildcards):
        seen = {}
        for u in units(wildcards):
            for value in u["input"].values():
                for f in value if isinstance(value, list) else [value]:
                    seen[f] = None
        return list(seen)

    return files


def shard_rule_params(stage):
    """<stage>_batch's params: the stage rule's (settings, models, code...), the same rerun triggers."""
    return dict(shard_rule(stage).params.items())


def script_source(stage):
    """The stage script's tokens: Snakemake's code trigger sees the batch script, not the script it loads."""
    return source_digest(
        os.path.join(workflow.basedir, "workflow_scripts", f"{stage}.py")
    )


def batch_runtime(stage):
    """A batch job's runtime request: the stage's per-shard request times its shards, at most 24 h (a cluster
    with a shorter limit lowers gpu_jobs; preflight says which rule does not fit)."""
    return min(
        NEEDS["rules"][stage]["runtime"] * batching.shards_per_job(config, stage), 1440
    )


def publish_outputs(stage):
    """<stage>_publish's outputs: the stage rule's named outputs (temp() kept)."""
    temp_ = shard_outputs_are_temp(stage)
    out = {}
    for name, value in shard_rule(stage).output.items():
        files = value if isinstance(value, list) else [value]
        files = [temp(f) if temp_ else f for f in files]
        out[name] = files if isinstance(value, list) else files[0]
    return out


def publish_manifest(stage):
    """Input function of <stage>_publish: the manifest of the batch that holds the unit's shard."""
    per_job = batching.shards_per_job(config, stage)
    position = {s: i for i, s in enumerate(stage_shards(stage))}

    def manifest(wildcards):
        batch = f"{position[getattr(wildcards, shard_wildcard(stage))] // per_job:05d}"
        return batch_manifest(stage).format(batch=batch, subset=wildcards.get("subset"))

    return manifest


def publish_unit_id(stage):
    """Params function of <stage>_publish: the unit it publishes (its manifest's key)."""

    def unit(wildcards):
        shard = getattr(wildcards, shard_wildcard(stage))
        return f"{wildcards.subset}/{shard}" if per_subset_jobs(stage) else shard

    return unit
