# 3.2: a short-prompt caption per kept photograph (Qwen2.5-VL-7B-Captioner-Relaxed); bytes from the ingest
# table, one chunk at a time.


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
        "../envs/llm.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=240,
    params:
        settings=output_settings(config, "curated.caption"),
        model=config["models"]["captioner"],
        code=script_code("workflow_scripts/curated_caption.py"),
    script:
        "../workflow_scripts/curated_caption.py"
