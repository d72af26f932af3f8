# 3.2, the curated real-image set: download, validate and normalise real photographs (CPU). Items are hashed
# into config["curated"]["shards"] fixed shards, so the DAG needs no checkpoint. Params name only what changes
# the output: a new aesthetic threshold reruns the scoring, not the downloads.


rule curated_ingest:
    input:
        sources=curated_inputs(),
    output:
        table="results/curated_ingest/{cshard}.parquet",
        stats="results/curated_ingest/{cshard}.stats.json",
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
        sources=config["curated"]["sources"],  # with the names the dataset records (image_generator)
        n_shards=config["curated"]["shards"],
        max_pixels=config["curated"]["max_pixels"],
        min_side=config["curated"]["min_side"],
        max_bytes=config["curated"]["max_bytes"],
        jpeg_quality=config["curated"]["jpeg_quality"],
        code=script_code("workflow_scripts/curated_ingest.py"),
    script:
        "../workflow_scripts/curated_ingest.py"
