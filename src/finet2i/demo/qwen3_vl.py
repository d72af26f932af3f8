"""A tiny random-weight Qwen3-VL (the real architecture: vision tower, deepstack, M-RoPE text model), offline.

It stands in for all three vision-LLM roles of the demo (attribute verifier, pair judge, captioner): the stage
code sends it exactly what it sends Qwen3-VL-8B / Qwen2.5-VL-7B in production, through the same vLLM backend.
The weights are random, so what it *says* is noise; structured-output constraints make that noise well formed,
and the stages' parsers decide the rest.

What the folder holds, all written with ``save_pretrained`` so that
``from_pretrained(path, local_files_only=True)`` works in transformers and vLLM:

* ``config.json`` / ``model.safetensors``: ``Qwen3VLForConditionalGeneration`` with tiny dims. The real
  structure is kept where it matters for the code paths: patch 16, spatial merge 2, temporal patch 2, learned
  2D position embeddings, deepstack injection into the first text layers, interleaved M-RoPE.
* ``tokenizer.json`` etc.: a byte-level BPE (:mod:`finet2i.demo.tokenizer`) with the Qwen special tokens at
  the end of the vocabulary, plus ``<think>``/``</think>`` as non-special added tokens like the real Qwen3
  tokenizers (they survive ``skip_special_tokens``, so a thinking judge's ``</think>`` reaches the parser).
* ``preprocessor_config.json`` / ``video_preprocessor_config.json``: the real Qwen3-VL image and video
  processors with a small pixel budget (a 64x64 image is 16 patches, 4 LLM tokens) so CPU runs stay fast.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# Texts the stages send the model; adding them to the BPE corpus keeps prompts short in tokens.
_EXTRA_TEXTS = (
    "You are an attribute verifier. Answer with a JSON object.",
    '{"style_match": true, "category_match": false, "reason": "the prompt does not describe the style"}',
    '{"aligned": true, "artifact_free": true, "violations": []}',
    "Describe this image in one short sentence.",
    "<think>\nThe image shows the objects, counts, colors and positions asked for.\n</think>\n\n",
)

# Non-special added tokens of the real Qwen3 tokenizers (ids follow the special tokens there as well).
_QWEN3_ADDED_TOKENS = ("<tool_call>", "</tool_call>", "<think>", "</think>")

TEXT_HIDDEN = 64
VISION_HIDDEN = 64


def build_qwen3_vl(out_dir: Path, seed: int) -> Path:
    """Build the tiny Qwen3-VL into ``out_dir`` (created) and return it; deterministic for a ``seed``."""
    import torch
    from tokenizers import AddedToken
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    from finet2i.demo.tokenizer import QWEN3_VL, build_tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(dataclasses.replace(QWEN3_VL, model_max_length=8192), vocab_size=1536,
                                extra_texts=_EXTRA_TEXTS)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in _QWEN3_ADDED_TOKENS])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in
           ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_end|>",
            "<|endoftext|>")}
    # Exactly the tokenizer's size: the real checkpoints pad to 151936, but a random model would sample the
    # padding rows, which no tokenizer can decode.
    vocab_size = len(tokenizer)

    config = Qwen3VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,  # vLLM's CPU attention supports head sizes 32, 64, 80, ... (not 16)
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-6,
            # M-RoPE over (t, h, w): sections sum to head_dim / 2 (the real [24, 20, 20] scaled to
            # head_dim 32), interleaved as in Qwen3-VL.
            "rope_parameters": {"rope_type": "default", "rope_theta": 5_000_000.0,
                                "mrope_section": [6, 5, 5], "mrope_interleaved": True},
            "bos_token_id": None,
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": False,
        },
        vision_config={
            "depth": 2,
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": 128,
            "num_heads": 4,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": TEXT_HIDDEN,
            "num_position_embeddings": 256,  # a 16x16 learned grid, interpolated to any image size
            "deepstack_visual_indexes": [0, 1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    model.save_pretrained(str(out_dir))

    # The real processors' settings (mean/std 0.5, patch 16, merge 2) with a small pixel budget for CPU runs.
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": 32 * 32, "longest_edge": 128 * 128},
        patch_size=16, temporal_patch_size=2, merge_size=2,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": 32 * 32, "longest_edge": 128 * 128 * 4},
        patch_size=16, temporal_patch_size=2, merge_size=2,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=video_processor, chat_template=QWEN3_VL.chat_template)
    processor.save_pretrained(str(out_dir))
    log.info("built tiny Qwen3-VL (%d tokens, %.2fM parameters) in %s", len(tokenizer),
             sum(p.numel() for p in model.parameters()) / 1e6, out_dir)
    return out_dir
