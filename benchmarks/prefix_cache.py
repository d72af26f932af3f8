"""Prefix caching benchmark: prefill tokens that vLLM's prefix cache saves on the stages' own conversations.

    .venv/bin/python benchmarks/prefix_cache.py                  # the demo models, 256 requests per stage
    .venv/bin/python benchmarks/prefix_cache.py --n 1024 --models resources/demo/models

For prompts (the prompt writer's system prompt + one spec), enhance (the enhancer's system prompt + one prompt)
and guard (Llama Guard's template: task, 14 categories, then the prompt), it builds N conversations with the
stage's own ``build_messages`` from real specs (sampled from config/taxonomy.yaml) and real prompts
(PartiPrompts), sends them through :class:`finet2i.models.backends.vllm_llm.VLLMChat` as a stage does (one ``chat``
call per chunk), once with prefix caching (what the stages run) and once without, and prints the prompt tokens
and those vLLM reports as read from its cache (``RequestOutput.num_cached_tokens``, summed).

On vLLM's CPU backend a KV block is 128 tokens (16 on GPUs), and only whole blocks are shared, so the CPU
figures are a lower bound of what a GPU engine saves on the same conversations. The demo models' tokenizers are
small byte-level BPEs (more tokens per word than Llama-3's): the token counts are the demo's, the shares are
what the measurement is for.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PARTI = Path("/work/shared/data/PartiPrompts.tsv")


def conversations(stage: str, n: int) -> list[Any]:
    if stage == "prompts":
        from finet2i.recipe.taxonomy import load_taxonomy, sample_specs
        from finet2i.stages.prompts import build_messages

        taxonomy = load_taxonomy(ROOT / "config" / "taxonomy.yaml")
        return [build_messages(s, taxonomy.context(s)) for s in sample_specs(taxonomy, "00000", n, 7)]
    texts = real_prompts(n)
    if stage == "enhance":
        from finet2i.stages.enhance import build_messages as enhance_messages

        return [enhance_messages(t) for t in texts]
    from finet2i.stages.guard import guard_conversation

    return [guard_conversation(t) for t in texts]


def real_prompts(n: int) -> list[str]:
    if PARTI.exists():
        with PARTI.open(newline="") as f:
            rows = [r["Prompt"] for r in csv.DictReader(f, delimiter="\t")]
    else:  # outside the build machines: any prompts will do for the shares
        rows = [f"a photo of object number {i} on a wooden table" for i in range(n)]
    return (rows * (n // len(rows) + 1))[:n]


def measure(model: Path, convs: list[Any], chunk: int, caching: bool, block_size: int | None
            ) -> dict[str, float]:
    from finet2i.models.backends import Sampling
    from finet2i.models.backends.vllm_llm import VLLMChat
    from finet2i.models.spec import ModelSpec

    extra = {"block_size": block_size} if block_size else {}
    engine = VLLMChat(ModelSpec(key="models.x", path=str(model)), enable_prefix_caching=caching, **extra)
    try:
        t0 = time.monotonic()
        for i in range(0, len(convs), chunk):
            engine.chat(convs[i:i + chunk], Sampling(temperature=0.0, max_tokens=8),
                        seeds=list(range(i, min(i + chunk, len(convs)))))
        seconds = time.monotonic() - t0
        return {**engine.prefix_cache_stats(), "seconds": seconds}
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "resources" / "demo" / "models")
    parser.add_argument("--n", type=int, default=256, help="requests per stage")
    parser.add_argument("--chunk", type=int, default=64, help="requests per chat() call (a stage's chunk)")
    parser.add_argument("--block-size", type=int, default=None,
                        help="KV block size (vLLM's default: 128 on CPUs, 16 on GPUs)")
    parser.add_argument("--stages", default="prompts,enhance,guard")
    args = parser.parse_args()
    plan = [("prompts", "prompt-llm"), ("enhance", "prompt-llm"), ("guard", "guard-llm")]
    print(f"{'stage':<8} {'caching':<8} {'requests':>8} {'prompt tokens':>14} {'cached':>10} {'saved':>6} "
          f"{'chat s':>7}")
    for stage, model in [p for p in plan if p[0] in args.stages.split(",")]:
        convs = conversations(stage, args.n)
        for caching in (True, False):
            r = measure(args.models / model, convs, args.chunk, caching, args.block_size)
            share = r["cached_tokens"] / r["prompt_tokens"] if r["prompt_tokens"] else 0.0
            print(f"{stage:<8} {'on' if caching else 'off':<8} {len(convs):>8} {r['prompt_tokens']:>14,} "
                  f"{r['cached_tokens']:>10,} {share:>6.1%} {r['seconds']:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
