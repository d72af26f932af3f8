"""Stage embed (paper 3.1.2): one float16 vector per kept prompt of a shard, cached by content.

Output ``results/embeddings/{shard}.npz``: ``ids`` (unicode), ``vectors`` (float16, (n, 384), unit norm; half
the bytes of float32 and exact enough: the dedup decisions are made on these stored values), ``model`` and
``fingerprint`` (hash of ids + prompts + model). Rows follow the kept rows of the prompts table.

Cache: a finished shard is also hard-linked as ``<out dir>/.cache/<fingerprint>.npz``. When the prompts and
the model are unchanged (Snakemake reruns a job whose input file was rewritten with the same content, or a
user reruns by hand), the vectors come from that link instead of the model. A hard link costs no space.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finet2i.core import shards
from finet2i.core.settings import FromSection, default
from finet2i.models.backends import TextEmbedder
from finet2i.models.spec import ModelSpec
from finet2i.plumbing.embeddings import DIM, write_embeddings

log = logging.getLogger(__name__)

STAGE = "embed"


@dataclass(frozen=True)
class EmbedSettings(FromSection):
    batch_size: int = default("embed.batch_size")
    dtype: str = default("embed.dtype")
    cache: bool = default("embed.cache")


def embed_fingerprint(ids: list[str], prompts: list[str], model: ModelSpec | str) -> str:
    label = model.label if isinstance(model, ModelSpec) else str(model)
    return shards.fingerprint((f"{i}\t{p}" for i, p in zip(ids, prompts, strict=True)), label)


def run_embed(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, shard: str,
              settings: Mapping[str, Any], model: ModelSpec, stats_path: str | os.PathLike[str],
              embedder: TextEmbedder | None = None) -> shards.StageStats:
    started = time.monotonic()
    s = EmbedSettings.from_config(settings)
    records = shards.read_kept(in_path, columns=["id", "prompt"])
    ids = [str(r["id"]) for r in records]
    prompts = [r["prompt"] or "" for r in records]
    fp = embed_fingerprint(ids, prompts, model)
    use_cache = s.cache
    cache = Path(out_path).parent / ".cache" / f"{fp}.npz"
    cached = use_cache and cache.exists()
    if cached:
        log.info("%s: prompts and model unchanged (fingerprint %s); reusing %s", shard, fp, cache)
        with shards.atomic_path(out_path) as tmp:
            tmp.unlink()
            os.link(cache, tmp)
        dtype = "cached"
    else:
        if embedder is None:
            from finet2i.models.backends.embedder import load_embedder

            embedder = load_embedder(model, dtype=s.dtype, batch_size=s.batch_size)
        vectors = embedder.embed(prompts) if prompts else np.zeros((0, DIM), np.float32)
        if len(vectors) and not np.isfinite(vectors).all():
            raise ValueError(f"{in_path}: the embedder returned NaN/inf for shard {shard}; check the model")
        write_embeddings(out_path, ids, vectors, model=embedder.model_name, fingerprint=fp)
        dtype = getattr(embedder, "dtype", "?")
        if use_cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.unlink(missing_ok=True)
            os.link(out_path, cache)
    seconds = time.monotonic() - started
    # Embedding drops nothing: every record is kept; the stats still count them for the report.
    stats = shards.StageStats(stage=STAGE, shard=shard, records_in=len(ids), kept=len(ids),
                              seconds=round(seconds, 3), model=model.name,
                              extra={"cached": cached, "dtype": dtype, "fingerprint": fp,
                                     "prompts_per_second": round(len(ids) / seconds, 1) if seconds else None})
    stats.write(stats_path)
    log.info("%s: embedded %d prompts in %.1f s (%s)", shard, len(ids), seconds, "cache" if cached else dtype)
    return stats
