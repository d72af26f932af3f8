"""Tiny random-weight Z-Image and FLUX.2 pipelines of the real architectures, built offline.

Each builder assembles the real diffusers pipeline class from its real component classes (Z-Image:
single-stream ``ZImageTransformer2DModel`` + ``AutoencoderKL`` + Qwen3 text encoder + Qwen tokenizer; FLUX.2:
``Flux2Transformer2DModel`` + ``AutoencoderKLFlux2`` + ``Mistral3ForConditionalGeneration`` +
``PixtralProcessor``; both with ``FlowMatchEulerDiscreteScheduler``), shrunk to a few hundred thousand
parameters, and saves it with ``save_pretrained`` so that the production loader
(:mod:`finet2i.models.backends.diffusers_gen`) opens it unchanged with
``from_pretrained(path, local_files_only=True)``. The VAEs keep the real 8x downsampling, so sizes must be
multiples of 16 exactly as for the real models. Renders a 64x64 image in a fraction of a second on a CPU.

Usage::

    build_z_image(Path("resources/demo/models"), seed=0)   # -> resources/demo/models/z-image
    build_flux2(Path("resources/demo/models"), seed=0)     # -> resources/demo/models/flux2
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from finet2i.demo.tokenizer import TokenizerFamily, build_tokenizer

log = logging.getLogger(__name__)

Z_IMAGE_DIR = "z-image"
FLUX2_DIR = "flux2"

# Read by finet2i.models.backends.diffusers_gen: call-time settings a saved pipeline cannot carry in its own configs.
# FLUX.2 picks text-encoder hidden states by layer index at call time (default (10, 20, 30), which needs >= 31
# layers); a tiny encoder has 3 layers, so the folder says which ones its transformer was built for.
GENERATION_SIDECAR = "finet2i_generation.json"

# Qwen3 (Z-Image's text encoder family): ChatML. Z-Image renders prompts with enable_thinking=True, which in
# the real template leaves the assistant turn open; with False the template inserts an empty think block.
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set content = message['content'] %}"
    "{% else %}{% set content = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('\n') %}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}"
)

QWEN3 = TokenizerFamily(
    name="qwen3",
    special_tokens=(
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|object_ref_start|>",
        "<|object_ref_end|>",
        "<|box_start|>",
        "<|box_end|>",
        "<|quad_start|>",
        "<|quad_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
        "<tool_call>",
        "</tool_call>",
        "<think>",
        "</think>",
    ),
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    chat_template=QWEN3_CHAT_TEMPLATE,
)

# Mistral-Small-3.1 (FLUX.2's text encoder family): system prompt in [SYSTEM_PROMPT] tags, user turns in
# [INST]..[/INST], image parts as [IMG] (which PixtralProcessor expands). FLUX.2 sends content as part lists.
MISTRAL3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set parts = message['content'] %}{% endif %}"
    "{% if message['role'] == 'system' %}{{ '[SYSTEM_PROMPT]' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST]' }}{% endif %}"
    "{% for part in parts %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' or 'image' in part %}{{ '[IMG]' }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'system' %}{{ '[/SYSTEM_PROMPT]' }}"
    "{% elif message['role'] == 'user' %}{{ '[/INST]' }}"
    "{% else %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)

MISTRAL3 = TokenizerFamily(
    name="mistral3",
    # Tekken's control tokens in their real order ([IMG] is 10, <pad> 11 there; here they follow the BPE).
    special_tokens=(
        "<unk>",
        "<s>",
        "</s>",
        "[INST]",
        "[/INST]",
        "[AVAILABLE_TOOLS]",
        "[/AVAILABLE_TOOLS]",
        "[TOOL_RESULTS]",
        "[/TOOL_RESULTS]",
        "[TOOL_CALLS]",
        "[IMG]",
        "<pad>",
        "[IMG_BREAK]",
        "[IMG_END]",
        "[PREFIX]",
        "[MIDDLE]",
        "[SUFFIX]",
        "[SYSTEM_PROMPT]",
        "[/SYSTEM_PROMPT]",
        "[TOOL_CONTENT]",
    ),
    bos_token="<s>",
    eos_token="</s>",
    pad_token="<pad>",
    chat_template=MISTRAL3_CHAT_TEMPLATE,
    extra={"unk_token": "<unk>"},
)

_VOCAB_SIZE = 1024
_SEQ_LEN = 512  # both pipelines pad prompts to max_sequence_length=512 by default


def _fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def build_z_image(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build and save a tiny ``ZImagePipeline`` under ``out_dir/z-image``; returns that folder."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        ZImagePipeline,
        ZImageTransformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3Model

    target = _fresh_dir(Path(out_dir) / Z_IMAGE_DIR)
    tokenizer = build_tokenizer(QWEN3, vocab_size=_VOCAB_SIZE)
    tokenizer.model_max_length = _SEQ_LEN

    torch.manual_seed(seed)
    text_hidden = 32
    text_encoder = Qwen3Model(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=text_hidden,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=_SEQ_LEN,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=True,
        )
    )
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=text_hidden,  # must equal the text encoder's hidden size (captions are projected)
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[_SEQ_LEN, 64, 64],
    )
    # Both pad tokens are created with torch.empty: uninitialised memory saved to disk gives NaN images later.
    with torch.no_grad():
        transformer.x_pad_token.normal_(0.0, 0.02)
        transformer.cap_pad_token.normal_(0.0, 0.02)
    # Four blocks: the real Flux VAE's 8x downsampling (so a 16-pixel size multiple) and 16 latent channels.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[16, 16, 16, 16],
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False
    )
    pipe = ZImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )
    pipe.save_pretrained(str(target))
    log.info("saved tiny Z-Image pipeline to %s", target)
    return target


def build_flux2(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build and save a tiny ``Flux2Pipeline`` under ``out_dir/flux2``; returns that folder."""
    import torch
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2Pipeline,
        Flux2Transformer2DModel,
    )
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        PixtralImageProcessor,
        PixtralProcessor,
    )

    target = _fresh_dir(Path(out_dir) / FLUX2_DIR)
    tok = build_tokenizer(MISTRAL3, vocab_size=_VOCAB_SIZE)
    tok.model_max_length = _SEQ_LEN
    processor = PixtralProcessor(
        image_processor=PixtralImageProcessor(
            size={"longest_edge": 64}, patch_size={"height": 8, "width": 8}
        ),
        tokenizer=tok,
        patch_size=8,
        spatial_merge_size=1,
        chat_template=MISTRAL3_CHAT_TEMPLATE,
    )

    torch.manual_seed(seed)
    text_hidden, text_layers = 32, 3
    out_layers = (
        1,
        2,
        3,
    )  # hidden_states[0] is the embedding output; the real pipeline default is (10, 20, 30)
    ids = {
        name: tok.convert_tokens_to_ids(t)
        for name, t in (("bos", "<s>"), ("eos", "</s>"), ("pad", "<pad>"), ("img", "[IMG]"))
    }
    text_encoder = Mistral3ForConditionalGeneration(
        Mistral3Config(
            text_config={
                "model_type": "mistral",
                "vocab_size": len(tok),
                "hidden_size": text_hidden,
                "intermediate_size": 64,
                "num_hidden_layers": text_layers,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "head_dim": 16,
                "max_position_embeddings": _SEQ_LEN,
                "rms_norm_eps": 1e-5,
                "rope_theta": 1e9,
                "sliding_window": None,
                "bos_token_id": ids["bos"],
                "eos_token_id": ids["eos"],
                "pad_token_id": ids["pad"],
            },
            vision_config={
                "model_type": "pixtral",
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
                "image_size": 64,
                "patch_size": 8,
                "num_channels": 3,
                "head_dim": 8,
            },
            image_token_index=ids["img"],
            spatial_merge_size=1,
            vision_feature_layer=-1,
            bos_token_id=ids["bos"],
            eos_token_id=ids["eos"],
            pad_token_id=ids["pad"],
        )
    )
    latent_channels = 4
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=latent_channels * 4,  # latents are packed 2x2 before the transformer
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=text_hidden * len(out_layers),  # the stacked hidden states, concatenated
        timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=True,
    )
    vae = AutoencoderKLFlux2(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 16, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        time_shift_type="exponential",
    )
    pipe = Flux2Pipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=processor, transformer=transformer
    )
    pipe.save_pretrained(str(target))
    (target / GENERATION_SIDECAR).write_text(json.dumps({"text_encoder_out_layers": list(out_layers)}) + "\n")
    log.info("saved tiny FLUX.2 pipeline to %s", target)
    return target
