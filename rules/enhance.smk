# 3.1.4: every prompt that passed the filters is rewritten by PromptEnhancer-7B (think block + answer tags);
# the answer is extracted, and a missing or cut-off answer falls back to the original prompt
# (enhance_fallback, enhance_note). Never drops a record.


rule enhance:
    input:
        table=upstream_table("enhance"),
    output:
        table="results/enhance/{shard}.parquet",
        stats="results/enhance/{shard}.stats.json",
    log:
        "logs/enhance/{shard}.log",
    benchmark:
        "results/benchmarks/enhance/{shard}.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("enhance")
    resources:
        **resources_of("enhance"),
    params:
        settings=stage_settings("enhance"),
        tuning=tuning("enhance"),
        models=model_specs("enhancer"),
        code=script_code("workflow_scripts/enhance.py"),
    script:
        "../workflow_scripts/enhance.py"
