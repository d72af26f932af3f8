# 3.2, the real sources: list each Unsplash Lite / Pexels / Pixabay source of curated.sources into a manifest
# (finet2i.sources.listing). A localrule: it runs where Snakemake runs (a login or transfer node with network and
# the API keys in its environment), never on a compute node, which may be offline. Answers are stored in
# results/curated_list/<name>.parquet.pages/ as they arrive, so a killed or extended listing resumes without
# asking the API again; the key (curated.sources[].key_env) is read from the environment and written nowhere.


localrules:
    curated_list,


rule curated_list:
    input:
        dataset=listing_input,
    output:
        manifest="results/curated_list/{source}.parquet",
        stats="results/curated_list/{source}.stats.json",
    log:
        "logs/curated_list/{source}.log",
    conda:
        "../envs/finet2i.yaml"
    params:
        settings=listed_entry,
        tuning=listed_pacing,
        code=script_code("workflow_scripts/curated_list.py"),
    script:
        "../workflow_scripts/curated_list.py"
