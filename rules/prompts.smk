# 3.1.1: one controlled prompt per spec from an instruction LLM (Llama-3.1-8B-Instruct via vLLM), sampled at
# T=1.4 / top-p 0.8 with each spec's own seed; prompts under `prompts.min_words` words are dropped
# (too_short, empty_generation). The taxonomy is an input for its descriptions in the instruction.


rule prompts:
    input:
        table=upstream_table("prompts"),
        taxonomy=config["taxonomy"],
    output:
        table="results/prompts/{shard}.parquet",
        stats="results/prompts/{shard}.stats.json",
    log:
        "logs/prompts/{shard}.log",
    benchmark:
        "results/benchmarks/prompts/{shard}.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("prompts")
    resources:
        **resources_of("prompts"),
    params:
        settings=stage_settings("prompts"),
        tuning=tuning("prompts"),
        models=model_specs("prompt_generator"),
        code=script_code("workflow_scripts/prompts.py"),
    script:
        "../workflow_scripts/prompts.py"
