from finet2i.models.backends.vllm_llm import lazy_chat
from finet2i.stages.caption import CAPTIONER_ENGINE, run_caption
from finet2i.workflow.adapter import adapter


def shared(run) -> dict:
    """What a batch job of several shards loads once (finet2i.workflow.batch)."""
    return {"vlm": lazy_chat(run.model("captioner"), **CAPTIONER_ENGINE)}


def main(smk, vlm=None) -> None:
    run = adapter(smk)
    run_caption(smk.input.table, smk.input.images, smk.output.table, shard=run.shard,
                settings=run.settings, model=run.model("captioner"), stats_path=smk.output.stats,
                long_prompt=smk.params.long_prompt, vlm=vlm)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
