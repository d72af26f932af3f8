"""The one stage runner: what every chunked stage gets from it (finet2i.core.runner)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finet2i.core import runner, shards


def upstream(path, n=5, note=None, image=True):
    rows = [{"id": f"00000-{i:06d}", "prompt": f"prompt {i}", "note": note, "kept": i != 2,
             "drop_reason": None if i != 2 else "too_short"} for i in range(n)]
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("id", pa.string()), ("prompt", pa.string()), ("note", pa.string()), ("kept", pa.bool_()),
        ("drop_reason", pa.string())]))
    if image:
        table = table.append_column("image", pa.array([b"\xff\xd8" * 10] * n, pa.binary()))
    pq.write_table(table, path)
    return path


class Counting:
    """A stage whose decision is real (drop prompts ending in an odd number) and that counts what it saw."""

    def __init__(self, fail_at_call=None):
        self.seen: list[str] = []
        self.calls = 0
        self.closed = 0
        self.fail_at_call = fail_at_call

    def process(self, chunk):
        self.calls += 1
        if self.fail_at_call == self.calls:
            raise RuntimeError("killed")
        assert all("image" not in r for r in chunk), "the runner must not read image bytes"
        self.seen += [r["id"] for r in chunk]
        return [shards.mark({**r, "odd": int(r["prompt"][-1]) % 2 == 1},
                            "odd" if int(r["prompt"][-1]) % 2 else None) for r in chunk]

    def close(self):
        self.closed += 1


def stage(c: Counting, **kw) -> runner.ChunkedStage:
    return runner.ChunkedStage("toy", c.process, 2, key=("settings",), close=c.close,
                               summarize=lambda out: {"odd": sum(r["odd"] for r in out)}, **kw)


def test_runs_kept_rows_in_chunks_writes_table_then_stats(tmp_path):
    src, out = upstream(tmp_path / "in.parquet"), tmp_path / "toy" / "00000.parquet"
    c = Counting()
    stats = runner.run_chunked(stage(c), src, out, shard="00000")
    assert c.calls == 2 and c.closed == 1  # 4 kept rows in chunks of 2; the engine shut down once
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == ["00000-000000", "00000-000001", "00000-000003", "00000-000004"]
    assert table.column("drop_reason").to_pylist() == [None, "odd", "odd", None]
    assert stats.records_in == 4 and stats.kept == 2 and stats.dropped == {"odd": 2}
    assert stats.extra["odd"] == 2 and stats.extra["resumed_chunks"] == 0
    assert shards.StageStats.read(shards.stats_path(out)) == stats
    assert not (tmp_path / "toy" / "00000.parquet.chunks").exists()


def test_carried_columns_keep_the_upstream_types(tmp_path):
    """`note` is null in every row: inferred from Python rows it would be type null in this shard and string
    in the next, and readers that merge shards fail; the runner keeps the upstream table's type."""
    src, out = upstream(tmp_path / "in.parquet"), tmp_path / "out.parquet"
    runner.run_chunked(stage(Counting()), src, out, shard="00000")
    assert pq.read_schema(out).field("note").type == pa.string()


def test_killed_job_resumes_from_its_chunks_and_closes_the_engine(tmp_path):
    src, out = upstream(tmp_path / "in.parquet"), tmp_path / "out.parquet"
    first = Counting(fail_at_call=2)
    with pytest.raises(RuntimeError, match="killed"):
        runner.run_chunked(stage(first), src, out, shard="00000")
    assert first.closed == 1 and not out.exists()  # closed on failure too; nothing under the final name
    again = Counting()
    stats = runner.run_chunked(stage(again), src, out, shard="00000")
    assert again.seen == ["00000-000003", "00000-000004"] and stats.extra["resumed_chunks"] == 1


def test_changed_input_content_discards_the_checkpoint(tmp_path):
    """Same ids, other prompts (an upstream setting changed): finished chunks must not be reused."""
    src, out = upstream(tmp_path / "in.parquet"), tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        runner.run_chunked(stage(Counting(fail_at_call=2)), src, out, shard="00000")
    t = pq.read_table(src)
    t = t.set_column(1, "prompt", pa.array([f"changed prompt {i + 1}" for i in range(t.num_rows)]))
    pq.write_table(t, src)
    again = Counting()
    runner.run_chunked(stage(again), src, out, shard="00000")
    assert len(again.seen) == 4  # every row processed afresh
    assert pq.read_table(out).column("prompt").to_pylist()[0] == "changed prompt 1"


def test_processing_order_is_the_stages_output_order_is_the_inputs(tmp_path):
    src, out = upstream(tmp_path / "in.parquet"), tmp_path / "out.parquet"
    c = Counting()
    runner.run_chunked(stage(c, order=lambda rows: sorted(rows, key=lambda r: r["id"], reverse=True)), src, out,
                       shard="00000")
    assert c.seen == ["00000-000004", "00000-000003", "00000-000001", "00000-000000"]
    assert pq.read_table(out).column("id").to_pylist() == sorted(c.seen)


def test_a_record_without_verdict_fails_the_job(tmp_path):
    src, out = upstream(tmp_path / "in.parquet"), tmp_path / "out.parquet"
    bad = runner.ChunkedStage("toy", lambda chunk: [dict(r) for r in chunk], 10)
    with pytest.raises(ValueError, match="has no verdict"):
        runner.run_chunked(bad, src, out, shard="00000")
    assert not out.exists()


def test_checkpoint_of_other_stage_code_is_not_reused(tmp_path, monkeypatch):
    """Kill after one chunk, edit the stage's code (its fingerprint changes), rerun: every chunk is redone."""
    src, out = upstream(tmp_path / "in.parquet"), tmp_path / "out.parquet"
    monkeypatch.setattr(runner, "stage_code", lambda stage: "code-v1")
    with pytest.raises(RuntimeError):
        runner.run_chunked(stage(Counting(fail_at_call=2)), src, out, shard="00000")
    monkeypatch.setattr(runner, "stage_code", lambda stage: "code-v2")
    again = Counting()
    stats = runner.run_chunked(stage(again), src, out, shard="00000")
    assert len(again.seen) == 4 and stats.extra["resumed_chunks"] == 0


def test_stage_code_is_the_stage_modules_fingerprint():
    from finet2i.core import codehash
    from finet2i.stages import guard

    s = runner.ChunkedStage("guard", lambda chunk: guard.guard_chunk(chunk, None, guard.GuardSettings()), 1)
    s.process.__module__ = "finet2i.stages.guard"
    assert runner.stage_code(s) == codehash.code_fingerprint("finet2i.stages.guard")
    assert runner.stage_code(stage(Counting())) is None  # a test's stage: no package module to hash


def test_input_that_differs_from_what_upstream_kept_fails_the_job(tmp_path):
    """Conservation across stages: a table changed after its stage wrote it (rows lost or added) does not
    match its stats JSON, and the next stage refuses it instead of silently processing other records."""
    src = upstream(tmp_path / "in.parquet")
    shards.StageStats(stage="up", shard="00000", records_in=5, kept=4, dropped={"too_short": 1}).write(
        shards.stats_path(src))
    out = tmp_path / "out.parquet"
    runner.run_chunked(stage(Counting()), src, out, shard="00000")  # 4 kept rows, stats say 4: fine
    pq.write_table(pq.read_table(src).slice(0, 4), src)  # tampered: the last kept row is gone
    with pytest.raises(shards.ConservationError, match="3 kept rows, but in.stats.json"):
        runner.run_chunked(stage(Counting()), src, tmp_path / "again.parquet", shard="00000")
    assert not (tmp_path / "again.parquet").exists()
