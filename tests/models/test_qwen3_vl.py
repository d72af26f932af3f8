"""The tiny Qwen3-VL demo model: real processor + architecture, loads offline in transformers and vLLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.vlm import jpeg

pytestmark = pytest.mark.slow


def _image():
    import io

    from PIL import Image

    return Image.open(io.BytesIO(jpeg((200, 40, 40)))).convert("RGB")


def test_saved_folder_is_a_qwen3_vl(tiny_qwen3_vl: Path) -> None:
    cfg = json.loads((tiny_qwen3_vl / "config.json").read_text())
    assert cfg["model_type"] == "qwen3_vl"
    assert cfg["architectures"] == ["Qwen3VLForConditionalGeneration"]
    assert cfg["vision_config"]["patch_size"] == 16 and cfg["vision_config"]["spatial_merge_size"] == 2
    assert cfg["vision_config"]["deepstack_visual_indexes"]
    assert (tiny_qwen3_vl / "model.safetensors").exists()


def test_processor_and_model_load_offline(tiny_qwen3_vl: Path) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen3VLProcessor

    proc = AutoProcessor.from_pretrained(str(tiny_qwen3_vl), local_files_only=True)
    assert isinstance(proc, Qwen3VLProcessor)
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_qwen3_vl), local_files_only=True)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    img = _image()
    msgs = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "Hi"}]}]
    text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    inputs = proc(text=[text], images=[img], return_tensors="pt")
    # 64x48 -> resized to 64x64 (multiples of 32) -> 4x4 patches of 16 px -> 16 / merge 2x2 = 4 LLM tokens.
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4]]
    n_image_tokens = int((inputs["input_ids"] == proc.image_token_id).sum())
    assert n_image_tokens == 4
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape[-1] == model.config.text_config.vocab_size


def test_think_tokens_survive_decoding(tiny_qwen3_vl: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_qwen3_vl), local_files_only=True)
    ids = tok.encode("abc</think>\n\n{}")
    assert tok.convert_tokens_to_ids("</think>") in ids  # one token, as in the real Qwen3 tokenizers
    assert "</think>" in tok.decode(ids, skip_special_tokens=True)
    assert "<|im_end|>" not in tok.decode(tok.encode("x<|im_end|>"), skip_special_tokens=True)


def test_build_is_deterministic(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from finet2i.demo.qwen3_vl import build_qwen3_vl

    a = load_file(build_qwen3_vl(tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(build_qwen3_vl(tmp_path / "b", seed=3) / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.vllm
def test_vllm_greedy_matches_transformers(tiny_qwen3_vl: Path, tiny_vlm) -> None:
    """vLLM (the production backend) and transformers agree token for token on an image prompt."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from finet2i.models.backends import Sampling

    img = _image()
    conv = [{"role": "user", "content": [{"type": "image", "image": img},
                                         {"type": "text", "text": "Describe this image."}]}]
    [vllm_text] = tiny_vlm.chat([conv], Sampling(temperature=0.0, max_tokens=10))

    proc = AutoProcessor.from_pretrained(str(tiny_qwen3_vl), local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_qwen3_vl), local_files_only=True)
    text = proc.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    inputs = proc(text=[text], images=[img], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    hf_text = proc.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert vllm_text and vllm_text == hf_text
