"""Build everything the embedded demo needs into ``resources/demo`` (offline, deterministic for a seed).

Steps are recorded in ``manifest.json`` as they finish, so an interrupted build resumes at the step it was
in and a finished one is skipped (``--force`` rebuilds). The aesthetic head is calibrated on renders of the
demo generators, so it comes after them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from finet2i import __version__

log = logging.getLogger(__name__)


def _steps(out: Path, seed: int) -> list[tuple[str, Callable[[], object]]]:
    models = out / "models"

    def prompt_llm() -> object:
        from finet2i.demo.llm import build_prompt_llm

        # A fixed step count, not a time budget: the demo's models must not depend on how busy the machine is.
        return build_prompt_llm(models / "prompt-llm", seed, taxonomy="config/taxonomy.yaml",
                                train_steps=300, max_seconds=float("inf"))

    def guard_llm() -> object:
        from finet2i.demo.llm import build_guard_llm

        return build_guard_llm(models / "guard-llm", seed, train_steps=40, max_seconds=float("inf"))

    def qwen3_vl() -> object:
        from finet2i.demo.qwen3_vl import build_qwen3_vl

        return build_qwen3_vl(models / "qwen3-vl", seed)

    def minilm() -> object:
        from finet2i.demo.minilm import install_minilm

        return install_minilm(models / "all-MiniLM-L6-v2")

    def z_image() -> object:
        from finet2i.demo.diffusion import build_z_image

        return build_z_image(models, seed)

    def flux2() -> object:
        from finet2i.demo.diffusion import build_flux2

        return build_flux2(models, seed)

    def aesthetic() -> object:
        from finet2i.demo.aesthetic import build_aesthetic

        return build_aesthetic(models, seed)

    def real_images() -> object:
        from finet2i.demo.real_images import write_real_images

        return write_real_images(out / "real-images")

    def unsplash_lite() -> object:
        from finet2i.demo.fake_apis import DEMO_PORT
        from finet2i.demo.real_images import write_unsplash_lite

        return write_unsplash_lite(out / "unsplash-lite", DEMO_PORT)

    def sdxl() -> object:
        from finet2i.demo.sdxl import build_sdxl

        return build_sdxl(models, seed)

    def clip() -> object:
        from finet2i.demo.sdxl import build_clip

        return build_clip(models, seed)

    # The fine-tune's base and the evaluation's text-image scorer come last: built after the others, a machine
    # that already has the others builds only these two (a second or so).
    return [("all-MiniLM-L6-v2", minilm), ("real-images", real_images), ("unsplash-lite", unsplash_lite),
            ("z-image", z_image), ("flux2", flux2), ("aesthetic", aesthetic), ("qwen3-vl", qwen3_vl),
            ("guard-llm", guard_llm), ("prompt-llm", prompt_llm),
            ("sdxl", sdxl), ("clip", clip)]


def build_all(out: str | Path, *, seed: int = 0, force: bool = False) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() and not force else {}
    if manifest.get("seed") != seed or manifest.get("version") != __version__:
        manifest = {"seed": seed, "version": __version__, "steps": {}}
    for name, step in _steps(out, seed):
        if name in manifest["steps"]:
            continue
        t0 = time.monotonic()
        log.info("demo models: building %s", name)
        step()
        manifest["steps"][name] = round(time.monotonic() - t0, 1)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        log.info("demo models: %s done in %.1f s", name, manifest["steps"][name])
    log.info("demo models ready in %s (DEMO MODELS: tiny, random or briefly trained; not for real data)", out)
    return out
