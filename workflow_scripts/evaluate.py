from finet2i.finetune.evaluate import run_evaluate
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    run_evaluate(smk.input.adapter, str(smk.output.metrics).rsplit("/", 1)[0], settings=run.settings,
                 seed=int(smk.params.seed), base=run.model("finetune_base"),
                 aesthetic_encoder=run.model("aesthetic_encoder"), aesthetic_head=run.model("aesthetic_head"),
                 clip=run.optional_model("clip_scorer"), judge_model=run.optional_model("judge"),
                 demo=bool(smk.params.demo))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
