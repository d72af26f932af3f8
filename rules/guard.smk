# 3.1.3 "Guard": prompts over `guard.max_words` words are dropped first (too_long); Llama-Guard-3-8B judges
# the rest, a hazard code in `guard.blocked_categories` drops the prompt (unsafe, codes kept as evidence),
# and an answer that does not parse fails closed (guard_unparseable, raw answer kept).


rule guard:
    input:
        table=upstream_table("guard"),
    output:
        table="results/guard/{shard}.parquet",
        stats="results/guard/{shard}.stats.json",
    log:
        "logs/guard/{shard}.log",
    benchmark:
        "results/benchmarks/guard/{shard}.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("guard")
    resources:
        **resources_of("guard"),
    params:
        settings=guard_settings("guard"),
        tuning=tuning("guard"),
        models=model_specs("guard"),
        code=script_code("workflow_scripts/guard.py"),
    script:
        "../workflow_scripts/guard.py"


# gpu_jobs > 1 (docs/job-sizing.md): one GPU job guards several shards on one engine and caches each shard's
# result (reused while its input, params and code are unchanged); guard_publish puts each at the paths above.
rule guard_batch:
    input:
        tables=batch_tables("guard"),
    output:
        manifest="results/guard/batches/{batch}.json",
    log:
        "logs/guard_batch/{batch}.log",
    benchmark:
        "results/benchmarks/guard_batch/{batch}.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("guard")
    resources:
        **resources_of("guard", runtime=batch_runtime("guard")),
    params:
        shards=batch_shards("guard"),
        settings=guard_settings("guard"),
        tuning=tuning("guard"),
        models=model_specs("guard"),
        code=script_code("workflow_scripts/guard_batch.py"),
    script:
        "../workflow_scripts/guard_batch.py"


rule guard_publish:
    input:
        manifest=batch_manifest("guard"),
    output:
        table="results/guard/{shard}.parquet",
        stats="results/guard/{shard}.stats.json",
    log:
        "logs/guard_publish/{shard}.log",
    wildcard_constraints:
        shard=batched_shard("guard"),
    localrule: True
    run:
        publish_shard(
            input.manifest, wildcards.shard, output.table, output.stats, log=log[0]
        )


ruleorder: guard_publish > guard
