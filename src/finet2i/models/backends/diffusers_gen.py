"""Production image generators: diffusers ``ZImagePipeline`` (Z-Image-Turbo), ``Flux2Pipeline`` (FLUX.2-dev).

Images of one size go through the pipeline together, up to ``batch_size`` images per call (fewer above 1
megapixel; see :func:`images_per_call`), each with its own ``torch.Generator``
seeded from the sample's seed (on the CPU, so the initial noise is the same on any device). The same
(prompts, size, seeds) in the same batches reproduce the same images on the same hardware and library versions;
a different batch composition may change pixels by rounding only (the text encoder pads to the batch's longest
prompt), which is why the generate stage forms its batches from the chunk alone (a resumed job redoes the same
chunks). ``pipeline_calls`` counts the calls, for tests and logs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from finet2i.models.spec import ModelSpec

log = logging.getLogger(__name__)

GeneratorKind = Literal["z_image", "flux2"]
KINDS: tuple[str, ...] = ("z_image", "flux2")
# Written by finet2i.demo.diffusion beside a saved pipeline whose call-time settings differ from the defaults.
GENERATION_SIDECAR = "finet2i_generation.json"
MEGAPIXEL = 1024 * 1024


def images_per_call(batch_size: int, width: int, height: int) -> int:
    """Images of ``width`` x ``height`` in one pipeline call: ``batch_size`` up to 1024x1024, fewer above it,
    scaled by pixels (a 2048x2048 call holds a quarter as many), at least one. Activation memory grows with
    pixels x batch. Smaller images are not packed beyond ``batch_size``: ``batch_size: 1`` is one image per
    call at any size, which reproduces an image whatever else is rendered and whatever the thread count (on the
    CPU a batched call's rounding depends on both; measured on the demo's tiny Z-Image)."""
    return max(1, min(batch_size, int(batch_size * MEGAPIXEL // max(1, width * height))))


class DiffusersGenerator:
    """:class:`finet2i.models.backends.ImageGenerator` over a loaded diffusers text-to-image pipeline."""

    def __init__(
        self,
        kind: str,
        pipe: Any,
        *,
        model_name: str,
        steps: int,
        guidance: float,
        call_kwargs: dict[str, Any] | None = None,
        batch_size: int = 1,
    ) -> None:
        self.kind = kind
        self.batch_size = max(1, int(batch_size))
        self.pipeline_calls = 0
        self.pipe = pipe
        self.model_name = model_name
        self.steps = steps
        self.guidance = guidance
        self.call_kwargs = dict(call_kwargs or {})
        # Sizes must divide by 2x the VAE's downsampling (latents are packed 2x2): 16 for both pipelines.
        self.size_multiple = int(pipe.vae_scale_factor) * 2

    def generate(self, prompts: list[str], *, width: int, height: int, seeds: list[int]) -> list[Any]:
        """One PIL image per (prompt, seed), all at ``width`` x ``height``, in calls of
        :func:`images_per_call` images."""
        import torch

        if len(prompts) != len(seeds):
            raise ValueError(f"{self.model_name}: {len(prompts)} prompts but {len(seeds)} seeds")
        if width % self.size_multiple or height % self.size_multiple:
            raise ValueError(
                f"{self.model_name}: {width}x{height} is not a multiple of {self.size_multiple}; "
                "round sizes with finet2i.stages.generate.fit_size"
            )
        step = images_per_call(self.batch_size, width, height)
        images: list[Any] = []
        for i in range(0, len(prompts), step):
            batch = prompts[i:i + step]
            gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[i:i + step]]
            out = self.pipe(
                prompt=batch if len(batch) > 1 else batch[0],
                width=width,
                height=height,
                num_inference_steps=self.steps,
                guidance_scale=self.guidance,
                generator=gens if len(gens) > 1 else gens[0],
                output_type="pil",
                **self.call_kwargs,
            )
            self.pipeline_calls += 1
            if len(out.images) != len(batch):
                raise RuntimeError(f"{self.model_name}: {len(out.images)} images for {len(batch)} prompts")
            images.extend(out.images)
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
    batch_size: int = 1,
) -> DiffusersGenerator:
    """Load ``kind`` ("z_image" | "flux2") from ``spec``: bf16 on a GPU, fp32 on the CPU unless ``dtype`` set.

    ``batch_size``: images per pipeline call up to 1 megapixel (see :func:`images_per_call`). ``cpu_offload`` keeps
    idle components in host memory (``enable_model_cpu_offload``): FLUX.2-dev's
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
        "generator %s: %s on %s (%s), %d steps, guidance %s, up to %d images per call (fewer above 1 MP)",
        kind,
        spec.label,
        dev,
        torch_dtype,
        steps,
        guidance,
        batch_size,
    )
    return DiffusersGenerator(
        kind, pipe, model_name=spec.name, steps=steps, guidance=guidance, call_kwargs=call_kwargs,
        batch_size=batch_size,
    )
