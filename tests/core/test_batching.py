"""finet2i.core.batching: several shards per GPU job, each shard's result reused while its inputs are unchanged."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from finet2i.core import batching, shards


def _inputs(tmp_path: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        p = tmp_path / "results" / "dedup" / f"{i:05d}.parquet"
        shards.write_table(p, [{"id": f"{i:05d}-000000", "prompt": f"prompt {i}"}])
        paths.append(p)
    return paths


class Stage:
    """A stand-in for a GPU stage over one shard, on a lazily started engine shared by the batch."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.ran: list[str] = []
        self.engine_started = False
        self.closed = 0
        self.fail_on = fail_on

    def run_one(self, w: batching.ShardWork) -> None:
        if w.shard == self.fail_on:
            raise RuntimeError("node lost")
        self.engine_started = True  # the model loads on the first shard that needs it
        self.ran.append(w.shard)
        rows = shards.read_table(w.in_path).to_pylist()
        shards.write_table(w.table, [{**r, "verdict": "safe"} for r in rows])
        shards.write_json(w.stats, {"shard": w.shard})

    def close(self) -> None:
        self.closed += 1


def _work(tmp_path: Path, inputs: list[Path]) -> list[batching.ShardWork]:
    return [batching.ShardWork.under(tmp_path / "results" / "guard", p.stem, p) for p in inputs]


def test_batches_and_their_count() -> None:
    ids = [f"{i:05d}" for i in range(10)]
    assert batching.batches(ids, 4) == [ids[0:4], ids[4:8], ids[8:10]]
    assert batching.batches(ids, 1) == [[i] for i in ids]
    assert [batching.batch_count(10, n) for n in (1, 4, 10, 16)] == [10, 3, 1, 1]
    assert batching.batch_count(1120, 16) == 70
    with pytest.raises(ValueError, match=">= 1"):
        batching.batches(ids, 0)


def test_one_changed_shard_is_the_only_one_recomputed(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, 4)
    key = {"settings": {"max_words": 150}, "model": "guard@abc", "code": "f00"}
    first = Stage()
    m = batching.run_batch(_work(tmp_path, inputs), first.run_one, key=key, close=first.close)
    assert first.ran == ["00000", "00001", "00002", "00003"] and m["computed"] == 4 and first.closed == 1

    # Nothing changed: the batch job reruns (e.g. forced) and loads no model.
    again = Stage()
    m = batching.run_batch(_work(tmp_path, inputs), again.run_one, key=key, close=again.close)
    assert again.ran == [] and not again.engine_started and m["reused"] == 4 and again.closed == 1

    # One upstream shard changed: only it is recomputed, the other three are reused.
    shards.write_table(inputs[2], [{"id": "00002-000000", "prompt": "a different prompt"}])
    changed = Stage()
    m = batching.run_batch(_work(tmp_path, inputs), changed.run_one, key=key)
    assert changed.ran == ["00002"] and m["reused"] == 3
    assert m["shards"]["00002"]["reused"] is False and m["shards"]["00001"]["reused"] is True

    # A changed param (threshold, model, code) recomputes every shard.
    other = Stage()
    batching.run_batch(_work(tmp_path, inputs), other.run_one, key={**key, "model": "guard@def"})
    assert other.ran == ["00000", "00001", "00002", "00003"]


def test_a_killed_batch_job_redoes_only_the_shards_it_had_not_finished(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, 4)
    dying = Stage(fail_on="00002")
    with pytest.raises(RuntimeError, match="node lost"):
        batching.run_batch(_work(tmp_path, inputs), dying.run_one, key={}, close=dying.close)
    assert dying.ran == ["00000", "00001"] and dying.closed == 1  # the engine is shut down on failure too
    resumed = Stage()
    m = batching.run_batch(_work(tmp_path, inputs), resumed.run_one, key={})
    assert resumed.ran == ["00002", "00003"] and m["reused"] == 2


def test_a_result_without_its_fingerprint_is_not_trusted(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, 1)
    (w,) = _work(tmp_path, inputs)
    Stage().run_one(w)  # a result written by a job that died before it recorded the fingerprint
    stage = Stage()
    batching.run_batch([w], stage.run_one, key={})
    assert stage.ran == ["00000"]


def test_publish_keeps_the_bytes_and_makes_the_output_newer(tmp_path: Path) -> None:
    src = tmp_path / "results" / "guard" / ".batched" / "00000.parquet"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"table bytes")
    old = time.time() - 3600
    os.utime(src, (old, old))
    dest = tmp_path / "results" / "guard" / "00000.parquet"
    batching.publish(src, dest)
    assert dest.read_bytes() == b"table bytes" and dest.stat().st_mtime > old + 3000
    batching.publish(src, dest)  # publishing again replaces it
    assert dest.read_bytes() == b"table bytes"
