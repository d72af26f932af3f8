"""Package kept samples as webdataset tars with the released Fine-T2I layout, plus a parquet index.

Per subset and shard: ``results/dataset/{subset}/train-{shard}.tar`` holding ``<id>.jpg``, ``<id>.json`` and
``<id>.txt`` (the prompt the image was generated from) per sample, members in sorted order (so each sample's
three files sit together, jpg -> json -> txt, as in the release), and ``train-{shard}.parquet``, one row per
sample in the tar. The json carries the release's 15 keys exactly, then our provenance under extra keys.

Synthetic subsets come from the kept rows of ``results/pairs/{subset}/{shard}.parquet`` (verdicts, no bytes)
joined by ``sample_id`` with the ``image`` bytes of ``results/images/{subset}/{shard}.parquet``. The ``real``
subset comes from the kept rows of ``results/curated/enhanced/{cshard}.parquet`` with bytes from the ingest
table. Real rows follow the release's curated subset: ``prompt`` = the caption, ``style``,
``prompt_category``, ``task`` and ``image_aspect_ratio`` null, ``image_generator`` = the source's name
(the release writes ``pexels`` / ``pixabay`` / ``unsplash_lite`` there), and the txt holds the caption.

Tar bytes are deterministic (fixed mtime, uid/gid, mode, sorted members, no pax headers), so a rerun on the
same inputs reproduces the same files byte for byte.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from finet2i import shards
from finet2i.answers import word_count
from finet2i.images import image_bytes
from finet2i.settings import FromSection, default

log = logging.getLogger(__name__)

STAGE = "package"
STAGE_REAL = "package_real"
REAL = "real"
TAR_MTIME = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed date, so reruns produce identical bytes

# The released dataset's per-sample keys, in its order.
RELEASE_KEYS = (
    "id", "prompt", "enhanced_prompt", "length", "enhanced_length", "prompt_generator", "enhancer", "style",
    "prompt_category", "task", "image_aspect_ratio", "image_resolution", "image_generator",
    "image_generated_with_enhanced_prompt", "aesthetic_predictor_v_2_5_score",
)

INDEX_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("prompt", pa.string()),
    ("enhanced_prompt", pa.string()),
    ("length", pa.int64()),
    ("enhanced_length", pa.int64()),
    ("prompt_generator", pa.string()),
    ("enhancer", pa.string()),
    ("style", pa.string()),
    ("prompt_category", pa.string()),
    ("task", pa.list_(pa.string())),
    ("image_aspect_ratio", pa.string()),
    ("image_resolution", pa.list_(pa.int64())),
    ("image_generator", pa.string()),
    ("image_generated_with_enhanced_prompt", pa.bool_()),
    ("aesthetic_predictor_v_2_5_score", pa.float64()),
    ("subset", pa.string()),
    ("subcategory", pa.string()),
    ("tar", pa.string()),
    ("members", pa.list_(pa.string())),
])

# Columns that never go into the json's extra keys: bytes, verdict columns of upstream tables (every
# packaged row was kept), and columns already carried by a release key under another name.
_NOT_PROVENANCE = {"image", shards.KEPT, shards.DROP_REASON, "sample_id", "category", "length",
                   "enhanced_length", "image_resolution", "width", "height", "prompt_used"}

# Drop reasons of this stage (a kept upstream row that cannot be packaged; should not happen).
MISSING_IMAGE = "missing_image"
BAD_IMAGE = "bad_image"
EMPTY_PROMPT = "empty_prompt"
BAD_ID = "bad_id"


@dataclass(frozen=True)
class PackageSettings(FromSection):
    jpeg_quality: int = default("package.jpeg_quality")


@dataclass
class Sample:
    key: str  # sample id = member name stem
    jpg: bytes
    meta: dict[str, Any]  # the json: 15 release keys, then provenance
    txt: str


# ----------------------------------------------------------------------------------------------------------
# Field helpers


def aspect_ratio(width: int, height: int) -> str:
    g = gcd(width, height) or 1
    return f"{width // g}:{height // g}"


def normalise_task(task: Any) -> list[str] | None:
    """The release's task: a list of task names, or null when the prompt asked for none."""
    if task is None:
        return None
    if isinstance(task, str):
        parts = [p.strip() for p in task.replace(",", "+").split("+")]
    else:
        parts = [str(p).strip() for p in task]
    parts = [p for p in parts if p and p.lower() not in ("none", "null", "not specified", "general")]
    return parts or None


def prompt_category(category: Any, subcategory: Any) -> str | None:
    """The release writes ``"<category>: <subcategory>"`` (e.g. ``People: Emotions``)."""
    if not category:
        return None
    return f"{category}: {subcategory}" if subcategory else str(category)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN/inf are not JSON
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return str(value)


def image_size_and_jpeg(data: bytes, quality: int) -> tuple[bytes, int, int]:
    """The JPEG bytes to ship and their real size: JPEGs pass through untouched, others are re-encoded."""
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    w, h = im.size
    if im.format == "JPEG" and im.mode in ("RGB", "L"):
        im.load()  # a truncated JPEG must fail here, not in a training job
        return data, w, h
    out = io.BytesIO()
    im.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue(), w, h


# ----------------------------------------------------------------------------------------------------------
# Building samples


def _float_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def build_sample(row: dict[str, Any], image: bytes | None, *, subset: str,
                 settings: PackageSettings) -> tuple[Sample | None, str | None]:
    """One packaged sample from a joined row, or ``(None, reason)``."""
    real = subset == REAL
    key = str(row.get("sample_id") or row.get("id") or "")
    if not key or "." in key or "/" in key:
        # webdataset splits a member name at its first dot: a dot in the id would split the sample.
        return None, BAD_ID
    if not image:
        return None, MISSING_IMAGE
    try:
        jpg, w, h = image_size_and_jpeg(image, settings.jpeg_quality)
    except Exception as e:
        log.warning("%s: image does not decode (%s)", key, e)
        return None, BAD_IMAGE
    prompt = row.get("prompt") or row.get("caption")
    if not prompt or not str(prompt).strip():
        return None, EMPTY_PROMPT
    enhanced = row.get("enhanced_prompt") or None
    with_enhanced = bool(row.get("image_generated_with_enhanced_prompt")) and not real and bool(enhanced)
    # The generate stage records the text it rendered; trust it over our own choice when present.
    txt = row.get("prompt_used") or (enhanced if with_enhanced else prompt)
    meta: dict[str, Any] = {
        "id": key,
        "prompt": prompt,
        "enhanced_prompt": enhanced,
        "length": word_count(prompt),
        "enhanced_length": word_count(enhanced),
        "prompt_generator": row.get("prompt_generator") or row.get("captioner"),
        "enhancer": row.get("enhancer"),
        "style": None if real else row.get("style"),
        "prompt_category": None if real else prompt_category(row.get("category"), row.get("subcategory")),
        "task": None if real else normalise_task(row.get("task")),
        "image_aspect_ratio": None if real else (row.get("image_aspect_ratio") or aspect_ratio(w, h)),
        "image_resolution": [w, h],
        "image_generator": row.get("source") if real else row.get("image_generator"),
        "image_generated_with_enhanced_prompt": with_enhanced,
        "aesthetic_predictor_v_2_5_score": _float_or_none(row.get("aesthetic_predictor_v_2_5_score")),
    }
    assert tuple(meta) == RELEASE_KEYS
    meta["subset"] = subset
    if "id" in row and row.get("sample_id") and row["id"] != key:
        meta["prompt_id"] = row["id"]
    for col in sorted(row):
        if col in meta or col in _NOT_PROVENANCE or col == "id":
            continue
        value = _jsonable(row[col])
        if value is not None:
            meta[col] = value
    return Sample(key, jpg, meta, str(txt)), None


# ----------------------------------------------------------------------------------------------------------
# Writing


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar(path: str | os.PathLike[str], samples: Sequence[Sample]) -> list[list[str]]:
    """Write samples in id order, members jpg/json/txt; returns each sample's member names."""
    members: list[list[str]] = []
    with shards.atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for s in sorted(samples, key=lambda s: s.key):
            files = [
                (f"{s.key}.jpg", s.jpg),
                (f"{s.key}.json", json.dumps(s.meta, ensure_ascii=False).encode("utf-8")),
                (f"{s.key}.txt", s.txt.encode("utf-8")),
            ]
            for name, data in files:
                tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
            members.append([name for name, _ in files])
    return members


def index_rows(samples: Sequence[Sample], members: Sequence[list[str]],
               tar_name: str) -> list[dict[str, Any]]:
    rows = []
    for s, names in zip(sorted(samples, key=lambda s: s.key), members, strict=True):
        row = {k: s.meta[k] for k in RELEASE_KEYS}
        row.update(subset=s.meta["subset"], subcategory=s.meta.get("subcategory"), tar=tar_name,
                   members=list(names))
        rows.append(row)
    return rows


def package_rows(rows: Iterable[dict[str, Any]], images: dict[str, bytes | None], *, subset: str, shard: str,
                 tar_path: str | os.PathLike[str], index_path: str | os.PathLike[str],
                 stats_path: str | os.PathLike[str], settings: dict[str, Any] | None,
                 started: float | None = None, stage: str = STAGE) -> shards.StageStats:
    """Package already-kept rows; ``images`` maps a row's sample id to its image bytes."""
    started = time.monotonic() if started is None else started
    cfg = PackageSettings.from_config(settings)
    samples: list[Sample] = []
    verdicts: list[shards.Record] = []
    seen: set[str] = set()
    for row in rows:
        key = str(row.get("sample_id") or row.get("id") or "")
        sample, reason = build_sample(row, images.get(key), subset=subset, settings=cfg)
        if sample is not None and sample.key in seen:
            sample, reason = None, "duplicate_id"
        if sample is None:
            log.warning("%s/%s: %s not packaged: %s", subset, shard, key or "<no id>", reason)
        else:
            seen.add(sample.key)
            samples.append(sample)
        verdicts.append(shards.mark({"id": key}, reason))
    tar_name = Path(tar_path).name
    members = write_tar(tar_path, samples)
    shards.write_table(index_path, index_rows(samples, members, tar_name), schema=INDEX_SCHEMA)
    dropped_ids = sorted(v["id"] for v in verdicts if not v[shards.KEPT])
    return shards.write_stats(stats_path, verdicts, stage=stage, shard=shard, started=started, subset=subset,
                              tar=tar_name, tar_bytes=os.path.getsize(tar_path),
                              image_bytes=sum(len(s.jpg) for s in samples), not_packaged=dropped_ids[:1000])


def run_package(pairs_path: str | os.PathLike[str], images_path: str | os.PathLike[str],
                tar_path: str | os.PathLike[str], index_path: str | os.PathLike[str], *, subset: str,
                shard: str, settings: dict[str, Any] | None,
                stats_path: str | os.PathLike[str]) -> shards.StageStats:
    """Package one synthetic subset shard: kept pair verdicts joined with their images by sample_id."""
    started = time.monotonic()
    kept = shards.read_kept(pairs_path)
    images_schema = pq.read_schema(images_path)
    if "sample_id" not in images_schema.names or "image" not in images_schema.names:
        raise ValueError(f"{images_path}: an images table needs `sample_id` and `image` columns "
                         f"(has {images_schema.names}); rerun the generate stage")
    keys = {str(r.get("sample_id")) for r in kept if r.get("sample_id")}
    # Metadata: the images row (everything generation knew), overlaid by the verdict row (judge evidence).
    meta_cols = [c for c in images_schema.names if c != "image"]
    if keys:
        t = pq.read_table(images_path, columns=meta_cols, filters=[("sample_id", "in", sorted(keys))])
        by_key = {r["sample_id"]: r for r in t.to_pylist()}
    else:
        by_key = {}
    rows = [{**by_key.get(r.get("sample_id"), {}), **r} for r in kept]
    images = image_bytes(images_path, "sample_id", sorted(keys))
    return package_rows(rows, images, subset=subset, shard=shard, tar_path=tar_path, index_path=index_path,
                        stats_path=stats_path, settings=settings, started=started)


def run_package_real(enhanced_path: str | os.PathLike[str], ingest_path: str | os.PathLike[str],
                     tar_path: str | os.PathLike[str], index_path: str | os.PathLike[str], *, cshard: str,
                     settings: dict[str, Any] | None,
                     stats_path: str | os.PathLike[str]) -> shards.StageStats:
    """Package one curated shard: kept ``curated_enhance`` rows, image bytes from the ingest table by id."""
    started = time.monotonic()
    kept = shards.read_kept(enhanced_path, exclude=("image",))
    images = image_bytes(ingest_path, "id", [r["id"] for r in kept])
    return package_rows(kept, images, subset=REAL, shard=cshard, tar_path=tar_path, index_path=index_path,
                        stats_path=stats_path, settings=settings, started=started, stage=STAGE_REAL)
