from finet2i.stages.caption import run_caption
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run_caption(smk.input.table, smk.input.images, smk.output.table, shard=run.shard,
                settings=run.settings, model=run.model("captioner"), stats_path=smk.output.stats,
                long_prompt=smk.params.long_prompt)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
