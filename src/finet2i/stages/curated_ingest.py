"""Stage ``curated_ingest`` (paper 3.2): real photographs from ``curated.sources`` into fixed shards, validated.

Sources are folders of image files, URL-list files with one URL per line and ``#`` comments, or the manifests
that ``curated_list`` wrote for Unsplash Lite, Pexels and Pixabay (:mod:`finet2i.sources`): one item per
manifest row, fetched from its ``image_url``, with its credits (photographer, page, license) and the source's
own text carried into the record. An item's shard is a stable hash of its key (the URL, ``<source>/<relative
path>`` for a file, ``<source>:<photo id>`` for a manifest row), so the DAG is known from the config alone and
a rerun never reshuffles. Every downloaded body is kept in ``<table>.fetched/`` until the table is written, so
a killed job's rerun fetches only what it had not received. Per item, img2dataset-style: fetch
(``finet2i.plumbing.download``), decide the real format from the bytes (the file name is ignored), check the
header's size *before* decoding, decode, convert to RGB and re-encode as JPEG (``finet2i.plumbing.images``).
Every failure is a counted drop reason, never a failed job:

``unreachable`` (fetch failed after retries), ``not_an_image``, ``corrupt``, ``truncated``, ``too_large``
(header over ``max_pixels``, or the download over ``max_bytes``), ``too_small`` (short side < ``min_side``),
``duplicate`` (same pixels as an earlier item of the shard; evidence in ``duplicate_of``), ``missing_fields``
(the source's answer lacked the photo's URL, id or page). Kept images get a perceptual hash (``phash``) for
``curated_dedup``, which finds the same photo across shards and sources.

The table is streamed in small row groups: a shard of a few thousand photographs is gigabytes of bytes, and
holding it twice in Python objects would set the memory bill of every job."""

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

from finet2i.core import shards
from finet2i.core.settings import default, from_section
from finet2i.plumbing import phash
from finet2i.plumbing.download import (
    NOT_A_FILE,
    REFUSED_URL,
    UNREACHABLE,
    URL_SCHEMES,
    FetchCache,
    Fetched,
    FetchSettings,
    fetch_url,
    ordered_map,
    read_local,
    redact,
)
from finet2i.plumbing.images import Rejected, normalise_image
from finet2i.sources import is_listed, source_name, source_path

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
    ("phash", pa.string()),
    ("source_id", pa.string()),
    ("page_url", pa.string()),
    ("photographer", pa.string()),
    ("photographer_url", pa.string()),
    ("license", pa.string()),
    ("source_text", pa.string()),
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
    deadline_s: float = default("curated.deadline_s")  # everything one URL may take, retries included
    allow_private_addresses: bool = default("curated.allow_private_addresses")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> IngestSettings:
        s = from_section(cls, section)
        if s.min_side < 1 or s.max_pixels < 1:
            raise ValueError(f"curated: min_side ({s.min_side}) and max_pixels ({s.max_pixels}) must be >= 1")
        return s

    @property
    def fetch(self) -> FetchSettings:
        return FetchSettings(self.timeout_s, self.retries, self.backoff_s, self.max_bytes, self.deadline_s,
                             self.allow_private_addresses)


# ----------------------------------------------------------------------------------------------------------
# Sources and shard assignment
#
# Every file of a source folder and every line of a URL list becomes one item, and so one row: ingested, or
# dropped with the reason found while listing (``problem``) or while fetching and decoding. Nothing a source
# holds is passed over without a row, except ``.``-prefixed names (folder metadata such as .DS_Store), which
# are counted in the stats (``skipped_hidden``).

UNREADABLE_LINE = "unreadable_line"  # a list line that is not UTF-8
UNREADABLE_NAME = "unreadable_name"  # a file name that is not UTF-8
OUTSIDE_SOURCE = "outside_source"  # ../, an absolute path, or a symlink that leaves the source's folder
# NOT_A_FILE (download): a device, FIFO, socket or directory link
DUPLICATE_LISTING = "duplicate_listing"  # the same URL or file listed again (evidence: duplicate_of)


@dataclass(frozen=True)
class SourceItem:
    """One thing a source lists: a URL, or a file under a source folder (or named in a list)."""

    source: str  # the source's name: folder name or list file stem (the release's image_generator for real)
    locator: str  # what is recorded: the URL without secrets (download.redact), or the path in its source
    path: str | None = None  # absolute path for local files
    key: str = ""  # what the shard hash and the in-shard order use: unique across sources, stable across machines
    url: str | None = None  # the URL as listed (with its query string): fetched, never recorded
    problem: str | None = None  # a drop reason found while listing
    detail: str | None = None
    credit: tuple[tuple[str, Any], ...] = ()  # a manifest row's CREDIT_COLUMNS


CREDIT_COLUMNS = ("source_id", "page_url", "photographer", "photographer_url", "license", "source_text")


Source = str | Mapping[str, str]  # a curated.sources entry: "path", or {path: ..., name: ...}


def _printable(name: str) -> str | None:
    """``name`` if it is valid UTF-8 text (os.fsdecode keeps undecodable bytes as surrogates), else None."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _file_item(name: str, prefix: str, root: Path, rel: str, path: Path) -> SourceItem:
    """An item for a file found in (or named by) a source, with the problem that stops it from being read."""
    shown = _printable(rel)
    if shown is None:
        shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
        return SourceItem(name, shown, None, f"{prefix}/{shown}", problem=UNREADABLE_NAME,
                          detail="the file name is not UTF-8; rename it")
    key = f"{prefix}/{shown}"
    target = path.resolve()
    if not _inside(target, root):
        return SourceItem(name, shown, None, key, problem=OUTSIDE_SOURCE,
                          detail="the path leaves the source's folder (../, an absolute path or a symlink)")
    if path.is_dir():
        return SourceItem(name, shown, None, key, problem=NOT_A_FILE, detail="a link to a directory")
    return SourceItem(name, shown, str(target), key)


def _list_folder(name: str, prefix: str, root: Path) -> tuple[list[SourceItem], int]:
    items, hidden = [], 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        hidden += sum(1 for d in dirnames if d.startswith("."))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (Path(dirpath) / d).is_symlink())
        links = sorted(d for d in os.listdir(dirpath) if (Path(dirpath) / d).is_symlink() and d not in filenames)
        for f in sorted([*filenames, *links]):
            if f.startswith("."):
                hidden += 1
                continue
            items.append(_file_item(name, prefix, root, (rel_dir / f).as_posix(), Path(dirpath) / f))
    return items, hidden


def _list_file(name: str, prefix: str, p: Path) -> list[SourceItem]:
    items = []
    root = p.parent.resolve()
    for lineno, raw in enumerate(p.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            shown = raw.decode("utf-8", "backslashreplace").strip()
            items.append(SourceItem(name, f"{p.name}:{lineno}", None, f"{prefix}:{lineno}:{shown}",
                                    problem=UNREADABLE_LINE, detail="the line is not UTF-8 text"))
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith(URL_SCHEMES):
            # The URL as listed is the key (the same photo listed twice lands in one shard); its query
            # string (tokens, signatures) is fetched with, never recorded.
            items.append(SourceItem(name, redact(line), None, line, url=line))
        else:
            # A local path in a list is read relative to the list, so a list travels with its folder.
            items.append(_file_item(name, prefix, root, line, root / line))
    return items


def _list_manifest(name: str, prefix: str, p: Path) -> list[SourceItem]:
    """One item per manifest row; the locator (what the release key hashes) is the photo's page URL."""
    import pyarrow.parquet as pq

    if not p.is_file():
        raise FileNotFoundError(f"curated.sources: {name!r} has no manifest at {p}; the curated_list rule writes "
                                f"it (snakemake lists before it ingests)")
    items = []
    for row in pq.read_table(p).to_pylist():
        sid = row.get("source_id")
        locator = row.get("page_url") or f"{name}:{sid}"
        credit = tuple((k, row.get(k)) for k in CREDIT_COLUMNS)
        url = row.get("image_url")
        problem, detail = row.get("problem"), row.get("detail")
        if url and not url.startswith(URL_SCHEMES) and problem is None:
            problem, detail = REFUSED_URL, "the manifest's image_url is not an http(s) URL"
        items.append(SourceItem(name, redact(locator) if locator.startswith(URL_SCHEMES) else locator, None,
                                f"{prefix}:{sid}", url=url, problem=problem, detail=detail, credit=credit))
    return items


def list_source(source: Source, prefix: str | None = None) -> tuple[list[SourceItem], int]:
    """The items of one ``curated.sources`` entry and how many hidden names it skipped.

    ``prefix`` names the source in file keys (default: its name; :func:`items_for_shard` makes it unique when
    two sources share a name, e.g. ``a/pexels`` and ``b/pexels``).
    """
    p = Path(source_path(source))
    name = source_name(source)
    if is_listed(source):
        return _list_manifest(name, prefix or name, p), 0
    if p.is_dir():
        return _list_folder(name, prefix or name, p.resolve())
    if p.is_file():
        return _list_file(name, prefix or name, p), 0
    raise FileNotFoundError(f"curated.sources: {source_path(source)!r} is neither a folder nor a URL-list file; "
                            f"fix the path in the config (paths are relative to the working directory)")


def shard_of(key: str, n_shards: int) -> int:
    """Stable across processes and Python versions (``hash()`` is salted per process)."""
    digest = hashlib.sha256(key.encode("utf-8", "backslashreplace")).digest()
    return int.from_bytes(digest[:8], "big") % n_shards


def items_for_shard(sources: Sequence[Source], cshard: str | int, n_shards: int) -> list[SourceItem]:
    """This shard's items, in key order. An item listed again (same key) keeps its row, dropped as
    ``duplicate_listing``; two sources with the same name get distinct keys (the second is ``name#2``)."""
    return _items_for_shard(sources, cshard, n_shards)[0]


def _items_for_shard(sources: Sequence[Source], cshard: str | int,
                     n_shards: int) -> tuple[list[SourceItem], int]:
    if n_shards < 1:
        raise ValueError(f"curated.shards must be >= 1, got {n_shards}")
    want = int(cshard)
    if not 0 <= want < n_shards:
        raise ValueError(f"curated shard {cshard} is outside 0..{n_shards - 1} (curated.shards = {n_shards})")
    names: Counter[str] = Counter()
    chosen: list[SourceItem] = []
    hidden = 0
    for source in sources:
        name = source_name(source)
        names[name] += 1
        items, skipped = list_source(source, name if names[name] == 1 else f"{name}#{names[name]}")
        hidden += skipped
        chosen += [it for it in items if shard_of(it.key, n_shards) == want]
    # Stable sort: a key listed twice keeps its listing order; the later listings are duplicates.
    chosen.sort(key=lambda it: it.key)
    out: list[SourceItem] = []
    for i, it in enumerate(chosen):
        if i and it.key == chosen[i - 1].key and it.problem is None:
            it = SourceItem(it.source, it.locator, None, it.key, problem=DUPLICATE_LISTING,
                            detail="listed again; ingested once", credit=it.credit)
        out.append(it)
    return out, hidden


def fetch(item: SourceItem, settings: IngestSettings) -> Fetched:
    """Read a local file, or download a URL (:mod:`finet2i.plumbing.download`); a listing problem fetches nothing."""
    if item.problem is not None:
        return Fetched(None, 0, item.problem, item.detail)
    if item.path is not None:
        return read_local(item.path, settings.max_bytes)
    return fetch_url(item.url or item.locator, settings.fetch)


def curated_id(cshard: str, index: int) -> str:
    return f"real-{cshard}-{index:06d}"


def ingest_record(item: SourceItem, fetched: Fetched, *, cshard: str, index: int,
                  settings: IngestSettings) -> shards.Record:
    rec: shards.Record = {
        "id": curated_id(cshard, index), "cshard": cshard, "index": index, "source": item.source,
        "locator": item.locator, "source_format": None, "source_mode": None,
        "bytes_in": len(fetched.data) if fetched.data is not None else None, "attempts": fetched.attempts,
        "width": None, "height": None, "sha256": None, "duplicate_of": None, "error": fetched.error,
        "image": None, "phash": None, **dict.fromkeys(CREDIT_COLUMNS), **dict(item.credit),
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
               image=n.jpeg, sha256=hashlib.sha256(n.jpeg).hexdigest(), phash=phash.phash(n.jpeg))
    return shards.mark(rec, None)


def _fetch_resumable(cache: FetchCache, item: SourceItem, settings: IngestSettings) -> Fetched:
    if item.problem is not None or item.path is not None:
        return fetch(item, settings)  # nothing to fetch, or a local file (reading it again costs nothing)
    return cache.fetch(item.key, lambda: fetch(item, settings))


def run_curated_ingest(sources: Sequence[Source], out_path: str | os.PathLike[str], *, cshard: str,
                       n_shards: int, settings: Mapping[str, Any], stats_path: str | os.PathLike[str],
                       workers: int = 16) -> shards.StageStats:
    """Ingest one curated shard: every item gets a row (kept with JPEG bytes, or its drop reason)."""
    started = time.monotonic()
    cfg = IngestSettings.from_config(settings)
    items, hidden = _items_for_shard(sources, cshard, n_shards)
    log.info("curated shard %s/%d: %d items from %d sources", cshard, n_shards, len(items), len(sources))
    light: list[shards.Record] = []  # verdicts without bytes, for the stats
    first_of: dict[str, str] = {}  # image sha256 -> id
    first_listing: dict[str, str] = {}  # item key -> id
    per_source: Counter[str] = Counter()
    bytes_fetched = 0
    with shards.StreamWriter(out_path, INGEST_SCHEMA, WRITE_BATCH) as out:
        cache = FetchCache(out_path)
        fetched_iter = ordered_map(lambda it: _fetch_resumable(cache, it, cfg), items, workers)
        for index, (item, fetched) in enumerate(zip(items, fetched_iter, strict=True)):
            rec = ingest_record(item, fetched, cshard=cshard, index=index, settings=cfg)
            listed_first = first_listing.setdefault(item.key, rec["id"])
            if item.problem == DUPLICATE_LISTING:
                rec["duplicate_of"] = listed_first
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
                log.info("%s (%s): %s %s", rec["id"], rec["locator"], rec[shards.DROP_REASON],
                         rec["error"] or "")
            out.write(rec)
            light.append({k: rec[k] for k in ("id", shards.KEPT, shards.DROP_REASON)})
    if cache.hits:
        log.info("resumed: %d downloads came from %s, not the network", cache.hits, cache.dir)
    stats = shards.write_stats(stats_path, light, stage=STAGE, shard=cshard, started=started,
                               bytes_fetched=bytes_fetched, kept_by_source=dict(per_source), n_shards=n_shards,
                               skipped_hidden=hidden, downloads_resumed=cache.hits)
    cache.remove()
    return stats
