from finet2i.stages.curated_ingest import run_curated_ingest
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    # Downloads wait on the network, not the CPU: several fetches per declared thread.
    run_curated_ingest(list(smk.params.sources), smk.output.table, cshard=run.shard,
                       n_shards=int(smk.params.n_shards), settings=run.settings,
                       stats_path=smk.output.stats, workers=4 * run.threads)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
