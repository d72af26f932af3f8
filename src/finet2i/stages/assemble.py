"""Cut one subset's finished samples into the release's tars: ``train-000000.tar`` of ``samples_per_tar`` samples.

Input: every ``results/package/{subset}/*.parquet`` (or ``package_real``) table, one per pipeline shard, each
sorted by key. The real photos are split by their source's terms (finet2i.sources.terms): subset ``real`` takes
those that may be redistributed, ``real_internal`` the others, assembled in the same layout under
``results/dataset_internal/``; each real subset's credits are gathered into its folder's ``credits.jsonl``.
Output: ``results/dataset/<release folder>/train-%06d.tar`` with, beside each, its parquet index
(one row per sample, in tar order: the 15 keys, where the sample came from, its provenance, and each member's
offset and size in the tar) and a stats JSON;
and the job's manifest, ``results/assemble/{subset}.json`` (the rule's one declared output).

**Order.** All kept samples of the subset, sorted by key (a uuid: a uniform, seeded shuffle that does not
depend on how the pipeline sharded the work), cut every ``samples_per_tar``: every tar is full except the
last. A subset with no sample gets no tar (and no folder): an empty tar breaks HF datasets.
One exception: up to 5 *type witnesses* open the first tar. HF's webdataset loader, without a dataset card,
infers the json's types from the first 5 samples of the first tar; if those all have ``task: null``, a later
list fails to cast and the folder does not load. So the fewest samples that together show a value for every
json key that has one anywhere in the subset (usually one) come first, then the rest in key order.

**Incremental.** A tar's *content digest* hashes its samples' keys and digests (sha256 of jpg, json, txt,
computed by package). Planning reads only the small ``key``, ``digest``, ``id`` and ``nonnull`` columns.
A tar whose stats JSON records the same digest, with the tar and index on disk at the recorded size, is left
alone; any other is rewritten
(tar, then index, then stats last: the stats mark a complete tar). Tars past the new last one are removed.
So a rerun with unchanged samples rewrites nothing; a changed sample rewrites its tar only; a sample added
or dropped shifts the samples after it, so the tars from that position to the end are rewritten
(docs/dataset-layout.md). A job killed half-way leaves whole tars only (each written atomically); the rerun
plans again from the inputs and finishes the rest, so no sample is duplicated or lost.

**Reads.** Tars to write are taken in batches of about ``memory_mb`` of sample bytes; for each batch, each
input table is read once, for the key ranges of the batch's tars only (row groups pruned by their key
statistics: package writes small row groups sorted by key). A sample whose JPEG package did not copy (it refers
to the kept pairs' images file, the generate table or the ingest table: docs/disk.md) gets its bytes from there,
each referred table read once per batch, by key; its recorded size is checked.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from finet2i.core import shards
from finet2i.plumbing.images import REFERENCE_COLUMNS, resolve_images
from finet2i.release import layout as release
from finet2i.release.tables import INDEX_SCHEMA, MEMBER_FIELDS

log = logging.getLogger(__name__)

STAGE = "assemble"
TAR_MTIME = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed date, so reruns produce identical bytes
DUPLICATE_KEY = "duplicate_key"  # the same key from two shards (real images listed twice): first shard wins

_WRITTEN_HERE = {"id", "tar", *(f.name for f in MEMBER_FIELDS)}  # index columns assemble fills, not package
_INDEX_FROM_STAGING = [f.name for f in INDEX_SCHEMA if f.name not in _WRITTEN_HERE]
_OWN_FILE = re.compile(r"^train-(\d{6})\.(tar|parquet|stats\.json)$")
_TEMP_FILE = re.compile(r"^\.train-\d{6}\.(tar|parquet|stats\.json)\..*\.tmp$")


@dataclass
class PlannedTar:
    index: int
    keys: list[str]
    files: list[int]  # per key, the input table it comes from
    digest: str

    @property
    def name(self) -> str:
        return release.tar_name(self.index)


# ----------------------------------------------------------------------------------------------------------
# Planning: keys and digests only


WITNESSES = 5  # datasets' WebDataset.NUM_EXAMPLES_FOR_FEATURES_INFERENCE
_PLAN_COLUMNS = ["key", "digest", "id", "nonnull"]


def subset_filter(subset: str) -> list[tuple[str, str, Any]]:
    """Which kept rows of the input tables belong to ``subset``: a real photo goes to the shareable ``real``
    subset only when its source's terms let it be redistributed, else to ``real_internal``
    (results/dataset_internal/)."""
    if subset == release.INTERNAL:
        return [("redistributable", "=", False)]
    if subset == "real":
        return [("redistributable", "=", True)]
    return []


def read_keys(tables: Sequence[str | os.PathLike[str]], subset: str = "") -> pa.Table:
    """``key``, ``digest``, ``id``, ``nonnull`` and ``file`` (input position) of every kept sample of ``subset``,
    sorted by key then file."""
    parts = []
    for i, path in enumerate(tables):
        t = pq.read_table(path, columns=_PLAN_COLUMNS, filters=[(shards.KEPT, "=", True), *subset_filter(subset)])
        if t.num_rows:
            parts.append(t.append_column("file", pa.array([i] * t.num_rows, pa.int32())))
    if not parts:
        return pa.table({"key": pa.array([], pa.string()), "digest": pa.array([], pa.string()),
                         "id": pa.array([], pa.string()), "nonnull": pa.array([], pa.int64()),
                         "file": pa.array([], pa.int32())})
    table = pa.concat_tables(parts)
    return table.take(pc.sort_indices(table, sort_keys=[("key", "ascending"), ("file", "ascending")]))


def plan_tars(table: pa.Table, samples_per_tar: int) -> tuple[list[PlannedTar], list[dict[str, Any]]]:
    """The tars to have, and the samples left out (a key seen before, in an earlier input)."""
    keys, digests = table.column("key").to_pylist(), table.column("digest").to_pylist()
    files, ids = table.column("file").to_pylist(), table.column("id").to_pylist()
    masks = table.column("nonnull").to_pylist()
    unique: list[tuple[str, str, int]] = []
    unique_masks: list[int] = []
    dropped: list[dict[str, Any]] = []
    for i, key in enumerate(keys):
        if unique and unique[-1][0] == key:
            dropped.append({"key": key, "record_id": ids[i], "reason": DUPLICATE_KEY})
            continue
        unique.append((key, digests[i], files[i]))
        unique_masks.append(masks[i] or 0)
    first = type_witnesses(unique_masks)
    moved = set(first)
    unique = [unique[i] for i in first] + [u for i, u in enumerate(unique) if i not in moved]
    planned = []
    for start in range(0, len(unique), samples_per_tar):
        chunk = unique[start:start + samples_per_tar]
        h = hashlib.sha256()
        for key, digest, _ in chunk:
            h.update(f"{key} {digest}\n".encode())
        planned.append(PlannedTar(start // samples_per_tar, [k for k, _, _ in chunk], [f for _, _, f in chunk],
                                  h.hexdigest()))
    return planned, dropped


def type_witnesses(masks: Sequence[int], limit: int = WITNESSES) -> list[int]:
    """Positions of the fewest samples (greedy, at most ``limit``, earliest on ties) whose non-null keys together
    cover every key that is non-null in some sample."""
    target = 0
    for m in masks:
        target |= m
    covered, picked = 0, []
    while covered != target and len(picked) < limit:
        best = max(range(len(masks)), key=lambda i: (bin(masks[i] & ~covered).count("1"), -i))
        picked.append(best)
        covered |= masks[best]
    return [] if picked == [0] else picked  # the first sample alone already covers everything: key order


def tar_stats_path(folder: Path, index: int) -> Path:
    return folder / f"train-{index:06d}.stats.json"


def is_current(folder: Path, tar: PlannedTar) -> bool:
    """The tar on disk holds exactly the planned samples (by its stats' digest) and is whole, and its index has
    every column (an index written before the member offsets were recorded is rewritten once)."""
    stats_file = tar_stats_path(folder, tar.index)
    tar_file, index_file = folder / tar.name, folder / tar.name.replace(".tar", ".parquet")
    try:
        stats = json.loads(stats_file.read_text())
        return (stats.get("content_digest") == tar.digest and tar_file.stat().st_size == stats.get("tar_bytes")
                and set(INDEX_SCHEMA.names) <= set(pq.read_schema(index_file).names))
    except (OSError, ValueError, pa.ArrowException):
        return False


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


def write_tar(path: Path, rows: Sequence[dict[str, Any]]) -> list[dict[str, int]]:
    """Members ``<key>.jpg``, ``<key>.json``, ``<key>.txt`` per sample, in the given order; fixed metadata, so
    the same samples always give the same bytes. Returns, per sample, where each member's data lies in the tar
    (``jpg_offset``, ``jpg_size``, ...: the index records them so readers can seek instead of scanning)."""
    where: list[dict[str, int]] = []
    with shards.atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for r in rows:
            at: dict[str, int] = {}
            for ext, data in (("jpg", r["jpg"]), ("json", r["json"].encode("utf-8")),
                              ("txt", r["txt"].encode("utf-8"))):
                info = _tarinfo(f"{r['key']}.{ext}", len(data))
                at[f"{ext}_offset"] = tar.offset + len(info.tobuf(tar.format, tar.encoding, tar.errors))
                at[f"{ext}_size"] = len(data)
                tar.addfile(info, io.BytesIO(data))
            where.append(at)
    return where


def write_one(folder: Path, tar: PlannedTar, rows: Sequence[dict[str, Any]], *, subset: str) -> dict[str, Any]:
    tar_path = folder / tar.name
    where = write_tar(tar_path, rows)
    index = [{"id": r["key"], **{c: r.get(c) for c in _INDEX_FROM_STAGING}, "tar": tar.name, **at}
             for r, at in zip(rows, where, strict=True)]
    shards.write_table(tar_path.with_suffix(".parquet"), pa.Table.from_pylist(index, schema=INDEX_SCHEMA))
    stats = {"stage": STAGE, "subset": subset, "folder": folder.name, "tar": tar.name, "samples": len(rows),
             "tar_bytes": tar_path.stat().st_size, "content_digest": tar.digest,
             "first_key": tar.keys[0], "last_key": tar.keys[-1]}
    shards.write_json(tar_stats_path(folder, tar.index), stats)  # last: marks the tar complete
    return stats


def _batches(todo: Sequence[PlannedTar], sample_bytes: float, memory_mb: int) -> list[list[PlannedTar]]:
    budget = max(1, int(memory_mb * 1024 * 1024 // max(sample_bytes, 1.0)))  # samples per batch
    batches: list[list[PlannedTar]] = []
    for tar in todo:
        if batches and sum(len(t.keys) for t in batches[-1]) + len(tar.keys) <= budget:
            batches[-1].append(tar)
        else:
            batches.append([tar])
    return batches


def read_batch(tables: Sequence[str | os.PathLike[str]], batch: Sequence[PlannedTar]) -> dict[tuple[int, str], dict]:
    """The rows of a batch of tars, by (input position, key); each input read once, by the tars' key ranges."""
    wanted: dict[int, set[str]] = defaultdict(set)
    for tar in batch:
        for key, f in zip(tar.keys, tar.files, strict=True):
            wanted[f].add(key)
    ranges = [[("key", ">=", min(t.keys)), ("key", "<=", max(t.keys))] for t in batch]
    columns = ["key", "jpg", "json", "txt", *_INDEX_FROM_STAGING]
    rows: dict[tuple[int, str], dict] = {}
    for f, keys in sorted(wanted.items()):
        names = set(pq.read_schema(tables[f]).names)
        refs = [c for c in (*REFERENCE_COLUMNS, "jpg_size") if c in names]  # tables that refer to their images
        t = pq.read_table(tables[f], columns=columns + refs, filters=ranges)
        t = t.filter(pc.is_in(t.column("key"), value_set=pa.array(sorted(keys), pa.string())))
        mine = t.to_pylist()
        resolve_images(mine, tables[f])
        for r in mine:
            rows[(f, r["key"])] = r
    return rows


def remove_stale(folder: Path, n_tars: int) -> list[str]:
    """Tars (and their index and stats) past the last planned one, and temp files of a killed run."""
    removed = []
    if not folder.is_dir():
        return removed
    for p in sorted(folder.iterdir()):
        m = _OWN_FILE.match(p.name)
        if (m and int(m.group(1)) >= n_tars) or _TEMP_FILE.match(p.name):
            p.unlink()
            removed.append(p.name)
    return removed


def mean_sample_bytes(tables: Sequence[str | os.PathLike[str]]) -> float:
    """Bytes a sample takes in memory, on average: its row, plus the JPEG that it refers to rather than holds."""
    n_rows, referred = 0, 0
    for p in tables:
        n_rows += pq.ParquetFile(p).metadata.num_rows
        if "image_table" in pq.read_schema(p).names:
            t = pq.read_table(p, columns=["jpg_size", "image_table"])
            referred += sum(size or 0 for size, ref in zip(t.column("jpg_size").to_pylist(),
                                                           t.column("image_table").to_pylist(), strict=True) if ref)
    return (sum(os.path.getsize(p) for p in tables) + referred) / (n_rows or 1)


def gather_credits(folder: Path, credit_files: Sequence[str | os.PathLike[str]], keys: set[str]
                   ) -> dict[str, int]:
    """``<folder>/credits.jsonl``: the credit line of every sample of the subset, in key order, gathered from the
    shards' credits files (package_real); rewritten only when it changes. Returns the samples per source."""
    lines: dict[str, str] = {}
    per_source: dict[str, int] = defaultdict(int)
    for path in credit_files:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            credit = json.loads(line)
            if credit.get("key") in keys and credit["key"] not in lines:
                lines[credit["key"]] = line
                per_source[str(credit.get("source"))] += 1
    target = folder / release.CREDITS_FILE
    text = "".join(lines[k] + "\n" for k in sorted(lines))
    if not keys:
        target.unlink(missing_ok=True)
    elif not target.is_file() or target.read_text(encoding="utf-8") != text:
        folder.mkdir(parents=True, exist_ok=True)
        with shards.atomic_path(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return dict(sorted(per_source.items()))


def run_assemble(tables: Sequence[str | os.PathLike[str]], dataset_dir: str | os.PathLike[str],
                 manifest_path: str | os.PathLike[str], *, subset: str, samples_per_tar: int,
                 memory_mb: int = 4096, credits: Sequence[str | os.PathLike[str]] = ()) -> dict[str, Any]:
    """Bring ``dataset_dir`` (one release folder) in line with the finished-sample ``tables``; write the manifest.
    For a real subset, ``credits`` (the shards' credits files) are gathered into ``<dataset_dir>/credits.jsonl``."""
    started = time.monotonic()
    folder = Path(dataset_dir)
    planned, dropped = plan_tars(read_keys(tables, subset), samples_per_tar)
    for d in dropped:
        log.warning("%s: %s (%s) left out: %s", subset, d["key"], d["record_id"], d["reason"])
    todo = [t for t in planned if not is_current(folder, t)]
    sample_bytes = mean_sample_bytes(tables)
    written: dict[int, dict[str, Any]] = {}
    for batch in _batches(todo, sample_bytes, memory_mb):
        rows = read_batch(tables, batch)
        for tar in batch:
            picked = []
            for key, f in zip(tar.keys, tar.files, strict=True):
                if (f, key) not in rows:
                    raise RuntimeError(f"{tables[f]}: sample {key} was planned but not found when reading its "
                                       f"bytes: the table changed while {subset} was being assembled; rerun")
                picked.append(rows[(f, key)])
            written[tar.index] = write_one(folder, tar, picked, subset=subset)
            log.info("%s: wrote %s (%d samples)", subset, tar.name, len(picked))
    per_source = gather_credits(folder, credits, {k for t in planned for k in t.keys}) if credits else {}
    removed = remove_stale(folder, len(planned))
    if not planned and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()  # an empty subset has no folder: nothing to load, nothing to mistake for data
    tars = []
    for tar in planned:
        stats = written.get(tar.index) or json.loads(tar_stats_path(folder, tar.index).read_text())
        tars.append({"tar": tar.name, "samples": len(tar.keys), "tar_bytes": stats["tar_bytes"],
                     "content_digest": tar.digest, "rewritten": tar.index in written})
    manifest = {
        "stage": STAGE, "subset": subset, "folder": folder.name, "dataset_dir": str(folder),
        "samples": sum(len(t.keys) for t in planned), "samples_per_tar": samples_per_tar,
        "tars": tars, "tars_rewritten": len(written), "tars_unchanged": len(planned) - len(written),
        "removed": removed, "dropped": dropped, "inputs": len(tables), "per_source": per_source,
        "credits": str(folder / release.CREDITS_FILE) if per_source else None,
        "seconds": round(time.monotonic() - started, 3),
    }
    shards.write_json(manifest_path, manifest)
    log.info("%s: %d samples in %d tars (%d rewritten, %d unchanged, %d files removed)", subset,
             manifest["samples"], len(planned), len(written), manifest["tars_unchanged"], len(removed))
    return manifest
