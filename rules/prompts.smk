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
        "../envs/llm.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=240,
    params:
        settings=output_settings(config, "prompts"),
        model=config["models"]["prompt_generator"],
        code=script_code("workflow_scripts/prompts.py"),
    script:
        "../workflow_scripts/prompts.py"
