"""The report's pictures: a few finished samples per subset, and a few records that a stage dropped, with why.

Bounded reads only. Kept samples come from the finished-sample tables the report reads anyway (their ``jpg``
column), walked in key order one small row group at a time until ``KEPT_PER_SUBSET`` are found. Dropped
records come from the first shard of each stage that judges images (finet2i.core.pipeline.judged_images:
pair_filter, the curated filters): its small columns give the drops and their reasons, and the images of the
chosen few are read by id from the table that holds them (generate, curated_ingest), which parquet's row-group
statistics narrow to a few row groups. Each picture becomes a small JPEG thumbnail.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

KEPT_PER_SUBSET = 8
DROPPED_PER_SUBSET = 4
THUMB_SIDE = 160
REAL = "real"  # the curated branch's subset code
# Columns that say why a record was dropped, shown under its picture when its table has them.
EVIDENCE = ("judge_reasoning", "duplicate_of", "guard_categories", "caption_guard_categories")
SCORE = "aesthetic_predictor_v_2_5_score"


@dataclass(frozen=True)
class Thumb:
    subset: str
    key: str  # the sample's key (kept) or the record's id (dropped)
    jpeg: bytes  # the thumbnail
    prompt: str
    score: float | None
    reason: str | None = None  # the drop reason (None: a finished sample)
    stage: str | None = None  # the stage that dropped it
    evidence: str = ""


def thumbnail(data: bytes, side: int = THUMB_SIDE) -> bytes:
    """A JPEG at most ``side`` pixels on its longer side."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        im.thumbnail((side, side))
        out = io.BytesIO()
        im.save(out, "JPEG", quality=80)
    return out.getvalue()


def _subset_of(path: Path, subsets: Sequence[str]) -> str:
    return path.parent.name if path.parent.name in subsets else REAL


def kept_thumbnails(index_paths: Iterable[str | os.PathLike[str]], subsets: Sequence[str],
                    per_subset: int = KEPT_PER_SUBSET) -> dict[str, list[Thumb]]:
    """Up to ``per_subset`` finished samples of each subset, in key order from its first tables; a sample that
    refers to its image in another table (finet2i.plumbing.images.REFERENCE_COLUMNS) is read from there."""
    import pyarrow.parquet as pq

    from finet2i.plumbing.images import REFERENCE_COLUMNS, resolve_images

    out: dict[str, list[Thumb]] = {}
    for p in map(Path, index_paths):
        subset = _subset_of(p, subsets)
        have = out.setdefault(subset, [])
        if len(have) >= per_subset:
            continue
        f = pq.ParquetFile(p)
        names = set(f.schema_arrow.names)
        if "jpg" not in names:
            continue
        columns = [c for c in ("kept", "key", "jpg", "jpg_size", "txt", SCORE, *REFERENCE_COLUMNS) if c in names]
        chosen: list[dict] = []
        for batch in f.iter_batches(batch_size=16, columns=columns):
            chosen += [r for r in batch.to_pylist()
                       if r.get("kept") is not False and (r.get("jpg") or r.get("image_table"))]
            if len(have) + len(chosen) >= per_subset:
                break
        chosen = chosen[:per_subset - len(have)]
        resolve_images(chosen, p)
        have += [Thumb(subset, str(r.get("key")), thumbnail(r["jpg"]), str(r.get("txt") or ""), r.get(SCORE))
                 for r in chosen if r.get("jpg")]
    return out


def _evidence(row: dict) -> str:
    parts = []
    for column in EVIDENCE:
        value = row.get(column)
        if value not in (None, "", []):
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{column.replace('_', ' ')}: {text}")
    return "; ".join(parts)


def dropped_thumbnails(pairs: Iterable[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
                       subsets: Sequence[str], per_subset: int = DROPPED_PER_SUBSET) -> dict[str, list[Thumb]]:
    """Up to ``per_subset`` dropped records of each subset, one of each drop reason first, with their images:
    ``pairs`` = (a judging stage's table, the table that holds its records' images)."""
    import pyarrow.parquet as pq

    from finet2i.plumbing.images import image_bytes

    out: dict[str, list[Thumb]] = {}
    for table, holder in ((Path(a), Path(b)) for a, b in pairs):
        subset = _subset_of(table, subsets)
        have = out.setdefault(subset, [])
        room = per_subset - len(have)
        if room <= 0:
            continue
        names = set(pq.read_schema(table).names)
        drops = [r for r in pq.read_table(table, columns=["id", "drop_reason"], filters=[("kept", "=", False)])
                 .to_pylist() if r.get("id")]
        ids, seen = [], set()
        for row in drops:  # one of each reason first, then the rest in id order
            if row["drop_reason"] not in seen:
                seen.add(row["drop_reason"])
                ids.append(row["id"])
        ids = (ids + [r["id"] for r in drops if r["id"] not in ids])[:room]
        if not ids:
            continue
        # Only the chosen rows' text: a production shard's judge reasoning runs to megabytes.
        small = [c for c in ("id", "drop_reason", "prompt_used", "prompt", "caption", SCORE, *EVIDENCE) if c in names]
        rows = {r["id"]: r for r in pq.read_table(table, columns=small, filters=[("id", "in", ids)]).to_pylist()}
        chosen = [rows[i] for i in ids if i in rows]
        images = image_bytes(holder, "id", [str(r["id"]) for r in chosen])
        stage = table.parent.parent.name if table.parent.name in subsets else table.parent.name
        for row in chosen:
            data = images.get(str(row["id"]))
            if not data:
                continue
            prompt = row.get("prompt_used") or row.get("prompt") or row.get("caption") or ""
            have.append(Thumb(subset, str(row["id"]), thumbnail(data), str(prompt), row.get(SCORE),
                              reason=str(row.get("drop_reason") or "dropped"), stage=stage,
                              evidence=_evidence(row)))
    return out


def contact_sheet(thumbs: Sequence[Thumb], side: int = THUMB_SIDE, columns: int = 6) -> bytes:
    """One PNG of the thumbnails in a grid (the Markdown report's picture of a subset); dropped ones framed red."""
    from PIL import Image, ImageDraw

    rows = (len(thumbs) + columns - 1) // columns
    pad = 6
    sheet = Image.new("RGB", (columns * (side + pad) + pad, rows * (side + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, t in enumerate(thumbs):
        x, y = pad + (i % columns) * (side + pad), pad + (i // columns) * (side + pad)
        with Image.open(io.BytesIO(t.jpeg)) as im:
            sheet.paste(im.convert("RGB"), (x + (side - im.width) // 2, y + (side - im.height) // 2))
        if t.reason:
            draw.rectangle([x - 2, y - 2, x + side + 1, y + side + 1], outline=(200, 0, 0), width=3)
    out = io.BytesIO()
    sheet.save(out, "PNG", optimize=True)
    return out.getvalue()
