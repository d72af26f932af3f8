"""Several shards per GPU job (gpu_jobs; docs/job-sizing.md): the plan's shape, preflight's job counts, and a
partial rerun through Snakemake that recomputes only the changed shard of a batch."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.workflow import DEMO_CONFIG, ROOT, make_workdir, planned_jobs, snakemake


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
    cases = {
        "one.yaml": (_config(wd, "one.yaml", 5, False), {"guard": 5}),  # the default: one GPU job per shard
        "two.yaml": (_config(wd, "two.yaml", 5, False, shards_per_job=2), {"guard_batch": 3, "guard_publish": 5}),
        "stage.yaml": (_config(wd, "stage.yaml", 5, False, shards_per_job=1, stages={"guard": 16}),
                       {"guard_batch": 1, "guard_publish": 5}),  # capped at the shard count
    }
    for name, (configfile, expected) in cases.items():
        planned = planned_jobs(wd, "--forceall", "--configfile", configfile)
        counts = _rules(planned)
        assert {r: counts[r] for r in ("guard", "guard_batch", "guard_publish") if counts[r]} == expected, name
        # Everything else keeps one job per shard (guard_enhanced, the other GPU stages) or its own domain.
        assert counts["guard_enhanced"] == 5 and counts["attributes"] == 5
        # preflight's count of every rule equals Snakemake's plan (the new {batch} domain included).
        config = load_config(wd / configfile, base_dir=wd, check_models=False)
        rules = parse_rules(wd / "Snakefile", [wd / configfile], wd)
        for rule, info in rules.items():
            if rule_enabled(rule, config) and not info.local and rule != "all":
                assert job_count(info, config) == counts[rule], (name, rule)
        if name == "two.yaml":
            assert "guard_batch[batch=00002]" in planned and "guard_batch[batch=00003]" not in planned


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.vllm
def test_changed_shard_recomputes_only_itself_within_its_batch(tmp_path: Path) -> None:
    """One batch of three shards on the demo's tiny Llama Guard through Snakemake; then one upstream shard
    changes: the batch job reruns, reuses the two unchanged shards (byte-identical outputs, so Snakemake's
    checksums keep everything downstream of them) and guards the changed one alone."""
    from support.llm import write_prompts
    from workflow_helpers import demo_workdir

    wd = demo_workdir(tmp_path / "wf")
    configfile = _config(wd, "batched.yaml", 3, shards_per_job=3)
    for i in range(3):  # dedup's keep tables, as the upstream of guard
        write_prompts(wd / "results" / "dedup" / f"{i:05d}.parquet",
                      [f"a red fox number {i} in the snow", "a cat asleep on a mat"], shard=f"{i:05d}")
    args = ("--configfile", configfile, "--allowed-rules", "guard_batch", "guard_publish", "--")
    targets = [f"results/guard/{i:05d}.stats.json" for i in range(3)]
    snakemake(wd, "--cores", "2", *args, *targets)
    manifest = wd / "results" / "guard" / "batches" / "00000.json"
    assert json.loads(manifest.read_text())["computed"] == 3
    tables = [wd / "results" / "guard" / f"{i:05d}.parquet" for i in range(3)]
    before = [_md5(t) for t in tables]
    assert planned_jobs(wd, *args, *targets) == {}

    write_prompts(wd / "results" / "dedup" / "00001.parquet", ["a blue whale in the deep sea", "a cat"],
                  shard="00001")
    planned = _rules(planned_jobs(wd, *args, *targets))
    assert planned == {"guard_batch": 1, "guard_publish": 3}
    snakemake(wd, "--cores", "2", *args, *targets)
    again = json.loads(manifest.read_text())
    assert (again["computed"], again["reused"]) == (1, 2)
    assert [s for s, e in again["shards"].items() if not e["reused"]] == ["00001"]
    after = [_md5(t) for t in tables]
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
    assert planned_jobs(wd, *args, *targets) == {}
