from finet2i.stages.dedup.jobs import read_assign_manifest, run_dedup_cross
from finet2i.stages.dedup.settings import DedupSettings
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run.use_torch()
    settings = DedupSettings.from_config(run.settings, seed=int(smk.params.seed))
    index, vectors = read_assign_manifest(smk.input.manifest)
    run_dedup_cross(list(smk.input.groups), index, vectors, smk.output.verdicts, smk.output.kept_ids,
                    smk.output.stats, settings=settings)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
