from finet2i.stages.embed import EmbedSettings, run_embed
from finet2i.workflow.adapter import Lazy, adapter


def shared(run) -> dict:
    """What a batch job of several shards loads once (finet2i.workflow.batch)."""
    from finet2i.models.backends.embedder import load_embedder

    s, model = EmbedSettings.from_config(run.settings), run.model("embedder")
    return {"embedder": Lazy(lambda: load_embedder(model, dtype=s.dtype, batch_size=s.batch_size))}


def main(smk, embedder=None) -> None:
    run = adapter(smk)
    run.use_torch()
    run_embed(smk.input.table, smk.output.vectors, shard=run.shard, settings=run.settings,
              model=run.model("embedder"), stats_path=smk.output.stats, embedder=embedder)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
