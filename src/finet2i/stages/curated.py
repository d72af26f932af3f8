"""The curated real-image branch (paper 3.2): ingest, validate, normalise real photographs, then score them.

Ingest (``run_curated_ingest``, CPU) turns ``curated.sources`` (folders of image files, or URL-list files with
one URL per line and ``#`` comments) into ``curated.shards`` fixed shards. An item's shard is a stable hash of
its key (the URL, or ``<source>/<relative path>`` for a file), so the DAG is known from the config alone and a
rerun never reshuffles. Per item, img2dataset-style: fetch with a timeout and bounded retries, decide the real
format from the bytes (the file name is ignored), check the header's size *before* decoding, decode, convert
to RGB and re-encode as JPEG. Every failure is a counted drop reason, never a failed job:

``unreachable`` (fetch failed after retries), ``not_an_image``, ``corrupt``, ``truncated``, ``too_large``
(header over ``max_pixels``, or the download over ``max_bytes``), ``too_small`` (short side < ``min_side``),
``duplicate`` (same pixels as an earlier item of the shard; evidence in ``duplicate_of``).

Score (``run_curated_score``, GPU) adds ``aesthetic_predictor_v_2_5_score`` and drops ``low_aesthetic`` below
``curated.aesthetic_threshold`` (the paper keeps >= 6.5). Caption and enhance are the VLM / LLM engineers'
stages (``rules/curated.smk`` calls them).

Both stages stream their tables in small batches: a shard of a few thousand photographs is gigabytes of
bytes, and holding it twice in Python objects would set the memory bill of every job.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
import urllib.error
import urllib.request
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from finet2i import shards
from finet2i.models import ModelSpec

log = logging.getLogger(__name__)

STAGE_INGEST = "curated_ingest"
STAGE_SCORE = "curated_score"
SCORE_COLUMN = "aesthetic_predictor_v_2_5_score"

# Drop reasons, as written to ``drop_reason`` and counted in the stats JSON.
UNREACHABLE = "unreachable"
NOT_AN_IMAGE = "not_an_image"
CORRUPT = "corrupt"
TRUNCATED = "truncated"
TOO_LARGE = "too_large"
TOO_SMALL = "too_small"
DUPLICATE = "duplicate"
LOW_AESTHETIC = "low_aesthetic"

URL_SCHEMES = ("http://", "https://")
USER_AGENT = "finet2i-curated/0.1 (+https://github.com/; dataset research crawler)"
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


# ----------------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class CuratedSettings:
    """The ``curated`` config section. Keys beyond the schema's have defaults here (see the module notes)."""

    aesthetic_threshold: float = 6.5
    max_pixels: int = 40_000_000
    min_side: int = 512
    timeout_s: float = 20.0
    retries: int = 2
    chunk_size: int = 1024
    backoff_s: float = 1.0  # first retry waits this long, then doubles
    max_bytes: int = 256 * 1024 * 1024  # a download beyond this is not a photograph we want
    jpeg_quality: int = 95

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> CuratedSettings:
        known = cls.__dataclass_fields__
        values = {k: v for k, v in section.items() if k in known and v is not None}
        s = cls(**values)
        if s.min_side < 1 or s.max_pixels < 1:
            raise ValueError(f"curated: min_side ({s.min_side}) and max_pixels ({s.max_pixels}) must be >= 1")
        return s


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


# ----------------------------------------------------------------------------------------------------------
# Fetching


@dataclass
class Fetched:
    data: bytes | None
    attempts: int
    reason: str | None = None
    error: str | None = None


def _retryable(e: BaseException) -> bool:
    if isinstance(e, urllib.error.HTTPError):
        return e.code in (408, 425, 429) or e.code >= 500
    return isinstance(e, (urllib.error.URLError, TimeoutError, ConnectionError, OSError))


def fetch(item: SourceItem, settings: CuratedSettings) -> Fetched:
    """Read a local file, or download a URL with a timeout and bounded retries (exponential backoff)."""
    if item.path is not None:
        try:
            size = os.path.getsize(item.path)
            if size > settings.max_bytes:
                return Fetched(None, 1, TOO_LARGE, f"file is {size} bytes > max_bytes {settings.max_bytes}")
            return Fetched(Path(item.path).read_bytes(), 1)
        except OSError as e:
            return Fetched(None, 1, UNREACHABLE, f"{type(e).__name__}: {e}")
    attempts = 0
    last: BaseException | None = None
    for attempt in range(settings.retries + 1):
        attempts += 1
        try:
            req = urllib.request.Request(item.locator, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(req, timeout=settings.timeout_s) as resp:
                data = resp.read(settings.max_bytes + 1)
            if len(data) > settings.max_bytes:
                return Fetched(None, attempts, TOO_LARGE, f"download over max_bytes {settings.max_bytes}")
            return Fetched(data, attempts)
        except Exception as e:  # every failure of one sample is counted, never fatal
            last = e
            if not _retryable(e) or attempt == settings.retries:
                break
            time.sleep(settings.backoff_s * (2 ** attempt))
    return Fetched(None, attempts, UNREACHABLE, f"{type(last).__name__}: {last}")


T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map`` over a thread pool, in input order, with at most ``2 * workers`` results in flight.

    ``Executor.map`` submits everything at once, so finished downloads would pile up in memory while the
    consumer decodes; here a window bounds that.
    """
    workers = max(1, workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        window: deque[Future[R]] = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


# ----------------------------------------------------------------------------------------------------------
# Validation and normalisation


class Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Normalised:
    jpeg: bytes
    width: int
    height: int
    source_format: str
    source_mode: str


# Magic numbers of formats PIL reads: bytes that start like an image but fail to open are "corrupt",
# anything else is "not_an_image".
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def sniff_image(data: bytes) -> bool:
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _to_rgb(im: Any) -> Any:
    """RGB for every mode a photograph arrives in; transparency is flattened onto white."""
    import numpy as np
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: PIL's convert("L") clips at 255 instead of scaling the range down.
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 or im.mode.startswith("I;16") else 255.0
        arr = np.clip(arr * (255.0 / peak), 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        peak = arr.max(initial=0) or 1.0
        arr = np.clip(arr * (255.0 / (peak if peak > 255 else 255.0)), 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    if im.mode == "CMYK" and im.info.get("icc_profile"):
        try:  # print-profile CMYK converts far better through its ICC profile than through PIL's formula
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception as e:  # a broken profile is common; the plain conversion is still usable
            log.debug("CMYK ICC conversion failed (%s); using PIL's conversion", e)
    return im.convert("RGB") if im.mode != "RGB" else im


def normalise_image(data: bytes, settings: CuratedSettings) -> Normalised:
    """Validate one file's bytes and re-encode them as an RGB JPEG; raises :class:`Rejected` with the reason.

    The header's size is checked before any pixel is decoded, so a 20000x20000 header costs microseconds.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise Rejected(NOT_AN_IMAGE, "empty file")
    try:
        with warnings.catch_warnings():
            # PIL warns between its own bomb limit and twice that; our max_pixels check decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except Image.DecompressionBombError as e:
        raise Rejected(TOO_LARGE, str(e)) from e
    except UnidentifiedImageError as e:
        raise Rejected(CORRUPT if sniff_image(data) else NOT_AN_IMAGE, "PIL cannot identify the bytes") from e
    except Exception as e:  # a malformed header can raise nearly anything from a plugin
        raise Rejected(CORRUPT, f"{type(e).__name__}: {e}") from e
    fmt = str(im.format or "unknown")
    w, h = im.size
    if w * h > settings.max_pixels:
        raise Rejected(TOO_LARGE, f"{w}x{h} = {w * h} pixels > max_pixels {settings.max_pixels}")
    if min(w, h) < settings.min_side:
        raise Rejected(TOO_SMALL, f"{w}x{h}: short side < min_side {settings.min_side}")
    mode = im.mode
    try:
        im.load()
    except OSError as e:
        raise Rejected(TRUNCATED if "truncated" in str(e).lower() else CORRUPT, f"{fmt}: {e}") from e
    except Exception as e:
        raise Rejected(CORRUPT, f"{fmt}: {type(e).__name__}: {e}") from e
    try:
        im = ImageOps.exif_transpose(im)  # camera orientation, so captions describe an upright picture
    except Exception as e:  # a broken EXIF block must not lose a good photograph
        log.debug("EXIF orientation ignored: %s", e)
    rgb = _to_rgb(im)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=settings.jpeg_quality)
    return Normalised(out.getvalue(), rgb.width, rgb.height, fmt, mode)


# ----------------------------------------------------------------------------------------------------------
# Ingest


def curated_id(cshard: str, index: int) -> str:
    return f"real-{cshard}-{index:06d}"


def ingest_record(item: SourceItem, fetched: Fetched, *, cshard: str, index: int,
                  settings: CuratedSettings) -> shards.Record:
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
        n = normalise_image(fetched.data, settings)
    except Rejected as e:
        rec["error"] = e.detail
        return shards.mark(rec, e.reason)
    rec.update(source_format=n.source_format, source_mode=n.source_mode, width=n.width, height=n.height,
               image=n.jpeg, sha256=hashlib.sha256(n.jpeg).hexdigest())
    return shards.mark(rec, None)


class _StreamWriter:
    """Parquet rows in small row groups, written atomically (temp file + rename on success)."""

    def __init__(self, path: str | os.PathLike[str], schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self.buffer: list[shards.Record] = []

    def __enter__(self) -> _StreamWriter:
        self._ctx = shards.atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self.writer = pq.ParquetWriter(tmp, self.schema, compression="zstd")
        return self

    def write(self, rec: shards.Record) -> None:
        self.buffer.append(rec)
        if len(self.buffer) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.buffer = []

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            self.writer.close()
            self._ctx.__exit__(exc_type, exc, tb)


def run_curated_ingest(sources: Sequence[str], out_path: str | os.PathLike[str], *, cshard: str,
                       n_shards: int, settings: dict[str, Any], stats_path: str | os.PathLike[str],
                       workers: int = 16) -> shards.StageStats:
    """Ingest one curated shard: every item gets a row (kept with JPEG bytes, or its drop reason)."""
    started = time.monotonic()
    cfg = CuratedSettings.from_config(settings)
    items = items_for_shard(sources, cshard, n_shards)
    log.info("curated shard %s/%d: %d items from %d sources", cshard, n_shards, len(items), len(sources))
    light: list[shards.Record] = []  # verdicts without bytes, for the stats
    first_of: dict[str, str] = {}
    per_source: Counter[str] = Counter()
    bytes_fetched = 0
    with _StreamWriter(out_path, INGEST_SCHEMA) as out:
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
    stats = shards.StageStats.from_records(STAGE_INGEST, cshard, light, seconds=time.monotonic() - started,
                                           bytes_fetched=bytes_fetched, kept_by_source=dict(per_source),
                                           n_shards=n_shards)
    stats.write(stats_path)
    log.info("%s/%s: %d in, %d kept, dropped %s", STAGE_INGEST, cshard, stats.records_in, stats.kept,
             stats.dropped)
    return stats


# ----------------------------------------------------------------------------------------------------------
# Aesthetic scoring


def decode_rgb(jpeg: bytes) -> Any:
    from PIL import Image

    im = Image.open(io.BytesIO(jpeg))
    return im.convert("RGB")


def _kept_ids(path: str | os.PathLike[str]) -> list[str]:
    t = shards.read_table(path, ["id", shards.KEPT])
    mask = t.column(shards.KEPT).fill_null(False)
    return t.filter(mask).column("id").to_pylist()


def _images_by_id(path: str | os.PathLike[str], ids: Sequence[str]) -> dict[str, bytes]:
    # Ids are written in increasing order, so parquet's row-group statistics skip most of the file.
    t = pq.read_table(path, columns=["id", "image"], filters=[("id", "in", list(ids))])
    return dict(zip(t.column("id").to_pylist(), t.column("image").to_pylist(), strict=True))


def run_curated_score(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, cshard: str,
                      settings: dict[str, Any], encoder: ModelSpec, head: ModelSpec,
                      stats_path: str | os.PathLike[str], scorer: Any = None) -> shards.StageStats:
    """Score the kept ingest rows with Aesthetic Predictor V2.5; drop ``low_aesthetic`` below the threshold.

    Scores are checkpointed per chunk (ids and scores only); the threshold is applied afterwards, so a changed
    threshold re-decides without re-scoring when the checkpoint is still there.
    """
    started = time.monotonic()
    cfg = CuratedSettings.from_config(settings)
    ids = _kept_ids(in_path)
    if scorer is None and ids:  # an empty shard never loads a model
        from finet2i.backends.aesthetic import load_aesthetic_scorer

        scorer = load_aesthetic_scorer(encoder, head)
    model_name = getattr(scorer, "model_name", None) or f"{encoder.label}+{head.label}"
    ckpt = shards.ChunkCheckpoint(out_path, cfg.chunk_size,
                                  shards.fingerprint(ids, "aesthetic", encoder.label, head.label))

    def score_chunk(chunk: list[shards.Record]) -> list[shards.Record]:
        chunk_ids = [r["id"] for r in chunk]
        images = _images_by_id(in_path, chunk_ids)
        pil = [decode_rgb(images[i]) for i in chunk_ids]
        scores = list(scorer.score(pil))
        if len(scores) != len(pil):
            raise RuntimeError(f"{model_name}: scored {len(scores)} of {len(pil)} images in shard {cshard}")
        return [{"id": i, SCORE_COLUMN: float(s)} for i, s in zip(chunk_ids, scores, strict=True)]

    scored = {r["id"]: r[SCORE_COLUMN] for r in ckpt.run([{"id": i} for i in ids], score_chunk)}

    in_schema = pq.read_schema(in_path)
    base = [f for f in in_schema if f.name not in (shards.KEPT, shards.DROP_REASON, SCORE_COLUMN)]
    out_schema = pa.schema([*base, pa.field(SCORE_COLUMN, pa.float64()), pa.field(shards.KEPT, pa.bool_()),
                            pa.field(shards.DROP_REASON, pa.string())])
    light: list[shards.Record] = []
    with _StreamWriter(out_path, out_schema) as out:
        for batch in pq.ParquetFile(in_path).iter_batches(batch_size=WRITE_BATCH):
            for rec in batch.to_pylist():
                if not rec.get(shards.KEPT):
                    continue
                score = scored[rec["id"]]
                rec[SCORE_COLUMN] = score
                shards.mark(rec, None if score >= cfg.aesthetic_threshold else LOW_AESTHETIC)
                out.write(rec)
                light.append({"id": rec["id"], shards.KEPT: rec[shards.KEPT],
                              shards.DROP_REASON: rec[shards.DROP_REASON]})
    values = sorted(scored.values())
    stats = shards.StageStats.from_records(
        STAGE_SCORE, cshard, light, seconds=time.monotonic() - started, model=model_name,
        threshold=cfg.aesthetic_threshold, resumed_chunks=ckpt.resumed_chunks,
        score_min=values[0] if values else None, score_max=values[-1] if values else None,
        score_median=values[len(values) // 2] if values else None)
    stats.write(stats_path)
    ckpt.cleanup()
    log.info("%s/%s: %d in, %d kept, dropped %s", STAGE_SCORE, cshard, stats.records_in, stats.kept,
             stats.dropped)
    return stats
