"""Brute force, for tests and benchmarks: the greedy keep mask from float64 products of all pairs, and the
count of kept pairs above the threshold. It shares no code with the grouped pipeline it checks."""

from __future__ import annotations

import numpy as np


def greedy_reference(vectors: np.ndarray, threshold: float, *, block: int = 4096) -> np.ndarray:
    """Brute-force greedy keep mask (float64 products of the float16 vectors): for tests and benchmarks."""
    v = np.asarray(vectors, dtype=np.float16).astype(np.float64)
    n = len(v)
    kept = np.zeros(n, bool)
    kept_idx: list[int] = []
    for b0 in range(0, n, block):
        q = v[b0:b0 + block]
        prev = (q @ v[kept_idx].T > threshold).any(axis=1) if kept_idx else np.zeros(len(q), bool)
        inner = q @ q.T > threshold
        for i in range(len(q)):
            if prev[i]:
                continue
            earlier = np.flatnonzero(inner[i, :i])
            if len(earlier) and kept[b0 + earlier].any():
                continue
            kept[b0 + i] = True
            kept_idx.append(b0 + i)
    return kept


def residual_pairs(vectors: np.ndarray, kept: np.ndarray, threshold: float, *, block: int = 4096) -> int:
    """Kept pairs with cosine > threshold, by brute force in float64 (must be 0)."""
    v = np.asarray(vectors, dtype=np.float16).astype(np.float64)[kept]
    total = 0
    for b0 in range(0, len(v), block):
        s = v[b0:b0 + block] @ v[b0:].T
        s[np.tril_indices(len(s), k=0, m=s.shape[1])] = -1.0
        total += int((s > threshold).sum())
    return total
