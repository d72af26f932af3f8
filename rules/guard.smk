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
