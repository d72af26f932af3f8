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
    """An input function: the record table(s) that `stage` reads for the job's shard, i.e. those of the enabled
    stage before it (finet2i.pipeline). An upstream stage with one table per subset gives the job's subset, or
    every subset's (in SUBSETS order) to a job without a subset wildcard (pair_filter).
    """

    def table(wildcards):
        up = pipeline.upstream(stage, config)
        shard = wildcards.get("shard") or wildcards.get("cshard")
        if up.per_subset and "subset" not in wildcards.keys():
            return [pipeline.table_path(up.name, shard, subset) for subset in SUBSETS]
        return pipeline.table_path(
            up.name, shard, wildcards.get("subset") if up.per_subset else None
        )

    table.__name__ = f"{stage}_upstream_table"
    return table


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
