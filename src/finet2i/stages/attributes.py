"""Attribute verification (paper 3.1.3, "Filtering based on attributes").

A vision-language model (Qwen3-VL-8B-Instruct in the paper, used with text input only) reads each prompt with
the attributes it was generated for and judges whether the prompt semantically matches them. The verdict is a
JSON object forced by a structured-output constraint (a regex that admits exactly one compact spelling, see
:func:`verdict_regex`), one boolean per checked attribute plus a short reason::

    {"style_match": true, "category_match": false, "reason": "a street scene, not a portrait"}

``attributes.check`` in the config lists the attributes that count (``style``, ``category``; ``subcategory``
and ``task`` are accepted too). A prompt that fails any of them is dropped as ``attribute_mismatch`` with the
failed attributes (``attribute_mismatches``, comma-joined) and the reason (``attribute_reason``) as
evidence. An answer that is not such an object (truncated, not JSON, a key missing) is dropped as
``verifier_unparseable`` with the raw text in ``verifier_raw``: the check fails closed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from finet2i.core import runner, shards
from finet2i.core.settings import default, from_section
from finet2i.core.shards import Record, StageStats
from finet2i.models.backends import Constraint, Message, Sampling
from finet2i.models.spec import ModelSpec
from finet2i.plumbing.answers import extract_json_object

log = logging.getLogger(__name__)

STAGE = "attributes"
MISMATCH = "attribute_mismatch"
UNPARSEABLE = "verifier_unparseable"

# Attribute name -> (record column, how the instruction names it).
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "style": ("style", "style"),
    "category": ("category", "category"),
    "subcategory": ("subcategory", "sub-category"),
    "task": ("task", "task"),
}

SYSTEM_PROMPT = (
    "You verify prompts written for a text-to-image model. Each prompt was written to fit target "
    "attributes: a visual style and a content category (with a sub-category), sometimes a task. "
    "Judge whether the prompt, as written, semantically matches each target attribute: the style must be "
    "stated or clearly implied by the prompt, and the main subject must belong to the category. Be strict "
    "but fair: a prompt matches an attribute when an image generated from it would plainly show that "
    "attribute. Answer with a JSON object only: one boolean '<attribute>_match' per attribute you are "
    "asked about, and a one-sentence 'reason'."
)

MAX_REASON_CHARS = 200


@dataclass(frozen=True)
class AttributeSettings:
    check: tuple[str, ...] = default("attributes.check")
    chunk_size: int = default("attributes.chunk_size")
    temperature: float = default("attributes.temperature")
    max_tokens: int = default("attributes.max_tokens")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> AttributeSettings:
        s = from_section(cls, section)
        unknown = [a for a in s.check if a not in ATTRIBUTES]
        if unknown or not s.check:
            raise ValueError(f"attributes.check: {unknown or 'an empty list'} is not valid; choose from "
                             f"{sorted(ATTRIBUTES)}")
        return s

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, max_tokens=self.max_tokens)


@dataclass
class AttributeVerdict:
    matches: dict[str, bool] = field(default_factory=dict)
    reason: str = ""

    @property
    def mismatched(self) -> list[str]:
        return [a for a, ok in self.matches.items() if not ok]


def verdict_regex(check: Sequence[str]) -> str:
    """The regex the verifier's answer is constrained to: a compact JSON object, keys in a fixed order.

    A regex rather than vLLM's JSON-schema mode: the schema grammar admits any amount of whitespace between
    tokens, and a weak or unlucky model can spend its whole token budget on it (seen with the demo model:
    every answer truncated). The regex admits exactly one spelling, short and always valid JSON.
    """
    fields = [rf'"{re.escape(a)}_match": (true|false)' for a in check]
    fields.append(rf'"reason": "[^"\\]{{0,{MAX_REASON_CHARS}}}"')
    return r"\{" + ", ".join(fields) + r"\}"


def parse_verdict(text: str, check: Sequence[str]) -> AttributeVerdict | None:
    """The verifier's answer as a verdict, or None when it is not a complete one (fail closed)."""
    obj = extract_json_object(text)
    if obj is None:
        return None
    matches: dict[str, bool] = {}
    for a in check:
        value = obj.get(f"{a}_match")
        if not isinstance(value, bool):  # "yes", 1, null: not a verdict we can trust
            return None
        matches[a] = value
    reason = obj.get("reason", "")
    return AttributeVerdict(matches=matches, reason=str(reason) if reason is not None else "")


def build_messages(record: Mapping[str, Any], check: Sequence[str]) -> list[Message]:
    lines = [f"Prompt: {record.get('prompt') or ''}", "", "Target attributes:"]
    for a in check:
        column, label = ATTRIBUTES[a]
        value = record.get(column)
        if a == "category" and record.get("subcategory") and "subcategory" not in check:
            value = f"{value} (sub-category: {record['subcategory']})"
        lines.append(f"- {label}: {value if value not in (None, '') else 'not specified'}")
    keys = ", ".join(f'"{a}_match"' for a in check)
    lines += ["", f"Answer with a JSON object with the keys {keys} and \"reason\"."]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def verify_chunk(records: list[Record], vlm: Any, settings: AttributeSettings) -> list[Record]:
    """Ask the verifier about every record of a chunk (one batched call) and mark each one."""
    if not records:
        return []
    constraint = Constraint(regex=verdict_regex(settings.check))
    answers = vlm.chat([build_messages(r, settings.check) for r in records], settings.sampling(), constraint)
    if len(answers) != len(records):
        raise RuntimeError(f"verifier returned {len(answers)} answers for {len(records)} prompts")
    out: list[Record] = []
    for r, answer in zip(records, answers, strict=True):
        r = dict(r)
        verdict = parse_verdict(answer, settings.check)
        r["attribute_mismatches"] = None
        r["attribute_reason"] = None
        r["verifier_raw"] = None
        if verdict is None:
            r["verifier_raw"] = answer
            shards.mark(r, UNPARSEABLE)
        else:
            r["attribute_reason"] = verdict.reason
            # A comma-joined string keeps one parquet type whatever the chunk holds ("" never occurs: kept
            # rows have null).
            r["attribute_mismatches"] = ",".join(verdict.mismatched) or None
            shards.mark(r, MISMATCH if verdict.mismatched else None)
        out.append(r)
    return out


def run_attributes(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, shard: str,
                   settings: Mapping[str, Any], model: ModelSpec,
                   stats_path: str | os.PathLike[str] | None = None, vlm: Any = None) -> StageStats:
    """Verify the attributes of one shard: ``results/guard/{shard}`` -> ``results/attributes/{shard}``.

    ``vlm``: an already built :class:`~finet2i.models.backends.VisionLLM` (tests); by default a vLLM engine for
    ``model`` starts when the first unfinished chunk needs it (text only: no image inputs are reserved).
    """
    s = AttributeSettings.from_config(settings)
    from finet2i.models.backends.vllm_llm import lazy_chat

    engine = lazy_chat(model, vlm)
    stage = runner.ChunkedStage(
        STAGE, lambda chunk: verify_chunk(chunk, engine, s), s.chunk_size, key=(dict(settings), model.label),
        model=runner.model_name(engine, model.name), close=runner.closer(engine, vlm))
    return runner.run_chunked(stage, in_path, out_path, shard=shard, stats_path=stats_path, check=list(s.check))
