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
        "../envs/llm.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=240,
    params:
        settings=output_settings(config, "guard", without=("max_words",)),  # no length limit here
        model=config["models"]["guard"],
        code=script_code("workflow_scripts/guard_enhanced.py"),
    script:
        "../workflow_scripts/guard_enhanced.py"
