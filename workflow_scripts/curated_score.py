from finet2i.stages.curated_score import run_curated_score
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run_curated_score(smk.input.table, smk.output.table, cshard=run.shard, settings=run.settings,
                      encoder=run.model("aesthetic_encoder"), head=run.model("aesthetic_head"),
                      stats_path=smk.output.stats, images_path=smk.input.images)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
