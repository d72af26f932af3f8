# 3.2: Aesthetic Predictor V2.5 on the ingested photographs; below curated.aesthetic_threshold (the paper's
# 6.5) is dropped. Verdicts only: the image bytes stay in the ingest table.


rule curated_score:
    input:
        table=upstream_table("curated_score"),
        images="results/curated_ingest/{cshard}.parquet",
    output:
        table="results/curated_score/{cshard}.parquet",
        stats="results/curated_score/{cshard}.stats.json",
    log:
        "logs/curated_score/{cshard}.log",
    benchmark:
        "results/benchmarks/curated_score/{cshard}.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("curated_score")
    resources:
        **resources_of("curated_score"),
    params:
        settings={"aesthetic_threshold": config["curated"]["aesthetic_threshold"]},
        tuning=tuning("curated"),  # chunk_size
        models=model_specs("aesthetic_encoder", "aesthetic_head"),
        code=script_code("workflow_scripts/curated_score.py"),
    script:
        "../workflow_scripts/curated_score.py"
