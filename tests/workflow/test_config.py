"""Config mistakes fail before any job is planned, with the key's name and what to do."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from finet2i.workflow.config import ConfigError, load_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


def check(cfg, **kw):
    return validate_config(copy.deepcopy(cfg), base_dir=ROOT, check_models=False, **kw)


def test_shipped_configs_are_valid():
    for name in ("config.yaml", "demo.yaml"):
        load_config(ROOT / "config" / name, base_dir=ROOT, check_models=False)


def test_defaults_are_filled(demo_config):
    del demo_config["guard"]["max_words"]
    cfg = check(demo_config)
    assert cfg["guard"]["max_words"] == 150
    assert cfg["curated"]["retries"] == 2


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["prompts"].update(tempreature=1.0),
         r"prompts\.tempreature: unknown key; did you mean 'temperature'"),
        (lambda c: c.update(shard={}), r"config key shard: unknown key; did you mean 'shards'"),
        (lambda c: c["guard"].update(max_words="many"), r"guard\.max_words: 'many' is not of type 'integer'"),
        (lambda c: c["dedup"].update(threshold=1.5), r"dedup\.threshold: 1\.5 is greater than the maximum"),
        (lambda c: c["guard"].update(blocked_categories=["S99"]), r"guard\.blocked_categories\.0"),
        (lambda c: c["models"].update(guard={"id": "a/b", "path": "x"}), r"models\.guard: a model is either"),
        (lambda c: c["generate"]["generators"]["z_image"].update(weight=0)
         or c["generate"]["generators"]["flux2"].update(weight=0), r"generate\.generators: the weights add up to 0"),
        (lambda c: c["generate"].update(candidates={"min": 3, "max": 1}), r"generate\.candidates: min \(3\)"),
        (lambda c: c.update(taxonomy="config/nope.yaml"), r"config key taxonomy: file .*nope\.yaml does not exist"),
        (lambda c: c["curated"].update(sources=["https://example.org/photos/"]),
         r"config key curated\.sources\[0\]: https://example\.org/photos/ is a URL"),
        (lambda c: c["curated"].update(retries=1000), r"curated\.retries: 1000 is greater than the maximum of 10"),
        (lambda c: c["curated"].update(deadline_s=0), r"curated\.deadline_s: 0 is less than or equal to the minimum"),
    ],
)
def test_mistakes_name_the_key(demo_config, mutate, message):
    mutate(demo_config)
    with pytest.raises(ConfigError, match=message):
        check(demo_config)


def test_missing_model_fails_but_only_warns_in_a_dry_run(demo_config, caplog, tmp_path):
    demo_config["models"]["guard"] = {"path": str(tmp_path / "missing-guard")}
    with pytest.raises(ConfigError, match=r"models\.guard: model folder .*missing-guard does not exist"):
        validate_config(copy.deepcopy(demo_config), base_dir=ROOT)
    validate_config(copy.deepcopy(demo_config), base_dir=ROOT, dryrun=True)
    assert "missing-guard" in caplog.text


def test_hub_model_not_in_cache_says_how_to_fetch(demo_config, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    demo_config["models"]["guard"] = {"id": "meta-llama/Llama-Guard-3-8B", "revision": "main"}
    with pytest.raises(ConfigError, match="finet2i fetch-models"):
        validate_config(copy.deepcopy(demo_config), base_dir=ROOT)


def test_missing_curated_source_names_the_key(demo_config):
    demo_config["curated"]["sources"] = ["no/such/folder"]
    with pytest.raises(ConfigError, match=r"curated\.sources\[0\]: no/such/folder does not exist"):
        validate_config(copy.deepcopy(demo_config), base_dir=ROOT)


def test_schema_ships_inside_the_package():
    """A non-editable install (pip install .) has no config/ folder: the schema must come with the package."""
    from importlib import resources

    from finet2i.workflow.config import SCHEMA_PATH

    shipped = resources.files("finet2i") / "core" / "schema" / "config.schema.yaml"
    assert shipped.is_file() and Path(str(shipped)).resolve() == SCHEMA_PATH


def test_a_curated_source_may_carry_a_name(demo_config):
    demo_config["curated"]["sources"] = [{"path": demo_config["curated"]["sources"][0], "name": "pexels"}]
    check(demo_config)
    demo_config["curated"]["sources"] = [{"path": "resources/demo/real-images", "name": "my photos/2"}]
    with pytest.raises(Exception, match="curated.sources"):
        check(demo_config)


def test_the_fine_tune_needs_its_models_only_when_switched_on(demo_config):
    from finet2i.workflow.config import used_model_keys

    assert "finetune_base" not in used_model_keys(check(demo_config))
    demo_config["finetune"]["enabled"] = True
    keys = used_model_keys(check(demo_config))
    assert keys[-2:] == ["finetune_base", "clip_scorer"] and "judge" in keys
    demo_config["evaluate"]["clip_score"] = False
    assert "clip_scorer" not in used_model_keys(check(demo_config))
    del demo_config["models"]["finetune_base"]
    with pytest.raises(ConfigError, match=r"config key models\.finetune_base: finetune\.enabled needs it"):
        check(demo_config)
    demo_config["finetune"]["enabled"] = False
    check(demo_config)  # switched off, the key may be absent
    demo_config["evaluate"]["prompts"] = "prompts/none.tsv"
    with pytest.raises(ConfigError, match=r"config key evaluate\.prompts: file .*none\.tsv does not exist"):
        check(demo_config)


def test_the_production_config_names_sdxl_with_the_fine_tune_off():
    cfg = load_config(ROOT / "config" / "config.yaml", base_dir=ROOT, check_models=False)
    assert cfg["models"]["finetune_base"]["id"] == "stabilityai/stable-diffusion-xl-base-1.0"
    assert cfg["finetune"]["enabled"] is False
    assert (cfg["finetune"]["learning_rate"], cfg["finetune"]["batch_per_gpu"]) == (1e-4, 8)  # the paper's
    both = load_config(ROOT / "config" / "demo.yaml", ROOT / "config" / "demo-finetune.yaml", base_dir=ROOT,
                       check_models=False)
    assert both["finetune"]["enabled"] is True and both["finetune"]["resolution"] == 64
