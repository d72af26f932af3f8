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
        "../envs/finet2i.yaml"
    threads: threads_of("curated_ingest")
    resources:
        **resources_of("curated_ingest"),
    params:
        sources=ingest_sources(),  # with the names the dataset records (image_generator); no terms
        n_shards=config["curated"]["shards"],
        settings=ingest_settings(),
        # how long a download may take and where it may go: how the job runs, not what a photo becomes
        tuning=tuning("curated", keys=INGEST_PATIENCE),
        code=script_code("workflow_scripts/curated_ingest.py"),
    script:
        "../workflow_scripts/curated_ingest.py"
