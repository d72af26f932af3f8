from finet2i.stages.package import run_package
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run_package(smk.input.pairs, smk.input.images, smk.output.table, subset=str(smk.wildcards.subset),
                shard=run.shard, seed=smk.params.seed, settings=run.settings,
                stats_path=smk.output.stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
