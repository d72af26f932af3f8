"""The shard-table conventions every stage relies on: atomic writes, verdicts, stats, chunk checkpoints."""

from __future__ import annotations

import json

import pytest

from finet2i.core import shards


def test_stage_output_keeps_every_record_and_counts_reasons(tmp_path):
    records = [shards.mark({"id": f"a{i}", "x": i}, None if i % 3 else "too_short") for i in range(9)]
    out = tmp_path / "guard" / "00000.parquet"
    st = shards.write_stage_output(out, records, stage="guard", shard="00000", started=0.0, model="m")
    assert st.records_in == 9 and st.kept == 6 and st.dropped == {"too_short": 3}
    saved = json.loads((tmp_path / "guard" / "00000.stats.json").read_text())
    assert saved["records_in"] == saved["kept"] + sum(saved["dropped"].values())
    # Downstream sees only kept rows, without verdict columns; the table still holds the dropped ones.
    kept = shards.read_kept(out)
    assert [r["id"] for r in kept] == [f"a{i}" for i in range(9) if i % 3]
    assert "kept" not in kept[0]
    assert len(shards.read_records(out)) == 9


def test_records_without_verdict_are_refused(tmp_path):
    with pytest.raises(ValueError, match="record 'x' has no verdict"):
        shards.write_stage_output(tmp_path / "t.parquet", [{"id": "x"}], stage="s", shard="0", started=0)


def test_empty_shard_writes_a_readable_empty_table(tmp_path):
    p = tmp_path / "e.parquet"
    shards.write_stage_output(p, [], stage="s", shard="00001", started=0.0)
    assert shards.read_kept(p) == []
    assert shards.StageStats.read(shards.stats_path(p)).records_in == 0


def test_failed_write_leaves_no_output(tmp_path):
    p = tmp_path / "x.json"
    with pytest.raises(RuntimeError), shards.atomic_path(p) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert not p.exists() and list(tmp_path.iterdir()) == []


def test_chunk_checkpoint_resumes_after_a_crash(tmp_path):
    out = tmp_path / "prompts" / "00000.parquet"
    recs = [{"id": str(i)} for i in range(10)]
    calls: list[int] = []

    def work(chunk):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise RuntimeError("preempted")
        return [shards.mark({**r, "y": int(r["id"]) * 2}, None) for r in chunk]

    fp = shards.fingerprint([r["id"] for r in recs], {"t": 1})
    with pytest.raises(RuntimeError):
        shards.ChunkCheckpoint(out, 4, fp).run(recs, work)
    calls.clear()
    ck = shards.ChunkCheckpoint(out, 4, fp)
    result = ck.run(recs, lambda c: [shards.mark({**r, "y": int(r["id"]) * 2}, None) for r in c])
    assert ck.resumed_chunks == 2  # the two chunks finished before the crash are not redone
    assert [r["y"] for r in result] == [i * 2 for i in range(10)]


def test_chunk_checkpoint_discards_chunks_of_other_inputs(tmp_path):
    out = tmp_path / "o.parquet"
    recs = [{"id": str(i)} for i in range(4)]
    shards.ChunkCheckpoint(out, 2, "fp-a").run(recs, lambda c: [shards.mark(dict(r), None) for r in c])
    ck = shards.ChunkCheckpoint(out, 2, "fp-b")
    ck.run(recs, lambda c: [shards.mark(dict(r), "changed") for r in c])
    assert ck.resumed_chunks == 0


def test_stream_writer_failing_at_its_last_flush_leaves_nothing_under_the_final_name(tmp_path):
    """The last rows are written on exit; when that fails (disk full, a row that does not fit the schema),
    no partial table may appear under the final name, and the error reaches the caller."""
    import pyarrow as pa

    out = tmp_path / "t.parquet"
    schema = pa.schema([("id", pa.string()), ("n", pa.int64())])
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        with shards.StreamWriter(out, schema, batch=4) as w:
            for i in range(6):
                w.write({"id": str(i), "n": i})  # rows 0-3 flushed as a row group
            w.write({"id": "bad", "n": "not a number"})  # fails in the flush on exit
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left behind either
    with shards.StreamWriter(out, schema, batch=4) as w:
        w.write({"id": "ok", "n": 1})
    assert shards.read_records(out) == [{"id": "ok", "n": 1}]
