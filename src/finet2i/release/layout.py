"""The conventions of the released Fine-T2I dataset (``ma-xu/fine-t2i`` on the Hugging Face hub), in one place.

What a loader written for the release expects, and what ``package``/``release`` write and ``finet2i validate``
checks:

- five folders, one per subset: ``curated`` and ``synthetic_{enhanced,original}_prompt_{random,square}_resolution``;
- tars named ``train-000000.tar`` (6 digits), about ``package.samples_per_tar`` samples each;
- per sample three members ``<key>.jpg``, ``<key>.json``, ``<key>.txt``; the key is a lowercase uuid, the same
  for one prompt in each synthetic subset it survives in;
- the json holds exactly the 15 keys of :data:`RELEASE_KEYS`, typed as in :data:`FEATURES`;
- the txt is the prompt the image was rendered with (the enhanced prompt when
  ``image_generated_with_enhanced_prompt``), never empty; the jpg is a baseline RGB JPEG.

Nothing here imports a heavy package: the CLI, the Snakefile and the validator all read it.
"""

from __future__ import annotations

import io
import re
import uuid
from typing import Any

# Pipeline subset code -> the release's folder name. The codes stay the pipeline's names (results/generate/pe_ar/);
# only the packaged dataset uses the release's folder names.
FOLDERS: dict[str, str] = {
    "pe_ar": "synthetic_enhanced_prompt_random_resolution",
    "pe_as": "synthetic_enhanced_prompt_square_resolution",
    "po_ar": "synthetic_original_prompt_random_resolution",
    "po_as": "synthetic_original_prompt_square_resolution",
    "real": "curated",
}
SUBSET_OF_FOLDER: dict[str, str] = {folder: subset for subset, folder in FOLDERS.items()}
CURATED = "curated"
# Real photos whose source's terms forbid redistribution (finet2i.sources.terms) are assembled apart, as the
# pipeline subset ``real_internal``: the same layout, under another root, never in the shareable dataset.
INTERNAL = "real_internal"
DATASET_ROOT = "results/dataset"
INTERNAL_ROOT = "results/dataset_internal"
CREDITS_FILE = "credits.jsonl"  # per real subset folder: photographer, link, license of every sample in it

# The released dataset's per-sample json keys, in its order.
RELEASE_KEYS: tuple[str, ...] = (
    "id", "prompt", "enhanced_prompt", "length", "enhanced_length", "prompt_generator", "enhancer", "style",
    "prompt_category", "task", "image_aspect_ratio", "image_resolution", "image_generator",
    "image_generated_with_enhanced_prompt", "aesthetic_predictor_v_2_5_score",
)

# Each key's type, as the dataset card declares it to HF datasets (``dataset_info.features``): a plain dtype
# name, or a one-item list for a list of that dtype. Every key may be null except where NOT_NULL says otherwise.
FEATURES: dict[str, str | list[str]] = {
    "id": "string",
    "prompt": "string",
    "enhanced_prompt": "string",
    "length": "int64",
    "enhanced_length": "int64",
    "prompt_generator": "string",
    "enhancer": "string",
    "style": "string",
    "prompt_category": "string",
    "task": ["string"],
    "image_aspect_ratio": "string",
    "image_resolution": ["int64"],
    "image_generator": "string",
    "image_generated_with_enhanced_prompt": "bool",
    "aesthetic_predictor_v_2_5_score": "float64",
}
NOT_NULL = frozenset({"id", "prompt", "length", "image_resolution", "image_generator",
                      "image_generated_with_enhanced_prompt"})
assert tuple(FEATURES) == RELEASE_KEYS

MEMBERS = ("jpg", "json", "txt")  # per sample, in this order inside a tar
TAR_TEMPLATE = "train-{:06d}.tar"
TAR_RE = re.compile(r"^train-(\d{6})\.tar$")
KEY_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Table 8's labels, for image_aspect_ratio (synthetic subsets).
ASPECT_RATIOS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "5:4", "4:5")

_NAMESPACE = uuid.UUID("6f1c2d52-0b7e-4a59-9d0f-5e2b8f1a7c33")  # finet2i's own; fixed forever


def tar_name(index: int) -> str:
    return TAR_TEMPLATE.format(index)


def sample_key(seed: int | str, *parts: Any) -> str:
    """A sample's key: a lowercase uuid5 of the run seed and the record's identity (a synthetic prompt's id, or
    a real image's source and locator). Deterministic: a rerun, a resume or another shard count gives the same
    key; one prompt gets one key in each of the four synthetic subsets."""
    run = uuid.uuid5(_NAMESPACE, f"seed:{seed}")
    return str(uuid.uuid5(run, "\x1f".join(str(p) for p in parts)))


def folder_of(subset: str) -> str:
    if subset == INTERNAL:
        return CURATED
    try:
        return FOLDERS[subset]
    except KeyError:
        raise ValueError(f"unknown subset {subset!r}: expected one of {sorted(FOLDERS)}") from None


def dataset_dir(subset: str) -> str:
    """Where a subset's tars go: ``results/dataset/<folder>``; the internal real photos under their own root."""
    return f"{INTERNAL_ROOT if subset == INTERNAL else DATASET_ROOT}/{folder_of(subset)}"


def hf_feature(spec: str | list[str]) -> dict[str, Any]:
    """One FEATURES entry in the dataset card's YAML form (``dataset_info.features``)."""
    if isinstance(spec, list):
        return {"list": spec[0]}
    return {"dtype": spec}


# ----------------------------------------------------------------------------------------------------------
# The release's images: baseline RGB JPEGs (what its loaders take as is)


def is_release_jpeg(im: Any) -> bool:
    """What a loader of the release can take as is: a baseline (not progressive) RGB JPEG."""
    return (im.format == "JPEG" and im.mode == "RGB"
            and not im.info.get("progressive") and not im.info.get("progression"))


def release_jpeg(data: bytes, quality: int) -> tuple[bytes, int, int]:
    """The JPEG bytes to ship and their size: a baseline RGB JPEG passes through untouched; anything else (PNG,
    WebP, CMYK or grayscale JPEG, progressive JPEG, palette, alpha over white, 16-bit) is re-encoded."""
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    w, h = im.size
    if is_release_jpeg(im):
        im.load()  # a truncated JPEG must fail here, not in a training job
        return data, w, h
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        im = im.point(lambda v: v / 256).convert("L")  # 16-bit gray: scale, do not clip
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        base = Image.new("RGB", im.size, (255, 255, 255))
        base.paste(im.convert("RGBA"), mask=im.convert("RGBA").getchannel("A"))
        im = base
    out = io.BytesIO()
    im.convert("RGB").save(out, "JPEG", quality=quality, progressive=False, optimize=False)
    return out.getvalue(), w, h
