"""The grouped pipeline in one process, over vectors held in memory (``finet2i dedup``, tests, benchmarks):
partition, group passes, cross pass. The workflow runs the same passes as file-level jobs (``jobs``), which
never hold all vectors and do not import this module."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from finet2i.plumbing.embeddings import DIM
from finet2i.stages.dedup.partition import assign_groups, train_centroids
from finet2i.stages.dedup.passes import CrossInput, cross_input, cross_pass
from finet2i.stages.dedup.settings import DedupSettings
from finet2i.stages.dedup.similarity import Matcher
from finet2i.stages.dedup.sweep import greedy_sweep
from finet2i.stages.dedup.vectors import check_vectors


@dataclass
class DedupResult:
    """Verdicts aligned with the input rows (row order = keep priority)."""

    kept: np.ndarray  # bool (n,)
    duplicate_of: np.ndarray  # int64 (n,): input row of the kept prompt it duplicates, -1 when kept
    similarity: np.ndarray  # float32 (n,), NaN when kept
    group: np.ndarray  # int32 (n,)
    stats: dict[str, Any]


def partition(vectors16: np.ndarray, settings: DedupSettings, *, keys: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Group of every row (and the centroids when k-means is used)."""
    if settings.partition == "hash" or settings.groups == 1:
        keys = np.arange(len(vectors16)) if keys is None else keys
        return assign_groups(vectors16, groups=settings.groups, keys=keys), None
    rng = np.random.default_rng(settings.seed)
    k = min(len(vectors16), max(settings.kmeans_sample, settings.groups))
    sample = vectors16[np.sort(rng.choice(len(vectors16), size=k, replace=False))]
    groups = min(settings.groups, len(sample))
    centroids = train_centroids(sample, groups, seed=settings.seed, iters=settings.kmeans_iters)
    return assign_groups(vectors16, groups=settings.groups, centroids=centroids), centroids


def dedup_vectors(vectors: np.ndarray, settings: DedupSettings, *, keys: np.ndarray | None = None,
                  matcher: Matcher | None = None, where: str = "embeddings", dim: int = DIM) -> DedupResult:
    """The grouped pipeline in one process: partition, group passes, cross pass. Row order = rank."""
    t0 = time.monotonic()
    settings.validate()
    check_vectors(vectors, where, dim=dim)
    v16 = np.ascontiguousarray(vectors, dtype=np.float16)
    n, dim = v16.shape
    matcher = matcher or Matcher(settings.threshold, device=settings.device, precision=settings.precision)
    group, _ = partition(v16, settings, keys=keys) if n else (np.zeros(0, np.int32), None)
    t_part = time.monotonic() - t0
    parts = []
    for g in range(settings.groups):
        members = np.flatnonzero(group == g)
        if not len(members):
            continue
        sweep = greedy_sweep(len(members), lambda pos, m=members: v16[m[pos]], matcher,
                             block_size=settings.block_size, max_neighbors=settings.max_neighbors,
                             label=f"group {g:03d}", dim=dim)
        parts.append(cross_input(members.astype(np.int64), sweep))
    t_groups = time.monotonic() - t0 - t_part
    ci = CrossInput.concat(parts)
    cr = cross_pass(ci, lambda rows: v16[ci.rank[rows]], matcher, settings, dim=dim)
    # ranks are input rows here, and cr is sorted by rank, i.e. by row.
    stats = dict(cr.stats)
    stats.update({"seconds_partition": round(t_part, 3), "seconds_groups": round(t_groups, 3),
                  "seconds_total": round(time.monotonic() - t0, 3), "threshold": settings.threshold,
                  "groups": settings.groups, "partition": settings.partition})
    return DedupResult(cr.kept, cr.dup_rank, cr.similarity, group.astype(np.int32), stats)
