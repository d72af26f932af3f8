# finet2i: the Fine-T2I dataset pipeline (see README.md and docs/architecture.md).
# Thin on purpose: validate the config, include the stages in pipeline order, name the final outputs.

from snakemake.utils import min_version

min_version("9.0")


# The production recipe, unless --configfile names a complete config of its own (config/demo.yaml):
# Snakemake would otherwise merge the two key by key, and a demo model {path} would inherit the
# production model's {id}.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


# Config mistakes fail here, while parsing, naming the file and the key. Models and curated sources are checked
# when a run starts (onstart: after planning, before the first job), so that -n, --dag and --summary work on a
# login node without weights.
from finet2i.core import pipeline
from finet2i.workflow.config import validate_config

CONFIG_FILES = list(workflow.overwrite_configfiles or ["config/config.yaml"])
validate_config(config, base_dir=".", check_models=False, files=CONFIG_FILES)


onstart:
    check_before_the_first_job()


# The embedded demo (config/demo.yaml) adds its local fake photo APIs; nothing of it is in a production run.
if config.get("demo"):

    include: "rules/demo.smk"


include: "rules/common.smk"
# The real sources' listings (Unsplash Lite, Pexels, Pixabay) before the stages that read their manifests.
include: "rules/curated_list.smk"


# One rule file per stage, named for it, in the order finet2i.core.pipeline declares.
for stage in pipeline.STAGES:

    include: f"rules/{stage.name}.smk"


# Several shards per GPU job (gpu_jobs), for every stage that opts in: derived from the stage rules above.
include: "rules/batching.smk"
include: "rules/report.smk"
include: "rules/assemble.smk"
# After the dataset, optional (finetune.enabled): does it make a model better? (paper section 5)
include: "rules/finetune.smk"
include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
