# The real-image subset of the release: kept curated shards as webdataset tars (same layout as package).


rule package_real:
    input:
        table=upstream_table("package_real"),
        ingest="results/curated_ingest/{cshard}.parquet",
    output:
        tar="results/dataset/real/train-{cshard}.tar",
        index="results/dataset/real/train-{cshard}.parquet",
        stats="results/dataset/real/train-{cshard}.stats.json",
    log:
        "logs/package_real/{cshard}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        settings=output_settings(config, "package"),
        code=script_code("workflow_scripts/package_real.py"),
    script:
        "../workflow_scripts/package_real.py"
