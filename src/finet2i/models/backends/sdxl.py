"""SD-XL-family pipelines (``StableDiffusionXLPipeline``): the fine-tune's base (``models.finetune_base``) loaded
with or without a LoRA adapter, and rendering with one seed per image.

A LoRA adapter is the folder ``finetune`` writes (``pytorch_lora_weights.safetensors``, diffusers' format); it
loads with ``pipe.load_lora_weights(folder)`` exactly as a user loads it. Nothing downloads: the base is a local
folder or a pinned hub snapshot already in the cache (:meth:`ModelSpec.local_path`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from finet2i.models.spec import ModelSpec

log = logging.getLogger(__name__)

ADAPTER_FILE = "pytorch_lora_weights.safetensors"


def readable(folder: str | os.PathLike[str]) -> None:
    """safetensors writes its files 0600 whatever the umask (an adapter, a saved pipeline): give them the umask's
    mode like every other file, so that group members on a shared cluster filesystem can read them."""
    from pathlib import Path

    mask = os.umask(0)
    os.umask(mask)
    for p in Path(folder).rglob("*"):
        if p.is_file():
            p.chmod(0o666 & ~mask)


def device_and_dtype(device: str | None = None, dtype: str | None = None) -> tuple[Any, Any]:
    """cuda + bf16 when there is a GPU, else cpu + fp32 (half precision on a CPU is slow and lossy)."""
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype:
        return dev, getattr(torch, dtype)
    return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32


def load_pipeline(spec: ModelSpec, *, adapter: str | os.PathLike[str] | None = None, device: str | None = None,
                  dtype: str | None = None) -> Any:
    """The base pipeline, with ``adapter`` (a LoRA folder) loaded when given. No invisible watermark: both sides
    of a comparison render alike, and the watermark package is not needed."""
    from diffusers import StableDiffusionXLPipeline

    dev, torch_dtype = device_and_dtype(device, dtype)
    pipe = StableDiffusionXLPipeline.from_pretrained(spec.local_path(), torch_dtype=torch_dtype,
                                                     local_files_only=True, add_watermarker=False)
    if adapter is not None:
        pipe.load_lora_weights(str(adapter), weight_name=ADAPTER_FILE)
    pipe.set_progress_bar_config(disable=True)
    log.info("SD-XL pipeline %s%s on %s (%s)", spec.label, f" + LoRA {adapter}" if adapter else "", dev, torch_dtype)
    return pipe.to(dev)


def render(pipe: Any, prompts: list[str], seeds: list[int], *, width: int, height: int, steps: int,
           guidance: float, batch_size: int = 4) -> list[Any]:
    """One PIL image per (prompt, seed): each image's noise comes from its own generator, so an image depends
    on its prompt and seed, not on the batch it was rendered in."""
    import torch

    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts for {len(seeds)} seeds")
    device = pipe.device
    images: list[Any] = []
    for i in range(0, len(prompts), batch_size):
        gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds[i:i + batch_size]]
        out = pipe(prompt=prompts[i:i + batch_size], generator=gens, width=width, height=height,
                   num_inference_steps=steps, guidance_scale=guidance, output_type="pil")
        images += list(out.images)
    return images
