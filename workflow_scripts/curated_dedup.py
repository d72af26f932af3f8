from finet2i.stages.curated_dedup import run_curated_dedup
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run_curated_dedup(smk.input.table, list(smk.input.hashes), smk.output.table, cshard=run.shard,
                      settings=run.settings, stats_path=smk.output.stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
