"""finet2i.core.codehash: the params fingerprint that makes an edited stage module rerun its stage (and only then)."""

from __future__ import annotations

from pathlib import Path

import pytest

from finet2i.core.codehash import code_closure, code_fingerprint, normalised_source, script_fingerprint
from finet2i.workflow.params import RUNTIME_ONLY_KEYS, merged, output_settings, runtime_settings

STAGE = '''"""The stage."""
from finet2i.core import shards
from finet2i.models.backends.helper import helper


def run(x):
    """Doubles."""
    return helper(x) * 2  # why
'''
HELPER = '''def helper(x):
    return x + 1
'''


@pytest.fixture()
def package(tmp_path: Path) -> Path:
    root = tmp_path / "finet2i"
    for rel, text in {"__init__.py": "", "core/__init__.py": "", "core/shards.py": "X = 1\n", "stages/__init__.py": "",
                      "stages/thing.py": STAGE, "models/__init__.py": "", "models/backends/__init__.py": "",
                      "models/backends/helper.py": HELPER,
                      "unrelated.py": "Y = 2\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_closure_follows_imports_and_skips_plumbing(package):
    assert sorted(code_closure("finet2i.stages.thing", root=package)) == [
        "finet2i.models", "finet2i.models.backends", "finet2i.models.backends.helper", "finet2i.stages",
        "finet2i.stages.thing"]


@pytest.mark.parametrize("path, old, new", [
    ("stages/thing.py", "* 2", "* 3"),          # the stage's logic
    ("models/backends/helper.py", "x + 1", "x + 2"),   # a module it imports
])
def test_logic_edits_change_the_fingerprint(package, path, old, new):
    before = code_fingerprint("finet2i.stages.thing", root=package)
    edit(package / path, old, new)
    assert code_fingerprint("finet2i.stages.thing", root=package) != before


@pytest.mark.parametrize("path, old, new", [
    ("stages/thing.py", "# why", "# a better reason"),                 # comment
    ("stages/thing.py", '"""Doubles."""', '"""Doubles, documented."""'),  # docstring
    ("stages/thing.py", "helper(x) * 2", "helper(\n        x\n    ) * 2"),  # layout
    ("core/shards.py", "X = 1", "X = 2"),                                  # plumbing (INFRASTRUCTURE)
    ("unrelated.py", "Y = 2", "Y = 3"),                                 # not imported
])
def test_harmless_edits_keep_the_fingerprint(package, path, old, new):
    before = code_fingerprint("finet2i.stages.thing", root=package)
    edit(package / path, old, new)
    assert code_fingerprint("finet2i.stages.thing", root=package) == before


def test_string_literals_that_are_not_docstrings_count():
    assert normalised_source('x = "a"\n') != normalised_source('x = "b"\n')


def test_script_fingerprint_reads_the_adapters_imports(package, tmp_path):
    script = tmp_path / "thing.py"
    script.write_text("from finet2i.stages.thing import run\nfrom finet2i.core.shards import X\n")
    assert script_fingerprint(script, root=package) == code_fingerprint("finet2i.stages.thing", root=package)
    script.write_text("import os\n")
    with pytest.raises(ValueError, match="imports no finet2i module"):
        script_fingerprint(script, root=package)


def test_every_workflow_script_has_a_fingerprint():
    scripts = sorted(Path(__file__).resolve().parents[2].joinpath("workflow_scripts").glob("*.py"))
    prints = {s.name: script_fingerprint(s) for s in scripts if "finet2i" in s.read_text()}
    assert prints["guard.py"] != prints["generate.py"]
    assert prints["enhance.py"] == prints["curated_enhance.py"]  # same stage code, same fingerprint


def test_output_settings_leave_out_runtime_keys():
    config = {"guard": {"max_words": 150, "chunk_size": 4096}, "generate": {"subsets": ["pe_as"], "seed": 1}}
    assert output_settings(config, "guard") == {"max_words": 150}
    assert output_settings(config, "generate") == {"seed": 1}
    assert {"chunk_size", "batch_size", "subsets", "assemble_memory_mb"} == set(RUNTIME_ONLY_KEYS)


def test_runtime_keys_travel_apart_and_merge_back_into_the_section():
    """A script gets its section back (settings + runtime) while Snakemake's params trigger sees only settings:
    the runtime param is not a builtin type, which Snakemake leaves out of its rerun trigger."""
    from snakemake.persistence import UNREPRESENTABLE, PersistenceBase

    config = {"pair_filter": {"aesthetic_threshold": 5.5, "chunk_size": 64,
                              "judge": {"enabled": True, "batch_size": 8, "max_tokens": 900}}}
    runtime = runtime_settings(config, "pair_filter")
    assert dict(runtime) == {"chunk_size": 64, "judge": {"batch_size": 8}}
    assert merged(output_settings(config, "pair_filter"), runtime) == config["pair_filter"]
    assert not isinstance(runtime, dict)
    serialize = PersistenceBase._serialize_param_builtin
    assert isinstance(serialize(None, output_settings(config, "pair_filter")), str)
    assert serialize(None, runtime) is UNREPRESENTABLE  # left out of the params trigger


def test_stage_closures_stay_apart():
    """An edit of the dedup algorithm must not rerun the embeddings (and the GPU stages after them)."""
    dedup = {m for m in code_closure("finet2i.stages.dedup.jobs") if m.startswith("finet2i.stages.dedup")}
    assert {"finet2i.stages.dedup.similarity", "finet2i.stages.dedup.sweep", "finet2i.stages.dedup.passes"} <= dedup
    assert not dedup & set(code_closure("finet2i.stages.embed"))
    assert "finet2i.stages.generate" not in code_closure("finet2i.stages.guard")
