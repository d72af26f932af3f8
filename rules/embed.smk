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
        "../envs/finet2i.yaml"
    threads: threads_of("embed")
    resources:
        **resources_of("embed"),
    params:
        settings=stage_settings("embed"),
        tuning=tuning("embed"),
        models=model_specs("embedder"),
        code=script_code("workflow_scripts/embed.py"),
    script:
        "../workflow_scripts/embed.py"
