"""The stage contract: one pipeline description, one runner, no stage importing another, defaults declared once.

Each test fails when the code drifts from the contract that docs/architecture.md describes; the last one adds a
stage by following that page's worked example, to a copy of the repository.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.workflow import ROOT, make_workdir, snakemake

from finet2i.core import codehash, pipeline
from finet2i.workflow.config import load_config
from finet2i.workflow.params import output_settings

STAGES_DIR = ROOT / "src" / "finet2i" / "stages"
SCRIPTS = ROOT / "workflow_scripts"


def rule_blocks() -> dict[str, tuple[Path, str]]:
    """{rule name: (its .smk file, its text)} for every rule in rules/*.smk."""
    rules: dict[str, tuple[Path, str]] = {}
    for path in sorted((ROOT / "rules").glob("*.smk")):
        text = path.read_text()
        heads = list(re.finditer(r"^rule (\w+):$", text, re.M))
        for head, nxt in zip(heads, [*heads[1:], None], strict=False):
            rules[head.group(1)] = (path, text[head.end():nxt.start() if nxt else len(text)])
    return rules


def test_every_stage_has_its_rule_file_rule_and_results_folder():
    rules = rule_blocks()
    for stage in pipeline.STAGES:
        assert stage.name in rules, f"stage {stage.name}: no `rule {stage.name}:` in rules/"
        path, body = rules[stage.name]
        assert path.name == f"{stage.name}.smk", f"rule {stage.name} lives in {path.name}"
        output = body[body.index("output:"):body.index("log:")]
        paths = [p.replace("{{", "{").replace("}}", "}") for p in re.findall(r'"(results/[^"]+)"', output)]
        assert paths and all(p.startswith(stage.results + "/") for p in paths), (stage.name, paths)
        if stage.table:
            assert any(p.endswith(".parquet") for p in paths)
            assert pipeline.table_path(stage.name, "{shard}" if stage.branch == pipeline.SYNTHETIC else "{cshard}",
                                       "{subset}" if stage.per_subset else None) in paths
        if pipeline.upstream(stage.name, {}) is not None:
            assert f'upstream_table("{stage.name}")' in body, f"rule {stage.name} does not read upstream_table()"


def test_every_rule_file_belongs_to_a_stage():
    stems = {p.stem for p in (ROOT / "rules").glob("*.smk")}
    # curated_list is not a stage: it lists the real sources into manifests for curated_ingest (a localrule).
    # demo: the embedded demo's fake photo APIs, included for config/demo.yaml only. batching: the batch and publish
    # rules of every batchable stage, derived from the stage's own rule (gpu_jobs).
    # finetune, evaluate: the targets after the dataset (pipeline.TARGETS), off by default.
    assert stems == ({s.name for s in pipeline.STAGES} | {t.name for t in pipeline.TARGETS}
                     | {"common", "report", "assemble", "curated_list", "demo", "batching"})


def test_the_report_and_the_funnel_follow_the_pipeline(tmp_path):
    from finet2i.core import shards
    from finet2i.reporting.funnel import read_stats

    order = [s.name for s in pipeline.STAGES]
    paths = []
    for name in reversed(order):
        paths.append(tmp_path / f"{name}.stats.json")
        shards.StageStats(stage=name, shard="00000", records_in=1, kept=1).write(paths[-1])
    assert [r.stage for r in read_stats(paths, [])] == order


def test_switching_attributes_off_rewires_enhance_to_the_guard():
    assert pipeline.upstream("enhance", {"attributes": {"enabled": True}}).name == "attributes"
    assert pipeline.upstream("enhance", {"attributes": {"enabled": False}}).name == "guard"
    assert pipeline.upstream("dedup", {}).name == "prompts"  # embed writes no record table
    assert pipeline.upstream("specs", {}) is None and pipeline.upstream("curated_ingest", {}) is None
    config = load_config(ROOT / "config" / "config.yaml", check_models=False)
    assert "verifier" in pipeline.model_keys(config)
    config["attributes"]["enabled"] = False
    assert "verifier" not in pipeline.model_keys(config)


def test_the_captioner_writes_the_long_caption_unless_the_enhancer_is_asked_to():
    """`curated.long_prompt` (a value switch, "key=value"): with `captioner` (the default) curated_enhance is
    off and curated_guard reads the captions; with `enhancer` it runs between them."""
    curated = {"enabled": True, "sources": ["photos/"]}
    captioner = {"curated": {**curated, "long_prompt": "captioner"}}
    enhancer = {"curated": {**curated, "long_prompt": "enhancer"}}
    assert not pipeline.enabled("curated_enhance", captioner)
    assert pipeline.upstream("curated_guard", captioner).name == "curated_caption"
    assert pipeline.enabled("curated_enhance", enhancer)
    assert pipeline.upstream("curated_guard", enhancer).name == "curated_enhance"
    # A config that does not say (not validated) reads the schema's default: the captioner.
    assert not pipeline.enabled("curated_enhance", {"curated": curated})
    # With the guard off, the release's real images come straight from the captions.
    no_guard = {**captioner, "curated_guard": {"enabled": False}}
    assert pipeline.upstream("package_real", no_guard).name == "curated_caption"
    assert pipeline.upstream("package_real", {**enhancer, "curated_guard": {"enabled": False}}).name == (
        "curated_enhance")
    # Both modes guard both prompts (workflow_scripts/curated_guard.py).
    assert 'columns=("prompt", "enhanced_prompt")' in (SCRIPTS / "curated_guard.py").read_text()
    config = load_config(ROOT / "config" / "config.yaml", check_models=False)
    assert config["curated"]["long_prompt"] == "captioner"
    config["curated"]["sources"] = ["photos/"]
    names = [s.name for s in pipeline.enabled_stages(config)]
    assert "curated_caption" in names and "curated_enhance" not in names
    config["curated"]["long_prompt"] = "enhancer"
    assert "curated_enhance" in [s.name for s in pipeline.enabled_stages(config)]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_no_stage_module_imports_another_stage():
    stages = {p.stem for p in STAGES_DIR.glob("*.py")} - {"__init__"}
    for path in STAGES_DIR.glob("*.py"):
        others = {f"finet2i.stages.{s}" for s in stages - {path.stem}}
        assert not (_imports(path) & others), f"{path.name} imports {_imports(path) & others}"


def test_the_runner_loop_exists_once_and_stage_modules_stay_small():
    for path in STAGES_DIR.glob("*.py"):
        text = path.read_text()
        assert "ChunkCheckpoint(" not in text, f"{path.name} runs its own chunk loop; use finet2i.core.runner"
        assert len(text.splitlines()) <= 400, f"{path.name} has {len(text.splitlines())} lines"


def _settings_classes() -> list[tuple[str, type]]:
    """(config section, settings class) of every stage."""
    from finet2i.finetune.settings import EvaluateSettings, FinetuneSettings
    from finet2i.stages import (
        attributes,
        caption,
        curated_ingest,
        curated_score,
        embed,
        enhance,
        guard,
        package,
        pair_filter,
        prompts,
    )
    from finet2i.stages.dedup.settings import DedupSettings

    return [("finetune", FinetuneSettings), ("evaluate", EvaluateSettings),
            ("prompts", prompts.PromptSettings), ("embed", embed.EmbedSettings), ("dedup", DedupSettings),
            ("guard", guard.GuardSettings), ("attributes", attributes.AttributeSettings),
            ("enhance", enhance.EnhanceSettings), ("pair_filter", pair_filter.PairFilterSettings),
            ("curated", curated_ingest.IngestSettings), ("curated", curated_score.ScoreSettings),
            ("curated.caption", caption.CaptionSettings), ("package", package.PackageSettings)]


def test_settings_defaults_are_the_schemas():
    """A config that sets nothing (validation fills the schema's defaults) gives exactly the settings
    objects' own defaults: no default is written in two places that could disagree."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for section in ("prompts", "embed", "dedup", "guard", "attributes", "enhance", "pair_filter", "curated",
                    "package", "finetune", "evaluate"):
        config.pop(section, None)
    gen = config["generate"]
    config["generate"] = {"subsets": gen["subsets"], "resolutions": gen["resolutions"],
                          "generators": {k: {"weight": g["weight"]} for k, g in gen["generators"].items()}}
    config = load_config_from(config)
    from finet2i.stages.generate import GenerateSettings, GeneratorSettings

    for section, cls in _settings_classes():
        node = config
        for part in section.split("."):
            node = node[part]
        assert cls.from_config(node) == cls(), section
    gen = GenerateSettings.from_config(config["generate"])
    assert gen.chunk_size == GenerateSettings(resolutions="", generators={}).chunk_size
    assert gen.candidates_min == 1 and gen.candidates_max == 3 and gen.max_side is None
    assert all(dataclasses.replace(g, weight=0) == GeneratorSettings(weight=0) for g in gen.generators.values())


def load_config_from(config: dict) -> dict:
    from finet2i.workflow.config import validate_config

    return validate_config(config, base_dir=ROOT, check_models=False)


def test_runtime_keys_never_reach_params_at_any_depth():
    config = load_config(ROOT / "config" / "demo.yaml", check_models=False)
    assert "chunk_size" not in output_settings(config, "curated.caption")
    assert "chunk_size" not in output_settings(config, "guard")
    assert output_settings(config, "curated.caption")["max_tokens"] == config["curated"]["caption"]["max_tokens"]


def _copy_package(dest: Path) -> Path:
    shutil.copytree(ROOT / "src" / "finet2i", dest / "finet2i",
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    return dest / "finet2i"


def test_editing_one_stage_changes_only_its_rules_fingerprints(tmp_path):
    """Each rule's params carry the fingerprint of the code its script runs: an edit of one stage module
    reruns that stage's rules (and, through Snakemake, what is downstream of them), and no other stage's."""
    root = _copy_package(tmp_path)
    scripts = sorted(SCRIPTS.glob("*.py"))
    owners = {p.stem: {s.stem for s in scripts if f"finet2i.stages.{p.stem} import" in s.read_text()}
              for p in STAGES_DIR.glob("*.py") if p.stem != "__init__"}
    before = {s.stem: codehash.script_fingerprint(s, root=root) for s in scripts}
    for stage, rules in owners.items():
        module = root / "stages" / f"{stage}.py"
        original = module.read_text()
        module.write_text(original + "\n_EDITED = 1\n")
        codehash._digest.cache_clear()
        after = {s.stem: codehash.script_fingerprint(s, root=root) for s in scripts}
        module.write_text(original)
        changed = {k for k in after if after[k] != before[k]}
        assert rules and changed == rules, f"editing stages/{stage}.py changes {changed}, expected {rules}"
    codehash._digest.cache_clear()


# ------------------------------------------------------------------------------------------------------------
# The worked example of docs/architecture.md, applied to a copy


def doc_blocks() -> list[tuple[dict[str, str], str]]:
    """The fenced blocks of docs/architecture.md whose info string names a file: ({file, after|append}, text)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    blocks = []
    for m in re.finditer(r"^```\w+ (file=[^\n]*)\n(.*?)^```$", text, re.M | re.S):
        info: dict[str, str] = {}
        for part in re.finditer(r"(\w+)(?:=(\S+))?", m.group(1)):
            info[part.group(1)] = part.group(2) or ""
        blocks.append((info, m.group(2)))
    return blocks


def apply_doc_blocks(repo: Path) -> list[str]:
    touched = []
    for info, body in doc_blocks():
        path = repo / info["file"]
        if "after" in info:
            lines = path.read_text().splitlines(keepends=True)
            at = next(i for i, ln in enumerate(lines) if info["after"] in ln)
            path.write_text("".join(lines[:at + 1]) + body + "".join(lines[at + 1:]))
        elif "append" in info:
            path.write_text(path.read_text().rstrip("\n") + "\n" + body)
        else:
            assert not path.exists(), f"the worked example would overwrite {info['file']}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        touched.append(info["file"])
    return touched


def _dry_run_inputs(out: str) -> dict[str, list[str]]:
    """{rule[wildcards]: its input files} from `snakemake -n` output."""
    jobs: dict[str, list[str]] = {}
    heads = list(re.finditer(r"^(?:local)?rule (\w+):$", out, re.M))
    for head, nxt in zip(heads, [*heads[1:], None], strict=False):
        block = out[head.end():nxt.start() if nxt else len(out)]
        inputs = re.search(r"^\s+input: (.*)$", block, re.M)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        name = head.group(1) + (f"[{wildcards.group(1)}]" if wildcards else "")
        jobs[name] = [p.strip() for p in inputs.group(1).split(",")] if inputs else []
    return jobs


def test_documented_new_stage_is_planned_between_guard_and_attributes(tmp_path):
    repo = make_workdir(tmp_path / "repo")
    (repo / "docs").mkdir()
    shutil.copy2(ROOT / "docs" / "architecture.md", repo / "docs")
    _copy_package(repo / "src")
    touched = apply_doc_blocks(repo)
    assert sorted(touched) == sorted([
        "src/finet2i/core/pipeline.py", "src/finet2i/core/schema/config.schema.yaml", "src/finet2i/stages/blocklist.py",
        "workflow_scripts/blocklist.py", "rules/blocklist.smk", "tests/stages/test_blocklist.py"])
    env = {**os.environ, "PYTHONPATH": f"{repo / 'src'}{os.pathsep}{ROOT / 'tests'}"}
    test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(repo / "tests" / "stages" / "test_blocklist.py")], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert test.returncode == 0, test.stdout + test.stderr
    (repo / "resources" / "demo" / "real-images").mkdir(parents=True)  # a dry run needs the source folder only
    (repo / "resources" / "demo" / "unsplash-lite").mkdir(parents=True)  # and the Unsplash Lite table it lists
    (repo / "resources" / "demo" / "unsplash-lite" / "photos.tsv000").write_text("photo_id\n")
    out = snakemake(repo, "-n", "--configfile", "config/demo.yaml", "--cores", "1", env=env, timeout=600)
    jobs = _dry_run_inputs(out.stdout + out.stderr)
    assert jobs["blocklist[shard=00000]"] == ["results/guard/00000.parquet"]
    assert jobs["attributes[shard=00000]"] == ["results/blocklist/00000.parquet"]
    # Switched off by its one config key, the stage leaves the plan and attributes reads the guard again.
    off = tmp_path / "off.yaml"
    demo = yaml.safe_load((repo / "config" / "demo.yaml").read_text())
    off.write_text(yaml.safe_dump({**demo, "blocklist": {"enabled": False}}))
    jobs = _dry_run_inputs(snakemake(repo, "-n", "--configfile", str(off), "--cores", "1", env=env,
                                     timeout=600).stdout)
    assert not any(j.startswith("blocklist") for j in jobs)
    assert jobs["attributes[shard=00000]"] == ["results/guard/00000.parquet"]


@pytest.mark.parametrize("name", [s.name for s in pipeline.STAGES])
def test_stats_paths_follow_the_stage_names(name):
    s = pipeline.stage(name)
    shard = "00003"
    path = pipeline.stats_path(name, shard, "pe_ar" if s.per_subset else None)
    assert path.startswith(f"results/{name}/") and path.endswith(f"{shard}.stats.json")
