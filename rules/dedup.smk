# 3.1.2: semantic dedup, exact (no kept pair above dedup.threshold), as fixed-count file-level jobs:
# centroids (1) -> assign (per shard) -> group (per group) -> cross (1) -> keep (per shard).
# A group job reads only its slice of each shard's group-sorted vectors (memory-mapped), so no job holds all
# vectors. See finet2i.dedup for the keep rule and README "Dedup memory plan" for sizes at production.


rule dedup_centroids:
    input:
        vectors=expand("results/embeddings/{shard}.npz", shard=SHARDS),
    output:
        centroids="results/dedup/centroids.npy",
        histogram="results/dedup/similarity_histogram.json",
    log:
        "logs/dedup_centroids/all.log",
    benchmark:
        "results/benchmarks/dedup_centroids/all.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        settings=config["dedup"],
        seed=config["seed"],
    script:
        "../workflow_scripts/dedup_centroids.py"


rule dedup_assign:
    input:
        vectors="results/embeddings/{shard}.npz",
        centroids="results/dedup/centroids.npy",
    output:
        vectors="results/dedup/assign/{shard}.npy",
        index="results/dedup/assign/{shard}.npz",
    log:
        "logs/dedup_assign/{shard}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=config["dedup"],
        seed=config["seed"],
    script:
        "../workflow_scripts/dedup_assign.py"


rule dedup_group:
    input:
        index=expand("results/dedup/assign/{shard}.npz", shard=SHARDS),
        vectors=expand("results/dedup/assign/{shard}.npy", shard=SHARDS),
    output:
        group="results/dedup/group/{group}.npz",
    log:
        "logs/dedup_group/{group}.log",
    benchmark:
        "results/benchmarks/dedup_group/{group}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    params:
        settings=config["dedup"],
        seed=config["seed"],
    script:
        "../workflow_scripts/dedup_group.py"


rule dedup_cross:
    input:
        groups=expand("results/dedup/group/{group}.npz", group=GROUPS),
        index=expand("results/dedup/assign/{shard}.npz", shard=SHARDS),
        vectors=expand("results/dedup/assign/{shard}.npy", shard=SHARDS),
    output:
        verdicts="results/dedup/verdicts.npy",
        kept_ids="results/dedup/kept_ids.npy",
        stats="results/dedup/cross.stats.json",
    log:
        "logs/dedup_cross/all.log",
    benchmark:
        "results/benchmarks/dedup_cross/all.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 8
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=240,
    params:
        settings=config["dedup"],
        seed=config["seed"],
    script:
        "../workflow_scripts/dedup_cross.py"


rule dedup_keep:
    input:
        table="results/prompts/{shard}.parquet",
        vectors="results/embeddings/{shard}.npz",
        index="results/dedup/assign/{shard}.npz",
        verdicts="results/dedup/verdicts.npy",
        kept_ids="results/dedup/kept_ids.npy",
    output:
        table="results/dedup/keep/{shard}.parquet",
        stats="results/dedup/keep/{shard}.stats.json",
    log:
        "logs/dedup_keep/{shard}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=config["dedup"],
        seed=config["seed"],
    script:
        "../workflow_scripts/dedup_keep.py"
