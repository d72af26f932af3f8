"""The packaged samples' distributions: the dataset indexes read into the paper's tables 5 to 8 and the
shares of Fig. 4, plus the dedup stage's similarity histogram (Fig. 3).

Only the index columns the report uses are read (an index also holds the prompts); nothing here rescans
images or prompts.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finet2i.core import shards
from finet2i.recipe import paper
from finet2i.reporting.tables import Table, pct

INDEX_COLUMNS = ("style", "prompt_category", "subcategory", "task", "image_resolution", "image_aspect_ratio",
                 "length", "enhanced_length", "aesthetic_predictor_v_2_5_score", "subset")


def read_indexes(paths: Iterable[str | os.PathLike[str]]) -> dict[str, list[Any]]:
    """Columns of the packaged samples' parquet indexes (missing columns read as None)."""
    import pyarrow.parquet as pq

    cols: dict[str, list[Any]] = {c: [] for c in INDEX_COLUMNS}
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: dataset index not found; run the package stage first")
        # Only the columns the report uses: a finished-sample table also holds the bytes and the prompts.
        names = pq.read_schema(p).names
        present = [c for c in INDEX_COLUMNS if c in names]
        kept_filter = [("kept", "=", True)] if "kept" in names else None  # package tables list drops too
        table = pq.read_table(p, columns=present, filters=kept_filter)
        n = table.num_rows
        for c in INDEX_COLUMNS:
            if c in table.column_names:
                cols[c].extend(table.column(c).to_pylist())
            elif c == "subset":  # a table without the column: its folder is the subset
                cols[c].extend([p.parent.name] * n)
            else:
                cols[c].extend([None] * n)
    cols["prompt_category"] = [category_label(v) for v in cols["prompt_category"]]
    cols["task"] = [task_label(v) for v in cols["task"]]
    return cols


def category_label(value: Any) -> str | None:
    """The release writes ``prompt_category`` as ``"People: Portrait"``; the tables count top-level categories."""
    if value is None:
        return None
    return str(value).split(":", 1)[0].strip()


def task_label(value: Any) -> str:
    """The release writes ``task`` as a list of components or null; the paper's Table 7 labels them
    ``"Colors + Counting"`` and ``"Not Specified"``."""
    if value is None or (isinstance(value, list | tuple) and not value):
        return "Not Specified"
    if isinstance(value, list | tuple):
        return " + ".join(str(v) for v in value)
    return str(value)


def resolution_label(value: Any) -> str | None:
    """``[1024, 768]``, ``(1024, 768)``, ``"1024x768"`` or ``"[1024, 768]"`` -> ``"1024x768"`` (w x h)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{int(value[0])}x{int(value[1])}"
    nums = re.findall(r"\d+", str(value))
    return f"{nums[0]}x{nums[1]}" if len(nums) == 2 else str(value)


def crosstab(keys: Sequence[Any], subsets: Sequence[str], order: Sequence[str]) -> dict[str, dict[str, int]]:
    """Counts of each key per subset (subsets outside ``order`` and null keys are left out)."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(order, 0))
    for k, s in zip(keys, subsets, strict=True):
        if k is None or s not in order:
            continue
        table[str(k)][s] += 1
    return dict(table)


def shares(counts: dict[Any, int]) -> dict[Any, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def histogram(values: Iterable[Any], edges: Sequence[float]) -> list[int]:
    """Counts per [edge_i, edge_i+1); the last bin also takes everything above (an open tail)."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v < edges[0]:
            continue
        i = min(bisect.bisect_right(edges, float(v)) - 1, len(counts) - 1)
        counts[i] += 1
    return counts


def masks(idx: dict[str, list[Any]], subsets: Sequence[str]) -> dict[str, list[bool]]:
    """Which index rows are synthetic samples and which real images."""
    return {"synthetic": [s in subsets for s in idx["subset"]], "real": [s == "real" for s in idx["subset"]]}


def values(idx: dict[str, list[Any]], column: str, mask: list[bool]) -> list[float]:
    return [float(v) for v, m in zip(idx[column], mask, strict=True) if m and v is not None]


@dataclass
class Distributions:
    """The synthetic samples' attribute tables (label -> subset -> count) and their shares."""

    tabs: dict[str, dict[str, dict[str, int]]]
    ours: dict[str, dict[str, float]]
    distances: dict[str, float | None]


def distributions(idx: dict[str, list[Any]], subsets: Sequence[str]) -> Distributions:
    synthetic = [s in subsets for s in idx["subset"]]
    syn = {c: [v for v, keep in zip(idx[c], synthetic, strict=True) if keep] for c in INDEX_COLUMNS}
    joint = [f"{c} / {s}" if c is not None and s is not None else None
             for c, s in zip(syn["prompt_category"], syn["subcategory"], strict=True)]
    tabs = {
        "style": crosstab(syn["style"], syn["subset"], subsets),
        "category": crosstab(syn["prompt_category"], syn["subset"], subsets),
        "subcategory": crosstab(joint, syn["subset"], subsets),
        "task": crosstab(syn["task"], syn["subset"], subsets),
    }
    ours = {k: shares({lab: sum(v.values()) for lab, v in t.items()}) for k, t in tabs.items()}
    target = paper.marginals()
    distances = {k: (paper.total_variation(ours[k], target[k]) if ours[k] else None) for k in tabs}
    return Distributions(tabs, ours, distances)


def _dist_table(title: str, key_headers: list[str], counts: dict[str, dict[str, int]],
                subsets: Sequence[str], target: dict[str, float], note: str = "") -> Table:
    """Rows: the paper's labels first (in its order), then any label the paper lacks; counts per subset,
    total, this run's share and the paper's share."""
    ours = shares({k: sum(v.values()) for k, v in counts.items()})
    labels = list(target) + sorted(k for k in counts if k not in target)
    rows = []
    for k in labels:
        raw = counts.get(k, {})
        key = k.split(" / ", 1) if len(key_headers) == 2 else [k]
        rows.append([*key, *[raw.get(s, 0) for s in subsets], sum(raw.values()), pct(ours.get(k, 0.0)),
                     pct(target.get(k))])
    return Table(title, [*key_headers, *subsets, "total", "share", "paper share"], rows, note)


def distribution_tables(d: Distributions, idx: dict[str, list[Any]], subsets: Sequence[str]) -> list[Table]:
    target = paper.marginals()
    tables = [
        _dist_table("Style x subset (Table 5)", ["style"], d.tabs["style"], subsets, target["style"]),
        _dist_table("Category x subset (Fig. 4a)", ["category"], d.tabs["category"], subsets,
                    target["category"]),
        _dist_table("Category / sub-category x subset (Table 6)", ["category", "sub-category"],
                    d.tabs["subcategory"], subsets, target["subcategory"]),
        _dist_table("Task x subset (Table 7)", ["task"], d.tabs["task"], subsets, target["task"],
                    note="Fig. 4c: 61.5% of the paper's prompts ask for no specific task."),
    ]
    resolutions = [f"{a or '?'} {resolution_label(r)}" if r is not None else None
                   for a, r in zip(idx["image_aspect_ratio"], idx["image_resolution"], strict=True)]
    res = crosstab(resolutions, idx["subset"], [*subsets, "real"])
    tables.append(Table("Resolutions x subset (Table 8)",
                        ["aspect ratio, resolution", *subsets, "real", "total"],
                        [[k, *v.values(), sum(v.values())] for k, v in sorted(res.items())],
                        note="Table 8 lists the pre-defined sizes; the paper publishes no counts."))
    tables.append(Table(
        "Distance to the paper's distributions (synthetic samples)",
        ["attribute", "total variation", "samples"],
        [[k, None if v is None else round(v, 4), sum(sum(c.values()) for c in d.tabs[k].values())]
         for k, v in d.distances.items()],
        note="0 = the paper's distribution; the taxonomy test holds sampled specs within 0.02."))
    return tables


def aesthetic_bins_table(idx: dict[str, list[Any]], subsets: Sequence[str]) -> Table:
    rows = []
    for name, mask in masks(idx, subsets).items():
        vals = values(idx, "aesthetic_predictor_v_2_5_score", mask)
        for label, paper_share in paper.AESTHETIC_BINS[name].items():
            lo, hi = (float(x) for x in label.strip("[)").split(","))
            ours = sum(lo <= v < hi for v in vals) / len(vals) if vals else None
            rows.append([name, label, pct(ours), pct(paper_share)])
    return Table("Aesthetic score bins quoted in section 4 (Fig. 5)", ["set", "bin", "this run", "paper"],
                 rows)


def read_similarity(path: str | None) -> dict[str, Any] | None:
    """The dedup stage's ``{bin_edges, counts, threshold, sample_size}``; None when it was not written."""
    if not path or not Path(path).exists():
        return None
    sim = shards.read_json(path)
    try:
        edges = [float(x) for x in sim["bin_edges"]]
        counts = [int(x) for x in sim["counts"]]
        threshold = float(sim["threshold"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: expected {{bin_edges, counts, threshold, sample_size}} ({e}); "
                         f"rerun the dedup stage") from e
    if len(edges) != len(counts) + 1:
        raise ValueError(f"{path}: {len(edges)} bin_edges for {len(counts)} counts (need one edge more)")
    return {"bin_edges": edges, "counts": counts, "threshold": threshold,
            "sample_size": sim.get("sample_size")}
