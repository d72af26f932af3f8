from finet2i.stages.generate import run_generate
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    settings = run.settings
    # Only the generators that render anything need a model (a weight of 0 switches one off).
    models = {kind: run.model(kind) for kind, g in settings["generators"].items() if g.get("weight", 0) > 0}
    run_generate(
        smk.input.table,
        smk.output.table,
        shard=run.shard,
        subset=str(smk.wildcards.subset),
        settings=settings,
        models=models,
        aesthetic_encoder=run.model("aesthetic_encoder"),
        aesthetic_head=run.model("aesthetic_head"),
        seed=int(smk.params.seed),
        jpeg_quality=int(smk.params.jpeg_quality),
        stats_path=smk.output.stats,
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
