"""Small finished-sample tables (what package writes) for the assemble, card and client tests: real JPEGs,
the release's 15 keys, a few shards; no model needed."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from finet2i.core import shards
from finet2i.plumbing.images import reference_to
from finet2i.stages import package

SEED = 7
SUBSET = "po_as"
FOLDER = "synthetic_original_prompt_square_resolution"


def picture(n: int, fmt: str = "JPEG", size: tuple[int, int] = (32, 32)) -> bytes:
    a = (np.random.default_rng(n).random((size[1], size[0], 3)) * 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(a).save(out, fmt)
    return out.getvalue()


def prompt_row(pid: str, subset: str = SUBSET, *, task=None, prompt: str | None = None) -> dict:
    return {
        "id": pid, "sample_id": f"{subset}-{pid}", "prompt": prompt or f"a small red fox number {pid} in snow",
        "enhanced_prompt": f"a detailed photograph of a small red fox ({pid}) in fresh snow, soft morning light",
        "style": "General & Photorealistic", "category": "Nature Animals", "subcategory": "Wildlife",
        "task": task, "image_aspect_ratio": "1:1", "image_generator": "Z-Image-Turbo",
        "prompt_generator": "Llama-3.1-8B-Instruct", "enhancer": "promptenhancer-7b",
        "image_generated_with_enhanced_prompt": subset.startswith("pe"),
        "aesthetic_predictor_v_2_5_score": 6.25, "seed": 11, "template": "simple",
    }


def write_shards(root: Path, prompt_ids: list[list[str]], subset: str = SUBSET, *, tasks: dict | None = None,
                 prompts: dict | None = None, refer: bool = False) -> list[str]:
    """One finished-sample table per inner list of prompt ids; returns their paths. ``refer``: the images live in
    an images table per shard (root/images/...) that the samples refer to, as the workflow's package writes them."""
    tables = []
    for s, pids in enumerate(prompt_ids):
        rows = [prompt_row(pid, subset, task=(tasks or {}).get(pid), prompt=(prompts or {}).get(pid))
                for pid in pids]
        images = {r["sample_id"]: picture(int(r["id"].replace("-", ""))) for r in rows}
        out = root / "package" / subset / f"{s:05d}.parquet"
        source = None
        if refer:
            where = root / "images" / subset / f"{s:05d}.parquet"
            shards.write_table(where, [{"sample_id": k, "image": v} for k, v in sorted(images.items())])
            source = (reference_to(where, out), "sample_id")
        package.package_rows(rows, images, subset=subset, shard=f"{s:05d}", seed=SEED, out_path=out,
                             stats_path=shards.stats_path(out), settings={}, images_from=source)
        tables.append(str(out))
    return tables


def ids(n: int, start: int = 0) -> list[str]:
    return [f"00000-{i:06d}" for i in range(start, start + n)]
