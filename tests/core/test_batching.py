"""finet2i.core.batching: several shards per GPU job, each shard's result reused while its inputs are unchanged."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from finet2i.core import batching, shards


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # results/... paths are relative to the workdir, as in a Snakemake job


def _inputs(n: int) -> list[Path]:
    paths = []
    for i in range(n):
        p = Path("results") / "dedup" / f"{i:05d}.parquet"
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

    def run_one(self, w: batching.UnitWork) -> None:
        if w.unit == self.fail_on:
            raise RuntimeError("node lost")
        self.engine_started = True  # the model loads on the first shard that needs it
        self.ran.append(w.unit)
        rows = shards.read_table(w.inputs["table"]).to_pylist()
        shards.write_table(w.cached_outputs["table"], [{**r, "verdict": "safe"} for r in rows])
        shards.write_json(w.cached_outputs["stats"], {"shard": w.unit})

    def close(self) -> None:
        self.closed += 1


def _work(inputs: list[Path]) -> list[batching.UnitWork]:
    folder = Path("results") / "guard" / batching.CACHE_FOLDER
    return [batching.UnitWork(p.stem, folder, {"table": str(p)}, {"table": f"results/guard/{p.stem}.parquet",
                                                                  "stats": f"results/guard/{p.stem}.stats.json"})
            for p in inputs]


def test_batches_and_their_count() -> None:
    ids = [f"{i:05d}" for i in range(10)]
    assert batching.batches(ids, 4) == [ids[0:4], ids[4:8], ids[8:10]]
    assert batching.batches(ids, 1) == [[i] for i in ids]
    assert [batching.batch_count(10, n) for n in (1, 4, 10, 16)] == [10, 3, 1, 1]
    assert batching.batch_count(1120, 16) == 70
    with pytest.raises(ValueError, match=">= 1"):
        batching.batches(ids, 0)


def test_every_gpu_stage_can_batch_and_the_config_sizes_each() -> None:
    from finet2i.core import pipeline

    gpu = {s.name for s in pipeline.STAGES if s.models}
    assert set(batching.BATCHABLE) == gpu  # every stage that loads a model opts in
    config = {"shards": {"count": 10}, "curated": {"shards": 3},
              "gpu_jobs": {"shards_per_job": 4, "stages": {"generate": 1, "curated_score": 8}}}
    assert batching.shards_per_job(config, "guard") == 4
    assert batching.shards_per_job(config, "generate") == 1 and not batching.is_batched(config, "generate")
    assert batching.shards_per_job(config, "curated_score") == 3  # capped at the curated shard count
    assert batching.shards_per_job(config, "specs") == 1  # a CPU stage never batches


def test_cache_paths_mirror_the_declared_ones() -> None:
    assert batching.cache_path("results/guard/00003.parquet") == Path("results/guard/.batched/00003.parquet")
    assert batching.cache_path("results/generate/pe_ar/00003.stats.json") == \
        Path("results/generate/.batched/pe_ar/00003.stats.json")
    with pytest.raises(ValueError, match="results/<stage>"):
        batching.cache_path("elsewhere/00003.parquet")


def test_one_changed_shard_is_the_only_one_recomputed() -> None:
    inputs = _inputs(4)
    key = {"settings": {"max_words": 150}, "model": "guard@abc", "code": "f00"}
    first = Stage()
    m = batching.run_batch(_work(inputs), first.run_one, key=key, close=first.close)
    assert first.ran == ["00000", "00001", "00002", "00003"] and m["computed"] == 4 and first.closed == 1

    # Nothing changed: the batch job reruns (e.g. forced) and loads no model.
    again = Stage()
    m = batching.run_batch(_work(inputs), again.run_one, key=key, close=again.close)
    assert again.ran == [] and not again.engine_started and m["reused"] == 4 and again.closed == 1

    # One upstream shard changed: only it is recomputed, the other three are reused.
    shards.write_table(inputs[2], [{"id": "00002-000000", "prompt": "a different prompt"}])
    changed = Stage()
    m = batching.run_batch(_work(inputs), changed.run_one, key=key)
    assert changed.ran == ["00002"] and m["reused"] == 3
    assert m["units"]["00002"]["reused"] is False and m["units"]["00001"]["reused"] is True

    # A changed param (threshold, model, code) recomputes every shard.
    other = Stage()
    batching.run_batch(_work(inputs), other.run_one, key={**key, "model": "guard@def"})
    assert other.ran == ["00000", "00001", "00002", "00003"]


def test_a_killed_batch_job_redoes_only_the_shards_it_had_not_finished() -> None:
    inputs = _inputs(4)
    dying = Stage(fail_on="00002")
    with pytest.raises(RuntimeError, match="node lost"):
        batching.run_batch(_work(inputs), dying.run_one, key={}, close=dying.close)
    assert dying.ran == ["00000", "00001"] and dying.closed == 1  # the engine is shut down on failure too
    resumed = Stage()
    m = batching.run_batch(_work(inputs), resumed.run_one, key={})
    assert resumed.ran == ["00002", "00003"] and m["reused"] == 2


def test_a_result_without_its_fingerprint_is_not_trusted() -> None:
    (w,) = _work(_inputs(1))
    w.fingerprint_path.parent.mkdir(parents=True, exist_ok=True)
    Stage().run_one(w)  # a result written by a job that died before it recorded the fingerprint
    stage = Stage()
    batching.run_batch([w], stage.run_one, key={})
    assert stage.ran == ["00000"]


def test_a_stage_that_writes_less_than_it_declares_fails_the_unit() -> None:
    (w,) = _work(_inputs(1))

    def no_stats(work: batching.UnitWork) -> None:
        shards.write_table(work.cached_outputs["table"], [{"id": "x"}])

    with pytest.raises(RuntimeError, match="wrote no .*00000.stats.json"):
        batching.run_batch([w], no_stats, key={})
    assert not w.fingerprint_path.exists()


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
    assert dest.read_bytes() == b"table bytes" and src.exists()
    batching.publish(src, dest, move=True)  # a temp() output: no second reference stays in the cache
    assert dest.read_bytes() == b"table bytes" and not src.exists()


def test_publish_unit_puts_the_manifests_outputs_in_place_or_says_what_to_rerun() -> None:
    work = _work(_inputs(2))
    m = batching.run_batch(work, Stage().run_one, key={})
    manifest = Path("results/guard/batches/00000.json")
    shards.write_json(manifest, m)
    declared = ["results/guard/00001.parquet", "results/guard/00001.stats.json"]
    batching.publish_unit(manifest, "00001", declared, log_path="logs/guard_publish/00001.log")
    assert all(Path(d).exists() for d in declared)
    assert Path(declared[0]).read_bytes() == batching.cache_path(declared[0]).read_bytes()
    assert "computed" in Path("logs/guard_publish/00001.log").read_text()
    batching.cache_path("results/guard/00000.parquet").unlink()
    with pytest.raises(RuntimeError, match="snakemake --forcerun guard_batch"):
        batching.publish_unit(manifest, "00000", ["results/guard/00000.parquet", "results/guard/00000.stats.json"])


def test_publish_unit_of_a_per_subset_stage_finds_its_batchs_fingerprints() -> None:
    """generate's manifests sit one folder deeper (batches/<subset>/<batch>.json) than the guard's; the units'
    fingerprints are under results/generate/.batched/ all the same, as the batch job writes them."""
    inputs = _inputs(2)
    folder = Path("results") / "generate" / batching.CACHE_FOLDER
    work = [batching.UnitWork(f"pe_as/{p.stem}", folder, {"table": str(p)},
                              {"table": f"results/generate/pe_as/{p.stem}.parquet",
                               "stats": f"results/generate/pe_as/{p.stem}.stats.json"}) for p in inputs]
    manifest = Path("results/generate/batches/pe_as/00000.json")
    shards.write_json(manifest, batching.run_batch(work, Stage().run_one, key={}))
    declared = ["results/generate/pe_as/00001.parquet", "results/generate/pe_as/00001.stats.json"]
    batching.publish_unit(manifest, "pe_as/00001", declared)
    assert all(Path(d).exists() for d in declared)
