"""Safety guard and length filter (paper 3.1.3).

Prompts longer than ``max_words`` words are dropped first (reason ``too_long``), without spending the model
on them. The rest go to Llama-Guard-3 as a one-turn conversation (the prompt as the user's message); the
model's own chat template wraps it in the safety-classification instruction with the S1-S14 hazard list.
The answer is ``safe`` or ``unsafe`` followed by a line of comma-separated codes (``unsafe\\nS1,S10``).

- any listed code in ``blocked_categories`` -> dropped, reason ``unsafe``, codes in ``guard_categories``;
- ``unsafe`` with codes that are all allowed -> kept, the codes stay as evidence;
- anything that does not parse (empty, truncated, ``unsafe`` without codes, codes outside S1-S14) -> fails
  closed: dropped, reason ``guard_unparseable``, the raw answer kept in ``guard_raw``.

With ``constrained: true`` (default) decoding is held to the answer grammar by a regex, so a production
Llama Guard never produces an unparseable answer and the tiny demo model answers in the right format too.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from finet2i.core import runner, shards
from finet2i.core.settings import default, from_section
from finet2i.core.shards import Record, StageStats
from finet2i.models.backends import Constraint, Sampling
from finet2i.models.spec import ModelSpec
from finet2i.plumbing.answers import word_count

log = logging.getLogger(__name__)

STAGE = "guard"
TOO_LONG = "too_long"
UNSAFE = "unsafe"
UNPARSEABLE = "guard_unparseable"

HAZARD_CODES = tuple(f"S{i}" for i in range(1, 15))
_CODE = r"S(?:[1-9]|1[0-4])"
# Exactly Llama Guard 3's answer grammar.
ANSWER_REGEX = rf"(safe|unsafe\n{_CODE}(,{_CODE})*)"


# "unsafe\nS1,S2,...,S14" is about 40 characters at worst: 24 tokens is ample for any answer of the grammar.
MAX_TOKENS = 24


@dataclass(frozen=True)
class GuardSettings:
    blocked_categories: tuple[str, ...] = default("guard.blocked_categories")
    max_words: int = default("guard.max_words")  # 0: no length limit (the guards of model-written text)
    constrained: bool = default("guard.constrained")
    chunk_size: int = default("guard.chunk_size")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> GuardSettings:
        s = from_section(cls, section)
        return replace(s, blocked_categories=tuple(str(c).upper() for c in s.blocked_categories))


@dataclass(frozen=True)
class GuardVerdict:
    """``safe`` is True/False when the answer parsed, None when it did not."""

    safe: bool | None
    categories: tuple[str, ...] = field(default=())
    error: str | None = None

    @property
    def parsed(self) -> bool:
        return self.safe is not None


def parse_guard_output(text: str | None) -> GuardVerdict:
    """Read a Llama-Guard-3 answer defensively.

    Accepts surrounding whitespace, any case, trailing punctuation, codes separated by commas and/or spaces
    on the second line (or on the first line after ``unsafe``), and duplicate codes. Everything else (a third
    line included) is an error verdict (``safe=None``) that the stage treats as unsafe.
    """
    if text is None or not text.strip():
        return GuardVerdict(None, error="empty answer")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    head = lines[0].lower().rstrip(".!")
    if head == "safe":
        if len(lines) > 1:  # Llama Guard says nothing after "safe"; more is a contradiction, fail closed
            return GuardVerdict(None, error=f"text after 'safe': {lines[1][:40]!r}")
        return GuardVerdict(True)
    first_word = head.split()[0] if head.split() else ""
    if first_word.rstrip(".,:") != "unsafe":
        return GuardVerdict(None, error=f"first line is neither 'safe' nor 'unsafe': {lines[0][:40]!r}")
    if len(lines) > 2:  # Llama Guard's codes are one line; reading only part of a longer answer fails open
        return GuardVerdict(None, error=f"{len(lines)} lines where 'unsafe' and one line of codes belong")
    rest = " ".join([lines[0][len("unsafe"):]] + lines[1:2])
    tokens = [t for t in re.split(r"[\s,;]+", rest.strip().rstrip(".")) if t]
    if not tokens:
        return GuardVerdict(None, error="'unsafe' without hazard codes")
    codes: list[str] = []
    for t in tokens:
        code = t.upper()
        if code not in HAZARD_CODES:
            return GuardVerdict(None, error=f"unknown hazard code {t[:20]!r}")
        if code not in codes:
            codes.append(code)
    return GuardVerdict(False, tuple(codes))


def decide(verdict: GuardVerdict, blocked: Sequence[str]) -> str | None:
    """Drop reason for a parsed (or unparseable) verdict, or None to keep."""
    if not verdict.parsed:
        return UNPARSEABLE
    if verdict.safe:
        return None
    blocked_set = {c.upper() for c in blocked}
    return UNSAFE if any(c in blocked_set for c in verdict.categories) else None


def guard_conversation(prompt: str) -> list[dict[str, Any]]:
    """The prompt as the user's turn; Llama Guard's chat template adds the task, categories and format."""
    return [{"role": "user", "content": prompt}]


def guard_chunk(records: Sequence[Record], llm: Any, settings: GuardSettings, columns: Sequence[str] = ("prompt",),
                prefix: str = "guard") -> list[Record]:
    """Guard the texts in ``columns`` of every record (one batched call); any unsafe or unreadable one drops it.

    Evidence goes to ``<prefix>_verdict`` / ``_categories`` / ``_raw`` (and ``_flagged``, the columns that
    dropped it, when several are checked). A first column over ``settings.max_words`` words (when not 0) is
    dropped as too long before the model sees it.
    """
    out: list[Record] = [dict(r) for r in records]
    asks: list[tuple[Record, str]] = []
    for r in out:
        r[f"{prefix}_verdict"] = r[f"{prefix}_categories"] = r[f"{prefix}_raw"] = None
        if len(columns) > 1:
            r[f"{prefix}_flagged"] = None
        if settings.max_words and word_count(r.get(columns[0])) > settings.max_words:
            shards.mark(r, TOO_LONG)
        else:
            asks += [(r, c) for c in columns]
    if not asks:
        return out
    constraint = Constraint(regex=ANSWER_REGEX) if settings.constrained else None
    sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=MAX_TOKENS, seed=0)
    answers = llm.chat([guard_conversation(r.get(c) or "") for r, c in asks], sampling, constraint)
    by_record: dict[int, tuple[Record, list[tuple[str, GuardVerdict, str]]]] = {}
    for (r, column), raw in zip(asks, answers, strict=True):
        by_record.setdefault(id(r), (r, []))[1].append((column, parse_guard_output(raw), raw))
    for r, checks in by_record.values():
        reasons = [decide(v, settings.blocked_categories) for _, v, _ in checks]
        r[f"{prefix}_raw"] = checks[0][2] if len(checks) == 1 else " | ".join(f"{c}: {raw}" for c, _, raw in checks)
        if all(v.parsed for _, v, _ in checks):
            r[f"{prefix}_verdict"] = "safe" if all(v.safe for _, v, _ in checks) else "unsafe"
            r[f"{prefix}_categories"] = list(dict.fromkeys(code for _, v, _ in checks for code in v.categories))
        for column, v, _ in checks:
            if not v.parsed:
                log.warning("%s: record %s, %s: unparseable answer (%s); dropped (fails closed)", prefix,
                            r.get("id"), column, v.error)
        if len(columns) > 1:
            r[f"{prefix}_flagged"] = ",".join(c for (c, _, _), why in zip(checks, reasons, strict=True) if why) or None
        shards.mark(r, UNPARSEABLE if UNPARSEABLE in reasons else UNSAFE if UNSAFE in reasons else None)
    return out


def run_guard(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, shard: str,
              settings: Mapping[str, Any], model: ModelSpec, stats_path: str | os.PathLike[str] | None = None,
              llm: Any = None, columns: Sequence[str] = ("prompt",), stage: str = STAGE) -> StageStats:
    """Guard one shard: ``results/dedup/{shard}.parquet`` -> ``results/guard/{shard}.parquet``.

    The same guard checks the enhanced prompts (stage ``guard_enhanced``, columns ``enhanced_prompt``) and the
    real images' captions and their enhanced versions (``curated_guard``); each stage's evidence columns carry its
    name, and its rule gives it its own word limit (``guard_enhanced.max_words``, none by default: the paper's
    limit is a rule for original prompts).
    """
    s = GuardSettings.from_config(settings)
    from finet2i.models.backends.vllm_llm import lazy_chat

    engine = lazy_chat(model, llm)
    prefix = stage
    job = runner.ChunkedStage(
        stage, lambda chunk: guard_chunk(chunk, engine, s, columns, prefix),
        s.chunk_size, key=(settings, model.label, tuple(columns)), model=runner.model_name(engine, model.name),
        close=runner.closer(engine, llm),
        summarize=lambda out: {"flagged_categories": runner.count(out, f"{prefix}_categories")})
    return runner.run_chunked(job, in_path, out_path, shard=shard, stats_path=stats_path, columns=list(columns))
