"""The one stage runner: what every chunked stage does around its own decisions, written once.

A stage is its decision logic and nothing else. It declares a :class:`ChunkedStage`: its name, a pure
``process(chunk) -> records`` (each output record marked kept or dropped with a reason, see
:func:`finet2i.core.shards.mark`), its chunk size, what else its results depend on (``key``: settings, model
labels, seeds) and the engine to shut down at the end. :func:`run_chunked` owns the rest, the same way for
every stage:

* reads the kept rows of the upstream table (never the ``image`` bytes: a stage that needs them fetches one
  chunk's worth by id, see :func:`finet2i.plumbing.images.image_bytes`);
* checks that it received exactly what the upstream stage kept (its stats JSON), see
  :func:`finet2i.core.shards.check_conserved`;
* checkpoints every chunk under ``<output>.chunks/`` (a killed job redoes one chunk at most), valid only for
  the same input rows (their content, not only their ids), chunk size, key and stage code;
* starts nothing itself: engines are lazy (:class:`finet2i.models.backends.vllm_llm.LazyChat`), so a shard resumed
  with nothing left to do never loads a model; and closes the engine in ``finally``;
* writes the table atomically, carried columns with the upstream table's types (a column that is null in every
  row of a shard keeps its type), then the stats JSON (the completion marker), logs the verdict counts, and
  removes the checkpoint.

Stages that are not chunked (specs, dedup's keep tables, package) write through the same
:func:`finet2i.core.shards.write_stage_output`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from finet2i.core import shards
from finet2i.core.shards import Record, StageStats

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


@dataclass
class ChunkedStage:
    """What a chunked stage declares; :func:`run_chunked` does the rest."""

    name: str  # the stage's name in stats and logs (finet2i.core.pipeline)
    process: Callable[[list[Record]], list[Record]]  # one chunk in, the same records out, each with a verdict
    chunk_size: int
    key: Sequence[Any] = ()  # what else the results depend on: settings, model labels, seeds
    model: str | Callable[[list[Record]], str | None] | None = None  # for the stats; a callable gets the output
    close: Callable[[], None] | None = None  # shuts the engine down (after the last chunk, or on failure)
    summarize: Callable[[list[Record]], dict[str, Any]] | None = None  # extra stats from the output records
    order: Callable[[list[Record]], list[Record]] | None = None  # processing order; output keeps input order


def stage_code(stage: ChunkedStage) -> str | None:
    """The fingerprint of the code that decides the stage's records (its module and what that imports; see
    finet2i.core.codehash): a checkpoint made by other stage code is not reused. None outside the package."""
    from finet2i.core import codehash

    module = getattr(stage.process, "__module__", "") or ""
    return codehash.code_fingerprint(module) if codehash.module_file(module) else None


def read_input(path: PathLike) -> list[Record]:
    """The kept rows of an upstream table, without verdict columns and without image bytes."""
    return shards.read_kept(path, exclude=("image",))


def run_chunked(stage: ChunkedStage, in_path: PathLike, out_path: PathLike, *, shard: str,
                stats_path: PathLike | None = None, records: list[Record] | None = None,
                **extra: Any) -> StageStats:
    """Run one shard of a chunked stage: ``in_path``'s kept rows -> ``out_path`` + its stats JSON.

    ``records``: the input rows when the caller already read them (default: :func:`read_input`). ``extra``:
    more stats fields. A job that runs several tables on one engine gives no ``close`` and closes it itself.
    """
    started = time.monotonic()
    rows = read_input(in_path) if records is None else records
    todo = stage.order(rows) if stage.order else rows
    ck = shards.ChunkCheckpoint(out_path, stage.chunk_size, shards.fingerprint(
        (shards.record_digest(r) for r in todo), stage.name, stage_code(stage), *stage.key))
    try:
        out = ck.run(todo, stage.process)
    finally:
        if stage.close is not None:
            stage.close()
    if stage.order:
        by_id = {r["id"]: r for r in out}
        out = [by_id[r["id"]] for r in rows]
    model = stage.model(out) if callable(stage.model) else stage.model
    summary = stage.summarize(out) if stage.summarize else {}
    stats = shards.write_stage_output(out_path, out, stage=stage.name, shard=shard, started=started,
                                      model=model, stats_file=stats_path, like=pq.read_schema(in_path),
                                      **summary, **extra, resumed_chunks=ck.resumed_chunks)
    ck.cleanup()
    return stats


def closer(engine: Any, given: Any) -> Callable[[], None] | None:
    """How to shut ``engine`` down: only engines the stage started itself are closed."""
    return None if given is not None else engine.close


def model_name(engine: Any, fallback: str | None) -> str | None:
    """The name a stage records as its model: the backend's own, else the spec's."""
    return getattr(engine, "model_name", None) or fallback


def count(records: Sequence[Record], column: str) -> dict[str, int]:
    """How often each non-empty value of ``column`` occurs (list values count each item), sorted by value."""
    counts: dict[str, int] = {}
    for r in records:
        value = r.get(column)
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if v:
                counts[str(v)] = counts.get(str(v), 0) + 1
    return dict(sorted(counts.items()))
