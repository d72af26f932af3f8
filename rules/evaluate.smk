# Does it help? The base model against base + the adapter on a fixed prompt set (PartiPrompts, or
# evaluate.prompts) with fixed seeds: Aesthetic Predictor V2.5, CLIPScore, the VLM judge's pairwise preference
# (sides randomised), each with its bootstrap or Wilson interval; GenEval when its detector is installed.
# The images in results/evaluate/images/ are what the report and `finet2i explore`'s vote page show.
# docs/finetune.md.


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        images=directory("results/evaluate/images"),
        pairs="results/evaluate/pairs.parquet",
        metrics="results/evaluate/metrics.json",
    log:
        "logs/evaluate/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate/evaluate.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("evaluate")
    resources:
        **resources_of("evaluate"),
    params:
        settings=stage_settings("evaluate"),
        models=model_specs(
            "finetune_base",
            "aesthetic_encoder",
            "aesthetic_head",
            "clip_scorer",
            "judge",
        ),
        seed=config["seed"],
        demo=bool(config.get("demo")),
        code=script_code("workflow_scripts/evaluate.py"),
    script:
        "../workflow_scripts/evaluate.py"
