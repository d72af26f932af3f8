# 3.2: the captions rewritten by the same prompt enhancer as the synthetic prompts. Runs only with
# curated.long_prompt: enhancer; by default the captioner writes the long caption from the image itself.


rule curated_enhance:
    input:
        table=upstream_table("curated_enhance"),
    output:
        table="results/curated_enhance/{cshard}.parquet",
        stats="results/curated_enhance/{cshard}.stats.json",
    log:
        "logs/curated_enhance/{cshard}.log",
    benchmark:
        "results/benchmarks/curated_enhance/{cshard}.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("curated_enhance")
    resources:
        **resources_of("curated_enhance"),
    params:
        settings=stage_settings("enhance"),
        tuning=tuning("enhance"),
        models=model_specs("enhancer"),
        code=script_code("workflow_scripts/curated_enhance.py"),
    script:
        "../workflow_scripts/curated_enhance.py"
