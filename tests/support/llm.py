"""The tiny Llama-3 prompt model and Llama-Guard-3-style guard, built once per test session, and one vLLM
engine on each, shared by test_vllm_backend, test_prompts, test_guard, test_enhance
(registered by tests/conftest.py).

The models are trained for a few steps only (tests check the plumbing and the stage contracts, not prose).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from finet2i.core import shards
from finet2i.models.spec import ModelSpec

REPO = Path(__file__).resolve().parents[2]
TAXONOMY = REPO / "config" / "taxonomy.yaml"

_CACHE: dict[str, Any] = {}


@pytest.fixture(scope="session")
def tiny_prompt_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "prompt" not in _CACHE:
        from finet2i.demo.llm import build_prompt_llm

        _CACHE["prompt"] = build_prompt_llm(tmp_path_factory.mktemp("llm") / "prompt-llm", seed=0,
                                           train_steps=25, max_seconds=40, taxonomy=TAXONOMY)
    return _CACHE["prompt"]


@pytest.fixture(scope="session")
def tiny_guard_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "guard" not in _CACHE:
        from finet2i.demo.llm import build_guard_llm

        _CACHE["guard"] = build_guard_llm(tmp_path_factory.mktemp("llm") / "guard-llm", seed=0,
                                          train_steps=15, max_seconds=30)
    return _CACHE["guard"]


def prompt_spec(path: Path) -> ModelSpec:
    return ModelSpec(key="models.prompt_generator", path=str(path))


def guard_spec(path: Path) -> ModelSpec:
    return ModelSpec(key="models.guard", path=str(path))


def _engine(name: str, spec: ModelSpec, request: pytest.FixtureRequest) -> Any:
    if name not in _CACHE:
        from finet2i.models.backends.vllm_llm import VLLMChat

        engine = VLLMChat(spec, seed=0)
        _CACHE[name] = engine

        def close() -> None:
            _CACHE.pop(name, None)
            engine.close()

        request.addfinalizer(close)
    return _CACHE[name]


@pytest.fixture(scope="session")
def prompt_engine(tiny_prompt_llm: Path, request: pytest.FixtureRequest) -> Any:
    """VLLMChat on the tiny prompt model (serves the prompts and enhance stages, as in the demo config)."""
    return _engine("prompt_engine", prompt_spec(tiny_prompt_llm), request)


@pytest.fixture(scope="session")
def guard_engine(tiny_guard_llm: Path, request: pytest.FixtureRequest) -> Any:
    return _engine("guard_engine", guard_spec(tiny_guard_llm), request)


def write_specs(path: Path, n: int, shard: str = "00000", seed: int = 7) -> list[dict[str, Any]]:
    """A real specs shard table, sampled from the project's taxonomy."""
    from finet2i.recipe.taxonomy import load_taxonomy, sample_specs

    specs = [shards.mark(dict(s), None) for s in sample_specs(load_taxonomy(TAXONOMY), shard, n, seed)]
    shards.write_stage_output(path, specs, stage="specs", shard=shard, started=time.monotonic())
    return specs


def write_prompts(path: Path, prompts: list[str], shard: str = "00000", **extra: Any) -> list[dict[str, Any]]:
    """An upstream table of kept prompt records (what dedup/guard/attributes hand on)."""
    records = []
    for i, p in enumerate(prompts):
        r = {"id": f"{shard}-{i:06d}", "shard": shard, "index": i, "prompt": p, "seed": 1000 + i, **extra}
        records.append(shards.mark(r, None))
    shards.write_stage_output(path, records, stage="upstream", shard=shard, started=time.monotonic())
    return records
