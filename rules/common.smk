# Helpers shared by the rule files. Rule files hold rules; anything computed lives here.
# Nothing here touches the filesystem: the DAG is built from the config alone, so `snakemake -n` stays
# fast at 4,480 shards x 128 groups.

import os

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


def is_enabled(section):
    return bool(config[section].get("enabled", True))


def curated_enabled():
    return is_enabled("curated") and len(config["curated"]["sources"]) > 0


def prompts_for_enhance(wildcards):
    """Enhance reads the attribute verdicts, or the guard's when the attribute check is switched off."""
    if is_enabled("attributes"):
        return f"results/attributes/{wildcards.shard}.parquet"
    return f"results/guard/{wildcards.shard}.parquet"


def dataset_tars():
    tars = expand(
        "results/dataset/{subset}/train-{shard}.tar", subset=SUBSETS, shard=SHARDS
    )
    if curated_enabled():
        tars += expand("results/dataset/real/train-{cshard}.tar", cshard=CURATED_SHARDS)
    return tars


def final_outputs():
    return dataset_tars() + ["results/report/report.html"]


def synthetic_stats():
    stages = ["specs", "prompts", "embeddings", "dedup/keep", "guard"]
    stages += ["attributes"] if is_enabled("attributes") else []
    stages += ["enhanced"]
    stats = expand("results/{stage}/{shard}.stats.json", stage=stages, shard=SHARDS)
    stats += expand(
        "results/{stage}/{subset}/{shard}.stats.json",
        stage=["images", "pairs"],
        subset=SUBSETS,
        shard=SHARDS,
    )
    return stats


def curated_stats():
    if not curated_enabled():
        return []
    return expand(
        "results/curated/{stage}/{cshard}.stats.json",
        stage=["ingest", "score", "caption", "enhanced"],
        cshard=CURATED_SHARDS,
    )


def report_inputs(wildcards):
    """Named input lists of the report: small files only (stats JSONs, parquet indexes, one histogram)."""
    tars = dataset_tars()
    return {
        "stats": synthetic_stats()
        + curated_stats()
        + [t.replace(".tar", ".stats.json") for t in tars],
        "indexes": [t.replace(".tar", ".parquet") for t in tars],
        "similarity_histogram": ["results/dedup/similarity_histogram.json"],
    }
