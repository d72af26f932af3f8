"""benchmarks/plan.py: GPU-hours from published or measured rates, and "not measured" where a rate is missing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _plan_module() -> Any:
    spec = importlib.util.spec_from_file_location("benchmarks_plan", ROOT / "benchmarks" / "plan.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def production() -> tuple[Any, dict[str, Any], dict[str, int]]:
    from finet2i.workflow.config import load_config

    plan = _plan_module()
    files = [ROOT / "config" / "config.yaml"]
    config = load_config(*files, base_dir=ROOT, check_models=False)
    return plan, config, plan.jobs_per_rule(config, files, ROOT)


def test_gpu_hours_and_load_share_follow_from_the_rates(production) -> None:
    plan, config, jobs = production
    rates = {"stages": {"guard": {"items_per_s": 100.0, "load_s": 90.0, "gpu_mem_gb": 20.0},
                        "generate.flux2": {"items_per_s": 0.05, "load_s": 300.0}}}
    rows = {r.stage: r for r in plan.plan(config, jobs, rates)}
    guard = rows["guard"]
    # The paper's guard input (5,555,147 after dedup) scaled to the config's 44.8M specs; the production config
    # runs 16 shards per guard job (gpu_jobs): 70 jobs.
    assert guard.items == round(5_555_147 * 44_800_000 / 44_800_567)
    assert guard.rule == "guard_batch" and guard.jobs == jobs["guard_batch"] == 70
    assert guard.gpu_h == pytest.approx(guard.items / 100 / 3600 + guard.jobs * 90 / 3600)
    per_job = guard.items / guard.jobs / 100
    assert guard.load_share == pytest.approx(90 / (90 + per_job))
    assert guard.load_share_one_shard == pytest.approx(90 / (90 + guard.items / 1120 / 100))  # before gpu_jobs
    flux = rows["generate.flux2"]
    # FLUX.2's share of the four subsets' prompts (weight 0.2 of 1.0) x the mean candidate count (2).
    assert flux.items == round(4 * 5_158_969 * 44_800_000 / 44_800_567 * 2 * 0.2)
    assert flux.jobs == jobs["generate"]
    assert not rows["prompts"].measured and rows["prompts"].gpu_h is None


def test_a_stage_without_a_rate_says_not_measured_and_stays_out_of_the_total(production) -> None:
    plan, config, jobs = production
    rates = {"gpu": "test GPU", "stages": {"guard": {"items_per_s": 100.0, "load_s": 90.0},
                                           "embed": {"items_per_s": 30000.0}}}  # no load_s
    rows = plan.plan(config, jobs, rates)
    text = plan.render(rows, rates, "config/config.yaml")
    assert next(ln for ln in text.splitlines() if ln.startswith("prompts ")).endswith("not measured")
    embed = next(r for r in rows if r.stage == "embed")
    # A rate without a load: its compute hours count, and the total says it is a lower bound.
    assert embed.compute_h == pytest.approx(44_800_000 / 30000 / 3600) and embed.gpu_h == embed.compute_h
    assert embed.load_missing and embed.load_h is None
    guard = next(r for r in rows if r.stage == "guard")
    assert f"total GPU-hours over the 2 stage(s) with a rate: at least {guard.gpu_h + embed.gpu_h:,.1f}" in text
    assert "NOT in the total: prompts, dedup_group," in text and "their compute hours only: embed" in text
    empty = plan.render(plan.plan(config, jobs, {}), {}, "x")
    assert "over the 0 stage(s) with a rate: at least 0.0" in empty
    with pytest.raises(SystemExit, match="unknown stage"):
        plan.plan(config, jobs, {"stages": {"gaurd": {"items_per_s": 1}}})


def test_script_runs_on_the_published_rates_and_on_the_demo_config(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "benchmarks/plan.py"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout  # the published figures: benchmarks/rates.published.json
    assert "embed" in out and "generate.flux2" in out and "not measured" in out
    assert "an ESTIMATE from measured + published figures" in out
    assert "https://github.com/vllm-project/vllm/pull/18566" in out and "[measured] benchmarks/measured/" in out
    rates = tmp_path / "r.json"
    sourced = {"kind": "measured", "source": "benchmarks/measured/test.log"}
    rates.write_text(json.dumps({"stages": {"generate.z_image": {"items_per_s": 2.0, "load_s": 60, **sourced,
                                                                 "load": sourced}}}))
    out = subprocess.run([sys.executable, "benchmarks/plan.py", "--configfile", "config/demo.yaml",
                          "--rates", str(rates), "--json"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    rows = {r["stage"]: r for r in json.loads(out)}
    assert rows["generate.z_image"]["measured"] and not rows["guard"]["measured"]
    assert "curated_score" in rows  # the demo has real photos
