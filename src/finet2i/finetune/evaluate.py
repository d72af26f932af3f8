"""Does the dataset make the model better? The base model against base + adapter on a fixed prompt set with fixed
seeds (PartiPrompts by default), measured three ways:

* **Aesthetic Predictor V2.5** (the pipeline's own scorer: SigLIP + the V2.5 head), per image;
* **CLIPScore** (:mod:`finet2i.models.backends.clip_score`), image against its prompt;
* **the judge's pairwise preference** (:mod:`finet2i.finetune.judge`): the pipeline's VLM judge sees both images
  in a seeded random order and says which follows the prompt better and which looks better.

For each score: both means, the mean difference and its paired bootstrap 95% interval; for the judge: the
fine-tuned model's win rate over decided comparisons with its Wilson 95% interval, ties beside it
(:mod:`finet2i.finetune.stats`). GenEval when its detector is installed, otherwise "not run" and why
(:mod:`finet2i.finetune.geneval`).

Outputs (``out_dir`` = ``results/evaluate``): ``images/{base,tuned}/<pair>.png`` (what the report and the
explorer's human-preference page show), ``pairs.parquet`` (one row per comparison: prompt, seed, side, every
score and verdict, the images' sha256) and ``metrics.json`` (the table; written last). Rendered images are kept
under ``.partial/<fingerprint>/`` until the job ends, so a killed job renders only what is missing (in the same
batches, so the pixels do not depend on where it was killed).
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import shutil
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finet2i.core import shards
from finet2i.finetune import geneval, judge, stats, votes
from finet2i.finetune.prompts import Comparison, comparisons
from finet2i.finetune.settings import EvaluateSettings
from finet2i.models.backends.sdxl import ADAPTER_FILE
from finet2i.models.spec import ModelSpec

log = logging.getLogger(__name__)

STAGE = "evaluate"
SIDES = ("base", "tuned")
RENDER_BATCH = 4
SCORE_BATCH = 32
JUDGE_CHUNK = 64


def image_path(side: str, pair_id: str) -> str:
    """Where a comparison's image lies, relative to the evaluate folder."""
    return f"images/{side}/{pair_id}.png"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def render_all(base: ModelSpec, adapter_dir: str, comps: Sequence[Comparison], work: Path,
               s: EvaluateSettings) -> dict[str, float]:
    """Render every comparison's two images into ``work/{base,tuned}/`` (what is there already is kept)."""
    from finet2i.models.backends.sdxl import load_pipeline, render

    seconds: dict[str, float] = {}
    todo = {side: [i for i in range(0, len(comps), RENDER_BATCH)
                   if not all((work / side / f"{c.pair_id}.png").is_file() for c in comps[i:i + RENDER_BATCH])]
            for side in SIDES}
    if not any(todo.values()):
        return {"base": 0.0, "tuned": 0.0}
    pipe = load_pipeline(base)
    for side in SIDES:
        t0 = time.monotonic()
        if side == "tuned":
            pipe.load_lora_weights(adapter_dir, weight_name=ADAPTER_FILE)
        (work / side).mkdir(parents=True, exist_ok=True)
        for i in todo[side]:
            batch = comps[i:i + RENDER_BATCH]
            images = render(pipe, [c.prompt for c in batch], [c.seed for c in batch], width=s.resolution,
                            height=s.resolution, steps=s.steps, guidance=s.guidance, batch_size=RENDER_BATCH)
            for c, im in zip(batch, images, strict=True):
                tmp = work / side / f".{c.pair_id}.png.tmp"
                im.save(tmp, format="PNG")
                os.replace(tmp, work / side / f"{c.pair_id}.png")
        seconds[side] = round(time.monotonic() - t0, 2)
        log.info("evaluate: %d %s images in %.1f s", len(comps), side, seconds[side])
    del pipe
    _free()
    return seconds


def _free() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing memory is best effort
        pass


def score_all(comps: Sequence[Comparison], work: Path, scorer: Any, *, with_text: bool) -> dict[str, list[float]]:
    """Each side's scores, loading the images (``work/<side>/<pair>.png``) a batch at a time."""
    out: dict[str, list[float]] = {side: [] for side in SIDES}
    for side in SIDES:
        for i in range(0, len(comps), SCORE_BATCH):
            batch = comps[i:i + SCORE_BATCH]
            ims = [_load(work / side / f"{c.pair_id}.png") for c in batch]
            out[side] += scorer.score(ims, [c.prompt for c in batch]) if with_text else scorer.score(ims)
    return out


def judge_all(comps: Sequence[Comparison], work: Path, vlm: Any, s: EvaluateSettings) -> list[dict[str, str]]:
    """{criterion: tuned | base | tie | unparseable, "raw": answer} per comparison."""
    from finet2i.models.backends.vllm_llm import chat_seeded
    from finet2i.plumbing.images import load_image

    out: list[dict[str, str]] = []
    for i in range(0, len(comps), JUDGE_CHUNK):
        batch = comps[i:i + JUDGE_CHUNK]
        convs = []
        for c in batch:
            pair = {side: load_image((work / side / f"{c.pair_id}.png").read_bytes(), s.judge_max_image_pixels)
                    for side in SIDES}
            first, second = (pair["tuned"], pair["base"]) if c.tuned_left else (pair["base"], pair["tuned"])
            convs.append(judge.build_messages(c.prompt, first, second))
        answers = chat_seeded(vlm, convs, judge.sampling(s.judge_temperature, s.judge_max_tokens),
                              judge.constraint(s.judge_max_tokens), [zlib.crc32(c.pair_id.encode()) for c in batch])
        for c, answer in zip(batch, answers, strict=True):
            verdict = judge.parse(answer)
            row = {k: judge.UNPARSEABLE if verdict is None else judge.outcome(verdict[k], c.tuned_left)
                   for k in judge.CRITERIA}
            out.append({**row, "raw": answer})
    return out


def run_evaluate(adapter_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 settings: dict[str, Any], seed: int, base: ModelSpec, aesthetic_encoder: ModelSpec,
                 aesthetic_head: ModelSpec, clip: ModelSpec | None, judge_model: ModelSpec | None,
                 demo: bool = False, vlm: Any = None) -> dict[str, Any]:
    """Render, score, judge; write ``images/``, ``pairs.parquet`` and ``metrics.json`` under ``out_dir``.
    ``vlm``: an already built VisionLLM (tests)."""
    t0 = time.monotonic()
    s = EvaluateSettings.from_config(settings)
    for needed, spec, key in ((s.clip_score, clip, "clip_scorer"), (s.judge_enabled, judge_model, "judge")):
        if needed and spec is None:
            raise ValueError(f"evaluate needs models.{key} (or switch it off: evaluate.clip_score / "
                             f"evaluate.judge.enabled)")
    out = Path(out_dir)
    adapter = Path(adapter_dir)
    prompt_set, comps = comparisons(s.prompts, s.max_prompts, s.images_per_prompt, seed)
    weights = adapter / ADAPTER_FILE
    key = shards.fingerprint([_digest(weights)], base.label, s.steps, s.guidance, s.resolution,
                             [(c.pair_id, c.prompt, c.seed) for c in comps])
    work = out / ".partial" / key
    log.info("evaluate: %s, %d comparisons (%d prompts x %d seeds), base %s vs + %s", prompt_set, len(comps),
             len(comps) // s.images_per_prompt, s.images_per_prompt, base.label, weights)
    # The images stay in work/ until the end: a job killed while scoring or judging renders nothing again.
    seconds = {f"render_{k}": v for k, v in render_all(base, str(adapter), comps, work, s).items()}
    rows: list[dict[str, Any]] = [{
        "pair_id": c.pair_id, "prompt": c.prompt, "category": c.category, "seed": c.seed,
        "tuned_left": c.tuned_left, **{f"{side}_image": image_path(side, c.pair_id) for side in SIDES},
        **{f"{side}_sha256": _digest(work / side / f"{c.pair_id}.png") for side in SIDES}} for c in comps]
    metrics: dict[str, Any] = {}

    t = time.monotonic()
    from finet2i.models.backends.aesthetic import load_aesthetic_scorer

    scorer = load_aesthetic_scorer(aesthetic_encoder, aesthetic_head)
    aes = score_all(comps, work, scorer, with_text=False)
    metrics["aesthetic"] = {"label": "Aesthetic Predictor V2.5", "model": scorer.model_name,
                            **stats.paired_difference(aes["base"], aes["tuned"], resamples=s.bootstrap_resamples,
                                                      seed=seed)}
    for r, b, tu in zip(rows, aes["base"], aes["tuned"], strict=True):
        r["aesthetic_base"], r["aesthetic_tuned"] = b, tu
    del scorer
    seconds["aesthetic"] = round(time.monotonic() - t, 2)

    if s.clip_score and clip is not None:  # (checked above: clip is set when asked for)
        t = time.monotonic()
        from finet2i.models.backends.clip_score import load_clip_scorer

        scorer = load_clip_scorer(clip)
        cs = score_all(comps, work, scorer, with_text=True)
        metrics["clip_score"] = {"label": "CLIPScore (Hessel et al. 2021, x100)", "model": scorer.model_name,
                                 "truncated_prompts": scorer.truncated // 2,
                                 **stats.paired_difference(cs["base"], cs["tuned"], resamples=s.bootstrap_resamples,
                                                           seed=seed)}
        for r, b, tu in zip(rows, cs["base"], cs["tuned"], strict=True):
            r["clip_base"], r["clip_tuned"] = b, tu
        del scorer
        seconds["clip_score"] = round(time.monotonic() - t, 2)
    else:
        metrics["clip_score"] = {"label": "CLIPScore", "status": "not run", "reason": "evaluate.clip_score: false"}
    _free()

    judged: dict[str, Any]
    if s.judge_enabled and judge_model is not None:
        t = time.monotonic()
        from finet2i.models.backends.vllm_llm import lazy_chat

        engine = lazy_chat(judge_model, vlm, limit_images=2, max_model_len=8192)
        try:
            verdicts = judge_all(comps, work, engine, s)
        finally:
            if vlm is None:
                engine.close()
        for r, v in zip(rows, verdicts, strict=True):
            for k in judge.CRITERIA:
                r[f"judge_{k}"] = v[k]
            r["judge_raw"] = v["raw"]
        unparseable = sum(any(v[k] == judge.UNPARSEABLE for k in judge.CRITERIA) for v in verdicts)
        judged = {"model": getattr(engine, "model_name", judge_model.name), "unparseable": unparseable,
                  "criteria": {k: stats.win_rate([v[k] for v in verdicts if v[k] != judge.UNPARSEABLE])
                               for k in judge.CRITERIA}}
        seconds["judge"] = round(time.monotonic() - t, 2)
    else:
        judged = {"status": "not run", "reason": "evaluate.judge.enabled: false"}

    st = geneval.status(s.geneval_repo, s.geneval_detector_dir)
    gen = geneval.not_run(st) if not st["ready"] else _geneval(st, s, base, adapter, out, seed)

    images = out / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    for side in SIDES:
        os.replace(work / side, images / side)
    shutil.rmtree(out / ".partial", ignore_errors=True)
    shards.write_table(out / "pairs.parquet", rows)
    seconds["total"] = round(time.monotonic() - t0, 2)
    result = {
        "stage": STAGE, "demo": demo, "evaluation_id": votes.evaluation_id(rows), "prompt_set": prompt_set,
        "comparisons": len(comps),
        "prompts": len(comps) // s.images_per_prompt, "images_per_prompt": s.images_per_prompt, "seed": seed,
        "base_model": base.label, "adapter": str(weights), "adapter_sha256": _digest(weights),
        "render": {"steps": s.steps, "guidance": s.guidance, "width": s.resolution, "height": s.resolution},
        "metrics": metrics, "judge": judged, "geneval": gen, "seconds": seconds,
    }
    shards.write_json(out / "metrics.json", result)  # last: the completion marker
    log.info("evaluate: %s", {k: v.get("difference") for k, v in metrics.items()})
    return result


def _geneval(st: dict[str, Any], s: EvaluateSettings, base: ModelSpec, adapter: Path, out: Path,
             seed: int) -> dict[str, Any]:
    from finet2i.models.backends.sdxl import load_pipeline, render

    def renderer(with_adapter: bool) -> Any:
        pipe = load_pipeline(base, adapter=adapter if with_adapter else None)
        return lambda prompt, seeds: render(pipe, [prompt] * len(seeds), seeds, width=s.resolution,
                                            height=s.resolution, steps=s.steps, guidance=s.guidance)

    work = out / "geneval"
    result = geneval.run(str(s.geneval_repo), str(s.geneval_detector_dir), st["config"], work,
                         {"base": renderer(False), "tuned": renderer(True)}, seed)
    return result
