"""The tiny SD-XL of the demo and the tests: SD-XL's own classes, CLIP tokenizers as the real folders lay them out,
loaded and rendered by the production backend (finet2i.models.backends.sdxl), reproducibly, files readable."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from finet2i.models.backends.sdxl import load_pipeline, render
from finet2i.models.spec import ModelSpec


def test_the_tiny_sdxl_is_the_real_architecture(tiny_sdxl, tmp_path):
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    assert json.loads((tiny_sdxl / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl), local_files_only=True)
    assert isinstance(pipe.unet, UNet2DConditionModel) and pipe.unet.config.addition_embed_type == "text_time"
    assert isinstance(pipe.text_encoder, CLIPTextModel)
    assert isinstance(pipe.text_encoder_2, CLIPTextModelWithProjection)
    # six micro-conditioning time ids plus the pooled text embedding, or the pipeline refuses to run
    cfg = pipe.unet.config
    assert cfg.projection_class_embeddings_input_dim == 6 * cfg.addition_time_embed_dim + \
        pipe.text_encoder_2.config.projection_dim
    assert pipe.tokenizer.model_max_length == 77 and pipe.tokenizer_2.pad_token == "!"
    # vocab.json + merges.txt alone (the real SD-XL folders ship no tokenizer.json) give the same ids
    alone = tmp_path / "tok"
    alone.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(tiny_sdxl / "tokenizer" / name, alone)
    a = CLIPTokenizer.from_pretrained(str(alone), local_files_only=True)
    text = "A Red cube on top of a blue sphere, 3 apples!"
    assert a(text).input_ids == pipe.tokenizer(text).input_ids
    assert all(os.stat(p).st_mode & 0o044 == 0o044 for p in tiny_sdxl.rglob("*.safetensors"))


def test_the_backend_renders_one_image_per_seed_whatever_the_batch(tiny_sdxl):
    pipe = load_pipeline(ModelSpec("models.finetune_base", path=str(tiny_sdxl)))
    prompts, seeds = ["a red cube", "a blue sphere", "a green cone"], [1, 2, 3]
    together = render(pipe, prompts, seeds, width=64, height=32, steps=2, guidance=5.0, batch_size=3)
    alone = render(pipe, prompts[1:2], seeds[1:2], width=64, height=32, steps=2, guidance=5.0)
    assert together[0].size == (64, 32)
    diff = np.abs(np.asarray(together[1], dtype=float) - np.asarray(alone[0], dtype=float))
    assert diff.max() <= 1  # the same noise: at most a rounding step apart
    again = render(pipe, prompts, seeds, width=64, height=32, steps=2, guidance=5.0, batch_size=3)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(together, again, strict=True))
