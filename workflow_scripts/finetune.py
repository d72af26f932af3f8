from dataclasses import asdict

from finet2i.finetune.launch import launch
from finet2i.finetune.train import TrainJob
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)
    job = TrainJob(dataset_dir=str(smk.params.dataset_dir), adapter_dir=str(smk.output.adapter),
                   stats_path=str(smk.output.stats), samples_path=str(smk.output.samples),
                   checkpoints_dir=str(smk.params.checkpoints), model=asdict(run.model("finetune_base")),
                   settings=run.settings, seed=int(smk.params.seed), demo=bool(smk.params.demo))
    launch(job)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
