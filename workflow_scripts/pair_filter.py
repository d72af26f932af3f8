from finet2i.models.backends.vllm_llm import lazy_chat
from finet2i.stages.pair_filter import JUDGE_ENGINE, run_pair_filter
from finet2i.workflow.adapter import adapter


def shared(run) -> dict:
    """What a batch job of several shards loads once (finet2i.workflow.batch)."""
    return {"vlm": lazy_chat(run.model("judge"), **JUDGE_ENGINE)}


def main(smk, vlm=None) -> None:
    run = adapter(smk)
    subsets = list(smk.params.subsets)
    # The rule lists inputs and outputs in the order of `subsets`.
    images = dict(zip(subsets, smk.input.images, strict=True))
    tables = dict(zip(subsets, smk.output.tables, strict=True))
    stats = dict(zip(subsets, smk.output.stats, strict=True))
    # The kept pairs' images, cut from the generate tables when those are not kept (pair_filter.keep_dropped_images)
    kept = getattr(smk.output, "images", None)
    run_pair_filter(images, tables, stats, shard=run.shard, settings=run.settings, model=run.model("judge"),
                    vlm=vlm, kept_images=dict(zip(subsets, kept, strict=True)) if kept else None)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
