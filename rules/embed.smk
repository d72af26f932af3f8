# 3.1.2: all-MiniLM-L6-v2 embeddings of each shard's kept prompts (float16 + ids). A changed model or
# embed setting reruns every shard; the stage reuses a content-addressed cache when the prompts are unchanged.


rule embed:
    input:
        table=upstream_table("embed"),
    output:
        vectors="results/embed/{shard}.npz",
        stats="results/embed/{shard}.stats.json",
    log:
        "logs/embed/{shard}.log",
    benchmark:
        "results/benchmarks/embed/{shard}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=30,
    params:
        settings=output_settings(config, "embed"),
        model=config["models"]["embedder"],
        code=script_code("workflow_scripts/embed.py"),
    script:
        "../workflow_scripts/embed.py"
