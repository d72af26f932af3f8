"""Captions for the real-image set (paper 3.2): the captioner writes the short prompt, and by default the long one.

The captioner (Qwen2.5-VL-7B-Captioner-Relaxed in the paper) looks at each real photograph. With
``curated.long_prompt: captioner`` (the default, as in the release, whose real images' ``prompt`` and
``enhanced_prompt`` both come from the captioner: medians ~250 and ~1,060 characters) it answers two
instructions per image: a short prompt (one or two sentences, about 30-60 words, like a user's request) into
``prompt``, and a detailed paragraph (about 150-250 words: subject, composition, lighting, colors, style,
background) into ``enhanced_prompt``, with ``enhancer`` = the captioner's name; stage ``curated_enhance`` is
then off. With ``curated.long_prompt: enhancer`` it writes the short prompt only and ``curated_enhance`` (the
text-only prompt enhancer) writes the long one. Both prompts of a chunk go to the engine in one batch of 2N
requests, each with its own token budget (``curated.caption.max_tokens`` / ``long_max_tokens``).

``prompt_generator`` = the captioner's name and ``length`` = the short prompt's word count, as in the release.
The answers are cleaned defensively (quotes, "Caption:" lead-ins, think blocks, control characters; the short
one keeps its first paragraph only, the long one joins its paragraphs and drops trailing chatter). A record
is dropped, its raw answer kept in ``caption_raw``, when the short caption is empty (``empty_caption``) or a
refusal ("I'm sorry, I can't describe this image": ``caption_refused``), when the long one is
(``empty_long_caption``, ``long_caption_refused``: the release has no real image without its long prompt), or
when the image cannot be read (``image_unreadable``).

Output rows carry no image bytes; they come from the ``curated_ingest`` table, one chunk at a time.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from finet2i.core import runner, shards
from finet2i.core.settings import FromSection, default
from finet2i.core.shards import Record, StageStats
from finet2i.models.backends import Message, Sampling
from finet2i.models.spec import ModelSpec
from finet2i.plumbing.answers import (
    clean_markup,
    is_refusal,
    without_code_fence,
    without_control_chars,
    word_count,
)
from finet2i.plumbing.images import image_bytes, load_image

log = logging.getLogger(__name__)

STAGE = "curated_caption"
EMPTY = "empty_caption"
REFUSED = "caption_refused"
EMPTY_LONG = "empty_long_caption"
LONG_REFUSED = "long_caption_refused"
UNREADABLE = "image_unreadable"
# curated.long_prompt: who writes enhanced_prompt.
CAPTIONER = "captioner"
ENHANCER = "enhancer"
LONG_PROMPT_WRITERS = (CAPTIONER, ENHANCER)

INSTRUCTION = (
    "Write a prompt for a text-to-image model that would produce this image, the way a user would ask for "
    "it: one or two sentences, about 30 to 60 words, naming the main subject, the setting and the visual "
    "style. Answer with the prompt only."
)
LONG_INSTRUCTION = (
    "Write a detailed prompt for a text-to-image model that would reproduce this image: one full paragraph "
    "of about 150 to 250 words describing the main subject and its details, the composition and viewpoint, "
    "the lighting, the colors, the style or medium, and the background. Answer with the paragraph only."
)

_LEAD_IN = re.compile(r"^\s*(?:here(?: is|'s|\u2019s) (?:a|the) (?:(?:short|long|detailed) )?"
                      r"(?:prompt|caption|description)[^:\n]*:"
                      r"|(?:(?:short|long|detailed) )?(?:prompt|caption|description)\s*:)\s*", re.IGNORECASE)
# A closing paragraph that talks to the user, not about the image (kept out of the long caption).
_CHATTER = re.compile(r"^(?:i hope|hope this|let me know|feel free|if you (?:want|need|would like|'d like)|"
                      r"would you like)", re.IGNORECASE)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"


@dataclass(frozen=True)
class CaptionSettings(FromSection):
    temperature: float = default("curated.caption.temperature")
    max_tokens: int = default("curated.caption.max_tokens")  # the short prompt
    source_text_hint: bool = default("curated.caption.source_text_hint")
    long_max_tokens: int = default("curated.caption.long_max_tokens")  # the long one (captioner mode)
    chunk_size: int = default("curated.caption.chunk_size")
    max_image_pixels: int = default("curated.caption.max_image_pixels")  # downscaled first (token budget)

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, max_tokens=self.max_tokens)

    def long_sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, max_tokens=self.long_max_tokens)


def clean_caption(text: str | None, long: bool = False) -> str:
    """The caption in a model answer: no think block, chat-template markup, U+FFFD, code fence, lead-in,
    surrounding quotes or control characters, single spaces. A short caption is the answer's first paragraph;
    a long one joins its paragraphs, less a closing paragraph of chatter ("I hope this helps!")."""
    if not text:
        return ""
    # a think block, chat-template markup, U+FFFD or NUL bytes are no caption; nor is a code fence around it
    text = without_code_fence(without_control_chars(clean_markup(text)[0]).strip()).strip()
    text = _LEAD_IN.sub("", text, count=1)
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    if not long:
        paragraphs = paragraphs[:1]
    while len(paragraphs) > 1 and _CHATTER.match(paragraphs[-1].strip()):
        paragraphs.pop()
    text = " ".join(" ".join(paragraphs).split())
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    # Nothing alphanumeric (stray punctuation, control bytes) is no caption.
    return text if any(ch.isalnum() for ch in text) else ""


HINT = (" The site the photo comes from describes it as: \"{text}\". That text may be incomplete or wrong: "
        "describe what you see, and use it only where the image agrees.")


def with_hint(instruction: str, source_text: Any, enabled: bool) -> str:
    """The instruction, followed by the source's own text (``curated.caption.source_text_hint``)."""
    text = " ".join(str(source_text or "").split())[:500]
    return instruction + HINT.format(text=text) if enabled and text else instruction


def build_messages(image: Any, instruction: str = INSTRUCTION) -> list[Message]:
    return [{"role": "user",
             "content": [{"type": "image", "image": image}, {"type": "text", "text": instruction}]}]


def _verdict(answer: str | None, long: bool) -> tuple[str, str | None]:
    """(cleaned caption, drop reason or None)."""
    caption = clean_caption(answer, long=long)
    if is_refusal(caption):
        return "", LONG_REFUSED if long else REFUSED
    if not caption:
        return "", EMPTY_LONG if long else EMPTY
    return caption, None


def caption_chunk(records: list[Record], vlm: Any, settings: CaptionSettings, model_name: str,
                  images: Mapping[str, bytes | None] | None = None, *,
                  long_prompt: str = CAPTIONER) -> list[Record]:
    """Captions for one chunk; bytes come from each record's ``image`` or from ``images`` by ``id``.
    ``long_prompt`` = ``captioner``: the long caption too (``enhanced_prompt``). The returned rows carry no
    image bytes."""
    from finet2i.models.backends.vllm_llm import chat_each

    if long_prompt not in LONG_PROMPT_WRITERS:
        raise ValueError(f"curated.long_prompt: {long_prompt!r} is not one of {', '.join(LONG_PROMPT_WRITERS)}")
    long = long_prompt == CAPTIONER
    out: list[Record] = []
    todo: list[tuple[Record, Any]] = []  # (row, image); the row still has the source's text
    for src in records:
        r = {k: v for k, v in src.items() if k not in ("image", shards.KEPT, shards.DROP_REASON)}
        r["prompt"], r["prompt_generator"], r["length"], r["caption_raw"] = None, model_name, 0, None
        if long:
            r["enhanced_prompt"], r["enhanced_length"], r["enhancer"] = None, 0, model_name
        out.append(r)
        try:
            data = src.get("image")
            if data is None and images is not None:
                data = images.get(src["id"])
            if not data:
                raise ValueError("no image bytes")
            image = load_image(data, settings.max_image_pixels)
        except Exception as e:  # the ingest stage validated the bytes; a failure here is still not fatal
            r["caption_raw"] = f"{e.__class__.__name__}: {e}"
            shards.mark(r, UNREADABLE)
            continue
        todo.append((r, image))
    if not todo:
        return out
    # One batch: the short prompts, then (captioner mode) the long ones, each with its own token budget.
    hint = settings.source_text_hint
    conversations = [build_messages(image, with_hint(INSTRUCTION, r.get("source_text"), hint)) for r, image in todo]
    samplings = [settings.sampling()] * len(todo)
    if long:
        conversations += [build_messages(image, with_hint(LONG_INSTRUCTION, r.get("source_text"), hint))
                          for r, image in todo]
        samplings += [settings.long_sampling()] * len(todo)
    answers = chat_each(vlm, conversations, samplings)
    if len(answers) != len(conversations):
        raise RuntimeError(f"captioner returned {len(answers)} answers for {len(conversations)} requests")
    long_answers = answers[len(todo):] if long else [None] * len(todo)
    for (r, _), answer, long_answer in zip(todo, answers[:len(todo)], long_answers, strict=True):
        # evidence: the markup cleaning removed from either answer
        r["caption_markup"] = ",".join(dict.fromkeys(
            k for a in (answer, long_answer) for k in clean_markup(a or "")[1])) or None
        short, reason = _verdict(answer, long=False)
        raw = answer
        if reason is None and long:
            enhanced, reason = _verdict(long_answer, long=True)
            raw = long_answer
            if reason is None:
                r["enhanced_prompt"], r["enhanced_length"] = enhanced, word_count(enhanced)
        if reason is None:
            r["prompt"], r["length"] = short, word_count(short)
        else:
            r["caption_raw"] = raw
        shards.mark(r, reason)
    return out


# The captioner's engine: one image per conversation. A batch job builds its shared engine with the same options
# (workflow_scripts/curated_caption.py).
CAPTIONER_ENGINE = {"limit_images": 1}


def run_caption(in_path: str | os.PathLike[str], images_path: str | os.PathLike[str],
                out_path: str | os.PathLike[str], *, shard: str, settings: Mapping[str, Any], model: ModelSpec,
                stats_path: str | os.PathLike[str] | None = None, vlm: Any = None,
                long_prompt: str = default("curated.long_prompt")) -> StageStats:
    """Caption the kept real images of one curated shard: ``curated_score`` rows, bytes from ``images_path``
    (the ``curated_ingest`` table) by ``id``, one chunk at a time.

    Output rows keep every input column and add ``prompt``, ``prompt_generator``, ``length``, with
    ``long_prompt`` = ``captioner`` also ``enhanced_prompt``, ``enhanced_length`` and ``enhancer``, and, for
    dropped rows, ``caption_raw``. ``vlm``: an already built VisionLLM (tests).
    """
    from finet2i.models.backends.vllm_llm import lazy_chat

    if long_prompt not in LONG_PROMPT_WRITERS:
        raise ValueError(f"curated.long_prompt: {long_prompt!r} is not one of {', '.join(LONG_PROMPT_WRITERS)}")
    s = CaptionSettings.from_config(settings)
    engine = lazy_chat(model, vlm, **CAPTIONER_ENGINE)
    name = runner.model_name(engine, model.name)

    def caption(chunk: list[Record]) -> list[Record]:
        return caption_chunk(chunk, engine, s, name, image_bytes(images_path, "id", [r["id"] for r in chunk]),
                             long_prompt=long_prompt)

    stage = runner.ChunkedStage(STAGE, caption, s.chunk_size, key=(dict(settings), model.label, long_prompt),
                                model=name, close=runner.closer(engine, vlm))
    return runner.run_chunked(stage, in_path, out_path, shard=shard, stats_path=stats_path)
