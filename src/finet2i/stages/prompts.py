"""Prompt generation (paper 3.1.1): one controlled prompt per spec, written by an instruction LLM.

Each spec (category / sub-category, style, task, template, length target, seed) becomes a system + user
instruction; the paper adds the template instruction to the system prompt (Appendix A). Sampling uses a high
temperature with a lower nucleus (T=1.4, top-p 0.8) and the spec's own seed, so a record's prompt depends on
that record only and a rerun reproduces it. The LLM's answer is cleaned defensively (quotes, "Prompt:"
lead-ins, chatter, several alternatives, control characters); refusals (``generation_refused``) and trivial
generations (< ``min_words`` words) are dropped.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from finet2i.core import runner, shards
from finet2i.core.settings import FromSection, default
from finet2i.core.shards import Record, StageStats
from finet2i.models.backends import Message, Sampling
from finet2i.models.spec import ModelSpec
from finet2i.plumbing.answers import clean_markup, is_refusal, without_code_fence, without_control_chars, word_count

log = logging.getLogger(__name__)

STAGE = "prompts"

SYSTEM_PROMPT = (
    "You write prompts for a text-to-image model. Each prompt describes one image that the model should "
    "generate. Answer with the prompt only: no title, no quotation marks, no explanation, no alternatives."
)

TOO_SHORT = "too_short"
EMPTY = "empty_generation"
REFUSED = "generation_refused"


@dataclass(frozen=True)
class PromptSettings(FromSection):
    temperature: float = default("prompts.temperature")
    top_p: float = default("prompts.top_p")
    max_tokens: int = default("prompts.max_tokens")
    min_words: int = default("prompts.min_words")
    chunk_size: int = default("prompts.chunk_size")

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)


def _length_phrase(spec: Mapping[str, Any]) -> str:
    lo, hi = spec.get("min_words"), spec.get("max_words")
    if lo is not None and hi is not None:
        return f"between {lo} and {hi} words"
    target = spec.get("length_target")
    return f"{target}" if target else "any length"


def build_messages(spec: Mapping[str, Any], context: Mapping[str, str] | None = None) -> list[Message]:
    """The conversation that asks for one prompt matching ``spec``.

    ``context`` may hold ``category_description``, ``subcategory_description``, ``style_description``
    (see :meth:`finet2i.recipe.taxonomy.Taxonomy.context`); they make the request clearer, but are optional.
    """
    ctx = dict(context or {})
    system = SYSTEM_PROMPT
    template_instruction = (spec.get("template_instruction") or "").strip()
    if template_instruction:
        system += " Prompt structure: " + template_instruction

    def described(label: Any, description: str) -> str:
        return f"{label} ({description})" if description else f"{label}"

    lines = [
        "Write one prompt for a text-to-image model.",
        f"Category: {described(spec.get('category'), ctx.get('category_description', ''))}",
        f"Sub-category: {described(spec.get('subcategory'), ctx.get('subcategory_description', ''))}",
        f"Style: {described(spec.get('style'), ctx.get('style_description', ''))}",
    ]
    task = spec.get("task")
    task_instruction = (spec.get("task_instruction") or "").strip()
    if task and task != "Not Specified":
        lines.append(f"Task: {task}" + (f". {task_instruction}" if task_instruction else ""))
    else:
        lines.append("Task: none")
    lines.append(f"Length: {_length_phrase(spec)}.")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}]


# Lead-ins that instruction models put before the actual prompt.
_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|okay|ok|certainly|of course)\b[^\n:]{0,40}?[,.!:]\s*)?"
    r"(?:here(?:'s| is| are)\b[^\n:]{0,80}:\s*)?", re.IGNORECASE)
_LABEL = re.compile(
    r"^\s*[*#_\s]*(?:(?:final|image|text-to-image|t2i|generated|your|the)\s+)*prompt(?:\s*\d+)?\s*[*_]*\s*"
    r"[:：\-–—]\s*[*_]*\s*", re.IGNORECASE)
_LIST_MARK = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_QUOTES = "\"'`“”‘’«»"


def clean_prompt(text: str | None) -> str:
    """One prompt out of an LLM answer; "" when nothing usable is left.

    Strips think blocks and chat-template markup (``clean_markup``), a code fence around the answer, "Sure, here
    is ...:" and "Prompt:" lead-ins, list markers, markdown emphasis and surrounding quotes; keeps the first
    paragraph when the model offered several; collapses whitespace.
    """
    if not text:
        return ""
    s = without_control_chars(clean_markup(text)[0]).strip()  # think blocks, chat tokens, U+FFFD
    s = without_code_fence(s).strip()
    s = _PREAMBLE.sub("", s, count=1)
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", s) if p.strip()]
    # A lone label line ("**Prompt:**") followed by the prompt in the next paragraph.
    while len(paragraphs) > 1 and not _LABEL.sub("", paragraphs[0]).strip(" *_#\t"):
        paragraphs.pop(0)
    s = paragraphs[0] if paragraphs else ""
    lines = [ln for ln in s.splitlines() if ln.strip()]
    if len(lines) > 1 and all(_LIST_MARK.match(ln) for ln in lines):
        s = lines[0]  # a numbered list of alternatives: keep the first
    s = _LABEL.sub("", s, count=1)
    s = _LIST_MARK.sub("", s, count=1)
    s = " ".join(s.split())
    for _ in range(3):  # nested decorations such as **"..."**
        s = s.strip().strip("*_").strip()
        if not s:
            break
        if len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES:
            s = s[1:-1]
        elif s[:1] in _QUOTES and s.count(s[0]) == 1:
            s = s[1:]  # an opening quote whose closing one was cut off by max_tokens
        elif s[-1:] in _QUOTES and s.count(s[-1]) == 1:
            s = s[:-1]
    return s.strip()


def judge_prompt(prompt: str, min_words: int) -> str | None:
    """Drop reason for a cleaned prompt, or None to keep it."""
    if not prompt:
        return EMPTY
    if is_refusal(prompt):  # "I'm sorry, but I can't ..." has enough words to pass as a prompt
        return REFUSED
    if word_count(prompt) < min_words:
        return TOO_SHORT
    return None


def generate_chunk(records: Sequence[Record], llm: Any, settings: PromptSettings, model_name: str,
                   context: Callable[[Record], Mapping[str, str]] | None = None) -> list[Record]:
    """Write, clean and judge the prompts of one chunk of specs."""
    from finet2i.models.backends.vllm_llm import chat_seeded

    conversations = [build_messages(r, context(r) if context else None) for r in records]
    seeds = [int(r["seed"]) for r in records]
    answers = chat_seeded(llm, conversations, settings.sampling(), None, seeds)
    out: list[Record] = []
    for rec, raw in zip(records, answers, strict=True):
        r = dict(rec)
        prompt = clean_prompt(raw)
        r["prompt"] = prompt or None
        r["prompt_markup"] = ",".join(clean_markup(raw or "")[1]) or None  # evidence: what cleaning removed
        r["prompt_generator"] = model_name
        r["length"] = word_count(prompt)
        out.append(shards.mark(r, judge_prompt(prompt, settings.min_words)))
    return out


def _taxonomy_context(taxonomy: Any) -> Callable[[Record], Mapping[str, str]] | None:
    if taxonomy is None:
        return None
    if isinstance(taxonomy, (str, os.PathLike)):
        from finet2i.recipe.taxonomy import load_taxonomy

        taxonomy = load_taxonomy(taxonomy)

    def context(spec: Record) -> Mapping[str, str]:
        try:
            return taxonomy.context(spec)
        except KeyError:  # a spec from another taxonomy version: ask without descriptions
            return {}

    return context


def run_prompts(specs_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, shard: str,
                settings: Mapping[str, Any], model: ModelSpec,
                stats_path: str | os.PathLike[str] | None = None, llm: Any = None,
                taxonomy: Any = None) -> StageStats:
    """Generate the prompts of one shard: ``results/specs/{shard}.parquet`` -> ``results/prompts/{shard}``.

    ``llm``: an already built :class:`~finet2i.models.backends.ChatLLM` (tests); by default a vLLM engine for
    ``model`` starts when the first unfinished chunk needs it. ``taxonomy``: a path or ``Taxonomy`` whose
    descriptions enrich the instruction (optional).
    """
    from finet2i.models.backends.vllm_llm import lazy_chat

    s = PromptSettings.from_config(settings)
    engine = lazy_chat(model, llm)
    name = runner.model_name(engine, model.name)
    context = _taxonomy_context(taxonomy)
    stage = runner.ChunkedStage(
        STAGE, lambda chunk: generate_chunk(chunk, engine, s, name, context), s.chunk_size,
        key=(settings, model.label), model=name, close=runner.closer(engine, llm))
    return runner.run_chunked(stage, specs_path, out_path, shard=shard, stats_path=stats_path)
