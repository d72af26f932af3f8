"""The report's tables: a title, headers and rows of plain values, formatted alike in Markdown and HTML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finet2i.reporting.funnel import FunnelRow


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Any]]
    note: str = ""  # shown under the title
    footer: str = ""  # shown under the table


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def pct(v: float | None) -> str | None:
    return None if v is None else f"{v * 100:.1f}%"


FUNNEL_ORDER_NOTE = ("Stages are listed in the pipeline's order (finet2i.core.pipeline); a stats file whose stage "
                     "the pipeline does not declare is listed after them. 'check': every shard's records add up "
                     "(in = kept + dropped) and each stage received exactly what the stage before it kept.")


def _check(r: FunnelRow) -> str:
    if r.inconsistent:
        return f"FLAG: {len(r.inconsistent)} shard(s) in != kept + dropped"
    if r.breaks:
        return f"FLAG: in != {r.upstream} kept on {len(r.breaks)} shard(s)"
    return f"OK (in = {r.upstream} kept)" if r.upstream else "OK"


def funnel_tables(rows: list[FunnelRow], comparison: list[dict[str, Any]]) -> list[Table]:
    funnel = Table(
        "Funnel (every stage's stats JSONs, summed over shards)",
        ["stage", "shards", "in", "kept", "dropped", "dropped by reason", "kept %", "seconds", "model",
         "check"],
        [[r.label, r.shards, r.records_in, r.kept, r.dropped_total,
          ", ".join(f"{k}: {v:,}" for k, v in sorted(r.dropped.items())) or "-",
          pct(r.kept / r.records_in) if r.records_in else None, round(r.seconds, 1),
          ", ".join(r.models) or "-",
          _check(r)]
         for r in rows],
        footer=FUNNEL_ORDER_NOTE)
    versus = Table(
        "The paper's funnel beside this run's (section 3; retention = kept / previous step)",
        ["step", "paper kept", "paper retention", "this run kept", "this run retention"],
        [[c["step"], c["paper_kept"], pct(c["paper_retention"]), c["ours_kept"], pct(c["ours_retention"])]
         for c in comparison],
        note="The paper's prompts count is after the < 5 words cut; 'generate' is prompts x 4 subsets; "
             "the real-image retention is 168,424 of 421,863 downloaded (Table 3).")
    return [funnel, versus]
