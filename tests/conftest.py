"""Shared fixtures of the whole suite, and where the tests live.

    core/            the workflow core (pipeline contract, runner, shards, fingerprints, layers, batching)
    recipe/ release/ models/ workflow/ finetune/   one folder per package of src/finet2i
    stages/          one file per stage, named for it (test_<stage>*.py), and the parsers' hostile-input tests
    preflight/ explore/ cli/             the tools around a run, and the `finet2i` command
    docs/            README.md and docs/*.md hold together (index, links, no history)
    workflow_runs/   whole runs of the workflow: the shared demo run (local executor), the local Slurm cluster,
                     reruns and resumes, the explorer in a browser
    support/         helpers (support.workflow runs the real workflow in a throwaway copy) and the fixture
                     modules registered below: tiny LLMs and VLMs with their vLLM engines, diffusion models,
                     release samples, a small release to fine-tune on with the tiny SD-XL and CLIP, the local
                     Slurm cluster (each built once per session, on first use)
"""

from __future__ import annotations

import sys

import pytest
from support.workflow import demo_yaml

pytest_plugins = ["support.llm", "support.vlm", "support.generation", "support.slurm", "support.finetune"]


@pytest.fixture
def demo_config() -> dict:
    """config/demo.yaml as written (not validated), a fresh copy per test."""
    return demo_yaml()


@pytest.fixture(autouse=True)
def _no_snakemake_storage_registry_left():
    """A workflow parsed inside the test process (preflight's tests parse the Snakefile) leaves Snakemake's storage
    registry in snakemake.workflow's globals; starting a vLLM engine later in the same process scans every module's
    attributes and fails on it ("'StorageProviderProxy' object has no attribute 'get'"). A run never mixes the two
    (a job is its own process), so the tests clear it after each test."""
    yield
    module = sys.modules.get("snakemake.workflow")
    if module is not None:
        vars(module).pop("storage", None)
