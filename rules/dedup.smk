# 3.1.2: semantic dedup, exact (no kept pair above dedup.threshold), as fixed-count file-level jobs:
# centroids (1) -> assign (per shard) -> manifest (1) -> group (per group) -> cross (1) -> dedup (per shard).
# A group job reads only its slice of each shard's group-sorted vectors (memory-mapped), so no job holds all
# vectors. See finet2i.stages.dedup's docstring for the keep rule and README "Dedup memory plan" for sizes at production.


rule dedup_centroids:
    input:
        vectors=expand("results/embed/{shard}.npz", shard=SHARDS),
    output:
        centroids="results/dedup/centroids.npy",
        histogram="results/dedup/similarity_histogram.json",
    log:
        "logs/dedup_centroids/all.log",
    benchmark:
        "results/benchmarks/dedup_centroids/all.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("dedup_centroids")
    resources:
        **resources_of("dedup_centroids"),
    params:
        settings=stage_settings("dedup"),
        tuning=tuning("dedup"),
        seed=config["seed"],
        code=script_code("workflow_scripts/dedup_centroids.py"),
    script:
        "../workflow_scripts/dedup_centroids.py"


rule dedup_assign:
    input:
        vectors="results/embed/{shard}.npz",
        centroids="results/dedup/centroids.npy",
    output:
        vectors="results/dedup/assign/{shard}.npy",
        index="results/dedup/assign/{shard}.npz",
    log:
        "logs/dedup_assign/{shard}.log",
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("dedup_assign")
    resources:
        **resources_of("dedup_assign"),
    params:
        settings=stage_settings("dedup"),
        tuning=tuning("dedup"),
        seed=config["seed"],
        code=script_code("workflow_scripts/dedup_assign.py"),
    script:
        "../workflow_scripts/dedup_assign.py"


# One small file listing every shard's assign outputs, so that the 128 group jobs and the cross job each
# depend on one file instead of 2 x 1,120 (that fan-in was most of `snakemake -n`'s time and memory at
# production size: 290,000 input files to match, stat and print). It reruns whenever any assign file is
# newer than it, and so do the group and cross jobs after it: a changed shard still reruns all of dedup.


rule dedup_manifest:
    input:
        index=expand("results/dedup/assign/{shard}.npz", shard=SHARDS),
        vectors=expand("results/dedup/assign/{shard}.npy", shard=SHARDS),
    output:
        manifest="results/dedup/assign_manifest.json",
    log:
        "logs/dedup_manifest/all.log",
    localrule: True
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("dedup_manifest")
    resources:
        **resources_of("dedup_manifest"),
    script:
        "../workflow_scripts/dedup_manifest.py"


rule dedup_group:
    input:
        manifest="results/dedup/assign_manifest.json",
    output:
        group="results/dedup/group/{group}.npz",
    log:
        "logs/dedup_group/{group}.log",
    benchmark:
        "results/benchmarks/dedup_group/{group}.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("dedup_group")
    resources:
        **resources_of("dedup_group"),
    params:
        settings=stage_settings("dedup"),
        tuning=tuning("dedup"),
        seed=config["seed"],
        code=script_code("workflow_scripts/dedup_group.py"),
    script:
        "../workflow_scripts/dedup_group.py"


rule dedup_cross:
    input:
        groups=expand("results/dedup/group/{group}.npz", group=GROUPS),
        manifest="results/dedup/assign_manifest.json",
    output:
        verdicts="results/dedup/verdicts.npy",
        kept_ids="results/dedup/kept_ids.npy",
        stats="results/dedup/cross.stats.json",
    log:
        "logs/dedup_cross/all.log",
    benchmark:
        "results/benchmarks/dedup_cross/all.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("dedup_cross")
    resources:
        **resources_of("dedup_cross"),
    params:
        settings=stage_settings("dedup"),
        tuning=tuning("dedup"),
        seed=config["seed"],
        code=script_code("workflow_scripts/dedup_cross.py"),
    script:
        "../workflow_scripts/dedup_cross.py"


# The stage's per-shard output: every prompt of the shard with its verdict (rule name = stage name = folder).


rule dedup:
    input:
        table=upstream_table("dedup"),
        vectors="results/embed/{shard}.npz",
        index="results/dedup/assign/{shard}.npz",
        verdicts="results/dedup/verdicts.npy",
        kept_ids="results/dedup/kept_ids.npy",
    output:
        table="results/dedup/{shard}.parquet",
        stats="results/dedup/{shard}.stats.json",
    log:
        "logs/dedup/{shard}.log",
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("dedup")
    resources:
        **resources_of("dedup"),
    params:
        settings=stage_settings("dedup"),
        tuning=tuning("dedup"),
        seed=config["seed"],
        code=script_code("workflow_scripts/dedup.py"),
    script:
        "../workflow_scripts/dedup.py"
