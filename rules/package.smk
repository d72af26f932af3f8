# Each kept sample finished as the release ships it (uuid key, baseline RGB JPEG, the 15-key json, the txt
# it was rendered with), per synthetic subset and shard; `assemble` cuts these into the release's tars.


rule package:
    input:
        pairs=upstream_table("package"),
        images=package_images,  # the table its samples refer to for their image bytes
    output:
        table="results/package/{subset}/{shard}.parquet",
        stats="results/package/{subset}/{shard}.stats.json",
    log:
        "logs/package/{subset}/{shard}.log",
    wildcard_constraints:
        # the synthetic subsets only: "real" is finished by package_real from the curated shards
        subset="|".join(SUBSETS),
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("package")
    resources:
        **resources_of("package"),
    params:
        settings=package_settings(),
        tuning=tuning("package"),
        seed=config["seed"],
        code=script_code("workflow_scripts/package.py"),
    script:
        "../workflow_scripts/package.py"
