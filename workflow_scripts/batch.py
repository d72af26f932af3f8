from finet2i.workflow.batch import run_batch_rule


def main(smk) -> None:
    """Any batchable stage's <stage>_batch job: its own script over the batch's shards, engines loaded once."""
    run_batch_rule(smk)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
