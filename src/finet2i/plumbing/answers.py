"""Reading model answers: helpers that several stages' parsers share (each stage keeps its own grammar).

Everything here fails closed: what cannot be read as the answer asked for is reported as such (None, or a
refusal), never taken for a valid answer.

Model text that becomes a prompt or a caption goes through :func:`clean_markup` at the stage that wrote it: no
think tag, chat-template token (``<|im_start|>``, ``<|eot_id|>``, ``[INST]``, ``</s>``, ...) or U+FFFD replacement
character (a byte token decoded alone, a broken decode) reaches a shipped text; :func:`markup_in` is the test
that package (a last gate) and ``finet2i validate`` apply to what is shipped. One pattern, here, for all of them.
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
# Chat-template special tokens: <|...|> (ChatML, Qwen, Llama 3, Phi), [INST] [/INST] <<SYS>> <s> </s> (Llama 2,
# Mistral), <start_of_turn> <end_of_turn> (Gemma), <pad> <unk>.
_CHAT_TOKEN = re.compile(r"<\|[A-Za-z0-9_]{1,64}\|>|\[/?INST\]|<</?SYS>>|</?s>|<(?:start|end)_of_turn>|<(?:pad|unk)>",
                         re.IGNORECASE)
_THINK_TAG = re.compile(r"</?think>", re.IGNORECASE)
_ROLE = re.compile(r"\s*(?:system|user|assistant|model)\b[ \t]*:?[ \t]*(?:\n|$)", re.IGNORECASE)
REPLACEMENT_CHAR = "\ufffd"
_FENCE_OPEN = re.compile(r"^\s*```[\w+-]*[ \t]*\n?")
_FENCE_CLOSE = re.compile(r"\n?[ \t]*```\s*$")

# What clean_markup removed and markup_in finds (an evidence column and a validate kind name them).
STRAY_THINK = "think_tag"
CHAT_TOKEN = "chat_token"
REPLACEMENT = "replacement_char"


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


def without_code_fence(text: str) -> str:
    """The text inside a Markdown code fence that wraps the whole answer (```` ``` ````, optionally with a
    language tag), or ``text`` as it is; an opening fence whose closing one was cut off by max_tokens goes too."""
    if not _FENCE_OPEN.match(text):
        return text
    return _FENCE_CLOSE.sub("", _FENCE_OPEN.sub("", text, count=1), count=1)


def markup_in(text: str | None) -> list[str]:
    """The kinds of model control markup in ``text``: think tags, chat-template tokens, U+FFFD (empty: none)."""
    if not text:
        return []
    found = [STRAY_THINK] if _THINK_TAG.search(text) else []
    found += [CHAT_TOKEN] if _CHAT_TOKEN.search(text) else []
    return found + ([REPLACEMENT] if REPLACEMENT_CHAR in text else [])


def clean_markup(text: str) -> tuple[str, list[str]]:
    """Model text without its control markup, and what was removed (kinds, as :func:`markup_in` names them).

    Think blocks (closed, or left open to the end) are the model's reasoning: removed. A lone ``</think>`` ends
    reasoning that began in the prompt (a template that opens the block for the model): what precedes it goes.
    Chat-template tokens at the start (with the role after them: ``<|im_start|>assistant``) are stripped; any
    other one ends the answer (what follows is a new turn or padding): the text is cut there. U+FFFD characters
    carry no text: removed. A caller drops what is left empty, as it does any empty answer."""
    removed: list[str] = []
    rest = without_think(text)
    if _THINK_TAG.search(rest):
        rest = _THINK_TAG.split(rest)[-1]
        removed.append(STRAY_THINK)
    while True:
        m = _CHAT_TOKEN.match(rest.lstrip())
        if not m:
            break
        rest = rest.lstrip()[m.end():]
        rest = rest[_ROLE.match(rest).end():] if _ROLE.match(rest) else rest
        removed.append(CHAT_TOKEN)
    m = _CHAT_TOKEN.search(rest)
    if m:
        rest = rest[:m.start()]
        removed.append(CHAT_TOKEN)
    if REPLACEMENT_CHAR in rest:
        rest = rest.replace(REPLACEMENT_CHAR, "")
        removed.append(REPLACEMENT)
    return rest, list(dict.fromkeys(removed))


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
    """The one top-level JSON object in ``text`` (code fences and chatter around it are fine), or None.

    Only objects that start outside every earlier brace count: the inner object of a truncated answer is
    not the answer. An answer with a second top-level object after the first (two verdicts) is ambiguous:
    None, never the first one read as if it were the answer (:func:`top_level_objects` tells the caller why)."""
    if not text:
        return None
    decoder = json.JSONDecoder(strict=False)  # control characters inside strings are no reason to fail
    for start in _top_level_starts(text):
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            return None  # the first top-level object is broken: what follows is inside it or after it
        if next(_top_level_starts(text[end:]), None) is not None:
            return None  # another object follows: which one is the answer?
        return obj if isinstance(obj, dict) else None
    return None


def top_level_objects(text: str) -> int:
    """How many top-level ``{`` an answer has (2 or more: :func:`extract_json_object` reads none of them)."""
    return sum(1 for _ in _top_level_starts(text or ""))


def word_count(text: str | None) -> int:
    """Words as the release counts them (``length``, ``enhanced_length``): whitespace-separated tokens."""
    return len(text.split()) if text else 0
