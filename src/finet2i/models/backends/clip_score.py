"""CLIPScore (Hessel et al., 2021, "CLIPScore: A Reference-free Evaluation Metric for Image Captioning"): how well
an image matches its prompt, ``w * max(cos(E_image, E_text), 0)`` with CLIP's projected embeddings.

This is the definition torchmetrics' ``CLIPScore`` implements (its ``multimodal/clip_score.py``: the same
processor call, the projected embeddings of ``CLIPModel``, ``w = 100``, default model
``openai/clip-vit-large-patch14``), with two differences, both toward the paper: the clamp at 0 applies to each
pair, as in Hessel et al., not to the mean (torchmetrics 1.9 returns ``max(mean(100 cos), 0)``), and a prompt
longer than CLIP's 77 tokens is truncated by the tokenizer, which keeps its end token (torchmetrics slices the
ids and loses it, and CLIP pools at the end token). torchmetrics is not a dependency: 1.9.0, its newest release,
fails with transformers 5 (Lightning-AI/torchmetrics#3407). ``tests/models/test_clip_score.py`` checks the
numbers against the formula.
"""

from __future__ import annotations

import logging
from typing import Any

from finet2i.models.spec import ModelSpec

log = logging.getLogger(__name__)

WEIGHT = 100.0  # torchmetrics' scale (Hessel et al. use 2.5 for a 0-1 style range; the ranking is the same)


class ClipScorer:
    """Scores (image, prompt) pairs; ``truncated`` counts prompts cut to the text tower's context."""

    def __init__(self, model: Any, processor: Any, *, device: Any, batch_size: int, model_name: str) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.batch_size = batch_size
        self.model_name = model_name
        self.truncated = 0

    def cosines(self, images: list[Any], texts: list[str]) -> list[float]:
        import torch

        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images for {len(texts)} texts")
        tok = self.processor.tokenizer
        limit = int(tok.model_max_length)
        out: list[float] = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                ims = [im.convert("RGB") for im in images[i:i + self.batch_size]]
                txt = list(texts[i:i + self.batch_size])
                self.truncated += sum(len(ids) > limit for ids in tok(txt, truncation=False)["input_ids"])
                inp = self.processor(text=txt, images=ims, return_tensors="pt", padding=True, truncation=True,
                                     max_length=limit)
                res = self.model(**{k: v.to(self.device) for k, v in inp.items()})
                img = torch.nn.functional.normalize(res.image_embeds.float(), dim=-1)
                tx = torch.nn.functional.normalize(res.text_embeds.float(), dim=-1)
                out += [float(c) for c in (img * tx).sum(-1).cpu()]
        return out

    def score(self, images: list[Any], texts: list[str]) -> list[float]:
        """CLIPScore of each pair: ``100 * max(cos, 0)``."""
        return [WEIGHT * max(c, 0.0) for c in self.cosines(images, texts)]


def load_clip_scorer(spec: ModelSpec, *, device: str | None = None, batch_size: int = 32) -> ClipScorer:
    import torch
    from transformers import CLIPModel, CLIPProcessor

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    path = spec.local_path()
    model = CLIPModel.from_pretrained(path, local_files_only=True).to(dev).eval()
    processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
    log.info("CLIP scorer %s on %s", spec.label, dev)
    return ClipScorer(model, processor, device=dev, batch_size=batch_size, model_name=f"clipscore/{spec.name}")
