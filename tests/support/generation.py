"""Tiny Z-Image, FLUX.2, SigLIP and V2.5-head models, built once per test session and shared by the generation
and aesthetic tests (import the fixtures into a test module to use them)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from finet2i.models.spec import ModelSpec


@dataclass
class TinyModels:
    root: Path
    z_image: Path
    flux2: Path
    siglip: Path
    head: Path
    build_seconds: dict[str, float] = field(default_factory=dict)

    def spec(self, key: str) -> ModelSpec:
        return ModelSpec(key=f"models.{key}", path=str(getattr(self, key)))


_CACHE: dict[str, Any] = {}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    # A module-level cache as well as session scope: the fixture is imported into several test modules.
    if "models" not in _CACHE:
        from finet2i.demo.aesthetic import build_aesthetic
        from finet2i.demo.diffusion import build_flux2, build_z_image

        root = tmp_path_factory.mktemp("gen-models")
        seconds = {}
        t = time.monotonic()
        z = build_z_image(root, seed=0)
        seconds["z_image"] = time.monotonic() - t
        t = time.monotonic()
        f = build_flux2(root, seed=0)
        seconds["flux2"] = time.monotonic() - t
        t = time.monotonic()
        enc, head = build_aesthetic(root, seed=0)  # calibrated on renders of the two generators above
        seconds["aesthetic"] = time.monotonic() - t
        _CACHE["models"] = TinyModels(root, z, f, enc, head, seconds)
    return _CACHE["models"]


@pytest.fixture(scope="session")
def tiny_generators(tiny_models: TinyModels) -> dict[str, Any]:
    if "generators" not in _CACHE:
        from finet2i.models.backends.diffusers_gen import load_generator

        _CACHE["generators"] = {
            "z_image": load_generator("z_image", tiny_models.spec("z_image"), steps=2, guidance=0.0),
            "flux2": load_generator("flux2", tiny_models.spec("flux2"), steps=2, guidance=4.0),
        }
    return _CACHE["generators"]


@pytest.fixture(scope="session")
def tiny_scorer(tiny_models: TinyModels) -> Any:
    if "scorer" not in _CACHE:
        from finet2i.models.backends.aesthetic import load_aesthetic_scorer

        _CACHE["scorer"] = load_aesthetic_scorer(tiny_models.spec("siglip"), tiny_models.spec("head"))
    return _CACHE["scorer"]
