"""Aesthetic Predictor V2.5: a SigLIP vision tower + a 5-layer MLP head over its L2-normalised pooled output.

Production: ``google/siglip-so400m-patch14-384`` (models.aesthetic_encoder) and the released V2.5 head
weights ``aesthetic_predictor_v2_5.pth`` (models.aesthetic_head, a local file: the head is AGPL-3.0, not on
the hub). Scores are on the predictor's 1-10 scale; the paper keeps generated images scoring > 5.5 and real
ones >= 6.5.

The head is rebuilt here from its architecture (not imported from the AGPL package) with the same module
layout, so the released state dict loads with its own key names: ``scoring_head.{0,2,4,6,8}.{weight,bias}``
(Linear layers; 1, 3, 5, 7 are dropouts, inert at inference) mapping
``hidden_size -> 1024 -> 128 -> 64 -> 16 -> 1``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from finet2i.models.spec import ModelSpec

log = logging.getLogger(__name__)

HEAD_WIDTHS = (1024, 128, 64, 16, 1)  # after the encoder's hidden size
HEAD_DROPOUTS = (0.5, 0.5, 0.5, 0.2)  # between the linears, as in training; no effect in eval mode
HEAD_FILENAME = "aesthetic_predictor_v2_5.pth"


def build_head_module(input_dim: int) -> Any:
    """An untrained V2.5 head for ``input_dim``-wide embeddings (a module with the released key names)."""
    from torch import nn

    layers: list[nn.Module] = []
    widths = (input_dim, *HEAD_WIDTHS)
    for i in range(len(HEAD_WIDTHS)):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(HEAD_DROPOUTS):
            layers.append(nn.Dropout(HEAD_DROPOUTS[i]))
    head = nn.Module()
    head.scoring_head = nn.Sequential(*layers)
    head.forward = head.scoring_head.forward  # type: ignore[method-assign]
    return head


def resolve_head_file(spec: ModelSpec) -> Path:
    """The ``.pth`` file a head spec names: a file path, or a folder (hub snapshot) holding one."""
    path = Path(spec.local_path())
    if path.is_file():
        return path
    candidates = [path / HEAD_FILENAME] if (path / HEAD_FILENAME).is_file() else sorted(path.glob("*.pth"))
    if len(candidates) != 1:
        raise FileNotFoundError(
            f"{spec.key}: expected one .pth head file in {path} (ideally {HEAD_FILENAME}), found "
            f"{[c.name for c in candidates]}; point {spec.key}.path at the file"
        )
    return candidates[0]


def load_head(path: str | Path, input_dim: int) -> Any:
    """Load a V2.5 head state dict (the released file or a demo one) strictly into a fresh head module."""
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "scoring_head.0.weight" not in state:
        raise ValueError(
            f"{path}: not an Aesthetic Predictor V2.5 head state dict (no 'scoring_head.0.weight'; "
            f"keys: {list(state)[:6] if isinstance(state, dict) else type(state).__name__})"
        )
    width = int(state["scoring_head.0.weight"].shape[1])
    if width != input_dim:
        raise ValueError(
            f"{path}: head expects {width}-wide embeddings but the SigLIP encoder gives {input_dim}; "
            "pair the head with the encoder it was trained on (google/siglip-so400m-patch14-384)"
        )
    head = build_head_module(input_dim)
    head.load_state_dict(state, strict=True)
    return head.eval()


def check_head_file(path: str | os.PathLike[str], width: int | None = None) -> None:
    """``path`` is a loadable Aesthetic Predictor V2.5 head state dict: every layer named and shaped as
    :func:`load_head` loads it (strictly), over ``width``-wide embeddings when given (1152 for the released head
    on google/siglip-so400m-patch14-384). Raises ValueError otherwise (``finet2i fetch-models`` runs it on a
    download before renaming it into place)."""
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a corrupt or foreign file
        raise ValueError(f"{path}: not a loadable torch state dict ({e.__class__.__name__}: {e})") from e
    found = 0
    if isinstance(state, dict) and hasattr(state.get("scoring_head.0.weight"), "shape"):
        found = int(state["scoring_head.0.weight"].shape[-1])
    try:
        load_head(path, width or found)
    except RuntimeError as e:  # load_state_dict: missing or unexpected keys, other shapes
        raise ValueError(f"{path}: not an Aesthetic Predictor V2.5 head: {e}") from e


class SiglipAestheticScorer:
    """:class:`finet2i.models.backends.AestheticScorer` on SigLIP + the V2.5 head; batches images, no grad."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        head: Any,
        *,
        device: Any,
        dtype: Any,
        batch_size: int,
        model_name: str,
    ) -> None:
        self.model = model
        self.processor = processor
        self.head = head
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.model_name = model_name

    def embed(self, images: list[Any]) -> Any:
        """L2-normalised pooled SigLIP embeddings (float32, on the CPU) of PIL images."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                batch = [im.convert("RGB") for im in images[i : i + self.batch_size]]
                pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
                pooled = self.model(pixel_values=pixels.to(self.device, self.dtype)).pooler_output
                out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0)

    def score(self, images: list[Any]) -> list[float]:
        import torch

        if not images:
            return []
        emb = self.embed(images)
        with torch.inference_mode():
            scores = self.head(emb.to(self.device, self.dtype)).float().squeeze(-1).cpu()
        return [float(s) for s in scores]


def load_aesthetic_scorer(
    encoder: ModelSpec,
    head: ModelSpec,
    *,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int = 32,
) -> SiglipAestheticScorer:
    """Load SigLIP (``encoder``) and the V2.5 head (``head``); bf16 on a GPU, fp32 on the CPU by default."""
    import torch
    from transformers import AutoImageProcessor, SiglipVisionModel

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype = (
        getattr(torch, dtype) if dtype else (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    )
    enc_path = encoder.local_path()
    # The production encoder is a full SigLIP (text + vision) checkpoint: its text weights are unexpected here
    # and fine to skip, but a missing vision weight would silently score with random values.
    model, info = SiglipVisionModel.from_pretrained(
        enc_path, dtype=torch_dtype, local_files_only=True, output_loading_info=True
    )
    if info.get("missing_keys"):
        raise ValueError(
            f"{encoder.key}: {enc_path} lacks SigLIP vision weights "
            f"{sorted(info['missing_keys'])[:5]}...; is it a SigLIP checkpoint?"
        )
    model = model.to(dev).eval()
    processor = AutoImageProcessor.from_pretrained(enc_path, local_files_only=True)
    head_file = resolve_head_file(head)
    head_module = load_head(head_file, int(model.config.hidden_size)).to(dev, torch_dtype)
    log.info("aesthetic scorer: %s + %s on %s (%s)", encoder.label, head_file, dev, torch_dtype)
    return SiglipAestheticScorer(
        model,
        processor,
        head_module,
        device=dev,
        dtype=torch_dtype,
        batch_size=batch_size,
        model_name=f"aesthetic-predictor-v2.5/{encoder.name}",
    )
