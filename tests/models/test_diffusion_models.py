"""The tiny Z-Image and FLUX.2 pipelines: real classes, saved and reloaded offline, rendering reproducibly."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

import numpy as np
import pytest

from finet2i.models.backends.diffusers_gen import GENERATION_SIDECAR, load_generator
from finet2i.models.spec import ModelNotAvailable, ModelSpec

if TYPE_CHECKING:
    from support.generation import TinyModels



def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_z_image_loads_offline_as_the_real_architecture(tiny_models: TinyModels) -> None:
    import torch
    from diffusers import AutoencoderKL, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Model

    index = json.loads((tiny_models.z_image / "model_index.json").read_text())
    assert index["_class_name"] == "ZImagePipeline"
    pipe = ZImagePipeline.from_pretrained(tiny_models.z_image, local_files_only=True)
    assert isinstance(pipe.transformer, ZImageTransformer2DModel)
    assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.text_encoder, Qwen3Model)
    # The caption projection reads the text encoder's hidden states, and the pad tokens were filled.
    assert pipe.transformer.config.cap_feat_dim == pipe.text_encoder.config.hidden_size
    assert torch.isfinite(pipe.transformer.x_pad_token).all()
    assert torch.isfinite(pipe.transformer.cap_pad_token).all()
    assert pipe.vae_scale_factor == 8  # as the real Flux VAE: sizes are multiples of 16
    chat = pipe.tokenizer.apply_chat_template(
        [{"role": "user", "content": "a cat"}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=True,
    )
    assert chat == "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n"


def test_flux2_loads_offline_as_the_real_architecture(tiny_models: TinyModels) -> None:
    from diffusers import AutoencoderKLFlux2, Flux2Pipeline, Flux2Transformer2DModel
    from transformers import Mistral3ForConditionalGeneration, PixtralProcessor

    pipe = Flux2Pipeline.from_pretrained(tiny_models.flux2, local_files_only=True)
    assert isinstance(pipe.transformer, Flux2Transformer2DModel) and isinstance(pipe.vae, AutoencoderKLFlux2)
    assert isinstance(pipe.text_encoder, Mistral3ForConditionalGeneration)
    assert isinstance(pipe.tokenizer, PixtralProcessor)
    layers = json.loads((tiny_models.flux2 / GENERATION_SIDECAR).read_text())["text_encoder_out_layers"]
    hidden = pipe.text_encoder.config.text_config.hidden_size
    assert pipe.transformer.config.joint_attention_dim == hidden * len(layers)
    assert max(layers) <= pipe.text_encoder.config.text_config.num_hidden_layers


@pytest.mark.parametrize("kind", ["z_image", "flux2"])
def test_generator_renders_requested_sizes_reproducibly(kind: str, tiny_generators) -> None:
    gen = tiny_generators[kind]
    prompt = "a lighthouse on a cliff at dusk, oil painting"
    a, b, c = gen.generate([prompt, prompt, prompt], width=64, height=48, seeds=[11, 11, 12])
    assert a.size == (64, 48) and a.mode == "RGB"
    arr = np.asarray(a, dtype=np.float32)
    assert arr.std() > 1.0, "a flat image means NaN latents or a dead pipeline"
    assert _png(a) == _png(b), "the same seed must reproduce the same image"
    assert _png(a) != _png(c)
    # A different batch (here: alone) still reproduces it: every image has its own generator.
    (again,) = gen.generate([prompt], width=64, height=48, seeds=[11])
    assert _png(again) == _png(a)
    portrait = gen.generate(["a tall tower"], width=32, height=64, seeds=[1])[0]
    assert portrait.size == (32, 64)


def test_generator_rejects_sizes_the_pipeline_cannot_render(tiny_generators) -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny_generators["z_image"].generate(["a cat"], width=60, height=64, seeds=[0])


def test_missing_model_folder_is_a_clear_error(tmp_path) -> None:
    spec = ModelSpec(key="models.z_image", path=str(tmp_path / "nope"))
    with pytest.raises(ModelNotAvailable, match="models.z_image"):
        load_generator("z_image", spec, steps=2, guidance=0.0)
    with pytest.raises(ValueError, match="unknown generator kind"):
        load_generator("sdxl", spec, steps=2, guidance=0.0)
