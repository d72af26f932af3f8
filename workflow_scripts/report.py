from finet2i.stages.report import run_report
from finet2i.workflow.adapter import adapter


def _paths(smk, name: str) -> list[str]:
    value = smk.input.get(name, [])
    return [value] if isinstance(value, str) else [str(v) for v in value]


def main(smk) -> None:
    run = adapter(smk)
    similarity = _paths(smk, "similarity_histogram")
    run_report(_paths(smk, "stats"), _paths(smk, "indexes"), similarity[0] if similarity else None,
               str(smk.output.html).rsplit("/", 1)[0], settings=run.settings,
               dropped=list(zip(_paths(smk, "dropped"), _paths(smk, "dropped_images"), strict=True)))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
