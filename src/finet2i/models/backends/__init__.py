"""One small interface per kind of model; each has a production backend and is proven on tiny models.

| kind | interface | production backend |
|---|---|---|
| chat LLM (prompt writer, guard, enhancer) | :class:`ChatLLM` | vLLM (:mod:`finet2i.models.backends.vllm_llm`) |
| vision LLM (attribute check, pair judge, captioner) | :class:`VisionLLM` | vLLM multimodal |
| image generator | :class:`ImageGenerator` | diffusers ZImagePipeline / Flux2Pipeline |
| aesthetic scorer | :class:`AestheticScorer` | SigLIP + Aesthetic Predictor V2.5 head |
| text embedder | :class:`TextEmbedder` | sentence-transformers (all-MiniLM-L6-v2) |

Backends import torch/vLLM/diffusers inside their constructors, never at module import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

Message = dict[str, Any]  # {"role": ..., "content": str | list[{"type": "text"|"image", ...}]}


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None


@dataclass(frozen=True)
class Constraint:
    """Structured output: exactly one of ``choice`` (list of strings), ``regex`` or ``json_schema``."""

    choice: list[str] | None = None
    regex: str | None = None
    json_schema: dict[str, Any] | None = field(default=None)


@runtime_checkable
class ChatLLM(Protocol):
    model_name: str

    def chat(self, conversations: list[list[Message]], sampling: Sampling,
             constraint: Constraint | None = None) -> list[str]: ...


@runtime_checkable
class VisionLLM(Protocol):
    """Messages may hold ``{"type": "image", "image": PIL.Image}`` parts."""

    model_name: str

    def chat(self, conversations: list[list[Message]], sampling: Sampling,
             constraint: Constraint | None = None) -> list[str]: ...


@runtime_checkable
class ImageGenerator(Protocol):
    model_name: str

    def generate(self, prompts: list[str], *, width: int, height: int, seeds: list[int]) -> list[Any]: ...


@runtime_checkable
class AestheticScorer(Protocol):
    model_name: str

    def score(self, images: list[Any]) -> list[float]: ...


@runtime_checkable
class TextEmbedder(Protocol):
    model_name: str

    def embed(self, texts: list[str]) -> np.ndarray: ...
