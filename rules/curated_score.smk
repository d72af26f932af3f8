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
