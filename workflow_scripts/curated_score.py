from finet2i.stages.curated_score import run_curated_score
from finet2i.workflow.adapter import Lazy, adapter


def shared(run) -> dict:
    """What a batch job of several shards loads once (finet2i.workflow.batch)."""
    from finet2i.models.backends.aesthetic import load_aesthetic_scorer

    encoder, head = run.model("aesthetic_encoder"), run.model("aesthetic_head")
    return {"scorer": Lazy(lambda: load_aesthetic_scorer(encoder, head), quiet=("model_name",))}


def main(smk, scorer=None) -> None:
    run = adapter(smk)
    run_curated_score(smk.input.table, smk.output.table, cshard=run.shard, settings=run.settings,
                      encoder=run.model("aesthetic_encoder"), head=run.model("aesthetic_head"),
                      stats_path=smk.output.stats, images_path=smk.input.images, scorer=scorer)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
