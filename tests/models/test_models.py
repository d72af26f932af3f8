"""Model pinning: `finet2i fetch-models --pin` writes the commits it downloaded into the config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finet2i.models.spec import is_pinned, pin_revision_text
from finet2i.workflow.config import load_config, unpinned_models, used_model_keys

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"


def test_is_pinned_wants_a_full_commit():
    assert is_pinned(SHA)
    assert not is_pinned("main") and not is_pinned(None) and not is_pinned(SHA[:12]) and not is_pinned("v1.0")


def test_pin_flow_style_keeps_comments_and_other_models():
    text = ("models:\n  guard: {id: meta-llama/Llama-Guard-3-8B, revision: main}  # the guard\n"
            "  other: {id: meta-llama/Llama-Guard-3-8B-x, revision: main}\n")
    new, n = pin_revision_text(text, "meta-llama/Llama-Guard-3-8B", SHA)
    assert n == 1
    assert new == text.replace("revision: main}  # the guard", f"revision: {SHA}}}  # the guard", 1)


def test_pin_block_style_and_missing_revision():
    text = "models:\n  a:\n    id: org/a\n    revision: v1  # tag\n  b: {id: org/b}\n  c: 1\n"
    new, n = pin_revision_text(text, "org/a", SHA)
    assert n == 1 and f"    revision: {SHA}  # tag\n" in new
    new, n = pin_revision_text(new, "org/b", SHA)
    assert n == 1 and yaml.safe_load(new)["models"]["b"] == {"id": "org/b", "revision": SHA}
    with pytest.raises(ValueError, match="not a commit hash"):
        pin_revision_text(text, "org/a", "main")


def _fake_hub_cache(cache: Path, model_ids: list[str]) -> None:
    """What snapshot_download leaves behind: refs/main -> commit, snapshots/<commit>/ (read offline)."""
    for model_id in model_ids:
        repo = cache / f"models--{model_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(SHA)
        (repo / "snapshots" / SHA).mkdir(parents=True)
        (repo / "snapshots" / SHA / "config.json").write_text("{}")


def test_fetch_models_pin_rewrites_the_production_config(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the config's taxonomy and resolution paths are relative to the workflow
    config_path = tmp_path / "config.yaml"
    original = (ROOT / "config" / "config.yaml").read_text()
    config_path.write_text(original)
    config = load_config(config_path, check_models=False)
    hub_ids = [config["models"][k]["id"] for k in used_model_keys(config) if "id" in config["models"][k]]
    assert unpinned_models(config), "the shipped config is expected to name branches until someone pins it"
    _fake_hub_cache(tmp_path / "hub", hub_ids)
    # the V2.5 head (a local file, not on the hub) is there already: nothing to download, no license to accept
    head = tmp_path / "aesthetic_predictor_v2_5.pth"
    head.write_bytes(b"")
    overlay = tmp_path / "head.yaml"
    overlay.write_text(yaml.safe_dump({"models": {"aesthetic_head": {"path": str(head)}}}))
    # a process of its own: huggingface_hub reads its cache location once, at import
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([str(Path(sys.executable).with_name("finet2i")), "fetch-models", "--pin",
                             str(config_path), str(overlay)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(set(hub_ids))} revision(s) pinned" in result.stdout, result.stdout
    pinned = load_config(config_path, check_models=False)
    assert unpinned_models(pinned) == []
    assert all(pinned["models"][k]["revision"] == SHA for k in used_model_keys(pinned)
               if "id" in pinned["models"][k])
    # only revisions changed: every comment and every other line is as it was
    before, after = original.splitlines(), config_path.read_text().splitlines()
    assert len(before) == len(after)
    assert [a for a, b in zip(after, before, strict=True) if a != b and "revision:" not in a] == []
