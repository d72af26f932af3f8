# The real images finished as the release ships them (same as package), per curated shard.


rule package_real:
    input:
        table=upstream_table("package_real"),
        ingest="results/curated_ingest/{cshard}.parquet",
    output:
        table="results/package_real/{cshard}.parquet",
        stats="results/package_real/{cshard}.stats.json",
        # photographer, page and license of every shipped photo, by release key (the sources ask for credits)
        credits="results/package_real/{cshard}.credits.jsonl",
    log:
        "logs/package_real/{cshard}.log",
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("package_real")
    resources:
        **resources_of("package_real"),
    params:
        settings=package_settings(),
        tuning=tuning("package"),
        seed=config["seed"],
        code=script_code("workflow_scripts/package_real.py"),
    script:
        "../workflow_scripts/package_real.py"
