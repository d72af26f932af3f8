"""The embeddings file format shared by the embed stage (writer) and the dedup stages (readers).

``results/embed/{shard}.npz``: ``ids`` (unicode), ``vectors`` (float16, (n, 384), unit norm), ``model`` and
``fingerprint`` (hash of ids + prompts + model). Rows follow the kept rows of the prompts table.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from finet2i.core import shards

DIM = 384  # all-MiniLM-L6-v2's output size; files of another embedder carry their own width


def write_embeddings(path: str | os.PathLike[str], ids: list[str], vectors: np.ndarray, *, model: str,
                     fingerprint: str) -> None:
    with shards.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(f, ids=np.asarray(ids, dtype=str) if ids else np.zeros(0, "<U1"),
                     vectors=np.ascontiguousarray(vectors, dtype=np.float16), model=np.asarray(model),
                     fingerprint=np.asarray(fingerprint))


def read_embeddings(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, float16 vectors) of an embeddings file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: embeddings not found; run the embed stage first")
    with np.load(p, allow_pickle=False) as z:
        return z["ids"], z["vectors"]
