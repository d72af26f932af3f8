from finet2i.stages.enhance import run_enhance
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run_enhance(smk.input.table, smk.output.table, shard=run.shard, settings=run.settings,
                model=run.model("enhancer"), stats_path=smk.output.stats, prompt_column="prompt")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
