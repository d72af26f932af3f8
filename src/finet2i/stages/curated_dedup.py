"""Stage ``curated_dedup`` (beyond the paper's text, needed once three sites are listed): one photograph posted
to two sites, or twice to one, is kept once.

Ingest already drops byte-identical copies within a shard (``duplicate``); the same photo from Pexels and
Pixabay comes back re-encoded and resized, and lands in another shard (shards hash the source's own id). So each
job reads the small ``id``/``phash`` columns of *every* ingest shard's kept rows and applies one global rule:
in id order (``real-<cshard>-<index>``), a photo whose perceptual hash (:mod:`finet2i.plumbing.phash`) is within
``curated.near_duplicates.max_distance`` bits of an earlier kept photo is dropped as ``near_duplicate``, with
``duplicate_of`` (the kept photo's id) and ``phash_distance`` as evidence. Every job computes the same global
answer, so the verdicts do not depend on which shard asks, and a shard's table is rewritten byte-identical when
another shard changes without touching its photos.

Candidates come from band buckets (pigeonhole: two 64-bit hashes within ``d`` bits agree exactly on at least one
of ``d + 1`` bands), so the pass is near-linear: ~420k photos, a few seconds.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow.parquet as pq

from finet2i.core import shards
from finet2i.core.settings import default

STAGE = "curated_dedup"
NEAR_DUPLICATE = "near_duplicate"


def _bands(h: int, n: int) -> list[tuple[int, int]]:
    width = -(-64 // n)
    return [(b, (h >> (b * width)) & ((1 << width) - 1)) for b in range(n)]


def near_duplicates(hashes: Sequence[tuple[str, str]], max_distance: int) -> dict[str, tuple[str, int]]:
    """``{id: (id of the earlier kept photo, distance)}`` for every photo that repeats one, over ``(id, phash)``
    pairs taken in id order."""
    n = max_distance + 1
    buckets: dict[tuple[int, int], list[tuple[str, int]]] = defaultdict(list)
    out: dict[str, tuple[str, int]] = {}
    for rid, hexhash in sorted(hashes):
        h = int(hexhash, 16)
        best: tuple[int, str] | None = None
        for band in _bands(h, n):
            for other_id, other in buckets.get(band, ()):
                d = (h ^ other).bit_count()
                if d <= max_distance and (best is None or (d, other_id) < best):
                    best = (d, other_id)
        if best is not None:
            out[rid] = (best[1], best[0])
            continue
        for band in _bands(h, n):
            buckets[band].append((rid, h))
    return out


def read_hashes(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[str, str]]:
    """``(id, phash)`` of every kept, hashed row of the ingest tables (two small columns; no image bytes)."""
    out = []
    for p in paths:
        t = pq.read_table(p, columns=["id", "phash", shards.KEPT])
        for rid, h, kept in zip(*(t.column(c).to_pylist() for c in ("id", "phash", shards.KEPT)), strict=True):
            if kept and h:
                out.append((rid, h))
    return out


def run_curated_dedup(in_path: str | os.PathLike[str], all_paths: Sequence[str | os.PathLike[str]],
                      out_path: str | os.PathLike[str], *, cshard: str, settings: Mapping[str, Any],
                      stats_path: str | os.PathLike[str]) -> shards.StageStats:
    started = time.monotonic()
    near = settings.get("near_duplicates") or {}
    max_distance = int(near.get("max_distance", default("curated.near_duplicates.max_distance")))
    rows = shards.read_kept(in_path, exclude=("image",))
    dup = near_duplicates(read_hashes(all_paths), max_distance)
    out = []
    for r in rows:
        first, distance = dup.get(r["id"], (None, None))
        r = {**r, "duplicate_of": first or r.get("duplicate_of"), "phash_distance": distance}
        out.append(shards.mark(r, NEAR_DUPLICATE if first else None))
    return shards.write_stage_output(out_path, out, stage=STAGE, shard=cshard, started=started,
                                     stats_file=stats_path, max_distance=max_distance)
