"""Aesthetic Predictor V2.5 scorer: the released head's layout and key names, SigLIP loading, score range."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import pytest

from finet2i.demo.aesthetic import calibration_images
from finet2i.models.backends.aesthetic import build_head_module, load_aesthetic_scorer, load_head, resolve_head_file
from finet2i.models.spec import ModelSpec

if TYPE_CHECKING:
    from support.generation import TinyModels


# The released aesthetic_predictor_v2_5.pth: Linear layers at 0, 2, 4, 6, 8 of `scoring_head` over the
# 1152-wide pooled output of google/siglip-so400m-patch14-384.
RELEASED_SHAPES = OrderedDict(
    [
        ("scoring_head.0.weight", (1024, 1152)),
        ("scoring_head.0.bias", (1024,)),
        ("scoring_head.2.weight", (128, 1024)),
        ("scoring_head.2.bias", (128,)),
        ("scoring_head.4.weight", (64, 128)),
        ("scoring_head.4.bias", (64,)),
        ("scoring_head.6.weight", (16, 64)),
        ("scoring_head.6.bias", (16,)),
        ("scoring_head.8.weight", (1, 16)),
        ("scoring_head.8.bias", (1,)),
    ]
)


def _released_like_state(seed: int = 0) -> OrderedDict:
    """A state dict shaped and named like the released file (random values: the real one is not at hand)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return OrderedDict((k, torch.randn(shape, generator=g) * 0.02) for k, shape in RELEASED_SHAPES.items())


def test_head_has_the_released_key_names_and_shapes() -> None:
    head = build_head_module(1152)
    assert OrderedDict((k, tuple(v.shape)) for k, v in head.state_dict().items()) == RELEASED_SHAPES


def test_released_style_state_dict_loads_strictly(tmp_path) -> None:
    import torch

    state = _released_like_state()
    path = tmp_path / "aesthetic_predictor_v2_5.pth"
    torch.save(state, path)
    head = load_head(path, 1152)
    assert torch.equal(head.state_dict()["scoring_head.8.weight"], state["scoring_head.8.weight"])
    x = torch.nn.functional.normalize(torch.randn(3, 1152), dim=-1)
    # The head is the plain chain of the five Linear layers at inference (dropouts inert).
    expected = x
    for i in (0, 2, 4, 6, 8):
        expected = expected @ state[f"scoring_head.{i}.weight"].T + state[f"scoring_head.{i}.bias"]
    assert torch.allclose(head(x), expected, atol=1e-6)
    # A folder holding the file (a hub snapshot) resolves to it.
    assert resolve_head_file(ModelSpec(key="models.aesthetic_head", path=str(tmp_path))) == path


def test_head_errors_name_the_file_and_the_fix(tmp_path) -> None:
    import torch

    path = tmp_path / "head.pth"
    torch.save(_released_like_state(), path)
    with pytest.raises(ValueError, match="1152-wide.*gives 32"):
        load_head(path, 32)
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(1, 4)}, bad)
    with pytest.raises(ValueError, match="not an Aesthetic Predictor V2.5 head"):
        load_head(bad, 4)


def test_scores_are_head_of_normalised_pooled_siglip_output(tiny_models: TinyModels, tiny_scorer) -> None:
    import torch

    images = calibration_images(6, seed=3)
    with torch.no_grad():
        pixels = tiny_scorer.processor(images=images, return_tensors="pt")["pixel_values"]
        pooled = tiny_scorer.model(pixel_values=pixels).pooler_output
        manual = tiny_scorer.head(pooled / pooled.norm(dim=-1, keepdim=True)).squeeze(-1)
    scores = tiny_scorer.score(images)
    assert np.allclose(scores, manual.numpy(), atol=1e-5)
    # Batching does not change a score.
    tiny_scorer.batch_size = 4
    try:
        assert np.allclose(tiny_scorer.score(images), scores, atol=1e-5)
    finally:
        tiny_scorer.batch_size = 32
    assert tiny_scorer.score([]) == []


def test_demo_scores_spread_over_a_useful_range(tiny_scorer, tiny_generators) -> None:
    images = []
    for kind, gen in tiny_generators.items():
        images += gen.generate(
            [f"prompt {i} for {kind}" for i in range(6)], width=64, height=64, seeds=list(range(100, 106))
        )
    scores = np.array(tiny_scorer.score(images))
    assert np.isfinite(scores).all()
    assert (scores > 1.0).all() and (scores < 10.0).all(), scores
    assert scores.std() > 0.3, "demo thresholds need scores that differ between images"
    assert (scores > 5.5).any() and (scores <= 5.5).any(), "the paper's 5.5 cut should split demo images"


def test_full_siglip_checkpoint_loads_as_the_vision_tower(tmp_path, tiny_models: TinyModels) -> None:
    """google/siglip-so400m-patch14-384 is a full SigLIP (text + vision) checkpoint: the scorer takes its
    vision tower, with the real weights (not fresh random ones)."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(0)
    cfg = SiglipConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 100,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
    )
    full = SiglipModel(cfg).eval()
    full.save_pretrained(tmp_path / "siglip-full")
    SiglipImageProcessor(size={"height": 28, "width": 28}).save_pretrained(tmp_path / "siglip-full")
    encoder = ModelSpec(key="models.aesthetic_encoder", path=str(tmp_path / "siglip-full"))
    head = ModelSpec(key="models.aesthetic_head", path=str(tiny_models.head))
    scorer = load_aesthetic_scorer(encoder, head)
    torch.testing.assert_close(
        scorer.model.embeddings.patch_embedding.weight, full.vision_model.embeddings.patch_embedding.weight
    )
    assert len(scorer.score(calibration_images(2, seed=0))) == 2
