# Helpers shared by the rule files. Rule files hold rules; anything computed lives here.
# Nothing here touches the filesystem: the DAG is built from the config alone, so `snakemake -n` stays
# fast at 4,480 shards x 128 groups. The pipeline's shape (stages, order, what each reads, what the config
# switches off) is declared once, in finet2i.pipeline; the input functions below read it.

import os

from finet2i import pipeline
from finet2i.codehash import script_fingerprint
from finet2i.config import output_settings

SHARDS = [f"{i:05d}" for i in range(config["shards"]["count"])]
CURATED_SHARDS = [f"{i:05d}" for i in range(config["curated"]["shards"])]
SUBSETS = list(config["generate"]["subsets"])
GROUPS = [f"{g:03d}" for g in range(config["dedup"]["groups"])]


wildcard_constraints:
    shard=r"\d{5}",
    cshard=r"\d{5}",
    group=r"\d{3}",
    subset="|".join(SUBSETS + ["real"]),


def script_code(script):
    """A params value that changes when the package code the rule's script runs changes (finet2i.codehash):
    Snakemake tracks the script file itself; an edited stage module reruns the stage, an edited comment or
    docstring does not."""
    return script_fingerprint(os.path.join(workflow.basedir, script))


def is_enabled(stage):
    return pipeline.enabled(stage, config)


def upstream_table(stage):
    """The input pattern of the record table(s) that `stage` reads: those of the enabled stage before it
    (finet2i.pipeline), decided once at parse time (a plain pattern plans faster than an input function).
    An upstream stage with one table per subset gives the job's {subset}, or every subset's table (in SUBSETS
    order) to a stage that judges all subsets in one job (pair_filter)."""
    me, up = pipeline.stage(stage), pipeline.upstream(stage, config)
    shard = "{cshard}" if up.branch == pipeline.CURATED else "{shard}"
    if not up.per_subset:
        return pipeline.table_path(up.name, shard)
    if me.all_subsets_in_one_job:
        return [pipeline.table_path(up.name, shard, subset) for subset in SUBSETS]
    return pipeline.table_path(up.name, shard, "{subset}")


def dataset_tars():
    tars = expand(
        "results/dataset/{subset}/train-{shard}.tar", subset=SUBSETS, shard=SHARDS
    )
    if is_enabled("package_real"):
        tars += expand("results/dataset/real/train-{cshard}.tar", cshard=CURATED_SHARDS)
    return tars


def final_outputs():
    return dataset_tars() + ["results/report/report.html"]


def stage_stats():
    """The stats JSON of every shard of every enabled stage before packaging (dataset_tars has those)."""
    stats = []
    for stage in pipeline.enabled_stages(config):
        if stage.folder == "dataset":
            continue
        shards = CURATED_SHARDS if stage.branch == pipeline.CURATED else SHARDS
        subsets = SUBSETS if stage.per_subset else [None]
        stats += [
            pipeline.stats_path(stage.name, s, sub) for sub in subsets for s in shards
        ]
    return stats


def report_inputs(wildcards):
    """Named input lists of the report: small files only (stats JSONs, parquet indexes, one histogram)."""
    tars = dataset_tars()
    return {
        "stats": stage_stats() + [t.replace(".tar", ".stats.json") for t in tars],
        "indexes": [t.replace(".tar", ".parquet") for t in tars],
        "similarity_histogram": ["results/dedup/similarity_histogram.json"],
    }
