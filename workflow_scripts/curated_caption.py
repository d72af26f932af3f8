from finet2i.stages.caption import run_caption
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    curated = run.section("curated")
    run_caption(smk.input.table, smk.input.images, smk.output.table, shard=run.shard,
                settings=curated["caption"], model=run.model("captioner"), stats_path=smk.output.stats,
                long_prompt=curated["long_prompt"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
