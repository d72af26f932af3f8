"""The workflow as users drive it: plans without heavy imports, lint, and the whole demo DAG end to end."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from workflow_helpers import local_demo, make_workdir, poison_heavy_imports, snakemake

RELEASE_KEYS = {
    "id", "prompt", "enhanced_prompt", "length", "enhanced_length", "prompt_generator", "enhancer", "style",
    "prompt_category", "task", "image_aspect_ratio", "image_resolution", "image_generator",
    "image_generated_with_enhanced_prompt", "aesthetic_predictor_v_2_5_score",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("wf"))


def _job_counts(stdout: str) -> dict[str, int]:
    table = stdout[stdout.rindex("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_production_plan_builds_without_importing_torch(workdir):
    poison = poison_heavy_imports(workdir)
    env = {"PYTHONPATH": f"{poison}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = snakemake(workdir, "-n", "--quiet", "rules", env=env, timeout=600)
    counts = _job_counts(proc.stdout)
    shards = 1120
    assert counts["specs"] == counts["prompts"] == counts["guard"] == counts["pair_filter"] == shards
    assert counts["generate"] == counts["package"] == 4 * shards
    assert counts["dedup_group"] == 128
    assert counts["report"] == 1


def test_lint_is_clean(workdir):
    proc = snakemake(workdir, "--lint", "--configfile", "config/demo.yaml", check=False)
    assert "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_config_mistake_fails_before_planning(workdir, tmp_path):
    bad = (workdir / "config" / "demo.yaml").read_text().replace("  min_words: 5", "  min_word: 5")
    (tmp_path / "bad.yaml").write_text(bad)
    proc = snakemake(workdir, "-n", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    assert proc.returncode != 0
    assert "config key prompts.min_word: unknown key; did you mean 'min_words'?" in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.vllm
def test_demo_end_to_end(tmp_path_factory):
    """The README's demo: every subset ends as non-empty tars in the release layout, every count adds up."""
    wd = local_demo(tmp_path_factory).wait()
    results = wd / "results"

    for subset in ("pe_ar", "pe_as", "po_ar", "po_as", "real"):
        tars = sorted((results / "dataset" / subset).glob("train-*.tar"))
        assert tars, f"no tar for subset {subset}"
        n_samples = 0
        for tar in tars:
            samples = _read_tar(tar)
            rows = pq.read_table(tar.with_suffix(".parquet")).to_pylist()
            assert sorted(r["id"] for r in rows) == sorted(samples), f"{tar}: parquet rows != tar samples"
            for key, parts in samples.items():
                assert set(parts) == {"jpg", "json", "txt"}, f"{tar}:{key} has {sorted(parts)}"
                meta = json.loads(parts["json"])
                assert RELEASE_KEYS <= set(meta), f"{tar}:{key} lacks {RELEASE_KEYS - set(meta)}"
                assert meta["id"] == key
                assert parts["txt"].decode().strip()
                from PIL import Image

                Image.open(io.BytesIO(parts["jpg"])).verify()
                assert isinstance(meta["aesthetic_predictor_v_2_5_score"], float)
            n_samples += len(samples)
            import webdataset as wds

            loaded = list(wds.WebDataset(str(tar), shardshuffle=False, empty_check=False))
            assert sorted(s["__key__"] for s in loaded) == sorted(samples)
            assert all({"jpg", "json", "txt"} <= set(s) for s in loaded)
        assert n_samples > 0, f"subset {subset} is empty"

    for stats in results.rglob("*.stats.json"):
        s = json.loads(stats.read_text())
        if "records_in" in s and "kept" in s:
            assert s["records_in"] == s["kept"] + sum(s.get("dropped", {}).values()), stats

    report = (results / "report" / "report.html").read_text()
    assert "DEMO OUTPUT IS NOT A DATASET" in report
    funnel = json.loads((results / "report" / "funnel.json").read_text())
    assert funnel


def _read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return samples
