# Section 4 and appendix A: the funnel (from every stage's stats JSON), the distribution tables and figures
# (from the small columns of the package tables: never the image bytes) and the dedup similarity histogram.
# Cheap, so it reruns whenever any stage finishes a shard.
#
# `report_inputs` (rules/common.smk) returns the named lists
#   stats: every *.stats.json of every stage (specs, prompts, embed, dedup, guard, attributes, enhance,
#          generate per subset, pair_filter per subset, curated_*, package, package_real),
#   indexes: results/package/{subset}/{shard}.parquet and results/package_real/{cshard}.parquet,
#   similarity_histogram: ["results/dedup/similarity_histogram.json"] (or [] when dedup writes none),
#   dropped, dropped_images: the first shard's tables of each stage that judges images (pair_filter per subset,
#          the curated filters) and of the stage holding those images (generate, curated_ingest), pairwise:
#          the report shows a few dropped records with their picture and reason.


rule report:
    input:
        unpack(report_inputs),
    output:
        html=report(
            "results/report/report.html",
            caption="../report/report.rst",
            category="Report",
        ),
        markdown="results/report/report.md",
        funnel=report(
            "results/report/funnel.json",
            caption="../report/funnel.rst",
            category="Report",
        ),
        figures=report(
            directory("results/report/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        "logs/report/report.log",
    conda:
        "../envs/finet2i.yaml"
    threads: threads_of("report")
    resources:
        **resources_of("report"),
    params:
        settings=report_settings(config),
        code=script_code("workflow_scripts/report.py"),
    script:
        "../workflow_scripts/report.py"
