# 3.2: the captioner (Qwen2.5-VL-7B-Captioner-Relaxed) writes each kept photograph's short prompt and, with
# curated.long_prompt: captioner (the default, as in the release), its long prompt too (enhanced_prompt; then
# curated_enhance does not run). Bytes from the ingest table, one chunk at a time.


rule curated_caption:
    input:
        table=upstream_table("curated_caption"),
        images="results/curated_ingest/{cshard}.parquet",
    output:
        table="results/curated_caption/{cshard}.parquet",
        stats="results/curated_caption/{cshard}.stats.json",
    log:
        "logs/curated_caption/{cshard}.log",
    benchmark:
        "results/benchmarks/curated_caption/{cshard}.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("curated_caption")
    resources:
        **resources_of("curated_caption"),
    params:
        # long_max_tokens is used only when the captioner writes the long caption: otherwise no rerun for it
        settings=stage_settings(
            "curated.caption",
            without=(
                ()
                if config["curated"]["long_prompt"] == "captioner"
                else ("long_max_tokens",)
            ),
        ),
        tuning=tuning("curated.caption"),
        long_prompt=config["curated"]["long_prompt"],
        models=model_specs("captioner"),
        code=script_code("workflow_scripts/curated_caption.py"),
    script:
        "../workflow_scripts/curated_caption.py"
