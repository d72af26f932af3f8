"""config/pilot.yaml: the production recipe with the real models at about 1% of its size. It stays the recipe
(only the shard count and dedup's number of groups differ), it is valid, preflight plans it, and the README
quotes preflight's own figures for it (jobs and disk)."""

from __future__ import annotations

import re

import yaml
from support.workflow import ROOT

from finet2i.preflight import NOGO, run_preflight
from finet2i.preflight.disk import human

PILOT, RECIPE = ROOT / "config" / "pilot.yaml", ROOT / "config" / "config.yaml"
# What the pilot may change, and why: size (shards) and the number of dedup groups, which does not change
# what dedup keeps (docs/dedup.md) but would otherwise make 128 GPU jobs of a few thousand prompts.
ALLOWED = {("shards", "count"), ("dedup", "groups")}


def differences(a: object, b: object, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if isinstance(a, dict) and isinstance(b, dict):
        return {d for k in set(a) | set(b) for d in differences(a.get(k), b.get(k), (*path, str(k)))}
    return set() if a == b else {path}


def test_the_pilot_is_the_recipe_at_one_percent() -> None:
    pilot, recipe = yaml.safe_load(PILOT.read_text()), yaml.safe_load(RECIPE.read_text())
    assert differences(pilot, recipe) == ALLOWED
    share = pilot["shards"]["count"] / recipe["shards"]["count"]
    assert 0.005 <= share <= 0.02, share


def test_the_pilot_passes_check_config_and_preflight_and_the_readme_has_its_figures(monkeypatch) -> None:
    from click.testing import CliRunner

    from finet2i.cli.main import main

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(main, ["check-config", "--no-models", "config/pilot.yaml"])
    assert result.exit_code == 0 and "config OK" in result.output, result.output
    report = run_preflight(["config/pilot.yaml"], profile=None, workdir=ROOT)
    # Offline and without the models, the only NO-GOs are the missing models (and, on a small disk, the disk).
    assert {c.check for c in report.checks if c.status == NOGO} <= {"model", "models", "disk"}, report.table()
    jobs, disk = sum(report.jobs.values()), sum(d["bytes"] for d in report.disk)
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"\b{jobs:,} jobs\b", readme), f"README.md: the pilot's job count ({jobs:,} jobs) is missing"
    assert f"~{human(disk)}" in readme, f"README.md: the pilot's disk estimate (~{human(disk)}) is missing"
