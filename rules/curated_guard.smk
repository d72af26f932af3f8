# Beyond the paper: the real images' captions and their enhanced versions are model-written text, so the guard
# (Llama-Guard-3, guard.* settings) checks both; either unsafe or unreadable drops the image (evidence
# curated_guard_*). `curated_guard.enabled: false` skips it.


rule curated_guard:
    input:
        table=upstream_table("curated_guard"),
    output:
        table="results/curated_guard/{cshard}.parquet",
        stats="results/curated_guard/{cshard}.stats.json",
    log:
        "logs/curated_guard/{cshard}.log",
    benchmark:
        "results/benchmarks/curated_guard/{cshard}.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("curated_guard")
    resources:
        **resources_of("curated_guard"),
    params:
        settings=guard_settings("curated_guard"),  # its own word limit (none by default)
        tuning=tuning("guard"),
        models=model_specs("guard"),
        code=script_code("workflow_scripts/curated_guard.py"),
    script:
        "../workflow_scripts/curated_guard.py"
