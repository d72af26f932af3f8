"""Prompt enhancement (paper 3.1.4) with a PromptEnhancer-style rewriter; never drops a record.

PromptEnhancer-7B (Wang et al. 2025, the production model) is a chain-of-thought rewriter: it answers with a
reasoning block and the rewritten prompt in answer tags, ``<think>...</think>\\n<answer>...</answer>``. Its
reference inference code takes the first ``<answer>`` block, else the text left after removing think
blocks, else the original prompt. We do the same and say which case happened:

- ``<answer>`` found and non-empty -> that text (``enhance_note`` null);
- no answer tag but clean text without tags -> that text (``enhance_note = "no_answer_tag"``);
- otherwise (empty, only a think block, cut off inside ``<think>`` or ``<answer>``, a refusal such as "I'm
  sorry, I can't help with that": ``enhance_refused``) -> the original prompt, ``enhance_fallback = true`` and
  the reason in ``enhance_note``, the raw answer in ``enhance_raw``. A refusal never becomes a prompt.
Control characters (NUL bytes) are removed from the answer first; chat-template tokens and U+FFFD characters
from the text taken (``plumbing.answers.clean_markup``; what was removed in ``enhance_markup``).

The same function serves the real-image branch (``prompt_column`` names the caption column there).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from finet2i.core import runner, shards
from finet2i.core.settings import FromSection, default
from finet2i.core.shards import Record, StageStats
from finet2i.models.backends import Constraint, Message, Sampling
from finet2i.models.spec import ModelSpec
from finet2i.plumbing.answers import (
    clean_markup,
    is_refusal,
    think_unterminated,
    without_control_chars,
    without_think,
    word_count,
)

log = logging.getLogger(__name__)

STAGE = "enhance"

# PromptEnhancer's default rewriting instructions (its repo ships them in Chinese), in English so that the
# rewritten prompts stay English like the rest of the dataset: keep the intent, global-details-global
# structure, objective, main subject first, spatial logic, end with a one-sentence style summary.
SYSTEM_PROMPT = (
    "You are an expert in writing prompts for image generation. Rewrite the user's prompt into a new, more "
    "detailed prompt. Requirements: 1. the subjects, actions, quantities, style, layout, relations, "
    "attributes and any text must keep the original intent; 2. follow an overall-details-overall structure "
    "so the information is clearly layered; 3. stay objective and neutral, without subjective judgement; "
    "4. describe the most important elements first, then secondary and background elements; 5. follow a "
    "clear spatial or importance order so the reader can rebuild the picture; 6. end with one sentence "
    "that sums up the overall style or type of the image. Think inside <think></think>, then give the "
    "rewritten prompt inside <answer></answer>."
)

# Used only with ``constrained: true``: the answer must hold a closed answer block (demo models; a real
# PromptEnhancer follows the format on its own). Character classes keep tags from nesting.
ANSWER_REGEX = r"(<think>[^<]{0,2000}</think>\n?)?<answer>\s?[^<\s][^<]{0,4000}</answer>"

NO_ANSWER_TAG = "no_answer_tag"
REFUSED = "enhance_refused"

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(r"</?\s*(?:think|answer)\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class EnhanceSettings(FromSection):
    temperature: float = default("enhance.temperature")
    top_p: float = default("enhance.top_p")
    max_tokens: int = default("enhance.max_tokens")
    constrained: bool = default("enhance.constrained")
    chunk_size: int = default("enhance.chunk_size")

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)


@dataclass(frozen=True)
class Extraction:
    """``text`` is the enhanced prompt, or None when the caller must fall back to the original."""

    text: str | None
    note: str | None = None

    @property
    def fallback(self) -> bool:
        return self.text is None


def extract_enhanced(raw: str | None) -> Extraction:
    """The rewritten prompt in a PromptEnhancer answer, or why there is none."""
    if raw is None or not raw.strip():
        return Extraction(None, "empty_output")
    raw = without_control_chars(raw)  # a NUL byte in a prompt breaks tokenizers and tar readers downstream
    if is_refusal(raw):
        return Extraction(None, REFUSED)
    m = _ANSWER.search(raw)
    if m:
        if _TAG.search(m.group(1)):  # "<answer> <answer> ...": a tag inside the answer is noise, not a prompt
            return Extraction(None, "malformed_tags")
        text = " ".join(clean_markup(m.group(1))[0].split())  # chat-template tokens, U+FFFD
        if is_refusal(text):
            return Extraction(None, REFUSED)
        return Extraction(text, None) if text else Extraction(None, "empty_answer")
    if think_unterminated(raw):
        return Extraction(None, "unterminated_think")
    rest = without_think(raw)
    if "<answer>" in rest.lower():
        return Extraction(None, "unterminated_answer")
    if _TAG.search(rest):
        return Extraction(None, "malformed_tags")
    text = " ".join(clean_markup(rest)[0].split())
    if not text:
        return Extraction(None, "no_answer")  # only a think block (or only markup)
    return Extraction(text, NO_ANSWER_TAG)


def build_messages(prompt: str) -> list[Message]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]


def record_seed(record: Mapping[str, Any]) -> int:
    """The spec's seed (synthetic prompts) or a stable one from the id (real images carry no seed)."""
    seed = record.get("seed")
    if seed is not None:
        return int(seed)
    digest = hashlib.sha256(f"enhance/{record.get('id')}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def enhance_chunk(records: Sequence[Record], llm: Any, settings: EnhanceSettings, model_name: str,
                  prompt_column: str = "prompt") -> list[Record]:
    from finet2i.models.backends.vllm_llm import chat_seeded

    out = [dict(r) for r in records]
    todo = [r for r in out if (r.get(prompt_column) or "").strip()]
    constraint = Constraint(regex=ANSWER_REGEX) if settings.constrained else None
    answers = chat_seeded(llm, [build_messages(r[prompt_column]) for r in todo], settings.sampling(),
                          constraint, [record_seed(r) for r in todo]) if todo else []
    raw_by_id = {id(r): a for r, a in zip(todo, answers, strict=True)}
    for r in out:
        original = r.get(prompt_column) or ""
        raw = raw_by_id.get(id(r))
        ex = extract_enhanced(raw) if id(r) in raw_by_id else Extraction(None, "empty_input")
        r["enhanced_prompt"] = ex.text if ex.text is not None else original
        r["enhanced_length"] = word_count(r["enhanced_prompt"])
        r["enhancer"] = model_name
        r["enhance_fallback"] = ex.fallback
        r["enhance_note"] = ex.note
        r["enhance_raw"] = raw if ex.fallback else None  # evidence for the fallbacks only
        # evidence: the chat markup or U+FFFD cleaning removed from the answer (think blocks are its format)
        r["enhance_markup"] = ",".join(k for k in clean_markup(raw or "")[1] if k != "think_tag") or None
        shards.mark(r, None)
    return out


def run_enhance(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, shard: str,
                settings: Mapping[str, Any], model: ModelSpec,
                stats_path: str | os.PathLike[str] | None = None, llm: Any = None,
                prompt_column: str = "prompt", stage: str = STAGE) -> StageStats:
    """Enhance one shard's kept prompts (``prompt_column``); every input record comes out kept.

    ``stage`` names the stats (``curated_enhance`` for the real-image branch, so the funnel keeps the two apart).
    """
    from finet2i.models.backends.vllm_llm import lazy_chat

    s = EnhanceSettings.from_config(settings)
    records = runner.read_input(in_path)
    if records and prompt_column not in records[0]:
        raise KeyError(f"{in_path}: no column {prompt_column!r} to enhance (columns: {sorted(records[0])})")
    engine = lazy_chat(model, llm)
    name = runner.model_name(engine, model.name)
    job = runner.ChunkedStage(
        stage, lambda chunk: enhance_chunk(chunk, engine, s, name, prompt_column), s.chunk_size,
        key=(settings, model.label, prompt_column), model=name, close=runner.closer(engine, llm),
        summarize=lambda out: {"fallbacks": sum(1 for r in out if r.get("enhance_fallback")),
                               "notes": runner.count(out, "enhance_note")})
    return runner.run_chunked(job, in_path, out_path, shard=shard, stats_path=stats_path, records=records)
