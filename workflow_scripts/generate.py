from finet2i.stages.generate import GenerateSettings, GeneratorPool, run_generate
from finet2i.workflow.adapter import Lazy, adapter


def _models(run) -> dict:
    # Only the generators that render anything need a model (a weight of 0 switches one off).
    return {kind: run.model(kind) for kind, g in run.settings["generators"].items() if g.get("weight", 0) > 0}


def shared(run) -> dict:
    """What a batch job of several shards loads once (finet2i.workflow.batch): the scorer, and one generator
    pool whose last pipeline stays loaded from one shard to the next."""
    from finet2i.models.backends.aesthetic import load_aesthetic_scorer

    encoder, head = run.model("aesthetic_encoder"), run.model("aesthetic_head")
    return {"pool": GeneratorPool(GenerateSettings.from_config(run.settings), _models(run), None),
            "scorer": Lazy(lambda: load_aesthetic_scorer(encoder, head))}


def main(smk, pool=None, scorer=None) -> None:
    run = adapter(smk)
    run_generate(
        smk.input.table,
        smk.output.table,
        shard=run.shard,
        subset=str(smk.wildcards.subset),
        settings=run.settings,
        models=_models(run),
        aesthetic_encoder=run.model("aesthetic_encoder"),
        aesthetic_head=run.model("aesthetic_head"),
        seed=int(smk.params.seed),
        jpeg_quality=int(smk.params.jpeg_quality),
        stats_path=smk.output.stats,
        pool=pool,
        scorer=scorer,
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
