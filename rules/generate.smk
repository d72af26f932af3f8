# 3.1.5: image generation, one job per (subset, shard). pe_* render the enhanced prompt, po_* the original;
# *_ar draw any Table 8 size (squares included), *_as a square one, uniformly (config/resolutions.yaml is an
# input, so an edited table reruns the stage). Best of 1-3 candidates by Aesthetic Predictor V2.5 score; the shard's rows
# carry the kept JPEG (deleted once the shard is filtered, unless pair_filter.keep_dropped_images). Params hold everything else the images depend on (generators, weights, steps,
# guidance, candidate counts, seed, JPEG quality, scorer), so changing any of them reruns this stage only.


rule generate:
    input:
        table=upstream_table("generate"),
        resolutions=config["generate"]["resolutions"],
    output:
        # temp() unless pair_filter.keep_dropped_images (docs/disk.md)
        table=unless_images_kept("results/generate/{subset}/{shard}.parquet"),
        stats="results/generate/{subset}/{shard}.stats.json",
    log:
        "logs/generate/{subset}/{shard}.log",
    benchmark:
        "results/benchmarks/generate/{subset}/{shard}.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("generate")
    resources:
        **resources_of("generate"),
    params:
        settings=stage_settings("generate"),
        tuning=tuning("generate"),
        models=model_specs("z_image", "flux2", "aesthetic_encoder", "aesthetic_head"),
        seed=config["seed"],
        jpeg_quality=config["package"]["jpeg_quality"],
        code=script_code("workflow_scripts/generate.py"),
    script:
        "../workflow_scripts/generate.py"
