# Beyond the paper: the enhancer writes new text, so the guard (Llama-Guard-3, guard.* settings) checks every
# enhanced prompt too; an unsafe or unreadable verdict drops the prompt from all four subsets (evidence
# guard_enhanced_*). `guard_enhanced.enabled: false` skips it.


rule guard_enhanced:
    input:
        table=upstream_table("guard_enhanced"),
    output:
        table="results/guard_enhanced/{shard}.parquet",
        stats="results/guard_enhanced/{shard}.stats.json",
    log:
        "logs/guard_enhanced/{shard}.log",
    benchmark:
        "results/benchmarks/guard_enhanced/{shard}.tsv"
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("guard_enhanced")
    resources:
        **resources_of("guard_enhanced"),
    params:
        settings=guard_settings("guard_enhanced"),  # its own word limit (none by default)
        tuning=tuning("guard"),
        models=model_specs("guard"),
        code=script_code("workflow_scripts/guard_enhanced.py"),
    script:
        "../workflow_scripts/guard_enhanced.py"
