from finet2i.stages.dedup.jobs import run_dedup_centroids
from finet2i.stages.dedup.settings import DedupSettings
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    settings = DedupSettings.from_config(run.settings, seed=int(smk.params.seed))
    run_dedup_centroids(list(smk.input.vectors), smk.output.centroids, smk.output.histogram,
                        settings=settings)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
