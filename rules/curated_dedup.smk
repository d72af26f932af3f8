# The same photograph from two sites (or twice from one) is kept once: perceptual hashes of every ingest shard's
# kept photos, one global rule (finet2i.stages.curated_dedup). Reads two small columns of every ingest table.


rule curated_dedup:
    input:
        table=upstream_table("curated_dedup"),
        hashes=expand("results/curated_ingest/{cshard}.parquet", cshard=CURATED_SHARDS),
    output:
        table="results/curated_dedup/{cshard}.parquet",
        stats="results/curated_dedup/{cshard}.stats.json",
    log:
        "logs/curated_dedup/{cshard}.log",
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("curated_dedup")
    resources:
        **resources_of("curated_dedup"),
    params:
        settings={"near_duplicates": config["curated"]["near_duplicates"]},
        code=script_code("workflow_scripts/curated_dedup.py"),
    script:
        "../workflow_scripts/curated_dedup.py"
