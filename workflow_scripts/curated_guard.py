from finet2i.models.backends.vllm_llm import lazy_chat
from finet2i.stages.guard import run_guard
from finet2i.workflow.adapter import adapter


def shared(run) -> dict:
    """What a batch job of several shards loads once (finet2i.workflow.batch)."""
    return {"llm": lazy_chat(run.model("guard"))}


def main(smk, llm=None) -> None:
    run = adapter(smk)
    # The caption is the real image's prompt; both it and its enhanced version are model-written text.
    run_guard(smk.input.table, smk.output.table, shard=run.shard, settings=run.settings,
              model=run.model("guard"), stats_path=smk.output.stats, columns=("prompt", "enhanced_prompt"),
              stage="curated_guard", llm=llm)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
