"""The groups: spherical k-means centroids trained on a sample, each vector's group (its most similar centroid,
or a stable hash of its id), and the pairwise cosines of a sample (paper Fig. 3).

The partition only decides how much work the group passes save, never a verdict.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from finet2i.stages.dedup.vectors import normalise


def train_centroids(sample: np.ndarray, groups: int, *, seed: int = 0, iters: int = 20) -> np.ndarray:
    """Spherical k-means centroids (unit norm) of a sample of unit vectors, float32 (groups, dim)."""
    import faiss

    x = np.ascontiguousarray(normalise(sample))
    if len(x) < groups:
        raise ValueError(f"k-means needs at least {groups} sampled vectors for {groups} groups, "
                         f"got {len(x)}; "
                         f"lower dedup.groups or raise dedup.kmeans_sample")
    km = faiss.Kmeans(x.shape[1], groups, niter=iters, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(256, len(x) // groups + 1))
    km.train(x)
    return normalise(km.centroids)


def assign_groups(vectors: np.ndarray, *, groups: int, centroids: np.ndarray | None = None,
                  keys: np.ndarray | None = None) -> np.ndarray:
    """Group of each vector: most similar centroid (kmeans) or a stable hash of its key (hash partition)."""
    if centroids is None:
        if keys is None:
            raise ValueError("hash partition needs keys (ids)")
        return np.array([int.from_bytes(hashlib.blake2b(str(k).encode(), digest_size=8).digest(), "little")
                         % groups for k in keys], dtype=np.int32)
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    out = np.empty(len(vectors), dtype=np.int32)
    step = 65536
    for i in range(0, len(vectors), step):
        _, idx = index.search(np.ascontiguousarray(vectors[i:i + step], dtype=np.float32), 1)
        out[i:i + step] = idx[:, 0]
    return out


def similarity_histogram(vectors: np.ndarray, *, threshold: float, sample_size: int = 2000, seed: int = 0,
                         bins: int = 200) -> dict[str, Any]:
    """Cosine similarities of all pairs in a random subset (paper Fig. 3), as bin edges + counts."""
    rng = np.random.default_rng(seed)
    n = min(sample_size, len(vectors))
    idx = np.sort(rng.choice(len(vectors), size=n, replace=False)) if n else np.zeros(0, dtype=np.int64)
    v = vectors[idx].astype(np.float64)
    sims = (v @ v.T)[np.triu_indices(n, k=1)] if n > 1 else np.zeros(0)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    counts, _ = np.histogram(np.clip(sims, -1.0, 1.0), bins=edges)
    return {"bin_edges": [round(float(e), 6) for e in edges], "counts": counts.tolist(),
            "threshold": threshold, "sample_size": int(n), "pairs": int(len(sims)),
            "fraction_above_threshold": float((sims > threshold).mean()) if len(sims) else 0.0,
            "mean": float(sims.mean()) if len(sims) else None}
