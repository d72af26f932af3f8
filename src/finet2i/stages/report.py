"""Stage ``report`` (paper section 4 and appendix A): the funnel and the distribution analysis of a run.

The report reads only small files: every stage's ``*.stats.json`` (the funnel: records in, kept, dropped by
reason, seconds, model), the package stage's per-shard parquet indexes (one row per packaged sample with the
release's keys; the distribution tables), and the dedup stage's similarity histogram. It never rescans images
or prompts, so it stays cheap at 4,480 shards and can be rerun after any stage.

Outputs (``out_dir``): ``report.html`` (self-contained: figures embedded as PNG), ``report.md`` (tables, with
figures in ``figures/``), ``funnel.json`` (machine-readable funnel, checks and distances to the paper).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finet2i import paper, shards

log = logging.getLogger(__name__)

# Pipeline order; stages not listed (a new stage, a renamed one) are shown after the known ones.
STAGE_ORDER = ("specs", "prompts", "embed", "dedup_group", "dedup", "guard", "attributes", "enhance",
               "generate", "pair_filter", "curated_ingest", "curated_score", "curated_dedup",
               "curated_caption", "curated_enhance", "curated", "package")

INDEX_COLUMNS = ("style", "prompt_category", "subcategory", "task", "image_resolution", "image_aspect_ratio",
                 "length", "enhanced_length", "aesthetic_predictor_v_2_5_score", "subset")

DEMO_BANNER = ("DEMO OUTPUT IS NOT A DATASET: this run used tiny random-weight models and demo thresholds; "
               "its numbers only show that the pipeline runs end to end.")


# ---------------------------------------------------------------------------------------------- funnel

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
    # Per-subset stages keep their subset in the path: results/images/pe_ar/00003.stats.json.
    for part in path.parts[:-1]:
        if part in subsets:
            return part
    return None


def read_stats(paths: Iterable[str | os.PathLike[str]], subsets: Sequence[str]) -> list[FunnelRow]:
    """Aggregate stats JSONs into funnel rows, in pipeline order."""
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
        row.seconds += float(s.get("seconds") or 0.0)
        if s.get("model") and s["model"] not in row.models:
            row.models.append(str(s["model"]))
        if records_in != kept + sum(dropped.values()):
            row.inconsistent.append(f"{shard} ({p}): in {records_in} != kept {kept} + dropped "
                                    f"{sum(dropped.values())}")

    def order(key: tuple[str, str | None]) -> tuple[float, str, str]:
        stage, subset = key
        if stage in STAGE_ORDER:
            rank = float(STAGE_ORDER.index(stage))
        elif stage.startswith("curated"):
            rank = STAGE_ORDER.index("curated") - 0.5
        else:
            rank = float(len(STAGE_ORDER))
        return rank, stage, subset or ""

    return [rows[k] for k in sorted(rows, key=order)]


def _kept(rows: list[FunnelRow], stage: str, subset: str | None = None) -> int | None:
    sel = [r for r in rows if r.stage == stage and (subset is None or r.subset == subset)]
    return sum(r.kept for r in sel) if sel else None


def _records_in(rows: list[FunnelRow], stage: str, subset: str | None = None) -> int | None:
    sel = [r for r in rows if r.stage == stage and (subset is None or r.subset == subset)]
    return sum(r.records_in for r in sel) if sel else None


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
    real = _kept(rows, "package", "real")
    if real is None:
        curated = [r for r in rows if r.stage.startswith("curated")]
        real = curated[-1].kept if curated else None
    out.append({"step": "real images", "paper_kept": paper.REAL_COUNT,
                "paper_retention": paper.REAL_COUNT / paper.REAL_DOWNLOADED, "ours_kept": real,
                "ours_retention": None})
    return out


# ------------------------------------------------------------------------------------------ distributions

def read_indexes(paths: Iterable[str | os.PathLike[str]]) -> dict[str, list[Any]]:
    """Columns of the packaged samples' parquet indexes (missing columns read as None)."""
    import pyarrow.parquet as pq

    cols: dict[str, list[Any]] = {c: [] for c in INDEX_COLUMNS}
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: dataset index not found; run the package stage first")
        # Only the columns the report uses: an index also holds the prompts, which would cost memory here.
        present = [c for c in INDEX_COLUMNS if c in pq.read_schema(p).names]
        table = pq.read_table(p, columns=present)
        n = table.num_rows
        for c in INDEX_COLUMNS:
            if c in table.column_names:
                cols[c].extend(table.column(c).to_pylist())
            elif c == "subset":  # results/dataset/{subset}/train-{shard}.parquet
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
        i = min(int(_bisect(edges, float(v))), len(counts) - 1)
        counts[i] += 1
    return counts


def _bisect(edges: Sequence[float], v: float) -> int:
    import bisect

    return bisect.bisect_right(edges, v) - 1


# ------------------------------------------------------------------------------------------------ figures

def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_shares(ours: dict[str, dict[str, float]], target: dict[str, dict[str, float]]) -> bytes:
    """Fig. 4: category, style and task shares, ours beside the paper's."""
    plt = _plt()
    names = ["category", "style", "task"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for ax, name in zip(axes, names, strict=True):
        labels = list(target[name])
        y = range(len(labels))
        ax.barh([i + 0.2 for i in y], [target[name][k] * 100 for k in labels], height=0.4, label="paper")
        ax.barh([i - 0.2 for i in y], [ours.get(name, {}).get(k, 0.0) * 100 for k in labels], height=0.4,
                label="this run")
        ax.set_yticks(list(y), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("% of synthetic samples")
        ax.set_title(name)
    axes[0].legend()
    return _png(fig)


def fig_hist(series: dict[str, tuple[list[float], list[int]]], title: str, xlabel: str,
             vline: dict[str, float] | None = None) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, (edges, counts) in series.items():
        total = sum(counts) or 1
        widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
        ax.bar(edges[:-1], [c / total * 100 for c in counts], width=widths, align="edge", alpha=0.55,
               label=f"{name} (n={sum(counts):,})")
    # Zoom on the bins that hold data (and the thresholds): scores span 0-10 but sit within 4-8.
    used = [x for edges, counts in series.values()
            for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True) if c for x in (a, b)]
    xs = used + list((vline or {}).values())
    if xs:
        pad = 0.05 * (max(xs) - min(xs) or 1.0)
        ax.set_xlim(min(xs) - pad, max(xs) + pad)
    top = ax.get_ylim()[1]
    for i, (label, x) in enumerate((vline or {}).items()):
        ax.axvline(x, color="red", linestyle="--", linewidth=1)
        ax.annotate(f" {label}", (x, top * (0.93 - 0.08 * i)), color="red", fontsize=8, ha="left")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("%")
    ax.legend(fontsize=8)
    return _png(fig)


# ------------------------------------------------------------------------------------------------ tables

@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Any]]
    note: str = ""


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _pct(v: float | None) -> str | None:
    return None if v is None else f"{v * 100:.1f}%"


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
        rows.append([*key, *[raw.get(s, 0) for s in subsets], sum(raw.values()), _pct(ours.get(k, 0.0)),
                     _pct(target.get(k))])
    return Table(title, [*key_headers, *subsets, "total", "share", "paper share"], rows, note)


# ------------------------------------------------------------------------------------------------ main

def funnel_tables(rows: list[FunnelRow], comparison: list[dict[str, Any]]) -> list[Table]:
    funnel = Table(
        "Funnel (every stage's stats JSONs, summed over shards)",
        ["stage", "shards", "in", "kept", "dropped", "dropped by reason", "kept %", "seconds", "model",
         "check"],
        [[r.label, r.shards, r.records_in, r.kept, r.dropped_total,
          ", ".join(f"{k}: {v:,}" for k, v in sorted(r.dropped.items())) or "-",
          _pct(r.kept / r.records_in) if r.records_in else None, round(r.seconds, 1),
          ", ".join(r.models) or "-",
          f"FLAG: {len(r.inconsistent)} shard(s) in != kept + dropped" if r.inconsistent else "OK"]
         for r in rows])
    versus = Table(
        "The paper's funnel beside this run's (section 3; retention = kept / previous step)",
        ["step", "paper kept", "paper retention", "this run kept", "this run retention"],
        [[c["step"], c["paper_kept"], _pct(c["paper_retention"]), c["ours_kept"], _pct(c["ours_retention"])]
         for c in comparison],
        note="The paper's prompts count is after the < 5 words cut; 'generate' is prompts x 4 subsets; "
             "the real-image retention is 168,424 of 421,863 downloaded (Table 3).")
    return [funnel, versus]


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


def _masks(idx: dict[str, list[Any]], subsets: Sequence[str]) -> dict[str, list[bool]]:
    return {"synthetic": [s in subsets for s in idx["subset"]], "real": [s == "real" for s in idx["subset"]]}


def _values(idx: dict[str, list[Any]], column: str, mask: list[bool]) -> list[float]:
    return [float(v) for v, m in zip(idx[column], mask, strict=True) if m and v is not None]


def aesthetic_bins_table(idx: dict[str, list[Any]], subsets: Sequence[str]) -> Table:
    rows = []
    for name, mask in _masks(idx, subsets).items():
        vals = _values(idx, "aesthetic_predictor_v_2_5_score", mask)
        for label, paper_share in paper.AESTHETIC_BINS[name].items():
            lo, hi = (float(x) for x in label.strip("[)").split(","))
            ours = sum(lo <= v < hi for v in vals) / len(vals) if vals else None
            rows.append([name, label, _pct(ours), _pct(paper_share)])
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


def figures(d: Distributions, idx: dict[str, list[Any]], subsets: Sequence[str],
            similarity: dict[str, Any] | None, config: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    """key -> (caption, PNG bytes); a figure without data is left out."""
    out: dict[str, tuple[str, bytes]] = {}
    masks = _masks(idx, subsets)
    if any(d.ours.values()):
        out["shares"] = ("Fig. 4: category, style and task shares, this run vs the paper",
                         fig_shares(d.ours, paper.marginals()))
    len_edges = [float(x) for x in range(0, 305, 10)]
    lengths: dict[str, tuple[list[float], list[int]]] = {}
    for name, mask in masks.items():
        for col, label in (("length", "original"), ("enhanced_length", "enhanced")):
            vals = _values(idx, col, mask)
            if vals:
                lengths[f"{name} {label}"] = (len_edges, histogram(vals, len_edges))
    if lengths:
        out["lengths"] = ("Fig. 9: prompt length in words (the last bin holds >= 290)",
                          fig_hist(lengths, "Prompt length", "words"))
    aes_edges = [x / 4 for x in range(0, 41)]  # 0.25-wide bins over 0..10
    aes: dict[str, tuple[list[float], list[int]]] = {}
    for name, mask in masks.items():
        vals = _values(idx, "aesthetic_predictor_v_2_5_score", mask)
        if vals:
            aes[name] = (aes_edges, histogram(vals, aes_edges))
    if aes:
        syn_thr = float((config.get("pair_filter") or {}).get("aesthetic_threshold", 5.5))
        real_thr = float((config.get("curated") or {}).get("aesthetic_threshold", 6.5))
        out["aesthetic"] = ("Fig. 5: Aesthetic Predictor V2.5 scores, synthetic vs real",
                            fig_hist(aes, "Aesthetic score", "score",
                                     {f"synthetic > {syn_thr}": syn_thr, f"real >= {real_thr}": real_thr}))
    if similarity is not None:
        thr = similarity["threshold"]
        out["similarity"] = (
            f"Fig. 3: cosine similarity of prompt pairs in a random sample (n={similarity['sample_size']}), "
            f"dedup threshold {thr}",
            fig_hist({"prompt pairs": (similarity["bin_edges"], similarity["counts"])}, "Cosine similarity",
                     "cosine similarity", {f"threshold {thr}": thr}))
    return out


def run_report(stats_paths: list[str], index_paths: list[str], similarity_histogram: str | None,
               out_dir: str, *, demo: bool, config: dict[str, Any]) -> dict[str, Any]:
    """Write report.html, report.md, funnel.json and figures/ under ``out_dir``; return the funnel JSON."""
    out = Path(out_dir)
    subsets = list((config.get("generate") or {}).get("subsets") or paper.SUBSETS)

    rows = read_stats(stats_paths, [*subsets, "real"])
    flags = [f"{r.label}: shard {bad}" for r in rows for bad in r.inconsistent]
    comparison = paper_comparison(rows, subsets)
    idx = read_indexes(index_paths)
    n_samples = len(idx["subset"])
    dist = distributions(idx, subsets)
    similarity = read_similarity(similarity_histogram)
    if similarity is None:
        flags.append("dedup similarity histogram missing: Fig. 3 not drawn")
    if not n_samples:
        flags.append("no packaged samples: the distribution tables are empty")
    figs = figures(dist, idx, subsets, similarity, config)
    for key, (_, png) in figs.items():
        _write_bytes(out / "figures" / f"{key}.png", png)
    (out / "figures").mkdir(parents=True, exist_ok=True)  # declared output, even when no figure has data

    funnel = {
        "demo": demo,
        "stages": [{**asdict(r), "label": r.label} for r in rows],
        "paper_comparison": comparison,
        "distances_to_paper": dist.distances,
        "samples": {s: sum(x == s for x in idx["subset"]) for s in [*subsets, "real"]},
        "flags": flags,
        "similarity_histogram": similarity,
    }
    shards_cfg = config.get("shards") or {}
    meta = {"shards": shards_cfg.get("count"), "specs per shard": shards_cfg.get("specs_per_shard"),
            "seed": config.get("seed"), "stats files": len(stats_paths), "index files": len(index_paths),
            "packaged samples": n_samples}
    tables = [*funnel_tables(rows, comparison), *distribution_tables(dist, idx, subsets),
              aesthetic_bins_table(idx, subsets)]
    shards.write_json(out / "funnel.json", funnel)
    _write_text(out / "report.md", render_markdown(tables, figs, flags, meta, demo))
    _write_text(out / "report.html", render_html(tables, figs, flags, meta, demo))
    log.info("report: %d stage rows, %d samples, %d flags -> %s", len(rows), n_samples, len(flags), out)
    return funnel


def _write_bytes(path: Path, data: bytes) -> None:
    with shards.atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _write_text(path: Path, text: str) -> None:
    with shards.atomic_path(path) as tmp:
        tmp.write_text(text)


# ------------------------------------------------------------------------------------------------ render

TITLE = "Fine-T2I pipeline report"


def render_markdown(tables: list[Table], figures: dict[str, tuple[str, bytes]], flags: list[str],
                    meta: dict[str, Any], demo: bool) -> str:
    lines = [f"# {TITLE}", ""]
    if demo:
        lines += [f"> **{DEMO_BANNER}**", ""]
    lines += [", ".join(f"{k}: {_fmt(v)}" for k, v in meta.items()), ""]
    lines += ["## Flags", ""] + ([f"- {f}" for f in flags] or ["- none"]) + [""]
    for t in tables:
        lines += [f"## {t.title}", ""]
        if t.note:
            lines += [f"_{t.note}_", ""]
        lines.append("| " + " | ".join(t.headers) + " |")
        lines.append("|" + "---|" * len(t.headers))
        for r in t.rows:
            lines.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in r) + " |")
        lines.append("")
    for key, (caption, _) in figures.items():
        lines += [f"## {caption}", "", f"![{caption}](figures/{key}.png)", ""]
    return "\n".join(lines)


_CSS = """
body{font-family:sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
td,th{border:1px solid #bbb;padding:2px 8px;font-size:13px;text-align:right}
td:first-child,th:first-child{text-align:left}
th{background:#eee}
.demo{background:#fdd;border:2px solid #c00;padding:0.8em;font-weight:bold}
.flag{color:#a00}
.note{color:#555;font-style:italic}
"""


def render_html(tables: list[Table], figures: dict[str, tuple[str, bytes]], flags: list[str],
                meta: dict[str, Any], demo: bool) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(TITLE)}"
             f"{' (DEMO)' if demo else ''}</title><style>{_CSS}</style></head><body>", f"<h1>{e(TITLE)}</h1>"]
    if demo:
        parts.append(f"<p class='demo'>{e(DEMO_BANNER)}</p>")
    parts.append("<p>" + e(", ".join(f"{k}: {_fmt(v)}" for k, v in meta.items())) + "</p>")
    parts.append("<h2>Flags</h2><ul>" + ("".join(f"<li class='flag'>{e(f)}</li>" for f in flags)
                                         or "<li>none</li>") + "</ul>")
    for t in tables:
        parts.append(f"<h2>{e(t.title)}</h2>")
        if t.note:
            parts.append(f"<p class='note'>{e(t.note)}</p>")
        head = "".join(f"<th>{e(h)}</th>" for h in t.headers)
        body = "".join("<tr>" + "".join(
            f"<td{' class=flag' if isinstance(v, str) and v.startswith('FLAG') else ''}>{e(_fmt(v))}</td>"
            for v in r) + "</tr>" for r in t.rows)
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    for caption, png in figures.values():
        data = base64.b64encode(png).decode()
        parts.append(f"<h2>{e(caption)}</h2><img alt='{e(caption)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)

