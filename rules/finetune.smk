# Paper section 5: LoRA fine-tuning of an SD-XL-family pipeline (models.finetune_base) on this run's release,
# every packaged subset mixed by finetune.mixture, captions over the text encoder's 77 tokens dropped and counted
# (results/finetune/samples.parquet lists every sample with its verdict). Off by default: finetune.enabled adds
# it (and evaluate) to the run; `snakemake finetune` runs it by name. A killed job resumes from the newest
# checkpoint in results/finetune/checkpoints/ (not an output: Snakemake would delete it before the rerun).
# Several GPUs: raise `gpu` in rules/resources.yaml; the script starts one process per GPU (accelerate).
# docs/finetune.md.


rule finetune:
    input:
        manifests=assemble_manifests(),
    output:
        adapter=directory("results/finetune/adapter"),
        samples="results/finetune/samples.parquet",
        stats="results/finetune/finetune.json",
    log:
        "logs/finetune/finetune.log",
    benchmark:
        "results/benchmarks/finetune/finetune.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("finetune")
    resources:
        **resources_of("finetune"),
    params:
        dataset_dir="results/dataset",
        checkpoints="results/finetune/checkpoints",
        settings=stage_settings("finetune", without=("enabled",) + FINETUNE_TUNING),
        tuning=tuning("finetune", keys=FINETUNE_TUNING),
        models=model_specs("finetune_base"),
        seed=config["seed"],
        demo=bool(config.get("demo")),
        code=script_code("workflow_scripts/finetune.py"),
    script:
        "../workflow_scripts/finetune.py"
