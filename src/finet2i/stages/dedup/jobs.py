"""Stage dedup (paper 3.1.2) as file-level jobs with fixed counts (the algorithm: the package's modules).

    dedup_centroids   one job   sample of every shard's vectors -> centroids.npy (+ Fig. 3 histogram)
    dedup_assign      per shard embeddings -> assign/{shard}.npy (float16 vectors sorted by group)
                                           + assign/{shard}.npz (group offsets, rows, ids)
    dedup_group       per group reads only its slice of each shard's assign file (memory-mapped)
                                -> group/{group}.npz (ranks, in-group verdicts, stored neighbours)
    dedup_cross       one job   all group outcomes + on-demand vectors -> verdicts.npy, kept_ids.npy
    dedup             per shard prompts + verdicts -> dedup/{shard}.parquet (+ stats): the stage's table

Every output is written atomically, so a killed job leaves nothing behind and its rerun starts clean; all
jobs are deterministic, so a rerun writes the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finet2i.core import shards
from finet2i.plumbing.embeddings import DIM, read_embeddings
from finet2i.stages.dedup.partition import assign_groups, similarity_histogram, train_centroids
from finet2i.stages.dedup.passes import CrossInput, cross_input, cross_pass
from finet2i.stages.dedup.ranks import NO_DUP, make_rank, rank_row, rank_shard
from finet2i.stages.dedup.settings import DedupSettings
from finet2i.stages.dedup.similarity import Matcher
from finet2i.stages.dedup.sweep import greedy_sweep
from finet2i.stages.dedup.vectors import check_vectors

log = logging.getLogger(__name__)

STAGE = "dedup"
REASON = "near_duplicate"
PathLike = str | os.PathLike[str]


def shard_no(path: PathLike) -> int:
    """``results/dedup/assign/00042.npz`` -> 42."""
    return int(Path(path).name.split(".")[0])


def _save_npy(path: PathLike, array: np.ndarray) -> None:
    with shards.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _save_npz(path: PathLike, **arrays: Any) -> None:
    with shards.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


# ------------------------------------------------------------------------------------------- centroids


def run_dedup_centroids(embedding_paths: Sequence[PathLike], centroids_path: PathLike,
                        histogram_path: PathLike, *, settings: DedupSettings) -> None:
    """Train the group centroids on an even sample of every shard; write the Fig. 3 histogram beside them."""
    started = time.monotonic()
    per_shard = max(1, -(-settings.kmeans_sample // max(1, len(embedding_paths))))
    parts = []
    for p in embedding_paths:
        _, vec = read_embeddings(p)
        check_vectors(vec, str(p), dim=vec.shape[1] if vec.ndim == 2 and len(vec) else DIM)
        rng = np.random.default_rng([settings.seed, shard_no(p)])
        take = min(per_shard, len(vec))
        parts.append(vec[np.sort(rng.choice(len(vec), size=take, replace=False))])
    sample = np.concatenate(parts) if parts else np.zeros((0, DIM), np.float16)
    if settings.partition == "kmeans" and settings.groups > 1:
        if len(sample) < settings.groups:
            raise ValueError(f"dedup: only {len(sample)} prompts in all shards, fewer than dedup.groups="
                             f"{settings.groups}; lower dedup.groups")
        centroids = train_centroids(sample, settings.groups, seed=settings.seed, iters=settings.kmeans_iters)
    else:
        centroids = np.zeros((0, sample.shape[1] if sample.ndim == 2 else DIM), np.float32)
    _save_npy(centroids_path, centroids.astype(np.float32))
    hist = similarity_histogram(sample, threshold=settings.threshold, seed=settings.seed)
    hist["note"] = "cosine similarity of all pairs of a random prompt subset (paper Fig. 3)"
    shards.write_json(histogram_path, hist)
    log.info("centroids: %d groups (%s) from %d sampled vectors in %.1f s; %.3f%% of random pairs above %.2f",
             settings.groups, settings.partition, len(sample), time.monotonic() - started,
             100 * hist["fraction_above_threshold"], settings.threshold)


# ---------------------------------------------------------------------------------------------- assign


def run_dedup_assign(embeddings_path: PathLike, centroids_path: PathLike, vectors_out: PathLike,
                     index_out: PathLike, *, settings: DedupSettings) -> None:
    """Sort a shard's vectors by group so that a group job reads one contiguous slice of it."""
    ids, vec = read_embeddings(embeddings_path)
    dim = vec.shape[1] if vec.ndim == 2 else DIM
    if len(vec):
        check_vectors(vec, str(embeddings_path), dim=dim)
    centroids = np.load(centroids_path)
    if settings.partition == "kmeans" and settings.groups > 1:
        if len(centroids) != settings.groups:
            raise ValueError(f"{centroids_path}: {len(centroids)} centroids but "
                             f"dedup.groups={settings.groups}; "
                             f"rerun dedup_centroids")
        group = assign_groups(vec, groups=settings.groups, centroids=centroids) if len(vec) \
            else np.zeros(0, np.int32)
    else:
        group = assign_groups(vec, groups=settings.groups, keys=ids)
    rows = np.argsort(group, kind="stable").astype(np.int32)  # stable: rows stay in rank order per group
    offsets = np.zeros(settings.groups + 1, np.int64)
    np.cumsum(np.bincount(group, minlength=settings.groups), out=offsets[1:])
    _save_npy(vectors_out, np.ascontiguousarray(vec[rows], dtype=np.float16).reshape(len(rows), dim))
    _save_npz(index_out, offsets=offsets, rows=rows, ids=ids[rows] if len(ids) else np.zeros(0, "<U1"))


def read_assign_manifest(manifest_path: PathLike) -> tuple[list[str], list[str]]:
    """The assign files (index, vectors) listed by the ``dedup_manifest`` rule, checked against their sizes.

    Group and cross jobs depend on this one manifest instead of every shard's files (a much smaller DAG);
    the size check catches a file that changed after the manifest was written.
    """
    manifest = shards.read_json(manifest_path)
    for path, size in manifest["bytes"].items():
        if not os.path.exists(path) or os.path.getsize(path) != size:
            raise FileNotFoundError(f"{path}: missing or changed since {manifest_path} was written; "
                                    f"rerun with `snakemake --forcerun dedup_manifest`")
    return list(manifest["index"]), list(manifest["vectors"])


def read_offsets(index_path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    with np.load(index_path, allow_pickle=False) as z:
        return z["offsets"], z["rows"]


# ----------------------------------------------------------------------------------------------- group


def run_dedup_group(index_paths: Sequence[PathLike], vector_paths: Sequence[PathLike], out_path: PathLike, *,
                    group: int, settings: DedupSettings, matcher: Matcher | None = None) -> dict[str, Any]:
    """Greedy dedup inside one group; reads only the group's slice of each shard's assign files."""
    started = time.monotonic()
    ranks, locs, vecs = [], [], []
    for ip, vp in sorted(zip(index_paths, vector_paths, strict=True), key=lambda t: shard_no(t[0])):
        offsets, rows = read_offsets(ip)
        if len(offsets) != settings.groups + 1:
            raise ValueError(f"{ip}: made for {len(offsets) - 1} groups, dedup.groups={settings.groups}; "
                             f"rerun dedup_assign")
        a, b = int(offsets[group]), int(offsets[group + 1])
        if a == b:
            continue
        mm = np.load(vp, mmap_mode="r")
        vecs.append(np.asarray(mm[a:b]))
        ranks.append(make_rank(shard_no(ip), rows[a:b]))
        locs.append(np.arange(a, b, dtype=np.int32))
    rank = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
    loc = np.concatenate(locs) if locs else np.zeros(0, np.int32)
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, DIM), np.float16)
    # Shards are read in order and rows within a shard slice are ascending, so rank is already sorted.
    assert len(rank) < 2 or (np.diff(rank) > 0).all()
    matcher = matcher or Matcher(settings.threshold, device=settings.device, precision=settings.precision)
    sweep = greedy_sweep(len(rank), lambda pos: vectors[pos], matcher, block_size=settings.block_size,
                         max_neighbors=settings.max_neighbors, label=f"group {group:03d}",
                         dim=vectors.shape[1])
    ci = cross_input(rank, sweep)
    stats = dict(sweep.stats, group=group, seconds=round(time.monotonic() - started, 3))
    _save_npz(out_path, rank=ci.rank, loc=loc, kept=ci.kept_in_group, nbr_ptr=ci.nbr_ptr,
              nbr_rank=ci.nbr_rank, nbr_sim=ci.nbr_sim, stats=np.asarray(json.dumps(stats)))
    return stats


def read_group(path: PathLike) -> tuple[CrossInput, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return CrossInput(z["rank"], z["kept"], z["nbr_ptr"], z["nbr_rank"], z["nbr_sim"]), z["loc"]


# ----------------------------------------------------------------------------------------------- cross

VERDICT_DTYPE = np.dtype([("rank", "<i8"), ("kept", "?"), ("dup_rank", "<i8"), ("similarity", "<f4")])


def run_dedup_cross(group_paths: Sequence[PathLike], index_paths: Sequence[PathLike],
                    vector_paths: Sequence[PathLike], verdicts_out: PathLike, kept_ids_out: PathLike,
                    stats_out: PathLike, *, settings: DedupSettings, matcher: Matcher | None = None
                    ) -> dict[str, Any]:
    """The exact cross-group pass over the group outcomes; vectors are read on demand (memory-mapped)."""
    started = time.monotonic()
    parts, locs = [], []
    for gp in group_paths:
        ci, loc = read_group(gp)
        parts.append(ci)
        locs.append(loc)
    ci = CrossInput.concat(parts)
    loc = np.concatenate(locs) if locs else np.zeros(0, np.int32)
    vec_by_shard = {shard_no(p): p for p in vector_paths}
    idx_by_shard = {shard_no(p): p for p in index_paths}
    maps: dict[int, np.ndarray] = {}
    dim = DIM
    for p in vector_paths:
        dim = int(np.load(p, mmap_mode="r").shape[1])
        break

    def get_vectors(rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), dim), np.float16)
        sh = rank_shard(ci.rank[rows])
        for s in np.unique(sh):
            sel = np.flatnonzero(sh == s)
            if s not in maps:
                maps[int(s)] = np.load(vec_by_shard[int(s)], mmap_mode="r")
            out[sel] = maps[int(s)][loc[rows[sel]]]
        return out

    matcher = matcher or Matcher(settings.threshold, device=settings.device, precision=settings.precision)
    cr = cross_pass(ci, get_vectors, matcher, settings, dim=dim)
    verdicts = np.zeros(len(cr.rank), VERDICT_DTYPE)
    verdicts["rank"], verdicts["kept"] = cr.rank, cr.kept
    verdicts["dup_rank"], verdicts["similarity"] = cr.dup_rank, cr.similarity
    # Ids of kept prompts, so that a keep job can name the prompt another shard's prompt duplicates.
    kept_rows = cr.source[cr.kept]
    kept_shard = rank_shard(ci.rank[kept_rows])
    id_parts = []
    for s in np.unique(kept_shard):
        sel = kept_rows[kept_shard == s]
        with np.load(idx_by_shard[int(s)], allow_pickle=False) as z:
            id_parts.append(z["ids"][loc[sel]].astype(str))
    ids = np.concatenate(id_parts) if id_parts else np.zeros(0, "<U1")
    kept_ids = np.zeros(len(ids), np.dtype([("rank", "<i8"), ("id", ids.dtype)]))
    kept_ids["rank"], kept_ids["id"] = cr.rank[cr.kept], ids
    _save_npy(verdicts_out, verdicts)
    _save_npy(kept_ids_out, kept_ids)
    stats = dict(cr.stats, threshold=settings.threshold, groups=settings.groups, partition=settings.partition,
                 seconds=round(time.monotonic() - started, 3))
    shards.write_json(stats_out, stats)
    return stats


# ------------------------------------------------------------------------------------------------ keep


def run_dedup_keep(prompts_path: PathLike, embeddings_path: PathLike, index_path: PathLike,
                   verdicts_path: PathLike, kept_ids_path: PathLike, out_path: PathLike, *, shard: str,
                   settings: DedupSettings, stats_path: PathLike) -> shards.StageStats:
    """Every kept prompt of the shard with its dedup verdict and evidence."""
    started = time.monotonic()
    records = shards.read_kept(prompts_path)
    ids, _ = read_embeddings(embeddings_path)
    if [str(r["id"]) for r in records] != ids.astype(str).tolist():
        raise ValueError(f"{embeddings_path} does not match the kept rows of {prompts_path}; rerun embed for "
                         f"shard {shard}")
    s = int(shard)
    verdicts = np.load(verdicts_path, mmap_mode="r")
    lo, hi = np.searchsorted(verdicts["rank"], [make_rank(s, 0), make_rank(s + 1, 0)])
    mine = np.asarray(verdicts[lo:hi])
    if len(mine) != len(records):
        raise ValueError(f"{verdicts_path} holds {len(mine)} verdicts for shard {shard}, its prompts table "
                         f"{len(records)}; rerun the dedup jobs")
    row = rank_row(mine["rank"])
    assert (row == np.arange(len(records))).all()
    with np.load(index_path, allow_pickle=False) as z:
        offsets, rows_sorted = z["offsets"], z["rows"]
    group = np.zeros(len(records), np.int32)
    group[rows_sorted] = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    kept_ids = np.load(kept_ids_path, mmap_mode="r")
    dup = mine["dup_rank"]
    has = dup != NO_DUP
    dup_id = np.full(len(records), None, dtype=object)
    if has.any():
        at = np.searchsorted(kept_ids["rank"], dup[has])
        found = np.asarray(kept_ids[np.minimum(at, len(kept_ids) - 1)])
        if (found["rank"] != dup[has]).any():
            raise ValueError(f"{kept_ids_path}: a duplicate_of target is missing; rerun dedup_cross")
        dup_id[has] = found["id"].astype(str)
    for i, r in enumerate(records):
        r["duplicate_of"] = dup_id[i]
        r["similarity"] = None if mine["kept"][i] else round(float(mine["similarity"][i]), 6)
        r["dedup_group"] = int(group[i])
        shards.mark(r, None if mine["kept"][i] else REASON)
    return shards.write_stage_output(out_path, records, stage=STAGE, shard=shard, started=started,
                                     stats_file=stats_path, threshold=settings.threshold,
                                     partition=settings.partition, groups=settings.groups)
