from finet2i.stages.dedup.jobs import run_dedup_assign
from finet2i.stages.dedup.settings import DedupSettings
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    settings = DedupSettings.from_config(run.settings, seed=int(smk.params.seed))
    run_dedup_assign(smk.input.vectors, smk.input.centroids, smk.output.vectors, smk.output.index,
                     settings=settings)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
