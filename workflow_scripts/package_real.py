from finet2i.stages.package import run_package_real
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run_package_real(smk.input.table, smk.input.ingest, smk.output.table, cshard=run.shard,
                     seed=smk.params.seed, settings=run.settings, stats_path=smk.output.stats,
                     credits_path=smk.output.credits, rights=dict(smk.params.rights),
                     non_redistributable=str(smk.params.non_redistributable))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
