from finet2i.stages.embed import run_embed
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run.use_torch()
    run_embed(smk.input.table, smk.output.vectors, shard=run.shard, settings=run.settings,
              model=run.model("embedder"), stats_path=smk.output.stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
