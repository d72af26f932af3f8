"""Production image generators: diffusers ``ZImagePipeline`` (Z-Image-Turbo), ``Flux2Pipeline`` (FLUX.2-dev).

Every image is rendered by its own call with its own ``torch.Generator`` seeded from the sample's seed (on the
CPU, so the initial noise is the same on any device): a rerun, a resumed job or a different batch composition
reproduces the same image for the same (prompt, size, seed) on the same hardware and library versions. On a
GPU the large diffusion transformers are compute-bound at 1-4 MP already, so one image per call costs little.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from finet2i.models import ModelSpec

log = logging.getLogger(__name__)

GeneratorKind = Literal["z_image", "flux2"]
KINDS: tuple[str, ...] = ("z_image", "flux2")
# Written by finet2i.demo.diffusion beside a saved pipeline whose call-time settings differ from the defaults.
GENERATION_SIDECAR = "finet2i_generation.json"


class DiffusersGenerator:
    """:class:`finet2i.backends.ImageGenerator` over a loaded diffusers text-to-image pipeline."""

    def __init__(
        self,
        kind: str,
        pipe: Any,
        *,
        model_name: str,
        steps: int,
        guidance: float,
        call_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.pipe = pipe
        self.model_name = model_name
        self.steps = steps
        self.guidance = guidance
        self.call_kwargs = dict(call_kwargs or {})
        # Sizes must divide by 2x the VAE's downsampling (latents are packed 2x2): 16 for both pipelines.
        self.size_multiple = int(pipe.vae_scale_factor) * 2

    def generate(self, prompts: list[str], *, width: int, height: int, seeds: list[int]) -> list[Any]:
        """One PIL image per (prompt, seed), all at ``width`` x ``height``."""
        import torch

        if len(prompts) != len(seeds):
            raise ValueError(f"{self.model_name}: {len(prompts)} prompts but {len(seeds)} seeds")
        if width % self.size_multiple or height % self.size_multiple:
            raise ValueError(
                f"{self.model_name}: {width}x{height} is not a multiple of {self.size_multiple}; "
                "round sizes with finet2i.stages.generate.fit_size"
            )
        images = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            gen = torch.Generator(device="cpu").manual_seed(int(seed))
            out = self.pipe(
                prompt=prompt,
                width=width,
                height=height,
                num_inference_steps=self.steps,
                guidance_scale=self.guidance,
                generator=gen,
                output_type="pil",
                **self.call_kwargs,
            )
            images.append(out.images[0])
        return images

    def close(self) -> None:
        """Free the pipeline (and its GPU memory) before the next generator loads."""
        import gc

        import torch

        self.pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_generator(
    kind: str,
    spec: ModelSpec,
    *,
    steps: int,
    guidance: float,
    device: str | None = None,
    dtype: str | None = None,
    cpu_offload: bool = False,
) -> DiffusersGenerator:
    """Load ``kind`` ("z_image" | "flux2") from ``spec``: bf16 on a GPU, fp32 on the CPU unless ``dtype`` set.

    ``cpu_offload`` keeps idle components in host memory (``enable_model_cpu_offload``): FLUX.2-dev's
    transformer and Mistral text encoder together exceed one 80 GB GPU in bf16.
    """
    import torch

    if kind == "z_image":
        from diffusers import ZImagePipeline as pipeline_class
    elif kind == "flux2":
        from diffusers import Flux2Pipeline as pipeline_class
    else:
        raise ValueError(f"{spec.key}: unknown generator kind {kind!r}; expected one of {KINDS}")

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype = (
        getattr(torch, dtype) if dtype else (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    )
    path = spec.local_path()
    pipe = pipeline_class.from_pretrained(path, dtype=torch_dtype, local_files_only=True)
    if cpu_offload and dev.type == "cuda":
        pipe.enable_model_cpu_offload(device=dev)
    else:
        pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)

    call_kwargs: dict[str, Any] = {}
    sidecar = Path(path) / GENERATION_SIDECAR
    if sidecar.exists():
        extra = json.loads(sidecar.read_text())
        if kind == "flux2" and "text_encoder_out_layers" in extra:
            call_kwargs["text_encoder_out_layers"] = tuple(extra["text_encoder_out_layers"])
    log.info(
        "generator %s: %s on %s (%s), %d steps, guidance %s",
        kind,
        spec.label,
        dev,
        torch_dtype,
        steps,
        guidance,
    )
    return DiffusersGenerator(
        kind, pipe, model_name=spec.name, steps=steps, guidance=guidance, call_kwargs=call_kwargs
    )
