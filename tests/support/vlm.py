"""The tiny Qwen3-VL and one vLLM engine on it, built once per test session and shared by the vision-LLM
stage tests (attributes, pair_filter, caption, qwen3_vl): registered by tests/conftest.py."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from finet2i.models.spec import ModelSpec

# Module-level cache as well as session scope, in case a module imports the fixtures instead.
_CACHE: dict[str, Any] = {}


@pytest.fixture(scope="session")
def tiny_qwen3_vl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "path" not in _CACHE:
        from finet2i.demo.qwen3_vl import build_qwen3_vl

        _CACHE["path"] = build_qwen3_vl(tmp_path_factory.mktemp("qwen3-vl") / "qwen3-vl", seed=0)
    return _CACHE["path"]


def vlm_spec(path: Path, key: str = "models.judge") -> ModelSpec:
    return ModelSpec(key=key, path=str(path))


@pytest.fixture(scope="session")
def tiny_vlm(tiny_qwen3_vl: Path, request: pytest.FixtureRequest) -> Any:
    """A VLLMChat on the tiny Qwen3-VL accepting one image per prompt (serves verifier, judge, captioner)."""
    if "vlm" not in _CACHE:
        from finet2i.models.backends.vllm_llm import VLLMChat

        vlm = VLLMChat(vlm_spec(tiny_qwen3_vl), max_model_len=4096, seed=0, limit_images=1)
        _CACHE["vlm"] = vlm

        def close() -> None:
            _CACHE.pop("vlm", None)
            vlm.close()

        request.addfinalizer(close)
    return _CACHE["vlm"]


def jpeg(color: tuple[int, int, int], size: tuple[int, int] = (64, 48), stripes: bool = True) -> bytes:
    """A small JPEG: a coloured picture with stripes, so the vision tower sees more than one value."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, color)
    if stripes:
        d = ImageDraw.Draw(im)
        for x in range(0, size[0], 12):
            d.rectangle([x, 0, x + 4, size[1]], fill=(255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()
