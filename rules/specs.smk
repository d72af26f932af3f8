# 3.1.1: controlled prompt specs, sampled from the weighted taxonomy. Deterministic per (seed, shard): a
# changed taxonomy, seed or shard size reruns every shard; nothing else does.


rule specs:
    input:
        taxonomy=config["taxonomy"],
    output:
        table="results/specs/{shard}.parquet",
        stats="results/specs/{shard}.stats.json",
    log:
        "logs/specs/{shard}.log",
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("specs")
    resources:
        **resources_of("specs"),
    params:
        seed=config["seed"],
        n=config["shards"]["specs_per_shard"],
        code=script_code("workflow_scripts/specs.py"),
    script:
        "../workflow_scripts/specs.py"
