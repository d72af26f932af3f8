# The release layout: per subset, every finished sample of every shard, in key order, cut into
# results/dataset/<release folder>/train-000000.tar (+ .parquet index, + .stats.json) of
# package.samples_per_tar samples. The tars are not declared outputs: Snakemake would delete them all before
# the job, and the job rewrites only the tars whose contents changed (docs/dataset-layout.md). Its declared
# output is the manifest; the dataset card is written once every subset is assembled and the report is done.
# Real photos whose source's terms forbid redistribution go to results/dataset_internal/curated/ (subset
# real_internal), never into results/dataset/; the credits of each real subset are gathered into its folder.


rule assemble:
    input:
        unpack(assemble_inputs),
        images=assemble_images,  # the image bytes the tables refer to (read by key, never copied)
    output:
        manifest="results/assemble/{subset}.json",
    log:
        "logs/assemble/{subset}.log",
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("assemble")
    resources:
        **resources_of("assemble"),
    params:
        dataset_dir=dataset_dir,  # results/dataset/<folder>; real_internal: results/dataset_internal/curated
        samples_per_tar=config["package"]["samples_per_tar"],
        tuning=tuning("package"),  # assemble_memory_mb
        code=script_code("workflow_scripts/assemble.py"),
    script:
        "../workflow_scripts/assemble.py"


rule dataset_card:
    input:
        manifests=assemble_manifests(),
        internal=[f"results/assemble/{subset}.json" for subset in internal_subsets()],
        funnel="results/report/funnel.json",
    output:
        card="results/dataset/README.md",
    log:
        "logs/dataset_card/dataset_card.log",
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("dataset_card")
    resources:
        **resources_of("dataset_card"),
    params:
        settings={"seed": config["seed"], "demo": bool(config.get("demo"))},
        # what the card states about rights: each source's license, attribution and redistribution status, and
        # the terms that travel with the outputs of each model that wrote part of the dataset
        rights=source_rights(),
        models=card_models(),
        code=script_code("workflow_scripts/dataset_card.py"),
    script:
        "../workflow_scripts/dataset_card.py"
