from finet2i.stages.guard import run_guard
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run_guard(smk.input.table, smk.output.table, shard=run.shard, settings=run.settings,
              model=run.model("guard"), stats_path=smk.output.stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
