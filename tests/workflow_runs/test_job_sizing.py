"""Several shards per GPU job (gpu_jobs; docs/job-sizing.md): the plan's shape and preflight's job counts for every
batchable stage, and one tiny run that batches every GPU stage through Snakemake: one changed shard is then
recomputed alone by each batch job, and the shards beside it are reused byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from support.workflow import DEMO_CONFIG, ROOT, demo_workdir, make_workdir, planned_jobs, snakemake

from finet2i.core import batching, pipeline

BATCHABLE = [s.name for s in pipeline.STAGES if s.batchable]


def _config(wd: Path, name: str, shards: int, real_photos: bool = True, **gpu_jobs: Any) -> str:
    config = yaml.safe_load((ROOT / DEMO_CONFIG).read_text())
    config["shards"]["count"] = shards
    if not real_photos:  # a dry run without the demo's photo folders
        config["curated"]["sources"] = []
    if gpu_jobs:
        config["gpu_jobs"] = gpu_jobs
    (wd / "config" / name).write_text(yaml.safe_dump(config))
    return f"config/{name}"


def _rules(jobs: dict[str, str]) -> Counter[str]:
    return Counter(re.sub(r"\[.*", "", j) for j in jobs)


@pytest.mark.slow
def test_plan_shapes_and_preflight_counts(tmp_path: Path) -> None:
    from finet2i.preflight.plan import job_count, parse_rules, rule_enabled
    from finet2i.workflow.config import load_config

    wd = make_workdir(tmp_path / "wf")
    synthetic = [s for s in BATCHABLE if pipeline.stage(s).branch == pipeline.SYNTHETIC]
    cases = {  # the default: one GPU job per shard; 2 per job: 3 batches of 5 shards (x 4 subsets for generate)
        "one.yaml": (_config(wd, "one.yaml", 5, False), {s: 5 * (4 if s == "generate" else 1) for s in synthetic}),
        "two.yaml": (_config(wd, "two.yaml", 5, False, shards_per_job=2),
                     {**{f"{s}_batch": 3 for s in synthetic}, "generate_batch": 12,
                      **{f"{s}_publish": 5 for s in synthetic}, "generate_publish": 20}),
        "stage.yaml": (_config(wd, "stage.yaml", 5, False, shards_per_job=1, stages={"guard": 16}),
                       {"guard_batch": 1, "guard_publish": 5}),  # capped at the shard count
    }
    for name, (configfile, expected) in cases.items():
        planned = planned_jobs(wd, "--forceall", "--configfile", configfile)
        counts = _rules(planned)
        for rule, n in expected.items():
            assert counts[rule] == n, (name, rule, counts[rule])
        if name == "stage.yaml":  # only guard batches; everything else keeps one job per shard
            assert counts["guard"] == 0 and counts["attributes"] == 5 and counts["generate"] == 20
        # preflight's count of every rule equals Snakemake's plan (the {batch} domains included).
        config = load_config(wd / configfile, base_dir=wd, check_models=False)
        rules = parse_rules(wd / "Snakefile", [wd / configfile], wd)
        for rule, info in rules.items():
            if rule_enabled(rule, config) and not info.local and rule != "all":
                assert job_count(info, config) == counts[rule], (name, rule)
        if name == "two.yaml":
            assert "guard_batch[batch=00002]" in planned and "guard_batch[batch=00003]" not in planned
            assert "generate_batch[batch=00002,subset=po_as]" in planned


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _manifests(wd: Path) -> dict[str, dict]:
    """Every batch job's manifest, by stage (and subset for generate)."""
    out = {}
    for p in sorted((wd / "results").glob("*/batches/**/*.json")):
        stage = p.relative_to(wd / "results").parts[0]
        out[f"{stage}{'/' + p.parent.name if p.parent.name != 'batches' else ''}"] = json.loads(p.read_text())
    return out


def _outputs_of_unit(wd: Path, manifests: dict[str, dict], unit: str) -> dict[str, str]:
    """md5 of every published output of ``unit`` (a shard, or subset/shard), by path."""
    files = {}
    for m in manifests.values():
        for u, entry in m["units"].items():
            if u.rsplit("/", 1)[-1] == unit:
                files.update({d: _md5(wd / d) for d in entry["outputs"] if (wd / d).exists()})
    return files


def _reword(path: Path, column: str, change, every: bool = False) -> None:  # type: ignore[no-untyped-def]
    """A real change to the first kept row (or ``every`` row) of a finished table that keeps its row count (its
    stats stay true)."""
    t = pq.read_table(path)
    values = t.column(column).to_pylist()
    kept = [i for i, r in enumerate(t.column("kept").to_pylist()) if r]
    for i in kept if every else kept[:1]:
        values[i] = change(values[i])
    field = t.schema.field(column)
    t = t.set_column(t.schema.get_field_index(column), field, pa.array(values, field.type))
    pq.write_table(t, path)


@pytest.mark.slow
@pytest.mark.vllm
def test_a_changed_shard_is_recomputed_alone_by_every_batched_stage(tmp_path: Path) -> None:
    """The demo's models on 2 shards (and 2 curated shards) with 2 shards per GPU job: one batch job per stage
    (per subset for generate), each computing both shards. Then the specs of shard 00001 (their seeds) and one
    photo's record of curated shard 00001 change: every batch job reruns, recomputes that shard alone, and reuses
    shard 00000, whose published outputs keep their bytes."""
    wd = demo_workdir(tmp_path / "wf")
    config = yaml.safe_load((ROOT / DEMO_CONFIG).read_text())
    config["shards"] = {"count": 2, "specs_per_shard": 4}
    config["gpu_jobs"] = {"shards_per_job": 2}
    config["curated"]["shards"] = 2
    config["curated"]["long_prompt"] = "enhancer"  # curated_enhance runs too
    (wd / "config" / "batched.yaml").write_text(yaml.safe_dump(config))
    args = ("--profile", "profiles/local", "--configfile", "config/batched.yaml")
    snakemake(wd, *args, "--cores", "2", timeout=3000)
    first = _manifests(wd)
    curated = [s for s in BATCHABLE if pipeline.enabled(s, config) and pipeline.stage(s).branch == pipeline.CURATED]
    expected = {*(s for s in BATCHABLE if pipeline.stage(s).branch == pipeline.SYNTHETIC and s != "generate"),
                *curated, *(f"generate/{sub}" for sub in config["generate"]["subsets"])}
    assert set(first) == expected, set(first) ^ expected
    assert {"curated_score", "curated_caption", "curated_enhance", "curated_guard"} <= set(first)
    for key, m in first.items():
        assert m["computed"] == 2 and m["reused"] == 0, (key, m)
    before = _outputs_of_unit(wd, first, "00000")
    assert len(before) >= 2 * len(first)  # a table and its stats (or more) per stage and subset

    # 1. Other prompts for every spec of shard 00001, and one photo's record of curated shard 00001. Before dedup
    # (prompts, embed) and on the curated branch shard 00000's inputs are unchanged: reused. Dedup is one pass over
    # every shard (its groups follow all the prompts), so what it writes for shard 00000 may change, and a unit is
    # then recomputed because its own input changed: every unit is reused exactly when its fingerprint (its input
    # bytes and params) is the one of the first run, and a reused unit's published outputs keep their bytes.
    _reword(wd / "results/specs/00001.parquet", "seed", lambda s: int(s) + 7919, every=True)
    ingest = wd / "results/curated_ingest/00001.parquet"
    assert pq.read_table(ingest, columns=["kept"]).column("kept").to_pylist().count(True), "no photo in cshard 1"
    _reword(ingest, "source", lambda s: f"{s} (renamed)")
    snakemake(wd, *args, "--cores", "2", timeout=3000)
    again = _manifests(wd)
    for key, m in again.items():
        for unit, entry in m["units"].items():
            same = entry["fingerprint"] == first[key]["units"][unit]["fingerprint"]
            assert entry["reused"] == same, (key, unit, entry)
    for key in ("prompts", "embed", "curated_score", "curated_caption"):
        assert {u: e["reused"] for u, e in again[key]["units"].items()} == {"00000": True, "00001": False}, key
    reused = {d for m in again.values() for u, e in m["units"].items()
              if e["reused"] and u.rsplit("/", 1)[-1] == "00000" for d in e["outputs"]}
    now = _outputs_of_unit(wd, again, "00000")
    assert {d: now.get(d) for d in reused} == {d: before.get(d) for d in reused}

    # 2. A change after dedup: every prompt dedup kept in shard 00001. Each batched stage after dedup reruns its
    # batch, recomputes shard 00001 and reuses shard 00000, whose inputs did not change.
    kept_before = _outputs_of_unit(wd, again, "00000")
    _reword(wd / "results/dedup/00001.parquet", "prompt", lambda s: f"{s}, at dusk", every=True)
    snakemake(wd, *args, "--cores", "2", timeout=3000)
    third = _manifests(wd)
    after_dedup = {k for k in third if k.split("/")[0] in
                   ("guard", "attributes", "enhance", "guard_enhanced", "generate", "pair_filter")}
    assert {k.split("/")[0] for k in after_dedup} == {"guard", "attributes", "enhance", "guard_enhanced",
                                                       "generate", "pair_filter"}
    for key in after_dedup:
        units = {u.rsplit("/", 1)[-1]: e["reused"] for u, e in third[key]["units"].items()}
        assert units == {"00000": True, "00001": False}, (key, third[key]["units"])
    assert _outputs_of_unit(wd, third, "00000") == kept_before  # reused, published byte for byte
    assert planned_jobs(wd, *args) == {}
    assert batching.CACHE_FOLDER in {p.name for p in (wd / "results" / "guard").iterdir()}
