"""Preflight's network check: which rules download under the config, and whether they run where the internet is
(a localrule runs on the login node; a partition is the user's to know)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finet2i.preflight.report import GO, WARN, Report, names


def network_rules(config: dict[str, Any], workdir: Path) -> dict[str, str]:
    """Rules that reach the internet under this config, and why."""
    from finet2i.core import pipeline
    from finet2i.workflow.config import source_path

    out: dict[str, str] = {}
    if not pipeline.enabled("curated_ingest", config):
        return out
    entries = config["curated"]["sources"]
    kind = [e.get("type") if isinstance(e, dict) else None for e in entries]
    apis = sorted({str(k) for k in kind if k in ("pexels", "pixabay")})
    if apis:
        out["curated_list"] = f"asks the {' and '.join(apis)} API(s) for their photo lists"
    remote = [source_path(e) if k in (None, "folder", "url_list") else str(e.get("name", k))
              for e, k in zip(entries, kind, strict=True)
              if k in ("url_list", "unsplash_lite", "pexels", "pixabay")
              or (k in (None, "folder") and ("://" in source_path(e) or (workdir / source_path(e)).is_file()))]
    if remote:
        out["curated_ingest"] = f"downloads the photos of {names(remote, 3)}"
    return out


def _check_network(rules: dict[str, Any], config: dict[str, Any], workdir: Path, profile: str | Path | None,
                   report: Report) -> None:
    needs = network_rules(config, workdir)
    if not needs:
        report.add(GO, "network", "no rule downloads anything (models are fetched beforehand by fetch-models)")
        return
    for name, why in needs.items():
        info = rules.get(name)
        if info is not None and info.local:
            report.add(GO, "network", f"rule {name} {why}; it is a localrule: it runs where Snakemake runs "
                                      f"(the login node, which has network)")
        elif profile is None:
            report.add(GO, "network", f"rule {name} {why}; it runs on this machine (no cluster profile)")
        else:
            report.add(WARN, "network", f"rule {name} {why} and is submitted to a compute node: if your compute "
                                        f"nodes are offline, run `snakemake --profile {profile} --until {name} "
                                        f"--executor local` (or `--cores N` without the profile) on the login node "
                                        f"first, then the full run")
