"""A rule's code fingerprint follows exactly what its script runs (finet2i.core.codehash).

Each non-stage module of the package is edited in a copy, one at a time, and every workflow script's fingerprint
is recomputed: exactly the scripts that import the module (directly or through others, imports inside functions
included), as Python's own ``modulefinder`` sees them, change; the workflow's plumbing (codehash.INFRASTRUCTURE)
changes none. This is the test that would have caught the batched guard's fingerprint covering the fetch-models
command and the aesthetic backend through a helper import.
"""

from __future__ import annotations

import ast
import modulefinder
import shutil
from pathlib import Path

import pytest
from support.workflow import ROOT

from finet2i.core import codehash

SCRIPTS = sorted((ROOT / "workflow_scripts").glob("*.py"))
# What the batch script (any <stage>_batch job) runs of its own: the batching mechanism and its file hash. The
# stage's own script, which it loads, is covered by the batch rule's `code` param (the stage rule's).
BATCHING = {"finet2i.workflow.batch", "finet2i.core.batching", "finet2i.core.files"}
PROBE = "\n_FINGERPRINT_PROBE = 1\n"


def imported_modules(script: Path, src: Path) -> set[str]:
    """The finet2i modules a script runs, by Python's modulefinder over the copy (not codehash's own walk),
    without the plumbing of codehash.INFRASTRUCTURE and what only that plumbing imports."""
    packages = {m.rpartition(".")[0] for m in codehash.INFRASTRUCTURE}
    finder = modulefinder.ModuleFinder(path=[str(src)], excludes=sorted(codehash.INFRASTRUCTURE - packages))
    finder.run_script(str(script))
    found = {name for name in finder.modules if name == "finet2i" or name.startswith("finet2i.")}
    return found - codehash.INFRASTRUCTURE


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "src" / "finet2i", src / "finet2i", ignore=shutil.ignore_patterns("__pycache__"))
    return src


def fingerprints(src: Path) -> dict[str, str]:
    return {s.stem: codehash.script_fingerprint(s, root=src / "finet2i") for s in SCRIPTS}


def test_each_module_edit_changes_exactly_the_fingerprints_of_the_scripts_that_run_it(package_copy):
    src = package_copy
    runs = {s.stem: imported_modules(s, src) for s in SCRIPTS}
    before = fingerprints(src)
    modules = sorted(p for p in (src / "finet2i").rglob("*.py") if "stages" not in p.relative_to(src).parts)
    checked = 0
    for path in modules:
        name = module_name(path, src)
        text = path.read_text()
        path.write_text(text + PROBE)
        try:
            after = fingerprints(src)
        finally:
            path.write_text(text)
        changed = {s for s in before if after[s] != before[s]}
        expected = {s for s, mods in runs.items() if name in mods}
        assert changed == expected, f"editing {name} changed {sorted(changed)}, expected {sorted(expected)}"
        checked += bool(expected)
    assert checked >= 20  # backends, plumbing, release, recipe, sources, reporting modules are each run by a rule
    assert fingerprints(src) == before


def test_the_batch_script_runs_the_batching_mechanism_only(package_copy):
    """Its stage's code reaches the batch rule through the stage rule's params, not through the batch script."""
    runs = {s.stem: imported_modules(s, package_copy) for s in SCRIPTS}
    assert runs["batch"] == BATCHING
    assert not any(m.startswith("finet2i.stages") for m in runs["batch"])


def test_the_closure_codehash_walks_is_what_modulefinder_sees(package_copy):
    root = package_copy / "finet2i"
    for script in SCRIPTS:
        direct = codehash._imported_modules(ast.parse(script.read_text()), "__main__", False, root)
        assert set(codehash.code_closure(*sorted(direct), root=root)) == imported_modules(script, package_copy), \
            script.name
