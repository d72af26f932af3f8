from finet2i.stages.report import run_report
from finet2i.workflow.adapter import adapter


def _paths(smk, name: str) -> list[str]:
    value = smk.input.get(name, [])
    return [value] if isinstance(value, str) else [str(v) for v in value]


def main(smk) -> None:
    run = adapter(smk)
    similarity = _paths(smk, "similarity_histogram")
    # finet2i.finetune's outputs when the run fine-tuned and evaluated, by file name; the votes when any
    evaluation = {p.rsplit("/", 1)[1].split(".")[0]: p for p in _paths(smk, "evaluation")}
    votes = _paths(smk, "votes")
    run_report(_paths(smk, "stats"), _paths(smk, "indexes"), similarity[0] if similarity else None,
               str(smk.output.html).rsplit("/", 1)[0], settings=run.settings, evaluation=evaluation or None,
               votes=votes[0] if votes else None,
               dropped=list(zip(_paths(smk, "dropped"), _paths(smk, "dropped_images"), strict=True)))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
