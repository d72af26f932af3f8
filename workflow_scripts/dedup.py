from finet2i.stages.dedup.jobs import run_dedup_keep
from finet2i.stages.dedup.settings import DedupSettings
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    settings = DedupSettings.from_config(run.settings, seed=int(smk.params.seed))
    run_dedup_keep(smk.input.table, smk.input.vectors, smk.input.index, smk.input.verdicts,
                   smk.input.kept_ids, smk.output.table, shard=run.shard, settings=settings,
                   stats_path=smk.output.stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
