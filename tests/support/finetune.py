"""A small release to fine-tune on (package + assemble, real JPEGs of several sizes and aspect ratios, a few
captions over CLIP's 77 tokens) and the tiny SD-XL and CLIP, each built once per session on first use:
``pytest_plugins = ["support.finetune"]`` (tests/conftest.py registers it)."""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from finet2i.core import shards
from finet2i.release import layout as release
from finet2i.stages import assemble, package

SEED = 7
SIZES = [(64, 64), (64, 48), (48, 64), (96, 32), (64, 64), (40, 72)]
LONG = " ".join(["a very long and winding description of a scene with many small details"] * 12)
_CACHE: dict[str, Any] = {}


def photo(n: int, size: tuple[int, int]) -> bytes:
    """A smooth random picture (a few colour blobs), so a crop or a resize changes what the VAE sees."""
    rng = np.random.default_rng(n)
    coarse = (rng.random((4, 4, 3)) * 255).astype("uint8")
    im = Image.fromarray(coarse).resize(size, Image.BICUBIC)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=92)
    return out.getvalue()


def row(pid: str, subset: str, prompt: str, size: tuple[int, int]) -> dict:
    return {
        "id": pid, "sample_id": f"{subset}-{pid}", "prompt": prompt,
        "enhanced_prompt": f"{prompt}, in a detailed photograph with soft light",
        "style": "General & Photorealistic", "category": "Nature Animals", "subcategory": "Wildlife", "task": None,
        "image_aspect_ratio": "1:1", "image_generator": "Z-Image-Turbo", "prompt_generator": "Llama-3.1-8B-Instruct",
        "enhancer": "promptenhancer-7b", "image_generated_with_enhanced_prompt": subset.startswith("pe"),
        "aesthetic_predictor_v_2_5_score": 6.25, "seed": 11, "template": "simple", "width": size[0],
        "height": size[1],
    }


def build_release(root: Path, per_subset: int = 6, subsets: tuple[str, ...] = ("pe_ar", "po_as")) -> Path:
    """results/dataset/ with ``per_subset`` samples in each of ``subsets`` (3 per tar); the second sample of each
    subset has a caption over 77 tokens. Returns the dataset folder."""
    words = ["red fox", "blue boat", "green tree", "white cat", "old house", "yellow car", "tall tower", "small dog"]
    for subset in subsets:
        rows, images = [], {}
        for i in range(per_subset):
            pid = f"00000-{i:06d}"
            prompt = LONG if i == 1 else f"a {words[i % len(words)]} number {i} by the sea"
            size = SIZES[i % len(SIZES)]
            r = row(pid, subset, prompt, size)
            rows.append(r)
            images[r["sample_id"]] = photo(zlib.crc32(f"{subset}{i}".encode()), size)
        table = root / "package" / subset / "00000.parquet"
        package.package_rows(rows, images, subset=subset, shard="00000", seed=SEED, out_path=table,
                             stats_path=shards.stats_path(table), settings={})
        assemble.run_assemble([table], root / "dataset" / release.folder_of(subset),
                              root / "assemble" / f"{subset}.json", subset=subset, samples_per_tar=3)
    return root / "dataset"


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "release" not in _CACHE:
        _CACHE["release"] = build_release(tmp_path_factory.mktemp("release") / "results")
    return _CACHE["release"]


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "sdxl" not in _CACHE:
        from finet2i.demo.sdxl import build_sdxl

        _CACHE["sdxl"] = build_sdxl(tmp_path_factory.mktemp("models"), seed=0)
    return _CACHE["sdxl"]


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "clip" not in _CACHE:
        from finet2i.demo.sdxl import build_clip

        _CACHE["clip"] = build_clip(tmp_path_factory.mktemp("models"), seed=0)
    return _CACHE["clip"]


@pytest.fixture(scope="session")
def tiny_adapter(tiny_release: Path, tiny_sdxl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter of the tiny SD-XL after a few steps on the tiny release (its folder)."""
    if "adapter" not in _CACHE:
        from finet2i.finetune.train import TrainJob, train

        out = tmp_path_factory.mktemp("adapter")
        job = TrainJob(dataset_dir=str(tiny_release), adapter_dir=str(out / "adapter"),
                       stats_path=str(out / "finetune.json"), samples_path=str(out / "samples.parquet"),
                       checkpoints_dir=str(out / "checkpoints"), model={"key": "models.finetune_base",
                                                                        "path": str(tiny_sdxl)},
                       settings={"resolution": 64, "bucket_step": 32, "batch_per_gpu": 2, "max_samples": 8,
                                 "learning_rate": 1e-3, "gradient_checkpointing": False}, seed=7)
        train(job)
        _CACHE["adapter"] = out / "adapter"
    return _CACHE["adapter"]
