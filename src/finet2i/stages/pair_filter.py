"""Text-image pair filtering (paper 3.1.6): an aesthetic threshold, then a reasoning VLM judge.

Per shard and subset, every row of ``results/generate/{subset}/{shard}.parquet`` (one generated image per
prompt) gets a verdict in ``results/pair_filter/{subset}/{shard}.parquet``; the image bytes stay in the images
table (the packager refers to them by ``sample_id``). Unless the config keeps the images of dropped pairs
(``pair_filter.keep_dropped_images``), the bytes of the kept pairs are also cut into
``results/pair_filter/{subset}/{shard}.images.parquet``, and the generate table, a ``temp()`` output, is deleted
once its shard is filtered (docs/disk.md).

1. ``aesthetic_predictor_v_2_5_score <= aesthetic_threshold`` (the paper keeps > 5.5) -> ``low_aesthetic``; a
   missing or non-finite score -> ``score_invalid`` (whether or not the judge runs).
2. The judge (Qwen3-VL-8B-Thinking in production) sees the image and the prompt the image was generated from
   (``prompt_used``), under a system prompt that enumerates the alignment criteria (objects, counts, colours,
   positions, text rendering, style, ...) and the artifact criteria (anatomy, extra limbs, distorted text,
   blur, watermarks, ...). It thinks, closes with ``</think>``, then answers with a JSON verdict::

       <reasoning></think>

       {"violations": ["counts", "extra_limbs"], "pass": false}

   With ``judge.constrained`` (default) a regex constraint forces exactly that shape: reasoning without
   ``<``, ``</think>``, then a verdict whose violations are criterion ids. A sample that violates ANY
   criterion is dropped (``judge_rejected``, evidence ``judge_violations``; ``judge_unsafe`` when a safety
   criterion is among them: nudity, gore, minors, beyond the paper); the reasoning is kept in
   ``judge_reasoning``. No ``</think>`` (the model ran out of tokens while thinking), no JSON, or a verdict
   without the expected keys -> ``judge_unparseable`` with the raw answer in ``judge_raw``: the judge fails
   closed. ``judge.enabled: false`` skips step 2.

Stats: one ``pair_filter`` stats JSON per subset, shard label = the shard, ``extra.subset`` = the subset
(the report also finds the subset in the path ``results/pairs/{subset}/...``).
"""

from __future__ import annotations

import logging
import math
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from finet2i.core import runner, shards
from finet2i.core.settings import FromSection, default
from finet2i.core.shards import Record, StageStats
from finet2i.models.backends import Constraint, Message, Sampling
from finet2i.models.spec import ModelSpec
from finet2i.plumbing.answers import extract_json_object, top_level_objects
from finet2i.plumbing.images import copy_images, image_bytes, load_image

log = logging.getLogger(__name__)

STAGE = "pair_filter"
LOW_AESTHETIC = "low_aesthetic"
SCORE_INVALID = "score_invalid"
REJECTED = "judge_rejected"
UNSAFE_IMAGE = "judge_unsafe"
UNPARSEABLE = "judge_unparseable"
UNREADABLE = "image_unreadable"
SCORE = "aesthetic_predictor_v_2_5_score"
THINK_END = "</think>"

# Criterion id -> what the judge checks. Ids are what the verdict lists and what `judge_violations` records.
ALIGNMENT_CRITERIA: dict[str, str] = {
    "objects": "every object, person, animal and element the prompt asks for is present, and nothing the "
               "prompt excludes appears",
    "counts": "the number of each thing matches the prompt exactly (two cats means exactly two cats)",
    "colors": "colors of objects, clothing, background and lighting match the prompt",
    "attributes": "sizes, shapes, materials, textures, ages, expressions and other stated properties match",
    "positions": "spatial relations and layout (left/right, above/below, in front of/behind, inside, "
                 "foreground/background) match the prompt",
    "actions": "actions, poses and interactions between subjects match the prompt",
    "text_rendering": "any text the prompt quotes is rendered exactly, spelled correctly, complete and "
                      "legible, with no extra words",
    "style": "the artistic style, medium and rendering (photo, oil painting, 3D render, anime, ...) match",
    "scene": "setting, background, time of day, weather, lighting and mood match the prompt",
}
ARTIFACT_CRITERIA: dict[str, str] = {
    "anatomy": "faces, hands, fingers, feet and bodies are anatomically correct (no fused, twisted or "
               "malformed parts, natural eyes and teeth)",
    "extra_limbs": "no extra or missing limbs, fingers, heads or duplicated body parts",
    "distorted_text": "no garbled, warped, misspelled or pseudo-text anywhere in the image",
    "object_integrity": "objects keep coherent, physically plausible shapes (no melted, merged or broken "
                        "geometry, consistent perspective and reflections)",
    "blur": "the image is sharp where it should be: no unintended blur, noise, banding, over-smoothing or "
            "compression artifacts",
    "watermarks": "no watermarks, signatures, logos, captions, borders or UI overlays the prompt did not "
                  "ask for",
    "composition": "the main subject is fully and clearly shown (not cut off or obscured), the composition "
                   "is coherent",
}
# Beyond the paper: a public dataset must not ship unsafe images, whatever the prompt asked for. A violation of
# one of these drops the sample as judge_unsafe (counted apart from judge_rejected); judge.safety: false omits
# them from the instruction and the grammar.
SAFETY_CRITERIA: dict[str, str] = {
    "nudity": "no nudity or sexual content",
    "gore": "no gore, graphic violence, injury or death shown in detail",
    "minors": "no child or minor in any sexualised, violent or endangering situation",
}
CRITERIA: tuple[str, ...] = (*ALIGNMENT_CRITERIA, *ARTIFACT_CRITERIA, *SAFETY_CRITERIA)
# Any one violation rejects, so the verdict needs to name only a few; a cap keeps it short enough to fit
# any token budget (an uncapped list let the demo model repeat "objects" until it ran out of tokens).
MAX_LISTED_VIOLATIONS = 5
# Tokens kept free for "</think>" + the longest verdict (5 of the longest ids: 91 tokens with the demo's
# small BPE vocabulary, about 40 with Qwen's own).
VERDICT_TOKENS = 128


def _criteria_list(criteria: Mapping[str, str]) -> str:
    return "\n".join(f"- {cid}: {text}" for cid, text in criteria.items())


def system_prompt(safety: bool = True) -> str:
    """The judge's instruction: every criterion, by id; the safety criteria unless ``safety`` is off."""
    safety_part = ("Safety (the image must show none of it, whatever the prompt asks):\n"
                   + _criteria_list(SAFETY_CRITERIA) + "\n\n") if safety else ""
    return (
        "You are a strict quality inspector for a text-to-image fine-tuning dataset. You receive one generated "
        "image and the prompt it was generated from. Only flawless, fully prompt-compliant images may enter the "
        "dataset.\n\n"
        "Check the image against EVERY criterion below.\n\n"
        "Text-image alignment (the image must follow the prompt):\n" + _criteria_list(ALIGNMENT_CRITERIA) + "\n\n"
        "Generation artifacts (the image must be free of them):\n" + _criteria_list(ARTIFACT_CRITERIA) + "\n\n"
        + safety_part +
        "A criterion the prompt does not touch (e.g. text rendering when no text is asked for) is satisfied "
        "unless the image itself shows the flaw. When in doubt, count it as a violation.\n"
        "Think step by step, then answer with a JSON object only: "
        '{"violations": [<ids of the violated criteria, at most 5, most serious first>], '
        '"pass": <true only if there are no violations>}.'
    )


SYSTEM_PROMPT = system_prompt()


def _judge(key: str) -> Any:
    """A field for the key ``judge.<key>`` of the pair_filter section, with the schema's default."""
    return field(default=default(f"pair_filter.judge.{key}"), metadata={"key": f"judge.{key}"})


@dataclass(frozen=True)
class PairFilterSettings(FromSection):
    aesthetic_threshold: float = default("pair_filter.aesthetic_threshold")
    judge_enabled: bool = _judge("enabled")
    temperature: float = _judge("temperature")
    max_tokens: int = _judge("max_tokens")
    constrained: bool = _judge("constrained")
    # Longest reasoning the constraint allows, in characters. Default: 3 characters per token of what is
    # left after a verdict's worth of tokens (VERDICT_TOKENS), so a real model's reasoning is bounded by
    # max_tokens first; with a tiny budget (the demo's 128 tokens) the reasoning is empty and the verdict
    # always fits.
    max_reasoning_chars: int | None = _judge("max_reasoning_chars")
    max_image_pixels: int = _judge("max_image_pixels")  # images are downscaled to this before the judge
    safety: bool = _judge("safety")  # the judge also rules on nudity, gore and minors (judge_unsafe)
    chunk_size: int = default("pair_filter.chunk_size")

    @property
    def reasoning_chars(self) -> int:
        if self.max_reasoning_chars is not None:
            return max(0, int(self.max_reasoning_chars))
        return max(0, self.max_tokens - VERDICT_TOKENS) * 3

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, max_tokens=self.max_tokens)


@dataclass
class JudgeVerdict:
    """What the judge said. ``error`` is set when the answer could not be read (the sample is dropped)."""

    reasoning: str = ""
    violations: list[str] = field(default_factory=list)
    passed: bool = False
    error: str | None = None

    @property
    def rejected(self) -> bool:
        return self.error is None and (bool(self.violations) or not self.passed)


def verdict_regex(reasoning_chars: int, criteria: Sequence[str] = CRITERIA,
                  max_listed: int = MAX_LISTED_VIOLATIONS) -> str:
    """The judge's answer shape: reasoning (no '<'), ``</think>``, a JSON verdict over known criteria."""
    ids = "|".join(re.escape(c) for c in criteria)
    item = f'"({ids})"'
    return (rf"[^<]{{0,{reasoning_chars}}}</think>\n\n"
            rf'\{{"violations": \[({item}(, {item}){{0,{max_listed - 1}}})?\], "pass": (true|false)\}}')


def parse_judge(text: str) -> JudgeVerdict:
    """Split a thinking judge's answer at ``</think>`` and read the JSON verdict after it (fail closed)."""
    text = text or ""
    if THINK_END not in text:
        return JudgeVerdict(reasoning=text.strip(), error=f"no {THINK_END}: the answer ended while thinking")
    reasoning, answer = text.rsplit(THINK_END, 1)
    reasoning = reasoning.replace("<think>", "", 1).strip()
    obj = extract_json_object(answer)
    if obj is None:
        n = top_level_objects(answer)
        why = f"{n} JSON objects after {THINK_END}: which is the verdict?" if n > 1 else \
            f"no JSON object after {THINK_END}"
        return JudgeVerdict(reasoning=reasoning, error=why)
    violations, passed = obj.get("violations"), obj.get("pass")
    if not isinstance(violations, list) or not all(isinstance(v, str) for v in violations):
        return JudgeVerdict(reasoning=reasoning, error="verdict has no list of strings under 'violations'")
    if not isinstance(passed, bool):
        return JudgeVerdict(reasoning=reasoning, error="verdict has no boolean 'pass'")
    # "pass": false without naming a criterion is still a rejection; record it as such.
    violations = list(dict.fromkeys(v.strip() for v in violations if v.strip()))  # unique, in order
    violations = violations or ([] if passed else ["unspecified"])
    return JudgeVerdict(reasoning=reasoning, violations=violations, passed=passed)


def build_messages(image: Any, prompt: str, safety: bool = True) -> list[Message]:
    return [
        {"role": "system", "content": system_prompt(safety)},
        {"role": "user", "content": [
            {"type": "image", "image": image},
            {"type": "text", "text": f"Prompt: {prompt}\n\nDoes this image satisfy every criterion?"},
        ]},
    ]


_NOT_CARRIED = ("image", shards.KEPT, shards.DROP_REASON)


def _empty_evidence(r: Record) -> Record:
    for k in ("judge_reasoning", "judge_violations", "judge_raw"):
        r.setdefault(k, None)
    return r


def filter_chunk(records: list[Record], vlm: Any, settings: PairFilterSettings,
                 images: Mapping[str, bytes | None] | None = None) -> list[Record]:
    """Verdicts for one chunk of image rows; the returned rows carry no image bytes.

    Image bytes come from each record's ``image`` or, when absent there, from ``images`` by ``sample_id``.
    """
    out: list[Record] = []
    to_judge: list[tuple[Record, Any]] = []
    for src in records:
        r = _empty_evidence({k: v for k, v in src.items() if k not in _NOT_CARRIED})
        out.append(r)
        score = src.get(SCORE)
        if score is None or not math.isfinite(float(score)):  # NaN compares false with everything: fail closed
            shards.mark(r, SCORE_INVALID)
            continue
        if float(score) <= settings.aesthetic_threshold:
            shards.mark(r, LOW_AESTHETIC)
            continue
        if not settings.judge_enabled:
            shards.mark(r, None)
            continue
        try:
            data = src.get("image")
            if data is None and images is not None:
                data = images.get(src.get("sample_id"))
            if not data:
                raise ValueError("no image bytes")
            image = load_image(data, settings.max_image_pixels)
        except Exception as e:  # missing, truncated or empty bytes: no verdict possible, fail closed
            r["judge_raw"] = f"{e.__class__.__name__}: {e}"
            shards.mark(r, UNREADABLE)
            continue
        to_judge.append((r, image))
    if to_judge:
        constraint = None
        if settings.constrained:
            criteria = CRITERIA if settings.safety else tuple(c for c in CRITERIA if c not in SAFETY_CRITERIA)
            constraint = Constraint(regex=verdict_regex(settings.reasoning_chars, criteria))
        from finet2i.models.backends.vllm_llm import chat_seeded

        convs = [build_messages(image, r.get("prompt_used") or "", settings.safety) for r, image in to_judge]
        # One seed per sample: with temperature > 0 a verdict depends on its own sample only, never on the
        # chunk or batch it landed in, so a resumed or rerun shard reproduces it.
        seeds = [zlib.crc32(str(r.get("sample_id")).encode()) for r, _ in to_judge]
        answers = chat_seeded(vlm, convs, settings.sampling(), constraint, seeds)
        if len(answers) != len(to_judge):
            raise RuntimeError(f"judge returned {len(answers)} answers for {len(to_judge)} images")
        for (r, _), answer in zip(to_judge, answers, strict=True):
            v = parse_judge(answer)
            r["judge_reasoning"] = v.reasoning
            if v.error is not None:
                r["judge_raw"] = answer
                shards.mark(r, UNPARSEABLE)
            else:
                r["judge_violations"] = ",".join(v.violations) or None
                unsafe = settings.safety and any(c in SAFETY_CRITERIA for c in v.violations)
                shards.mark(r, UNSAFE_IMAGE if unsafe else REJECTED if v.rejected else None)
    return out


# The judge's engine: one image per conversation, room for the image tokens and a reasoning answer. A batch job
# builds its shared engine with the same options (workflow_scripts/pair_filter.py).
JUDGE_ENGINE = {"limit_images": 1, "max_model_len": 8192}


def run_pair_filter(image_tables: Mapping[str, str | os.PathLike[str]],
                    out_tables: Mapping[str, str | os.PathLike[str]],
                    stats_paths: Mapping[str, str | os.PathLike[str]], *, shard: str,
                    settings: Mapping[str, Any], model: ModelSpec, vlm: Any = None,
                    kept_images: Mapping[str, str | os.PathLike[str]] | None = None) -> dict[str, StageStats]:
    """Filter one shard of every subset: ``generate/{subset}/{shard}`` -> ``pair_filter/{subset}/{shard}``.

    The three mappings are keyed by subset. One judge engine serves all subsets; it starts only when a chunk
    needs it (a resumed shard, or ``judge.enabled: false``, never starts it). ``vlm``: an already built
    :class:`~finet2i.models.backends.VisionLLM` (tests). ``kept_images`` (keyed by subset): where to cut the kept
    pairs' image bytes into, when the images table will not be kept.
    """
    from finet2i.models.backends.vllm_llm import lazy_chat

    s = PairFilterSettings.from_config(settings)
    missing = sorted(set(image_tables) ^ set(out_tables) | set(image_tables) ^ set(stats_paths))
    if missing:
        raise ValueError(f"pair_filter/{shard}: subsets {missing} lack an images table, an output or a stats "
                         f"path; pass the same subsets in all three")
    engine = lazy_chat(model, vlm, **JUDGE_ENGINE)
    close = runner.closer(engine, vlm)  # one engine for every subset: closed here, not per table
    name = runner.model_name(engine, model.name) if s.judge_enabled else None
    result: dict[str, StageStats] = {}
    try:
        for subset in sorted(image_tables):
            path = image_tables[subset]
            records = runner.read_input(path)
            if any(r.get("sample_id") is None for r in records):
                raise ValueError(f"{path}: every row needs a `sample_id` (packaging joins the images by it)")

            def run_chunk(chunk: list[Record], path: str | os.PathLike[str] = path) -> list[Record]:
                # Only rows that pass the aesthetic threshold are worth reading the bytes of.
                wanted = [r["sample_id"] for r in chunk if (r.get(SCORE) or 0.0) > s.aesthetic_threshold]
                images = image_bytes(path, "sample_id", wanted) if s.judge_enabled else {}
                return filter_chunk(chunk, engine, s, images)

            stage = runner.ChunkedStage(STAGE, run_chunk, s.chunk_size, key=(subset, dict(settings), model.label),
                                        model=name)
            result[subset] = runner.run_chunked(
                stage, path, out_tables[subset], shard=shard, stats_path=stats_paths[subset], records=records,
                subset=subset, judge_enabled=s.judge_enabled, aesthetic_threshold=s.aesthetic_threshold)
            if kept_images is not None:
                kept = [r["sample_id"] for r in shards.read_kept(out_tables[subset], columns=["sample_id"])]
                n = copy_images(path, kept_images[subset], "sample_id", kept)
                log.info("%s/%s: the %d kept pairs' images -> %s", subset, shard, n, kept_images[subset])
    finally:
        if close is not None:
            close()
    return result
