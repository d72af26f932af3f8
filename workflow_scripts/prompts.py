from finet2i.stages.prompts import run_prompts
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run_prompts(smk.input.table, smk.output.table, shard=run.shard, settings=run.settings,
                model=run.model("prompt_generator"), stats_path=smk.output.stats, taxonomy=smk.input.taxonomy)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
