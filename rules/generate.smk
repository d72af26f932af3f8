# 3.1.5: image generation, one job per (subset, shard). pe_* render the enhanced prompt, po_* the original;
# *_ar draw any Table 8 size (squares included), *_as a square one, uniformly (config/resolutions.yaml is an
# input, so an edited table reruns the stage). Best of 1-3 candidates by Aesthetic Predictor V2.5 score; the shard's rows
# carry the kept JPEG. Params hold everything else the images depend on (generators, weights, steps,
# guidance, candidate counts, seed, JPEG quality, scorer), so changing any of them reruns this stage only.


rule generate:
    input:
        table=upstream_table("generate"),
        resolutions=config["generate"]["resolutions"],
    output:
        table="results/generate/{subset}/{shard}.parquet",
        stats="results/generate/{subset}/{shard}.stats.json",
    log:
        "logs/generate/{subset}/{shard}.log",
    benchmark:
        "results/benchmarks/generate/{subset}/{shard}.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: 8
    resources:
        gpu=1,
        mem_mb=128000,  # FLUX.2-dev with CPU offload keeps its 32B transformer + 24B encoder in host memory
        runtime=720,
    params:
        settings=output_settings(config, "generate"),
        z_image=config["models"]["z_image"],
        flux2=config["models"]["flux2"],
        aesthetic_encoder=config["models"]["aesthetic_encoder"],
        aesthetic_head=config["models"]["aesthetic_head"],
        seed=config["seed"],
        jpeg_quality=config["package"]["jpeg_quality"],
        code=script_code("workflow_scripts/generate.py"),
    script:
        "../workflow_scripts/generate.py"
