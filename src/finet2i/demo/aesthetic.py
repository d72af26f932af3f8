"""A tiny SigLIP vision tower and an Aesthetic Predictor V2.5 head of the real layout, built offline.

The head has the released file's architecture and key names (see :mod:`finet2i.models.backends.aesthetic`), so the
production loader opens the demo ``.pth`` and the real one alike. A random head gives nearly constant scores;
its last layer is therefore calibrated so that scores centre near 5 with a standard deviation near 1.2 over
the images the demo will score: renders of the tiny generators when they are already built in
``out_dir`` (build them first), else a spread of synthetic images. Demo thresholds then pass part of the
images. Demo scores mean nothing about aesthetics.

Usage::

    encoder_dir, head_file = build_aesthetic(Path("resources/demo/models"), seed=0)
    # -> resources/demo/models/siglip, resources/demo/models/aesthetic_head.pth
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENCODER_DIR = "siglip"
HEAD_FILE = "aesthetic_head.pth"
TARGET_MEAN = 5.0
TARGET_STD = 1.2


def calibration_images(n: int, seed: int, size: int = 64) -> list[Any]:
    """Varied synthetic RGB images in equal parts: white noise, smooth random fields, flat colours and
    low-contrast textures around mid-grey (what a random-weight generator tends to render)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            arr = rng.integers(0, 256, (size, size, 3))
        elif kind == 1:
            coarse = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
            arr = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))
        elif kind == 2:
            arr = np.broadcast_to(rng.integers(0, 256, 3), (size, size, 3))
        else:
            coarse = rng.normal(0.0, 1.0, (8, 8, 3))
            smooth = np.asarray(Image.fromarray(coarse.astype(np.float32)[..., 0]).resize((size, size)))
            texture = rng.normal(0.0, 1.0, (size, size, 3)) * 0.5 + smooth[..., None]
            arr = np.clip(128 + rng.uniform(10, 60) * texture, 0, 255)
        images.append(Image.fromarray(np.ascontiguousarray(arr).astype(np.uint8)))
    return images


def generator_renders(out_dir: str | os.PathLike[str], n_per_model: int = 8, seed: int = 0) -> list[Any]:
    """Images rendered by the demo generators already saved in ``out_dir`` (none if none is there)."""
    from finet2i.demo.diffusion import FLUX2_DIR, Z_IMAGE_DIR
    from finet2i.demo.tokenizer import partiprompts
    from finet2i.models.backends.diffusers_gen import load_generator
    from finet2i.models.spec import ModelSpec

    prompts = partiprompts(200)
    sizes = [(64, 64), (64, 48), (48, 64), (64, 32)]
    images: list[Any] = []
    for kind, folder in (("z_image", Z_IMAGE_DIR), ("flux2", FLUX2_DIR)):
        path = Path(out_dir) / folder
        if not (path / "model_index.json").exists():
            continue
        gen = load_generator(
            kind,
            ModelSpec(key=f"demo.{kind}", path=str(path)),
            steps=2,
            guidance=4.0 if kind == "flux2" else 0.0,
        )
        for i in range(n_per_model):
            w, h = sizes[i % len(sizes)]
            images += gen.generate(
                [prompts[(seed + i * 7) % len(prompts)]], width=w, height=h, seeds=[seed + i]
            )
    return images


def build_aesthetic(
    out_dir: str | os.PathLike[str], seed: int = 0, calibration: Sequence[Any] | None = None
) -> tuple[Path, Path]:
    """Save a tiny ``SiglipVisionModel`` + processor to ``out_dir/siglip`` and a V2.5 head to
    ``out_dir/aesthetic_head.pth``; returns both paths.

    ``calibration``: PIL images whose scores should spread over ~3-7; by default renders of the demo
    generators found in ``out_dir`` (see :func:`generator_renders`), or synthetic images if there are none.
    """
    import torch
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    from finet2i.models.backends.aesthetic import SiglipAestheticScorer, build_head_module

    out = Path(out_dir)
    enc_dir = out / ENCODER_DIR
    if enc_dir.exists():
        shutil.rmtree(enc_dir)
    enc_dir.mkdir(parents=True)

    torch.manual_seed(seed)
    # The real so400m tower: 384 px, patch 14, 1152 wide, 27 layers, attention-pooling head. Same shape, tiny.
    config = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
        num_channels=3,
    )
    model = SiglipVisionModel(config).eval()
    processor = SiglipImageProcessor(
        size={"height": 56, "width": 56},
        resample=3,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    model.save_pretrained(str(enc_dir))
    processor.save_pretrained(str(enc_dir))

    head = build_head_module(config.hidden_size).eval()
    scorer = SiglipAestheticScorer(
        model,
        processor,
        head,
        device=torch.device("cpu"),
        dtype=torch.float32,
        batch_size=64,
        model_name="demo",
    )
    if calibration is None:
        calibration = generator_renders(out, seed=seed) or calibration_images(128, seed)
    emb = scorer.embed(list(calibration))
    with torch.no_grad():
        penultimate = head.scoring_head[:-1](emb)  # everything before the last Linear
        last = head.scoring_head[-1]
        raw = last(penultimate).squeeze(-1)
        std = float(raw.std())
        if std < 1e-12:
            raise RuntimeError(
                "demo aesthetic head: scores do not vary over the calibration images; try another seed"
            )
        last.weight.mul_(TARGET_STD / std)
        last.bias.add_(TARGET_MEAN - float(last(penultimate).mean()))
    head_file = out / HEAD_FILE
    # A plain OrderedDict of tensors, like the released aesthetic_predictor_v2_5.pth.
    torch.save(head.state_dict(), str(head_file))
    log.info("saved tiny SigLIP to %s and V2.5 head to %s", enc_dir, head_file)
    return enc_dir, head_file
