# Release packaging: one webdataset tar per subset and shard (<id>.jpg / <id>.json / <id>.txt, the
# released Fine-T2I layout) plus a parquet index and a stats JSON. Tar bytes are deterministic, so a rerun
# on unchanged inputs rewrites identical files.


rule package:
    input:
        pairs=upstream_table("package"),
        images="results/generate/{subset}/{shard}.parquet",
    output:
        tar="results/dataset/{subset}/train-{shard}.tar",
        index="results/dataset/{subset}/train-{shard}.parquet",
        stats="results/dataset/{subset}/train-{shard}.stats.json",
    log:
        "logs/package/{subset}/{shard}.log",
    wildcard_constraints:
        # the synthetic subsets only: "real" is packaged by package_real from the curated shards
        subset="|".join(SUBSETS),
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        settings=output_settings(config, "package"),
        code=script_code("workflow_scripts/package.py"),
    script:
        "../workflow_scripts/package.py"
