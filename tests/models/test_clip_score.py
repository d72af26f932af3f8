"""CLIPScore on the tiny CLIP: the formula (Hessel et al. 2021, torchmetrics' scale), the clamp per pair, and a
prompt over 77 tokens truncated with its end token kept."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from finet2i.models.backends.clip_score import load_clip_scorer
from finet2i.models.spec import ModelSpec


@pytest.fixture(scope="module")
def scorer(tiny_clip):
    return load_clip_scorer(ModelSpec("models.clip_scorer", path=str(tiny_clip)), device="cpu")


def test_the_score_is_100_times_the_clamped_cosine_of_the_projected_embeddings(scorer):
    images = [Image.new("RGB", (80, 60), c) for c in ((250, 10, 10), (10, 10, 250), (20, 200, 20))]
    texts = ["a red square", "a blue square", "a green field under the sun"]
    model, proc = scorer.model, scorer.processor
    with torch.no_grad():
        pix = proc(images=images, return_tensors="pt")["pixel_values"]
        img = model.visual_projection(model.vision_model(pixel_values=pix).pooler_output)
        tok = proc.tokenizer(texts, padding=True, return_tensors="pt")
        txt = model.text_projection(model.text_model(**tok).pooler_output)
        cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    got = scorer.score(images, texts)
    assert got == pytest.approx([100 * max(float(c), 0.0) for c in cos], abs=1e-4)
    assert scorer.cosines(images, texts) == pytest.approx([float(c) for c in cos], abs=1e-6)


def test_a_long_prompt_is_truncated_to_the_context_with_its_end_token(scorer):
    long = " ".join(["a very long prompt about many things"] * 30)
    tok = scorer.processor.tokenizer
    ids = scorer.processor(text=[long], images=[Image.new("RGB", (32, 32))], return_tensors="pt", truncation=True,
                           max_length=tok.model_max_length)["input_ids"][0].tolist()
    assert len(ids) == 77 and ids[-1] == tok.eos_token_id
    before = scorer.truncated
    scorer.score([Image.new("RGB", (32, 32))], [long])
    assert scorer.truncated == before + 1
