# finet2i: the Fine-T2I dataset pipeline (see README.md and docs/architecture.md).
# Thin on purpose: validate the config, include the stages in pipeline order, name the final outputs.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


# Fails here, before any job is planned, naming the config key (models only warn in a dry run).
from finet2i.config import validate_config

validate_config(config, base_dir=".", dryrun=workflow.dryrun)


include: "rules/common.smk"
include: "rules/specs.smk"
include: "rules/prompts.smk"
include: "rules/embed.smk"
include: "rules/dedup.smk"
include: "rules/guard.smk"
include: "rules/attributes.smk"
include: "rules/enhance.smk"
include: "rules/generate.smk"
include: "rules/pair_filter.smk"
include: "rules/curated.smk"
include: "rules/package.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
