"""The funnel: every stage's stats JSONs summed per stage (and subset), in pipeline order, and the paper's.

Stage names are ``finet2i.core.pipeline``'s: a stats JSON's ``stage`` field is the name of the stage (and rule)
that wrote it. A stage the pipeline does not declare (an old results folder, a stage not yet declared) is
shown after the declared ones rather than dropped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finet2i.core import pipeline, shards
from finet2i.recipe import paper


@dataclass
class FunnelRow:
    """One stage (and subset, for per-subset stages) summed over its shards."""

    stage: str
    subset: str | None
    shards: int = 0
    records_in: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    models: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)  # shards whose records_in != kept + dropped
    per_shard: dict[str, list[int]] = field(default_factory=dict)  # shard -> [records_in, kept]
    upstream: str | None = None  # label of the row whose kept records this row received (conservation)
    breaks: list[str] = field(default_factory=list)  # shards whose records_in != the upstream's kept there

    @property
    def label(self) -> str:
        return f"{self.stage} [{self.subset}]" if self.subset else self.stage

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


def _subset_of(path: Path, stats: dict[str, Any], subsets: Sequence[str]) -> str | None:
    extra = stats.get("extra") or {}
    if extra.get("subset"):
        return str(extra["subset"])
    # Per-subset stages keep their subset in the path: results/generate/pe_ar/00003.stats.json.
    for part in path.parts[:-1]:
        if part in subsets:
            return part
    return None


def read_stats(paths: Iterable[str | os.PathLike[str]], subsets: Sequence[str]) -> list[FunnelRow]:
    """Aggregate stats JSONs into funnel rows, in pipeline order (``finet2i.core.pipeline.stage_order()``)."""
    rows: dict[tuple[str, str | None], FunnelRow] = {}
    for p in map(Path, paths):
        try:
            s = shards.read_json(p)
            stage, shard = str(s["stage"]), str(s["shard"])
            records_in, kept = int(s["records_in"]), int(s["kept"])
            dropped = {str(k): int(v) for k, v in (s.get("dropped") or {}).items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{p}: not a stage stats JSON (needs stage, shard, records_in, kept, dropped): "
                             f"{e}; rerun the stage that wrote it") from e
        subset = _subset_of(p, s, subsets)
        row = rows.setdefault((stage, subset), FunnelRow(stage, subset))
        row.shards += 1
        row.records_in += records_in
        row.kept += kept
        for k, v in dropped.items():
            row.dropped[k] = row.dropped.get(k, 0) + v
        row.per_shard[shard] = [records_in, kept]
        row.seconds += float(s.get("seconds") or 0.0)
        if s.get("model") and s["model"] not in row.models:
            row.models.append(str(s["model"]))
        if records_in != kept + sum(dropped.values()):
            row.inconsistent.append(f"{shard} ({p}): in {records_in} != kept {kept} + dropped "
                                    f"{sum(dropped.values())}")

    order = pipeline.stage_order()

    def rank(key: tuple[str, str | None]) -> tuple[int, str, str]:
        stage, subset = key
        return (order.index(stage) if stage in order else len(order)), stage, subset or ""

    return [rows[k] for k in sorted(rows, key=rank)]


def _kept(rows: list[FunnelRow], stage: str, subset: str | None = None) -> int | None:
    sel = [r for r in rows if r.stage == stage and (subset is None or r.subset == subset)]
    return sum(r.kept for r in sel) if sel else None


def _records_in(rows: list[FunnelRow], stage: str, subset: str | None = None) -> int | None:
    sel = [r for r in rows if r.stage == stage and (subset is None or r.subset == subset)]
    return sum(r.records_in for r in sel) if sel else None


def real_kept(rows: list[FunnelRow]) -> int | None:
    """The real images packaged (``package_real``); before packaging, what the last curated stage kept."""
    packaged = _kept(rows, "package_real")
    if packaged is not None:
        return packaged
    curated_stages = {s.name for s in pipeline.STAGES if s.branch == pipeline.CURATED}
    curated = [r for r in rows if r.stage in curated_stages]
    return curated[-1].kept if curated else None


def paper_comparison(rows: list[FunnelRow], subsets: Sequence[str]) -> list[dict[str, Any]]:
    """Our kept counts beside the paper's; retention (kept / in) is what compares across scales."""
    out: list[dict[str, Any]] = []
    previous_paper: int | None = None
    for stage, paper_kept in paper.FUNNEL.items():
        paper_in = previous_paper if stage != "generate" else None
        ours_kept, ours_in = _kept(rows, stage), _records_in(rows, stage)
        out.append({
            "step": stage, "paper_kept": paper_kept,
            "paper_retention": (paper_kept / paper_in) if paper_in else None,
            "ours_kept": ours_kept,
            "ours_retention": (ours_kept / ours_in) if ours_kept is not None and ours_in else None,
        })
        previous_paper = paper_kept
    per_subset_in = paper.FUNNEL["attributes"]
    for subset in subsets:
        if subset not in paper.SUBSET_COUNTS:
            continue
        k, i = _kept(rows, "pair_filter", subset), _records_in(rows, "generate", subset)
        out.append({"step": f"pair_filter [{subset}]", "paper_kept": paper.SUBSET_COUNTS[subset],
                    "paper_retention": paper.SUBSET_COUNTS[subset] / per_subset_in,
                    "ours_kept": k, "ours_retention": (k / i) if k is not None and i else None})
    out.append({"step": "real images", "paper_kept": paper.REAL_COUNT,
                "paper_retention": paper.REAL_COUNT / paper.REAL_DOWNLOADED, "ours_kept": real_kept(rows),
                "ours_retention": None})
    return out


def check_conservation(rows: list[FunnelRow], upstream: Mapping[str, str | None]) -> None:
    """Mark every row whose shards received other counts than its upstream stage kept there.

    Each stage reads the kept rows of the stage ``upstream`` names (``finet2i.core.pipeline.upstream`` under the
    run's config), so
    per shard ``records_in`` must equal the upstream's ``kept``; a difference means records appeared or vanished
    between two stages without a reason (the jobs refuse such input, see ``shards.check_conserved``; the report
    shows it for outputs made otherwise). Sets ``upstream`` and ``breaks`` on the rows.
    """
    by_key = {(r.stage, r.subset): r for r in rows}
    for r in rows:
        if (name := upstream.get(r.stage)) is None:
            continue
        up = pipeline.stage(name)
        src = by_key.get((up.name, r.subset if up.per_subset else None))
        if src is None:
            continue
        r.upstream = src.label
        r.breaks = [f"{shard}: in {n_in} != {src.label} kept {src.per_shard[shard][1]}"
                    for shard, (n_in, _) in sorted(r.per_shard.items())
                    if shard in src.per_shard and src.per_shard[shard][1] != n_in]
