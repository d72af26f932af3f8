"""`finet2i plan`: what a GPU-hour budget buys and what released samples cost, from a rates file made for the test
(finet2i.preflight.budget, finet2i.preflight.gpu_hours)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from support.workflow import ROOT

from finet2i.preflight import budget, gpu_hours
from finet2i.recipe import paper
from finet2i.workflow.config import load_config

FINET2I = str(ROOT / ".venv" / "bin" / "finet2i")


def figure(**extra) -> dict:
    return {"kind": "published", "source": "https://example.org/test-figure", "gpu": "test GPU",
            "precision": "bf16", "workload": "the test's", "applies_because": "made for the test", **extra}


def complete_rates() -> dict:
    """A rate and a load for every GPU stage: the fit then counts the whole run."""
    stages = {key: {"items_per_s": 10.0, "load_s": 60.0, **figure(), "load": figure()} for key in gpu_hours.STAGES}
    stages["embed"]["items_per_s"] = 30_000.0
    stages["generate.z_image"]["items_per_s"] = 1.0
    stages["generate.flux2"]["items_per_s"] = 0.1
    stages["generate.aesthetic"]["items_per_s"] = 200.0
    return {"gpu": "test GPU", "stages": stages}


@pytest.fixture(scope="module")
def production() -> dict:
    return load_config(ROOT / "config" / "config.yaml", base_dir=ROOT, check_models=False)


def cost(config: dict, shape: budget.Shape, shards: int, rates: dict) -> float:
    return budget.evaluate(config, shape, shards, rates, ROOT).gpu_hours


def test_the_budget_buys_the_most_shards_of_the_recipe_that_fit(production) -> None:
    rates = complete_rates()
    shape = budget.Shape.of(production)
    per_shard = cost(production, shape, 10, rates) / 10
    fit, tried = budget.fit_budget(production, 50 * per_shard, rates, ROOT)
    assert tried == [fit] and fit.shape == shape  # the recipe fits: nothing given up
    assert cost(production, shape, fit.shards, rates) <= 50 * per_shard < cost(production, shape, fit.shards + 1, rates)
    assert 45 <= fit.shards <= 55 and not fit.uncounted and not fit.no_load
    specs = fit.shards * 40_000
    assert fit.samples == {s: round(n * specs / paper.FUNNEL["prompts"]) for s, n in paper.SUBSET_COUNTS.items()}
    text = "\n".join(budget.describe(fit, 50 * per_shard))
    assert f"{fit.shards:,} shard(s) x 40,000 specs" in text and "NOT counted" not in text


def test_a_budget_below_one_shard_gives_the_shape_up_step_by_step(production) -> None:
    rates = complete_rates()
    recipe = budget.Shape.of(production)
    one = cost(production, recipe, 1, rates)
    fit, tried = budget.fit_budget(production, one * 0.35, rates, ROOT)
    assert [t.shards for t in tried[:-1]] == [0] * (len(tried) - 1) and fit.shards >= 1
    assert tried[0].shape == recipe and tried[1].shape.candidates == (1, 2)  # fewer candidates first
    gens = [dict(t.shape.weights) for t in tried]
    # FLUX.2 is the expensive generator at these rates (0.1 images/s vs 1.0): it goes before any subset does
    assert any(g["flux2"] == 0 and g["z_image"] > 0 for g in gens)
    assert all(len(t.shape.subsets) == 4 for t in tried if dict(t.shape.weights)["flux2"] > 0)
    assert cost(production, fit.shape, fit.shards, rates) <= one * 0.35


def test_released_samples_cost_the_shards_that_make_them(production) -> None:
    rates = complete_rates()
    fit = budget.fit_samples(production, 1_000_000, rates, ROOT)
    assert fit.total_samples >= 1_000_000
    fewer = budget.evaluate(production, fit.shape, fit.shards - 1, rates, ROOT)
    assert fewer.total_samples < 1_000_000 and fewer.gpu_hours < fit.gpu_hours


def test_stages_without_a_rate_are_named_and_make_the_fit_an_upper_bound(production) -> None:
    rates = complete_rates()
    del rates["stages"]["guard"]
    rates["stages"]["prompts"].pop("load_s")
    fit, _ = budget.fit_budget(production, 5000, rates, ROOT)
    assert "guard" in fit.uncounted and fit.no_load == ["prompts"]
    text = "\n".join(budget.describe(fit, 5000))
    assert "NOT counted (no rate in the rates file): guard" in text and "buys fewer shards" in text


def test_a_figure_must_say_where_it_comes_from(tmp_path: Path) -> None:
    bad = tmp_path / "rates.json"
    bad.write_text(json.dumps({"stages": {"guard": {"items_per_s": 5.0}}}))
    with pytest.raises(gpu_hours.RatesError, match="stages.guard: every figure says where it comes from"):
        gpu_hours.load_rates(bad)
    bad.write_text(json.dumps({"stages": {"guard": {"items_per_s": 5.0, "kind": "measured", "source": "x.log"}}}))
    with pytest.raises(gpu_hours.RatesError, match="under benchmarks/measured/"):
        gpu_hours.load_rates(bad)
    bad.write_text(json.dumps({"stages": {"guard": {"items_per_s": 5.0, "kind": "published", "source": "u"}}}))
    with pytest.raises(gpu_hours.RatesError, match="gpu, precision, workload, applies_because"):
        gpu_hours.load_rates(bad)


def test_the_shipped_rates_file_sources_every_figure() -> None:
    rates = gpu_hours.load_rates(ROOT / "benchmarks" / "rates.published.json")  # raises on an unsourced figure
    for key, entry in rates["stages"].items():
        assert entry.get("items_per_s") or entry.get("why_not"), f"{key}: a stage without a rate says why"
        if entry.get("kind") == "measured":
            assert (ROOT / entry["source"]).is_file(), entry["source"]


def test_cli_writes_a_config_that_runs_the_plan(tmp_path: Path) -> None:
    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps(complete_rates()))
    out = tmp_path / "plan.yaml"
    proc = subprocess.run([FINET2I, "plan", "config/config.yaml", "--gpu-hours", "20000", "--rates", str(rates),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the largest run that fits 20,000 GPU-hours" in proc.stdout
    assert "https://example.org/test-figure" in proc.stdout  # every figure with its source
    written = yaml.safe_load(out.read_text())
    merged = load_config(ROOT / "config" / "config.yaml", out, base_dir=ROOT, check_models=False)
    fit, _ = budget.fit_budget(load_config(ROOT / "config" / "config.yaml", base_dir=ROOT, check_models=False),
                               20000, json.loads(rates.read_text()), ROOT)
    assert merged["shards"]["count"] == written["shards"]["count"] == fit.shards
    assert merged["generate"]["generators"]["flux2"]["steps"] == 28  # the rest of the recipe is kept
    assert out.read_text().startswith("# finet2i plan --gpu-hours 20000")
    samples = subprocess.run([FINET2I, "plan", "--configfile", "config/config.yaml", "--samples", "100000",
                              "--rates", str(rates), "--out", str(tmp_path / "s.yaml")], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert samples.returncode == 0 and "100,000 released samples" in samples.stdout, samples.stderr
    both = subprocess.run([FINET2I, "plan", "--gpu-hours", "1", "--samples", "1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert both.returncode == 2 and "exactly one of --gpu-hours N and --samples M" in both.stderr
