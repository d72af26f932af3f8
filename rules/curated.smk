# 3.2: the curated real-image set. Ingest (download, validate, normalise; CPU) -> aesthetic score (>= 6.5)
# -> caption (Qwen2.5-VL captioner) -> enhance (the same prompt enhancer as the synthetic set).
# Items are hashed into config["curated"]["shards"] fixed shards, so the DAG needs no checkpoint.
# Each rule's params name only what changes its output: a new aesthetic threshold reruns the scoring, not
# the downloads.


rule curated_ingest:
    input:
        sources=config["curated"]["sources"],
    output:
        table="results/curated/ingest/{cshard}.parquet",
        stats="results/curated/ingest/{cshard}.stats.json",
    log:
        "logs/curated_ingest/{cshard}.log",
    benchmark:
        "results/benchmarks/curated_ingest/{cshard}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=360,
    params:
        n_shards=config["curated"]["shards"],
        max_pixels=config["curated"]["max_pixels"],
        min_side=config["curated"]["min_side"],
        code=script_code("workflow_scripts/curated_ingest.py"),
    script:
        "../workflow_scripts/curated_ingest.py"


rule curated_score:
    input:
        table="results/curated/ingest/{cshard}.parquet",
    output:
        table="results/curated/score/{cshard}.parquet",
        stats="results/curated/score/{cshard}.stats.json",
    log:
        "logs/curated_score/{cshard}.log",
    benchmark:
        "results/benchmarks/curated_score/{cshard}.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=120,
    params:
        threshold=config["curated"]["aesthetic_threshold"],
        encoder=config["models"]["aesthetic_encoder"],
        head=config["models"]["aesthetic_head"],
        code=script_code("workflow_scripts/curated_score.py"),
    script:
        "../workflow_scripts/curated_score.py"


rule curated_caption:
    input:
        table="results/curated/score/{cshard}.parquet",
    output:
        table="results/curated/caption/{cshard}.parquet",
        stats="results/curated/caption/{cshard}.stats.json",
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
        settings=config["curated"]["caption"],
        model=config["models"]["captioner"],
        code=script_code("workflow_scripts/curated_caption.py"),
    script:
        "../workflow_scripts/curated_caption.py"


rule curated_enhance:
    input:
        table="results/curated/caption/{cshard}.parquet",
    output:
        table="results/curated/enhanced/{cshard}.parquet",
        stats="results/curated/enhanced/{cshard}.stats.json",
    log:
        "logs/curated_enhance/{cshard}.log",
    benchmark:
        "results/benchmarks/curated_enhance/{cshard}.tsv"
    conda:
        "../envs/llm.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=240,
    params:
        settings=output_settings(config, "enhance"),
        model=config["models"]["enhancer"],
        code=script_code("workflow_scripts/curated_enhance.py"),
    script:
        "../workflow_scripts/curated_enhance.py"
