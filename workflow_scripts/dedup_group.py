from finet2i.stages.dedup.jobs import read_assign_manifest, run_dedup_group
from finet2i.stages.dedup.settings import DedupSettings
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run.use_torch()
    settings = DedupSettings.from_config(run.settings, seed=int(smk.params.seed))
    index, vectors = read_assign_manifest(smk.input.manifest)
    run_dedup_group(index, vectors, smk.output.group, group=int(smk.wildcards.group), settings=settings)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
