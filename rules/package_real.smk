# The real images finished as the release ships them (same as package), per curated shard.


rule package_real:
    input:
        table=upstream_table("package_real"),
        ingest="results/curated_ingest/{cshard}.parquet",
    output:
        table="results/package_real/{cshard}.parquet",
        stats="results/package_real/{cshard}.stats.json",
        # photographer, page, license and redistribution status of every shipped photo, by release key
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
        # per source: the license and redistribution status every sample carries (finet2i.sources.terms), and
        # whether a non-redistributable photo is kept for the internal dataset or left out
        rights=source_rights(),
        non_redistributable=config["curated"]["non_redistributable"],
        code=script_code("workflow_scripts/package_real.py"),
    script:
        "../workflow_scripts/package_real.py"
