from finet2i.stages.package import run_package, run_package_real
from finet2i.workflow import adapter


def main(smk) -> None:
    run = adapter(smk)
    if smk.rule == "package_real":
        run_package_real(smk.input.enhanced, smk.input.ingest, smk.output.tar, smk.output.index,
                         cshard=run.shard, settings=dict(smk.params.settings), stats_path=smk.output.stats)
    else:
        run_package(smk.input.pairs, smk.input.images, smk.output.tar, smk.output.index,
                    subset=str(smk.wildcards.subset), shard=run.shard, settings=dict(smk.params.settings),
                    stats_path=smk.output.stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
