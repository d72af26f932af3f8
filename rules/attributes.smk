# 3.1.3 "Filtering based on attributes": a VLM (Qwen3-VL-8B-Instruct, text input only) judges whether each
# prompt that passed the guard matches its target style and category; a regex constraint shapes the
# verdict, a mismatch or an unreadable verdict drops the prompt. `attributes.enabled: false` skips the stage
# (the next stage then reads the guard's table: finet2i.core.pipeline.upstream).


rule attributes:
    input:
        table=upstream_table("attributes"),
    output:
        table="results/attributes/{shard}.parquet",
        stats="results/attributes/{shard}.stats.json",
    log:
        "logs/attributes/{shard}.log",
    benchmark:
        "results/benchmarks/attributes/{shard}.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("attributes")
    resources:
        **resources_of("attributes"),
    params:
        settings=stage_settings("attributes"),
        tuning=tuning("attributes"),
        models=model_specs("verifier"),
        code=script_code("workflow_scripts/attributes.py"),
    script:
        "../workflow_scripts/attributes.py"
