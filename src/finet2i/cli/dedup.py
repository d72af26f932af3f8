"""`finet2i dedup IN OUT`: exact semantic dedup of a prompt file without Snakemake.

IN: parquet or jsonl with ``id`` and ``prompt`` columns (embedded with all-MiniLM-L6-v2), or precomputed
embeddings: an ``embedding`` column (lists of floats) beside ``id``, an ``.npz`` with ``ids`` + ``vectors``
(the embed stage's format) or an ``.npy`` matrix (ids are row numbers). Row order is the keep priority: the
first of two duplicates survives. OUT (parquet or jsonl) holds every input id with ``kept``,
``duplicate_of``, ``similarity`` and ``dedup_group``. Holds all vectors in memory (fine to a few million
prompts); the Snakemake rules split the same algorithm into jobs that do not.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click
import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def _fail(path: Path, msg: str) -> click.ClickException:
    return click.ClickException(f"{path}: {msg}")


def read_input(path: Path) -> tuple[list[str], list[str] | None, np.ndarray | None]:
    """(ids, prompts or None, vectors or None) with clear errors for what cannot be deduplicated."""
    if not path.exists():
        raise _fail(path, "input file not found")
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix == ".npy":
        vectors = np.load(path, allow_pickle=False)
        if vectors.ndim != 2:
            raise _fail(path, f"expected an (n, 384) matrix, got shape {vectors.shape}")
        if len(vectors) == 0:
            raise _fail(path, "no embeddings in the file")
        return [str(i) for i in range(len(vectors))], None, vectors
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "vectors" not in z or "ids" not in z:
                raise _fail(path, f"an .npz input needs arrays 'ids' and 'vectors', found {sorted(z.files)}")
            ids, vectors = z["ids"].astype(str).tolist(), z["vectors"]
        if len(ids) == 0:
            raise _fail(path, "no embeddings in the file")
        if len(ids) != len(vectors):
            raise _fail(path, f"{len(ids)} ids but {len(vectors)} vectors")
        return ids, None, vectors
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
            columns = set(pq.read_schema(path).names)
        except Exception as e:  # pyarrow raises several types for a broken file
            raise _fail(path, f"not a readable parquet file ({e})") from e
    elif suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        with path.open() as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise _fail(path, f"line {n} is not JSON ({e.msg})") from e
        columns = set().union(*(r.keys() for r in rows)) if rows else set()
    else:
        raise _fail(path, "unknown input type; use .parquet, .jsonl, .npz (ids + vectors) or .npy")
    if not rows:
        raise _fail(path, "the file holds no rows")
    if "id" not in columns:
        raise _fail(path, f"missing column 'id' (found {sorted(columns)})")
    ids = [str(r.get("id")) for r in rows]
    if len(set(ids)) != len(ids):
        raise _fail(path, "column 'id' has repeated values; ids must be unique")
    if "embedding" in columns:
        try:
            vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise _fail(path, f"column 'embedding' must hold equal-length lists of numbers ({e})") from e
        return ids, None, vectors
    if "prompt" not in columns:
        raise _fail(path, f"missing column 'prompt' (or 'embedding') (found {sorted(columns)})")
    prompts = [r.get("prompt") for r in rows]
    bad = [i for i, p in zip(ids, prompts, strict=True) if not isinstance(p, str)]
    if bad:
        raise _fail(path, f"{len(bad)} rows have no prompt text (first id {bad[0]!r})")
    return ids, prompts, None


def write_output(path: Path, ids: list[str], kept: np.ndarray, dup: np.ndarray, sim: np.ndarray,
                 group: np.ndarray) -> None:
    records = [{"id": i, "kept": bool(k), "duplicate_of": (ids[d] if d >= 0 else None),
                "similarity": (None if k else round(float(s), 6)), "dedup_group": int(g)}
               for i, k, d, s, g in zip(ids, kept, dup, sim, group, strict=True)]
    if path.suffix.lower() == ".parquet":
        from finet2i.core.shards import write_table

        write_table(path, records)
    else:
        from finet2i.core.shards import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))


@click.command("dedup", short_help="Exact semantic dedup of a prompt table (no Snakemake).")
@click.argument("in_path", metavar="IN", type=click.Path(path_type=Path))
@click.argument("out_path", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--threshold", default=0.8, show_default=True, help="Drop a prompt at cosine > this.")
@click.option("--groups", default=128, show_default=True, help="Groups of the first pass (paper: 128).")
@click.option("--partition", type=click.Choice(["kmeans", "hash"]), default="kmeans", show_default=True)
@click.option("--model", "model", default=DEFAULT_MODEL, show_default=True,
              help="Embedder: a local sentence-transformers folder or a cached hub id.")
@click.option("--dtype", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of the k-means sample.")
def dedup_command(in_path: Path, out_path: Path, threshold: float, groups: int, partition: str, model: str,
                  dtype: str, batch_size: int, device: str, seed: int) -> None:
    """Exact semantic dedup of IN into OUT (every input id with kept, duplicate_of, similarity)."""
    from finet2i.stages.dedup.in_memory import dedup_vectors
    from finet2i.stages.dedup.settings import DedupSettings
    from finet2i.stages.dedup.vectors import normalise

    if not 0.0 < threshold < 1.0:
        raise click.BadParameter(f"must be in (0, 1), got {threshold}", param_hint="--threshold")
    if groups < 1:
        raise click.BadParameter(f"must be >= 1, got {groups}", param_hint="--groups")
    ids, prompts, vectors = read_input(in_path)
    if vectors is None:
        from finet2i.models.backends.embedder import load_embedder
        from finet2i.models.spec import ModelSpec

        spec = ModelSpec(key="--model", path=model) if Path(model).exists() else \
            ModelSpec(key="--model", id=model)
        embedder = load_embedder(spec, dtype=dtype, batch_size=batch_size,
                                 device=None if device == "auto" else device)
        vectors = embedder.embed(prompts or [])
    if vectors.ndim != 2 or vectors.shape[1] != 384:
        raise _fail(in_path, f"embeddings have shape {vectors.shape}; expected (n, 384) from "
                             f"all-MiniLM-L6-v2")
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        first = ids[int(np.flatnonzero(~finite)[0])]
        raise _fail(in_path, f"{int((~finite).sum())} embeddings contain NaN or inf (first id {first!r}); "
                             f"re-embed those prompts")
    zero = np.linalg.norm(vectors, axis=1) == 0
    if zero.any():
        raise _fail(in_path, f"{int(zero.sum())} embeddings are all zeros (first id "
                             f"{ids[int(np.flatnonzero(zero)[0])]!r})")
    settings = DedupSettings(threshold=threshold, groups=groups, partition=partition, seed=seed,
                             device=device)
    res = dedup_vectors(normalise(vectors), settings, keys=np.asarray(ids), where=str(in_path))
    write_output(out_path, ids, res.kept, res.duplicate_of, res.similarity, res.group)
    n, k = len(ids), int(res.kept.sum())
    click.echo(f"{n} prompts: {k} kept, {n - k} dropped as near-duplicates (cosine > {threshold}); "
               f"{res.stats['seconds_total']:.1f} s; wrote {out_path}")
