"""Reading model answers: helpers that several stages' parsers share (each stage keeps its own grammar)."""

from __future__ import annotations

import json
from typing import Any


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (tolerating code fences and chatter around it), or None."""
    if not text:
        return None
    decoder = json.JSONDecoder(strict=False)  # control characters inside strings are no reason to fail
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        return obj if isinstance(obj, dict) else None
    return None


def word_count(text: str | None) -> int:
    """Words as the release counts them (``length``, ``enhanced_length``): whitespace-separated tokens."""
    return len(text.split()) if text else 0
