"""Finish each kept sample the way the released Fine-T2I ships it, one pipeline shard at a time.

``package`` (per synthetic subset and shard) and ``package_real`` (per curated shard) turn kept rows into
finished samples and write them, with a verdict for every row they received, to
``results/package/{subset}/{shard}.parquet`` and ``results/package_real/{cshard}.parquet``. A finished sample is
exactly what goes into a release tar:

- ``key``: a lowercase uuid (finet2i.release.layout.sample_key): uuid5 of the run seed and the prompt id, so one prompt
  has one key in each of the four synthetic subsets; a real image's key comes from its source and locator
  (never a numeric photo id, which collide across sources);
- ``jpg``: a baseline RGB JPEG whatever the input was (PNG, CMYK or grayscale JPEG, progressive JPEG, alpha);
- ``json``: exactly the release's 15 keys in its value formats (``package.provenance_in_json`` adds the rest);
- ``txt``: the prompt the image was rendered with (never empty);
- ``digest``: sha256 of the three, so ``assemble`` can tell which release tars changed without reading bytes,
  and ``nonnull``, which json keys are not null (assemble's type witnesses);
- the JPEG's bytes are not copied when the input's bytes already are the release's (a baseline RGB JPEG, as
  generate and curated_ingest write them): ``jpg`` is null and ``image_table`` (relative to the package table's
  folder), ``image_key_column`` and ``image_key`` say where they are (the kept pairs' images file, the generate
  table, the ingest table);
  ``jpg_size`` is their length. ``assemble`` reads them from there (docs/disk.md). Re-encoded bytes are stored;
- the 15 keys as typed columns plus ``subset``, ``prompt_id``, ``source_id``, ``subcategory`` and
  ``provenance`` (every other upstream column as JSON: template, seeds, candidates, verdicts, raw answers).

Rows are written sorted by key in small row groups: ``assemble`` reads them by key range.
The ``assemble`` rule (finet2i.stages.assemble) cuts these tables into ``train-%06d.tar`` files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from finet2i.core import shards
from finet2i.core.settings import FromSection, default
from finet2i.plumbing.answers import markup_in, word_count
from finet2i.plumbing.images import image_bytes, reference_to, resolve_images
from finet2i.release import layout as release
from finet2i.release.layout import RELEASE_KEYS, release_jpeg
from finet2i.release.tables import ORIGIN_FIELDS, RELEASE_FIELDS

log = logging.getLogger(__name__)

STAGE = "package"
STAGE_REAL = "package_real"
REAL = "real"
ROW_GROUP = 16  # rows per parquet row group: assemble reads key ranges, pruned by row-group statistics

# The staging table: one row per received record (kept or not); bytes only for kept ones.
STAGING_SCHEMA = pa.schema([
    pa.field("id", pa.string()), pa.field(shards.KEPT, pa.bool_()), pa.field(shards.DROP_REASON, pa.string()),
    pa.field("key", pa.string()), pa.field("jpg", pa.binary()), pa.field("json", pa.string()),
    pa.field("txt", pa.string()), pa.field("digest", pa.string()), pa.field("nonnull", pa.int64()),
    # Where the jpg's bytes are when they are not copied here (finet2i.plumbing.images.REFERENCE_COLUMNS).
    pa.field("image_table", pa.string()), pa.field("image_key_column", pa.string()), pa.field("image_key", pa.string()),
    pa.field("jpg_size", pa.int64()),
    *[f for f in RELEASE_FIELDS if f.name != "id"], *ORIGIN_FIELDS,
])

# Columns of an upstream row that are not provenance: bytes, verdicts (every packaged row was kept), and
# what a release key or origin column already carries.
_NOT_PROVENANCE = {"image", shards.KEPT, shards.DROP_REASON, "id", "sample_id", "category", "subcategory",
                   "width", "height", "prompt_used", "caption", "source", "locator", "subset", "license",
                   "redistributable", *RELEASE_KEYS}

# Drop reasons of this stage (a kept upstream row that cannot be shipped).
MISSING_IMAGE = "missing_image"
BAD_IMAGE = "bad_image"
EMPTY_PROMPT = "empty_prompt"
EMPTY_TXT = "empty_txt"
BAD_ID = "bad_id"
DUPLICATE_KEY = "duplicate_key"
NOT_REDISTRIBUTABLE = "not_redistributable"  # its source's terms forbid it, curated.non_redistributable: omit
CONTROL_MARKUP = "control_markup"  # a think tag, chat-template token or U+FFFD in the prompt or the txt


@dataclass(frozen=True)
class PackageSettings(FromSection):
    jpeg_quality: int = default("package.jpeg_quality")
    provenance_in_json: bool = default("package.provenance_in_json")


@dataclass
class Sample:
    record_id: str  # the pipeline's id for the record
    key: str  # the release key (uuid) = member name stem = json id
    jpg: bytes
    meta: dict[str, Any]  # the release's 15 keys
    txt: str
    origin: dict[str, Any] = field(default_factory=dict)  # ORIGIN_FIELDS but provenance
    provenance: dict[str, Any] = field(default_factory=dict)

    def json_bytes(self, with_provenance: bool) -> bytes:
        body = {**self.meta, **self.provenance} if with_provenance else self.meta
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    def digest(self, json_text: bytes) -> str:
        h = hashlib.sha256()
        for part in (self.key.encode(), self.jpg, json_text, self.txt.encode("utf-8")):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
        return h.hexdigest()


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


def _float_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ----------------------------------------------------------------------------------------------------------
# Building samples


def release_key(row: dict[str, Any], *, real: bool, seed: int | str) -> str:
    """A real image's key hashes its source and locator; a synthetic one its prompt id (the same in each subset)."""
    if real:
        return release.sample_key(seed, "curated", row.get("source"), row.get("locator") or row.get("id"))
    return release.sample_key(seed, "prompt", row.get("id"))


def build_sample(row: dict[str, Any], image: bytes | None, *, subset: str, seed: int | str,
                 settings: PackageSettings) -> tuple[Sample | None, str | None]:
    """One finished sample from a joined row, or ``(None, reason)``."""
    real = subset == REAL
    record_id = str(row.get("sample_id") or row.get("id") or "")
    if not record_id or not row.get("id"):
        return None, BAD_ID
    if not image:
        return None, MISSING_IMAGE
    try:
        jpg, w, h = release_jpeg(image, settings.jpeg_quality)
    except Exception as e:
        log.warning("%s: image does not decode (%s)", record_id, e)
        return None, BAD_IMAGE
    prompt = row.get("prompt") or row.get("caption")
    if not prompt or not str(prompt).strip():
        return None, EMPTY_PROMPT
    enhanced = row.get("enhanced_prompt") or None
    with_enhanced = bool(row.get("image_generated_with_enhanced_prompt")) and not real and bool(enhanced)
    # The generate stage records the text it rendered; trust it over our own choice when present.
    txt = str(row.get("prompt_used") or (enhanced if with_enhanced else prompt))
    if not txt.strip():
        return None, EMPTY_TXT
    if any(markup_in(str(t)) for t in (prompt, enhanced, txt) if t):
        # the stage that wrote it cleans model markup; one that slipped through is never shipped
        log.warning("%s: model control markup in its text (%s): not shipped", record_id,
                    ", ".join(dict.fromkeys(k for t in (prompt, enhanced, txt) if t for k in markup_in(str(t)))))
        return None, CONTROL_MARKUP
    key = release_key(row, real=real, seed=seed)
    meta: dict[str, Any] = {
        "id": key,
        "prompt": prompt,
        "enhanced_prompt": enhanced,
        "length": word_count(prompt),
        "enhanced_length": word_count(enhanced) if enhanced else None,
        "prompt_generator": row.get("prompt_generator") or row.get("captioner"),
        "enhancer": row.get("enhancer") if enhanced else None,
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
    origin = {
        "subset": subset,
        "record_id": record_id,
        "prompt_id": None if real else str(row["id"]),
        "source_id": row.get("locator") if real else None,
        "subcategory": None if real else row.get("subcategory"),
        "license": row.get("license") if real else None,
        "redistributable": bool(row.get("redistributable")) if real else None,
    }
    provenance = {}
    for col in sorted(row):
        if col in _NOT_PROVENANCE:
            continue
        value = _jsonable(row[col])
        if value is not None:
            provenance[col] = value
    return Sample(record_id, key, jpg, meta, txt, origin, provenance), None


def nonnull_mask(meta: dict[str, Any]) -> int:
    """Bit i set when the json's i-th release key is not null: lets assemble pick type witnesses (see there)."""
    return sum(1 << i for i, k in enumerate(RELEASE_KEYS) if meta.get(k) is not None)


def staging_row(sample: Sample, with_provenance: bool, source: tuple[str, str] | None = None) -> dict[str, Any]:
    """One finished sample's row; ``source`` (images table, its key column): the jpg is that table's ``image`` of
    the row keyed by the sample's record id, and is not copied."""
    text = sample.json_bytes(with_provenance)
    ref = {"image_table": source[0], "image_key_column": source[1], "image_key": sample.record_id} if source else {}
    return {
        "id": sample.record_id, shards.KEPT: True, shards.DROP_REASON: None, "key": sample.key,
        "jpg": None if source else sample.jpg, "json": text.decode("utf-8"), "txt": sample.txt,
        "digest": sample.digest(text), "nonnull": nonnull_mask(sample.meta), **ref, "jpg_size": len(sample.jpg),
        **{k: v for k, v in sample.meta.items() if k != "id"}, **sample.origin,
        "provenance": json.dumps(sample.provenance, ensure_ascii=False, sort_keys=True),
    }


def package_rows(rows: Iterable[dict[str, Any]], images: dict[str, bytes | None], *, subset: str, shard: str,
                 seed: int | str, out_path: str | os.PathLike[str], stats_path: str | os.PathLike[str],
                 settings: dict[str, Any] | None, started: float | None = None,
                 stage: str = STAGE, images_from: tuple[str, str] | None = None,
                 refused: Mapping[str, str] | None = None) -> shards.StageStats:
    """Finish already-kept rows; ``images`` maps a row's record id to its image bytes. Writes one row per input
    row (kept with bytes, or dropped with its reason; ``refused``: record id -> a reason decided before, such as
    ``not_redistributable``), sorted by key, then the stats. ``images_from``: the table that ``images`` was read
    from (relative to ``out_path``'s folder) and its key column: a sample whose bytes ship unchanged refers to it
    instead of holding a copy."""
    started = time.monotonic() if started is None else started
    cfg = PackageSettings.from_config(settings)
    out: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for row in rows:
        record_id = str(row.get("sample_id") or row.get("id") or "")
        if refused and record_id in refused:
            sample, reason = None, refused[record_id]
        else:
            sample, reason = build_sample(row, images.get(record_id), subset=subset, seed=seed, settings=cfg)
        if sample is not None and sample.key in seen:
            log.warning("%s/%s: %s has the key of %s", subset, shard, record_id, seen[sample.key])
            sample, reason = None, DUPLICATE_KEY
        if sample is None:
            log.warning("%s/%s: %s not packaged: %s", subset, shard, record_id or "<no id>", reason)
            out.append(shards.mark({"id": record_id, "subset": subset, "record_id": record_id}, reason))
        else:
            seen[sample.key] = record_id
            as_is = images_from is not None and sample.jpg is images.get(record_id)  # not re-encoded
            out.append(staging_row(sample, cfg.provenance_in_json, images_from if as_is else None))
    out.sort(key=lambda r: (r.get("key") is None, r.get("key") or "", r["id"]))
    with shards.atomic_path(out_path) as tmp:
        pq.write_table(shards.to_table(out, STAGING_SCHEMA), tmp, row_group_size=ROW_GROUP)
    kept = [r for r in out if r[shards.KEPT]]
    return shards.write_stats(stats_path, out, stage=stage, shard=shard, started=started, subset=subset,
                              image_bytes=sum(r["jpg_size"] for r in kept),
                              reencoded=sum(1 for r in kept if r["jpg"] is not None
                                            and r["jpg"] is not images.get(r["id"])),
                              referenced=sum(1 for r in kept if r.get("image_table")))


def run_package(pairs_path: str | os.PathLike[str], images_path: str | os.PathLike[str],
                out_path: str | os.PathLike[str], *, subset: str, shard: str, seed: int | str,
                settings: dict[str, Any] | None, stats_path: str | os.PathLike[str]) -> shards.StageStats:
    """Finish one synthetic subset shard: kept pair verdicts joined with their images by sample_id."""
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
    return package_rows(rows, images, subset=subset, shard=shard, seed=seed, out_path=out_path,
                        stats_path=stats_path, settings=settings, started=started,
                        images_from=(reference_to(images_path, out_path), "sample_id"))


def sample_jpgs(rows: list[dict[str, Any]], table: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of the finished-sample ``table`` with ``jpg`` filled in, from where each refers to when it holds no
    copy of its bytes."""
    resolve_images(rows, table)
    return rows


# What a credit line needs (the sources ask for the photographer, a link to the photo, and the license), and
# whether the photo may be redistributed (assemble gathers each real subset's lines into its folder).
CREDIT_FIELDS = ("source", "source_id", "page_url", "photographer", "photographer_url", "license",
                 "redistributable")


def write_credits(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]],
                  keys: dict[str, str]) -> int:
    """One JSON line per shipped real image, in key order: its release key and its credit fields."""
    lines = sorted((keys[r["id"]], json.dumps({"key": keys[r["id"]], **{k: r.get(k) for k in CREDIT_FIELDS}},
                                              ensure_ascii=False, sort_keys=True))
                   for r in rows if r["id"] in keys)
    with shards.atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for _, line in lines), encoding="utf-8")
    return len(lines)


def with_rights(row: dict[str, Any], rights: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """The row with its source's ``license`` and ``redistributable`` (package_real's ``rights`` param, built by
    finet2i.sources.terms.rights_by_name from the config). A source the map does not name (a test's table)
    keeps the license it carries and is taken as redistributable only when no map is given at all."""
    r = (rights or {}).get(str(row.get("source")))
    if r is None:
        return {**row, "redistributable": rights is None}
    return {**row, "license": r.get("license") or row.get("license"),
            "redistributable": bool(r.get("redistributable"))}


def run_package_real(table_path: str | os.PathLike[str], ingest_path: str | os.PathLike[str],
                     out_path: str | os.PathLike[str], *, cshard: str, seed: int | str,
                     settings: dict[str, Any] | None, stats_path: str | os.PathLike[str],
                     credits_path: str | os.PathLike[str] | None = None,
                     rights: Mapping[str, Mapping[str, Any]] | None = None,
                     non_redistributable: str = default("curated.non_redistributable")) -> shards.StageStats:
    """Finish one curated shard: the kept rows of the last curated stage, image bytes from the ingest table;
    every row gets its source's license and redistribution status (``rights``); with ``non_redistributable``
    ``omit`` a photo that may not be redistributed is dropped as ``not_redistributable`` (``internal``: it is
    finished, and assemble puts it in results/dataset_internal/). ``credits_path`` gets the shard's credits
    (:func:`write_credits`), written before the stats."""
    if non_redistributable not in ("internal", "omit"):
        raise ValueError(f"curated.non_redistributable: {non_redistributable!r} is not internal or omit")
    started = time.monotonic()
    kept = [with_rights(r, rights) for r in shards.read_kept(table_path, exclude=("image",))]
    refused = {r["id"]: NOT_REDISTRIBUTABLE for r in kept
               if non_redistributable == "omit" and not r["redistributable"]}
    images = image_bytes(ingest_path, "id", [r["id"] for r in kept if r["id"] not in refused])
    stats_file = Path(f"{out_path}.stats-pending.json") if credits_path else Path(stats_path)
    stats = package_rows(kept, images, subset=REAL, shard=cshard, seed=seed, out_path=out_path,
                         stats_path=stats_file, settings=settings, started=started, stage=STAGE_REAL,
                         images_from=(reference_to(ingest_path, out_path), "id"),
                         refused=refused)
    if credits_path:
        shipped = pq.read_table(out_path, columns=["id", "key", shards.KEPT]).to_pylist()
        write_credits(credits_path, kept, {r["id"]: r["key"] for r in shipped if r[shards.KEPT]})
        os.replace(stats_file, stats_path)  # the stats stay the completion marker: last
    return stats
