"""Preflight's checks of what a run reads before any job: every model the enabled stages load (present in the
Hugging Face cache or at its path, pinned to a commit, on a filesystem that compute nodes see) and the curated
sources."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from finet2i.preflight.report import GO, NOGO, WARN, Report

# Paths that are local to each node (a cache there is empty on the compute nodes).
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/scratch/local", "/local", "/localscratch")


def _node_local(path: Path) -> str | None:
    resolved = str(path.resolve())
    tmp = os.environ.get("TMPDIR")
    for prefix in (*NODE_LOCAL, *([tmp] if tmp else [])):
        if resolved == prefix or resolved.startswith(prefix.rstrip("/") + "/"):
            return prefix
    return None


def _check_models(config: dict[str, Any], workdir: Path, report: Report) -> None:
    from huggingface_hub import constants

    from finet2i.models.fetch import GATED_IDS, TOKEN_VAR, license_page
    from finet2i.models.spec import ModelNotAvailable, ModelSpec, is_pinned
    from finet2i.workflow.config import used_model_keys

    keys = used_model_keys(config)
    missing, hub = [], False
    for key in keys:
        spec = ModelSpec.from_config(f"models.{key}", config["models"][key], base_dir=workdir)
        hub = hub or spec.id is not None
        try:
            where = Path(spec.local_path())
        except ModelNotAvailable as e:
            detail = str(e)
            if spec.id in GATED_IDS:
                detail += (f"; {spec.id} is gated: accept its license at {license_page(spec.id)} (logged in) and "
                           f"put a read token in {TOKEN_VAR} before fetching")
            report.add(NOGO, "model", detail)
            missing.append(key)
            continue
        if spec.id is not None and not is_pinned(spec.revision):
            report.add(WARN, "model", f"{spec.key}: {spec.label} is in the cache but not pinned to a commit: run "
                                      f"`finet2i fetch-models --pin <config>` so that moved weights rerun stages")
        else:
            report.add(GO, "model", f"{spec.key}: {spec.label}" + (f" ({where})" if spec.id else ""))
        local = None if spec.id else _node_local(where)  # hub models: the cache's row below says it once
        if local:
            report.add(WARN, "model", f"{spec.key}: {where} is under {local}, which is local to each node: "
                                      f"compute nodes will not find it; use a shared filesystem")
    if hub:
        cache = Path(constants.HF_HUB_CACHE)
        local = _node_local(cache)
        if local:
            report.add(WARN, "model cache", f"the Hugging Face cache {cache} is under {local}, local to each node: "
                                            f"set HF_HOME to a shared filesystem (project or scratch space) that "
                                            f"the compute nodes mount, and fetch into it")
        else:
            report.add(GO, "model cache", f"{cache} (set HF_HOME to move it; it must be on a filesystem the "
                                          f"compute nodes mount)")
    if missing:
        report.add(NOGO, "models", f"{len(missing)} of {len(keys)} model(s) missing ({', '.join(missing)}): on a "
                                   f"node with network run `finet2i fetch-models <your config>` (add --pin, and "
                                   f"--accept-license aesthetic_head after reading its license)")


def _check_sources(config: dict[str, Any], workdir: Path, report: Report) -> None:
    """Each photo site's terms as the config states them (a source without is a config NO-GO already), then
    what is missing (a folder, a key)."""
    from finet2i.sources.terms import describe
    from finet2i.workflow.config import missing_sources, terms_errors

    curated = config.get("curated") or {}
    for problem in terms_errors(config) if curated.get("enabled", True) else []:
        report.add(NOGO, "terms", problem)
    for i, entry in enumerate(curated.get("sources") or [] if curated.get("enabled", True) else []):
        line = describe(entry, f"curated.sources[{i}]")
        if line and not any(f"curated.sources[{i}]" in c.detail for c in report.checks if c.check == "terms"):
            report.add(GO, "terms", line)
    for problem in missing_sources(config, workdir):
        report.add(NOGO, "curated source", problem)
