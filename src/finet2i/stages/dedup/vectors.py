"""The vectors dedup accepts: 2-D, finite, unit norm, the embedder's dimension (``check_vectors``, whose errors
name the file and what to do); ``normalise`` for callers whose vectors are not unit yet."""

from __future__ import annotations

import numpy as np

from finet2i.plumbing.embeddings import DIM


def check_vectors(vectors: np.ndarray, where: str, dim: int = DIM) -> None:
    """Fail with a message that names the file when vectors cannot be deduplicated."""
    if vectors.ndim != 2:
        raise ValueError(f"{where}: embeddings must be a 2-D array (n, {dim}), got shape {vectors.shape}")
    if vectors.shape[1] != dim:
        raise ValueError(f"{where}: embeddings have dimension {vectors.shape[1]}, expected {dim} "
                         f"(all-MiniLM-L6-v2); re-embed with the configured model")
    # In slices: a float32 copy of 1M vectors alone is 1.5 GB, twice the float16 vectors. One conversion and
    # one dot product per row find both non-finite values (NaN or inf makes the squared norm non-finite) and
    # the norms: 0.9 s for 1M float16 vectors here, where isfinite on float16 plus a norm took 2.0 s.
    wide = np.float32 if vectors.dtype == np.float16 else np.float64  # float64: no overflow of large values
    step = 65536
    sq = np.concatenate([np.einsum("ij,ij->i", x, x) for x in
                         (vectors[i:i + step].astype(wide) for i in range(0, len(vectors), step))]
                        or [np.zeros(0, wide)])
    bad = ~np.isfinite(sq)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} embeddings contain NaN or inf (first at row "
                         f"{int(np.flatnonzero(bad)[0])}); re-embed those prompts")
    norms = np.sqrt(sq)
    if len(norms) and (np.abs(norms - 1.0) > 0.01).any():
        raise ValueError(f"{where}: embeddings are not L2-normalised "
                         f"(norms {norms.min():.3f}..{norms.max():.3f});"
                         f" normalise them (cosine = dot product here)")


def normalise(vectors: np.ndarray) -> np.ndarray:
    v = vectors.astype(np.float32)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return v / n
