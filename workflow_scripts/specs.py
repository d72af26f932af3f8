from finet2i.stages.specs import run_specs
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run_specs(smk.input.taxonomy, smk.output.table, shard=run.shard, n=int(smk.params.n),
              seed=int(smk.params.seed), stats_path=smk.output.stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
