"""Reading model answers: helpers that several stages' parsers share (each stage keeps its own grammar).

Everything here fails closed: what cannot be read as the answer asked for is reported as such (None, or a
refusal), never taken for a valid answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

# How instruction models decline: at the start of the answer (after any think block).
_REFUSAL = re.compile(
    r"^\W*(?:i'?m\s+sorry|sorry\b|i\s+apologi[sz]e|my\s+apologies|unfortunately\b|as\s+an\s+ai\b"
    r"|i\s+(?:can(?:not|'?t|\s+not)|won'?t|am\s+(?:not\s+able|unable)|'m\s+(?:not\s+able|unable)"
    r"|will\s+not|must\s+(?:decline|refuse)|do\s+not\s+feel\s+comfortable)\b)",
    re.IGNORECASE)
# A reasoning block: closed, or left open because the model ran out of tokens while thinking (then to the end).
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_CLOSED_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def without_think(text: str) -> str:
    """The answer without the model's reasoning: every ``<think>...</think>`` block removed, and one left open
    removed to the end. The one think-block stripper of the package."""
    return _THINK_BLOCK.sub("", text)


def think_unterminated(text: str) -> bool:
    """Whether a ``<think>`` block is left open (the model ran out of tokens while thinking)."""
    return "<think>" in _CLOSED_THINK_BLOCK.sub("", text).lower()


def is_refusal(text: str | None) -> bool:
    """Whether an answer declines the task ("I'm sorry, I can't help with that")."""
    return bool(text) and bool(_REFUSAL.match(without_think(text).strip()))


def without_control_chars(text: str) -> str:
    """``text`` without NUL and other control characters (tabs and line breaks stay)."""
    return _CONTROL.sub("", text)


def _top_level_starts(text: str) -> Iterator[int]:
    """Positions of ``{`` outside any brace or JSON string opened before them.

    A truncated outer object (``{"a": {"b": 1}``) must not yield its inner object as if it were the answer.
    """
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"' and depth > 0:
            in_string = True
        elif ch == "{":
            if depth == 0:
                yield i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first top-level JSON object in ``text`` (code fences and chatter around it are fine), or None.

    Only objects that start outside every earlier brace count: the inner object of a truncated answer is
    not the answer."""
    if not text:
        return None
    decoder = json.JSONDecoder(strict=False)  # control characters inside strings are no reason to fail
    for start in _top_level_starts(text):
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            return None  # the first top-level object is broken: what follows is inside it or after it
        return obj if isinstance(obj, dict) else None
    return None


def word_count(text: str | None) -> int:
    """Words as the release counts them (``length``, ``enhanced_length``): whitespace-separated tokens."""
    return len(text.split()) if text else 0
