from finet2i.core.batching import run_batch_job
from finet2i.models.backends.vllm_llm import lazy_chat
from finet2i.stages.guard import run_guard
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    """The guard stage over a batch's shards on one engine, each shard reused while unchanged (core.batching)."""
    run = adapter(smk)
    settings, model = run.settings, run.model("guard")
    engine = lazy_chat(model)  # starts on the first shard that is not reused
    run_batch_job(smk, "guard", lambda w: run_guard(w.in_path, w.table, shard=w.shard, settings=settings,
                                                     model=model, stats_path=w.stats, llm=engine),
                  close=engine.close)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
