from finet2i.models.backends.vllm_llm import lazy_chat
from finet2i.stages.attributes import run_attributes
from finet2i.workflow.adapter import adapter


def shared(run) -> dict:
    """What a batch job of several shards loads once (finet2i.workflow.batch)."""
    return {"vlm": lazy_chat(run.model("verifier"))}


def main(smk, vlm=None) -> None:
    run = adapter(smk)
    run_attributes(smk.input.table, smk.output.table, shard=run.shard, settings=run.settings,
                   model=run.model("verifier"), stats_path=smk.output.stats, vlm=vlm)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
