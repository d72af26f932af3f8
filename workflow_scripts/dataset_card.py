from finet2i.stages.dataset_card import run_dataset_card
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run_dataset_card(list(smk.input.manifests), smk.input.funnel, smk.output.card, settings=run.settings,
                     rights=dict(smk.params.rights), models=list(smk.params.models),
                     internal_paths=list(smk.input.internal))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
