"""Short-prompt captions for the real-image set (paper 3.2).

The captioner (Qwen2.5-VL-7B-Captioner-Relaxed in the paper) describes each real photograph in one short
sentence, the way a user would prompt a text-to-image model; the enhance stage later writes the long version.
The caption becomes the record's ``prompt`` (with ``prompt_generator`` = the captioner's name and ``length`` =
its word count, as in the release). The answer is cleaned defensively (quotes, "Caption:" lead-ins, trailing
chatter after the first paragraph, think blocks, control characters); an empty caption is dropped as
``empty_caption``, a refusal ("I'm sorry, I can't describe this image") as ``caption_refused``, an unreadable
image as ``image_unreadable``.

Output rows carry no image bytes; they come from the ``curated_ingest`` table, one chunk at a time.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from finet2i import runner, shards
from finet2i.answers import is_refusal, without_control_chars
from finet2i.backends import Message, Sampling
from finet2i.images import image_bytes, load_image
from finet2i.models import ModelSpec
from finet2i.settings import FromSection, default
from finet2i.shards import Record, StageStats

log = logging.getLogger(__name__)

STAGE = "curated_caption"
EMPTY = "empty_caption"
REFUSED = "caption_refused"
UNREADABLE = "image_unreadable"

INSTRUCTION = (
    "Write a short prompt for a text-to-image model that would produce this image: one sentence of about 10 "
    "to 25 words naming the main subject, the setting and the visual style. Answer with the prompt only."
)

_LEAD_IN = re.compile(r"^\s*(?:here is (?:a|the) (?:short )?(?:prompt|caption)[^:]*:|(?:short )?"
                      r"(?:prompt|caption|description)\s*:)\s*", re.IGNORECASE)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class CaptionSettings(FromSection):
    temperature: float = default("curated.caption.temperature")
    max_tokens: int = default("curated.caption.max_tokens")
    chunk_size: int = default("curated.caption.chunk_size")
    max_image_pixels: int = default("curated.caption.max_image_pixels")  # downscaled first (token budget)

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, max_tokens=self.max_tokens)


def clean_caption(text: str | None) -> str:
    """The caption in a model answer: first paragraph, no lead-in, no surrounding quotes, single spaces."""
    if not text:
        return ""
    text = without_control_chars(_THINK.sub("", text)).strip()  # a think block or NUL bytes are no caption
    text = text.split("\n\n", 1)[0]
    text = _LEAD_IN.sub("", text, count=1)
    text = " ".join(text.split())
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    # Nothing alphanumeric (stray punctuation, control bytes) is no caption.
    return text if any(ch.isalnum() for ch in text) else ""


def build_messages(image: Any) -> list[Message]:
    return [{"role": "user",
             "content": [{"type": "image", "image": image}, {"type": "text", "text": INSTRUCTION}]}]


def caption_chunk(records: list[Record], vlm: Any, settings: CaptionSettings, model_name: str,
                  images: Mapping[str, bytes | None] | None = None) -> list[Record]:
    """Captions for one chunk; bytes come from each record's ``image`` or from ``images`` by ``id``.
    The returned rows carry no image bytes."""
    out: list[Record] = []
    todo: list[tuple[Record, Any]] = []
    for src in records:
        r = {k: v for k, v in src.items() if k not in ("image", shards.KEPT, shards.DROP_REASON)}
        r["prompt"], r["prompt_generator"], r["length"], r["caption_raw"] = None, model_name, 0, None
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
    if todo:
        answers = vlm.chat([build_messages(image) for _, image in todo], settings.sampling())
        if len(answers) != len(todo):
            raise RuntimeError(f"captioner returned {len(answers)} answers for {len(todo)} images")
        for (r, _), answer in zip(todo, answers, strict=True):
            caption = clean_caption(answer)
            reason = REFUSED if is_refusal(caption) else None if caption else EMPTY
            r["prompt"] = caption if reason is None else None
            r["length"] = len(r["prompt"].split()) if r["prompt"] else 0
            if reason is not None:
                r["caption_raw"] = answer
            shards.mark(r, reason)
    return out


def run_caption(in_path: str | os.PathLike[str], images_path: str | os.PathLike[str],
                out_path: str | os.PathLike[str], *, shard: str, settings: Mapping[str, Any], model: ModelSpec,
                stats_path: str | os.PathLike[str] | None = None, vlm: Any = None) -> StageStats:
    """Caption the kept real images of one curated shard: ``curated_score`` rows, bytes from ``images_path``
    (the ``curated_ingest`` table) by ``id``, one chunk at a time.

    Output rows keep every input column and add ``prompt``, ``prompt_generator``, ``length`` and, for dropped
    rows, ``caption_raw``. ``vlm``: an already built VisionLLM (tests).
    """
    from finet2i.backends.vllm_llm import lazy_chat

    s = CaptionSettings.from_config(settings)
    engine = lazy_chat(model, vlm, limit_images=1)
    name = runner.model_name(engine, model.name)

    def caption(chunk: list[Record]) -> list[Record]:
        return caption_chunk(chunk, engine, s, name, image_bytes(images_path, "id", [r["id"] for r in chunk]))

    stage = runner.ChunkedStage(STAGE, caption, s.chunk_size, key=(dict(settings), model.label), model=name,
                                close=runner.closer(engine, vlm))
    return runner.run_chunked(stage, in_path, out_path, shard=shard, stats_path=stats_path)
