# 3.1.6: text-image pair filtering. Per shard, every subset's generated images: aesthetic score > threshold
# (5.5 in the paper), then a reasoning VLM judge (Qwen3-VL-8B-Thinking) against the alignment and artifact
# criteria of its system prompt; any violation drops the pair. One job per shard covers all subsets, so the
# judge loads once; the tables hold verdicts and evidence, not image bytes. Unless pair_filter.keep_dropped_images,
# the kept pairs' images are cut into {subset}/{shard}.images.parquet (package and the tars refer to them) and the
# generate tables, temp(), are deleted after this job; `priority` runs a shard's filter before more generation.


rule pair_filter:
    input:
        images=upstream_table("pair_filter"),  # one table per subset, in SUBSETS order
    output:
        **kept_images_outputs(),
        tables=expand("results/pair_filter/{subset}/{{shard}}.parquet", subset=SUBSETS),
        stats=expand(
            "results/pair_filter/{subset}/{{shard}}.stats.json", subset=SUBSETS
        ),
    log:
        "logs/pair_filter/{shard}.log",
    benchmark:
        "results/benchmarks/pair_filter/{shard}.tsv"
    priority: 10
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("pair_filter")
    resources:
        **resources_of("pair_filter"),
    params:
        subsets=SUBSETS,  # the order of the input and output lists above
        settings=stage_settings("pair_filter", without=("keep_dropped_images",)),
        tuning=tuning("pair_filter"),
        models=model_specs("judge"),
        code=script_code("workflow_scripts/pair_filter.py"),
    script:
        "../workflow_scripts/pair_filter.py"
