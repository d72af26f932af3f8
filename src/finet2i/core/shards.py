"""Per-shard tables, atomic writes, stats JSONs and in-shard checkpoints.

Conventions every stage follows (see README "How a stage works"):

* A stage reads the *kept* records of its upstream table and writes one parquet table per shard holding
  **every record it received**: the upstream columns, its own columns, ``kept`` (bool) and ``drop_reason``
  (null when kept). Nothing is lost: a dropped record keeps its id, reason and evidence in that table.
* Beside the table, ``<table>.stats.json`` (see :class:`StageStats`): records in, kept, dropped by reason,
  seconds, model. It is written last, so its presence marks a complete shard, and the report reads only these.
* Every file is written atomically (temp file in the same folder + rename), so a killed job never leaves a
  truncated output that a resumed run would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

Record = dict[str, Any]

KEPT = "kept"
DROP_REASON = "drop_reason"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; datasets are shared within a group, so honour the umask instead.
        os.chmod(tmp_path, 0o666 & ~_umask())
        # On disk before it has the final name: after a node crash, a file under the final name is whole.
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def write_table(path: str | os.PathLike[str], records: Sequence[Record] | pa.Table,
                schema: pa.Schema | None = None, like: pa.Schema | None = None) -> None:
    """Write records (or a table) as parquet, atomically. An empty list still writes a valid, empty table.

    ``like``: the upstream table's schema; carried columns keep its types (see :func:`keep_types`)."""
    table = records if isinstance(records, pa.Table) else to_table(records, schema)
    if like is not None:
        table = keep_types(table, like)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def to_table(records: Sequence[Record], schema: pa.Schema | None = None) -> pa.Table:
    if schema is not None:
        return pa.Table.from_pylist(list(records), schema=schema)
    if not records:
        return pa.table({"id": pa.array([], pa.string())})
    # Union of keys, in first-seen order: stages add evidence columns only to some records.
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r))
    return pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in records])


def keep_types(table: pa.Table, like: pa.Schema) -> pa.Table:
    """``table`` with the types of ``like``'s columns of the same name, where they differ and the values cast.

    Types inferred from Python rows depend on the rows: a column that is null in every row of one shard comes
    out as type null there and as string elsewhere, and readers that merge shards (HF datasets, pyarrow
    datasets) then fail. The upstream table knew the type; a column the stage carries keeps it."""
    for i, f in enumerate(table.schema):
        if f.name in like.names and like.field(f.name).type != f.type:
            try:
                table = table.set_column(i, like.field(f.name).with_nullable(True),
                                         table.column(i).cast(like.field(f.name).type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass  # the stage changed the column's meaning; keep what it wrote
    return table


def read_table(path: str | os.PathLike[str], columns: Sequence[str] | None = None) -> pa.Table:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: shard table not found; run the upstream stage first")
    return pq.read_table(p, columns=list(columns) if columns else None)


def read_records(path: str | os.PathLike[str], columns: Sequence[str] | None = None) -> list[Record]:
    return read_table(path, columns).to_pylist()


def read_kept(path: str | os.PathLike[str], columns: Sequence[str] | None = None,
              exclude: Sequence[str] = ()) -> list[Record]:
    """Records of an upstream shard table that its stage kept, without the verdict columns.

    ``exclude``: columns not to read at all (a shard's ``image`` bytes do not belong in memory at once)."""
    if exclude:
        names = pq.read_schema(path).names if Path(path).exists() else []
        table = read_table(path, [c for c in names if c not in exclude] or None)
    else:
        table = read_table(path)
    if KEPT in table.column_names:
        mask = table.column(KEPT).fill_null(False)
        table = table.filter(mask)
        table = table.drop_columns([c for c in (KEPT, DROP_REASON) if c in table.column_names])
    if columns:
        table = table.select(list(columns))
    check_conserved(path, table.num_rows)
    return table.to_pylist()


class ConservationError(ValueError):
    """A stage's input does not hold the records its upstream stage said it kept."""


def check_conserved(table_path: str | os.PathLike[str], kept_rows: int) -> None:
    """Fail unless ``kept_rows`` (what a job read) equals the ``kept`` of the table's own stats JSON.

    The stats are written after the table and counted from the same records, so a difference means the table
    was changed (or replaced, or truncated) after its stage finished: every record a stage receives must be
    one its upstream stage kept, or records appear or vanish between stages without a reason. A table
    without stats beside it (a hand-made input) is not checked.
    """
    stats_file = stats_path(table_path)
    if not stats_file.exists():
        return
    kept = StageStats.read(stats_file).kept
    if kept != kept_rows:
        raise ConservationError(
            f"{table_path}: {kept_rows} kept rows, but {stats_file.name} (written when its stage finished) "
            f"counts {kept}: the table changed after its stage ran, so records would appear or vanish between "
            f"stages. Rerun the stage that wrote it (snakemake --forcerun <that rule>) instead of editing it.")


def mark(record: Record, reason: str | None) -> Record:
    """Set the verdict of a record in place: ``reason=None`` keeps it, any string drops it for that reason."""
    record[KEPT] = reason is None
    record[DROP_REASON] = reason
    return record


@dataclass
class StageStats:
    """What one stage did to one shard. Written last, beside the shard table; the report reads only these."""

    stage: str
    shard: str
    records_in: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_records(cls, stage: str, shard: str, records: Iterable[Record], *, seconds: float = 0.0,
                     model: str | None = None, **extra: Any) -> StageStats:
        records = list(records)
        reasons = Counter(r[DROP_REASON] for r in records if not r.get(KEPT))
        kept = sum(1 for r in records if r.get(KEPT))
        return cls(stage=stage, shard=shard, records_in=len(records), kept=kept,
                   dropped=dict(sorted(reasons.items())), seconds=round(seconds, 3), model=model, extra=extra)

    def check(self) -> None:
        if self.records_in != self.kept + sum(self.dropped.values()):
            raise AssertionError(f"{self.stage}/{self.shard}: records in ({self.records_in}) != kept "
                                 f"({self.kept}) + dropped ({sum(self.dropped.values())})")

    def write(self, path: str | os.PathLike[str]) -> None:
        self.check()
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> StageStats:
        return cls(**read_json(path))


def stats_path(table_path: str | os.PathLike[str]) -> Path:
    """``results/guard/00003.parquet`` -> ``results/guard/00003.stats.json``."""
    p = Path(table_path)
    return p.with_name(p.name.split(".")[0] + ".stats.json")


def write_stats(path: str | os.PathLike[str], records: Iterable[Record], *, stage: str, shard: str,
                started: float, model: str | None = None, **extra: Any) -> StageStats:
    """Count a stage's verdicts (records carry ``kept``/``drop_reason``), write its stats JSON, log the counts.

    The one way every stage finishes a shard, chunked or not; write it after the outputs (completion marker).
    """
    stats = StageStats.from_records(stage, shard, records, seconds=time.monotonic() - started, model=model,
                                    **extra)
    stats.write(path)
    log.info("%s/%s: %d in, %d kept, dropped %s", stage, shard, stats.records_in, stats.kept, stats.dropped)
    return stats


def write_stage_output(table_path: str | os.PathLike[str], records: Sequence[Record], *, stage: str,
                       shard: str, started: float, model: str | None = None,
                       stats_file: str | os.PathLike[str] | None = None, schema: pa.Schema | None = None,
                       like: pa.Schema | None = None, **extra: Any) -> StageStats:
    """Write a stage's shard table, then its stats JSON (the completion marker)."""
    for r in records:
        if KEPT not in r:
            raise ValueError(f"{stage}/{shard}: record {r.get('id')!r} has no verdict; call shards.mark()")
    write_table(table_path, records, schema, like)
    return write_stats(stats_file or stats_path(table_path), records, stage=stage, shard=shard, started=started,
                       model=model, **extra)


class StreamWriter:
    """Parquet rows in small row groups, written atomically (temp file + rename on success)."""

    def __init__(self, path: str | os.PathLike[str], schema: pa.Schema, batch: int = 32) -> None:
        self.path, self.schema, self.batch = path, schema, batch
        self.buffer: list[Record] = []

    def __enter__(self) -> StreamWriter:
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self.writer = pq.ParquetWriter(tmp, self.schema, compression="zstd")
        return self

    def write(self, rec: Record) -> None:
        self.buffer.append(rec)
        if len(self.buffer) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.buffer = []

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self.flush()  # the last rows: a failure here (disk full) must not leave a partial table
            self.writer.close()
        except BaseException as e:
            if self.writer.is_open:
                self.writer.close()
            self._ctx.__exit__(type(e), e, e.__traceback__)  # removes the temp file; nothing gets the name
            raise
        self._ctx.__exit__(exc_type, exc, tb)


class ChunkCheckpoint:
    """Process a shard in chunks and keep each finished chunk on disk, so a killed job redoes one chunk at most.

    Chunks live in ``<output>.chunks/`` next to the final output; a chunk file is written atomically and is
    valid only for the same chunk size and the same fingerprint in ``manifest.json`` (the runner's: every input
    row's content, the settings and the models): a rerun after a change starts fresh instead of mixing stale
    results into the dataset.
    """

    def __init__(self, output: str | os.PathLike[str], chunk_size: int, fingerprint: str) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.output = Path(output)
        self.dir = self.output.with_name(self.output.name + ".chunks")
        self.chunk_size = chunk_size
        manifest = self.dir / "manifest.json"
        wanted = {"chunk_size": chunk_size, "fingerprint": fingerprint}
        if manifest.exists() and read_json(manifest) != wanted:
            log.warning("%s: checkpoint was made for other inputs or settings; starting over", self.dir)
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(manifest, wanted)
        self.resumed_chunks = 0

    def run(self, records: Sequence[Record], fn: Callable[[list[Record]], list[Record]]) -> list[Record]:
        out: list[Record] = []
        n_chunks = (len(records) + self.chunk_size - 1) // self.chunk_size
        for i in range(n_chunks):
            part = self.dir / f"chunk-{i:06d}.parquet"
            if part.exists():
                self.resumed_chunks += 1
                out.extend(read_records(part))
                continue
            chunk = list(records[i * self.chunk_size:(i + 1) * self.chunk_size])
            result = fn(chunk)
            write_table(part, result)
            out.extend(result)
            log.info("chunk %d/%d done (%d records)", i + 1, n_chunks, len(chunk))
        if self.resumed_chunks:
            log.info("resumed from checkpoint: %d of %d chunks were already done", self.resumed_chunks, n_chunks)
        return out

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def fingerprint(items: Iterable[str], *parts: Any) -> str:
    """A short hash of ``items`` (ids, or per-record digests) and of ``parts`` (settings, model labels)."""
    import hashlib

    h = hashlib.sha256()
    for i in items:
        h.update(str(i).encode())
        h.update(b"\0")
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def record_digest(record: Record) -> str:
    """A hash of a record's content (every column), for checkpoints that must not outlive changed inputs."""
    import hashlib

    return hashlib.sha256(json.dumps(record, sort_keys=True, default=repr).encode()).hexdigest()
