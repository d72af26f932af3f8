"""Stage ``curated_ingest`` (paper 3.2): real photographs from ``curated.sources`` into fixed shards, validated.

Sources are folders of image files, or URL-list files with one URL per line and ``#`` comments. An item's
shard is a stable hash of its key (the URL, or ``<source>/<relative path>`` for a file), so the DAG is known
from the config alone and a rerun never reshuffles. Per item, img2dataset-style: fetch (``finet2i.download``),
decide the real format from the bytes (the file name is ignored), check the header's size *before* decoding,
decode, convert to RGB and re-encode as JPEG (``finet2i.images``). Every failure is a counted drop reason,
never a failed job:

``unreachable`` (fetch failed after retries), ``not_an_image``, ``corrupt``, ``truncated``, ``too_large``
(header over ``max_pixels``, or the download over ``max_bytes``), ``too_small`` (short side < ``min_side``),
``duplicate`` (same pixels as an earlier item of the shard; evidence in ``duplicate_of``).

The table is streamed in small row groups: a shard of a few thousand photographs is gigabytes of bytes, and
holding it twice in Python objects would set the memory bill of every job.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from finet2i import shards
from finet2i.download import UNREACHABLE, URL_SCHEMES, Fetched, FetchSettings, fetch_url, ordered_map, read_local
from finet2i.images import Rejected, normalise_image
from finet2i.settings import default, from_section

log = logging.getLogger(__name__)

STAGE = "curated_ingest"
DUPLICATE = "duplicate"
WRITE_BATCH = 32  # rows per parquet row group: small enough to bound memory, large enough to compress

INGEST_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("cshard", pa.string()),
    ("index", pa.int64()),
    ("source", pa.string()),
    ("locator", pa.string()),
    ("source_format", pa.string()),
    ("source_mode", pa.string()),
    ("bytes_in", pa.int64()),
    ("attempts", pa.int32()),
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("sha256", pa.string()),
    ("duplicate_of", pa.string()),
    ("error", pa.string()),
    ("image", pa.binary()),
    (shards.KEPT, pa.bool_()),
    (shards.DROP_REASON, pa.string()),
])

@dataclass(frozen=True)
class IngestSettings:
    """The ``curated`` keys that decide what ingest keeps."""

    max_pixels: int = default("curated.max_pixels")
    min_side: int = default("curated.min_side")
    timeout_s: float = default("curated.timeout_s")
    retries: int = default("curated.retries")
    backoff_s: float = default("curated.backoff_s")  # first retry waits this long, then doubles
    max_bytes: int = default("curated.max_bytes")  # a download beyond this is not a photograph we want
    jpeg_quality: int = default("curated.jpeg_quality")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> IngestSettings:
        s = from_section(cls, section)
        if s.min_side < 1 or s.max_pixels < 1:
            raise ValueError(f"curated: min_side ({s.min_side}) and max_pixels ({s.max_pixels}) must be >= 1")
        return s

    @property
    def fetch(self) -> FetchSettings:
        return FetchSettings(self.timeout_s, self.retries, self.backoff_s, self.max_bytes)


# ----------------------------------------------------------------------------------------------------------
# Sources and shard assignment


@dataclass(frozen=True)
class SourceItem:
    """One image to ingest: a URL, or a file under a source folder."""

    source: str  # the source's name: folder name or list file stem (the release's image_generator for real)
    locator: str  # the URL, or the file's path relative to its folder
    path: str | None = None  # absolute path for local files

    @property
    def key(self) -> str:
        """What the shard hash and the in-shard order use: stable across machines and checkouts."""
        return self.locator if self.path is None else f"{self.source}/{self.locator}"


def source_name(source: str) -> str:
    p = Path(source.rstrip("/"))
    return p.name if p.is_dir() else p.stem


def list_source(source: str) -> list[SourceItem]:
    """The items of one ``curated.sources`` entry: a folder (non-hidden files, recursively) or a list file."""
    p = Path(source)
    name = source_name(source)
    if p.is_dir():
        items = []
        for f in sorted(p.rglob("*")):
            rel = f.relative_to(p)
            if f.is_file() and not any(part.startswith(".") for part in rel.parts):
                items.append(SourceItem(name, rel.as_posix(), str(f.resolve())))
        return items
    if p.is_file():
        items = []
        for lineno, line in enumerate(p.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(URL_SCHEMES):
                items.append(SourceItem(name, line))
            else:
                # A local path in a list is read relative to the list, so a list travels with its folder.
                local = Path(line) if Path(line).is_absolute() else p.parent / line
                items.append(SourceItem(name, line, str(local.resolve())))
                log.debug("%s:%d: local path %s", p, lineno, local)
        return items
    raise FileNotFoundError(f"curated.sources: {source!r} is neither a folder nor a URL-list file; "
                            f"fix the path in the config (paths are relative to the working directory)")


def shard_of(key: str, n_shards: int) -> int:
    """Stable across processes and Python versions (``hash()`` is salted per process)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n_shards


def items_for_shard(sources: Sequence[str], cshard: str | int, n_shards: int) -> list[SourceItem]:
    """This shard's items, in key order; an item listed twice (same key) is ingested once."""
    if n_shards < 1:
        raise ValueError(f"curated.shards must be >= 1, got {n_shards}")
    want = int(cshard)
    if not 0 <= want < n_shards:
        raise ValueError(f"curated shard {cshard} is outside 0..{n_shards - 1} (curated.shards = {n_shards})")
    chosen: dict[str, SourceItem] = {}
    for source in sources:
        for item in list_source(source):
            if shard_of(item.key, n_shards) == want:
                chosen.setdefault(item.key, item)
    return [chosen[k] for k in sorted(chosen)]


def fetch(item: SourceItem, settings: IngestSettings) -> Fetched:
    """Read a local file, or download a URL (see :mod:`finet2i.download`)."""
    if item.path is not None:
        return read_local(item.path, settings.max_bytes)
    return fetch_url(item.locator, settings.fetch)


def curated_id(cshard: str, index: int) -> str:
    return f"real-{cshard}-{index:06d}"


def ingest_record(item: SourceItem, fetched: Fetched, *, cshard: str, index: int,
                  settings: IngestSettings) -> shards.Record:
    rec: shards.Record = {
        "id": curated_id(cshard, index), "cshard": cshard, "index": index, "source": item.source,
        "locator": item.locator, "source_format": None, "source_mode": None,
        "bytes_in": len(fetched.data) if fetched.data is not None else None, "attempts": fetched.attempts,
        "width": None, "height": None, "sha256": None, "duplicate_of": None, "error": fetched.error,
        "image": None,
    }
    if fetched.data is None:
        return shards.mark(rec, fetched.reason or UNREACHABLE)
    try:
        n = normalise_image(fetched.data, max_pixels=settings.max_pixels, min_side=settings.min_side,
                            jpeg_quality=settings.jpeg_quality)
    except Rejected as e:
        rec["error"] = e.detail
        return shards.mark(rec, e.reason)
    rec.update(source_format=n.source_format, source_mode=n.source_mode, width=n.width, height=n.height,
               image=n.jpeg, sha256=hashlib.sha256(n.jpeg).hexdigest())
    return shards.mark(rec, None)


def run_curated_ingest(sources: Sequence[str], out_path: str | os.PathLike[str], *, cshard: str,
                       n_shards: int, settings: Mapping[str, Any], stats_path: str | os.PathLike[str],
                       workers: int = 16) -> shards.StageStats:
    """Ingest one curated shard: every item gets a row (kept with JPEG bytes, or its drop reason)."""
    started = time.monotonic()
    cfg = IngestSettings.from_config(settings)
    items = items_for_shard(sources, cshard, n_shards)
    log.info("curated shard %s/%d: %d items from %d sources", cshard, n_shards, len(items), len(sources))
    light: list[shards.Record] = []  # verdicts without bytes, for the stats
    first_of: dict[str, str] = {}
    per_source: Counter[str] = Counter()
    bytes_fetched = 0
    with shards.StreamWriter(out_path, INGEST_SCHEMA, WRITE_BATCH) as out:
        fetched_iter = ordered_map(lambda it: fetch(it, cfg), items, workers)
        for index, (item, fetched) in enumerate(zip(items, fetched_iter, strict=True)):
            rec = ingest_record(item, fetched, cshard=cshard, index=index, settings=cfg)
            bytes_fetched += rec["bytes_in"] or 0
            if rec[shards.KEPT]:
                # Same pixels as an earlier item (one photo on two platforms, or re-saved as PNG).
                first = first_of.setdefault(rec["sha256"], rec["id"])
                if first != rec["id"]:
                    rec["duplicate_of"], rec["image"] = first, None
                    shards.mark(rec, DUPLICATE)
            if rec[shards.KEPT]:
                per_source[item.source] += 1
            else:
                log.info("%s (%s): %s %s", rec["id"], item.locator, rec[shards.DROP_REASON],
                         rec["error"] or "")
            out.write(rec)
            light.append({k: rec[k] for k in ("id", shards.KEPT, shards.DROP_REASON)})
    return shards.write_stats(stats_path, light, stage=STAGE, shard=cshard, started=started,
                              bytes_fetched=bytes_fetched, kept_by_source=dict(per_source), n_shards=n_shards)
