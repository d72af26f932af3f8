from finet2i.stages.assemble import run_assemble
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run_assemble(list(smk.input.tables), smk.params.dataset_dir, smk.output.manifest,
                 subset=str(smk.wildcards.subset), samples_per_tar=int(smk.params.samples_per_tar),
                 memory_mb=int(run.settings["assemble_memory_mb"]),
                 credits=list(smk.input.get("credits", [])))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
