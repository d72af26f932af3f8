"""A tiny random-weight SD-XL pipeline and a tiny CLIP of the real architectures, built offline: the demo's
fine-tuning base (``models.finetune_base``) and text-image scorer (``models.clip_scorer``).

The SD-XL pipeline is ``StableDiffusionXLPipeline`` assembled from SD-XL's own component classes:
``UNet2DConditionModel`` with ``addition_embed_type="text_time"``, ``CLIPTextModel`` +
``CLIPTextModelWithProjection``, two ``CLIPTokenizer``s, ``AutoencoderKL`` (the real 8x downsampling, 4 latent
channels, SD-XL's scaling factor) and ``EulerDiscreteScheduler`` with SD-XL base's schedule. Shrunk to about
0.8M parameters; a 64x64 image renders in a fraction of a second on a CPU and a LoRA step takes about 0.1 s.

The CLIP tokenizers are a real CLIP-style BPE (lower-cased, ``</w>`` end-of-word suffix, CLIP's split
pattern, byte-level alphabet, the vocabulary laid out as CLIP's: 256 byte symbols, the same with ``</w>``, one
token per merge, then ``<|startoftext|>`` and ``<|endoftext|>``) trained in a fraction of a second on
PartiPrompts, written as ``vocab.json`` + ``merges.txt`` like the real SD-XL folders. Their limit is CLIP's 77
tokens, so the fine-tune's over-long prompt filter behaves as with the real model.

Pitfall kept in one place: the UNet's ``projection_class_embeddings_input_dim`` must be
``6 * addition_time_embed_dim + text_encoder_2.projection_dim`` (six micro-conditioning time ids plus the pooled
text embedding); the pipeline raises on a mismatch.

Usage::

    build_sdxl(Path("resources/demo/models"), seed=0)   # -> resources/demo/models/sdxl
    build_clip(Path("resources/demo/models"), seed=0)   # -> resources/demo/models/clip
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from finet2i.demo.tokenizer import partiprompts
from finet2i.models.backends.sdxl import readable

log = logging.getLogger(__name__)

SDXL_DIR = "sdxl"
CLIP_DIR = "clip"
MAX_TOKENS = 77  # CLIP's context, BOS and EOS included; SD-XL pads both tokenizers to it
SPECIALS = ("<|startoftext|>", "<|endoftext|>")
_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def train_clip_bpe(texts: list[str], n_merges: int = 400) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style BPE vocabulary and merge list learned from ``texts`` (deterministic)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    # transformers' CLIPTokenizer normalises and splits exactly so: merges learned here apply the same way there.
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=2 * len(alphabet) + n_merges, min_frequency=2, show_progress=False,
                                  initial_alphabet=alphabet, end_of_word_suffix="</w>")
    tok.train_from_iterator(texts, trainer=trainer)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in json.loads(tok.to_str())["model"]["merges"]]
    base = sorted(alphabet)
    vocab: dict[str, int] = {}
    for sym in base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + list(SPECIALS):
        vocab.setdefault(sym, len(vocab))
    return vocab, merges  # type: ignore[return-value]


def write_vocab_merges(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    """The layout of the real SD-XL and CLIP folders: ``vocab.json`` + ``merges.txt``."""
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def clip_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], **kwargs: Any) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=MAX_TOKENS, **kwargs)


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def build_sdxl(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build and save a tiny ``StableDiffusionXLPipeline`` under ``out_dir/sdxl``; returns that folder."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    target = _fresh(Path(out_dir) / SDXL_DIR)
    vocab, merges = train_clip_bpe(partiprompts())
    tok1 = clip_tokenizer(vocab, merges)
    tok2 = clip_tokenizer(vocab, merges, pad_token="!")  # SD-XL's second (OpenCLIP bigG) tokenizer pads with "!"
    torch.manual_seed(seed)
    text = dict(vocab_size=len(tok1), hidden_size=32, intermediate_size=64, num_attention_heads=4,
                num_hidden_layers=3,  # SD-XL reads hidden_states[-2]: at least two layers
                max_position_embeddings=MAX_TOKENS, bos_token_id=tok1.bos_token_id,
                eos_token_id=tok1.eos_token_id, pad_token_id=tok1.pad_token_id, projection_dim=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_act="quick_gelu", **text))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_act="gelu", **text))
    time_dim = 8
    unet = UNet2DConditionModel(
        sample_size=8,  # latent pixels: 64 / 8
        in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8,
        attention_head_dim=(2, 4, 4), transformer_layers_per_block=(1, 1, 2), use_linear_projection=True,
        cross_attention_dim=text_encoder.config.hidden_size + text_encoder_2.config.hidden_size,
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + text_encoder_2.config.projection_dim,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[16, 16, 16, 16], layers_per_block=1, latent_channels=4, norm_num_groups=8,
        sample_size=64, scaling_factor=0.13025, force_upcast=True,
    )
    scheduler = EulerDiscreteScheduler(  # SD-XL base's scheduler_config.json
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", steps_offset=1, timestep_spacing="leading", interpolation_type="linear",
        use_karras_sigmas=False,
    )
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tok1, tokenizer_2=tok2, unet=unet, scheduler=scheduler,
                                     add_watermarker=False)
    pipe.save_pretrained(str(target))
    for sub in ("tokenizer", "tokenizer_2"):
        write_vocab_merges(target / sub, vocab, merges)
    readable(target)
    log.info("saved tiny SD-XL pipeline to %s", target)
    return target


def build_clip(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build and save a tiny ``CLIPModel`` + ``CLIPProcessor`` (OpenAI's image preprocessing) under
    ``out_dir/clip``; returns that folder."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    target = _fresh(Path(out_dir) / CLIP_DIR)
    vocab, merges = train_clip_bpe(partiprompts())
    tok = clip_tokenizer(vocab, merges)
    images = CLIPImageProcessor(  # openai/clip-vit-large-patch14's preprocessor_config.json
        do_resize=True, size={"shortest_edge": 224}, resample=3, do_center_crop=True,
        crop_size={"height": 224, "width": 224}, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
        do_convert_rgb=True)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=MAX_TOKENS, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=224, patch_size=32),
        projection_dim=32))
    model.save_pretrained(str(target))
    CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(str(target))
    write_vocab_merges(target, vocab, merges)
    readable(target)
    log.info("saved tiny CLIP to %s", target)
    return target
