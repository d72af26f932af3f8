"""The paper's figures drawn from this run's numbers, as PNG bytes.

matplotlib is imported inside the functions (Agg backend): importing the report must not pull it in.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from finet2i.recipe import paper
from finet2i.reporting.distributions import Distributions, histogram, masks, values


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Figures fit a laptop screen: at most this wide in inches at DPI (990 px, inside a 1300 px window with margins).
DPI = 110
MAX_WIDTH_IN = 9.0


def shares_figure(ours: dict[str, dict[str, float]], target: dict[str, dict[str, float]]) -> Any:
    """Fig. 4: category, style and task shares, ours beside the paper's; the panels stacked (one per attribute,
    each as tall as its labels need) and the legend above them, clear of every label."""
    plt = _plt()
    names = ["category", "style", "task"]
    heights = [max(len(target[n]), 2) for n in names]
    fig, axes = plt.subplots(3, 1, figsize=(MAX_WIDTH_IN, 0.28 * sum(heights) + 2.2),
                             gridspec_kw={"height_ratios": heights}, constrained_layout=True)
    for ax, name in zip(axes, names, strict=True):
        labels = list(target[name])
        y = range(len(labels))
        ax.barh([i + 0.2 for i in y], [target[name][k] * 100 for k in labels], height=0.4, label="paper")
        ax.barh([i - 0.2 for i in y], [ours.get(name, {}).get(k, 0.0) * 100 for k in labels], height=0.4,
                label="this run")
        ax.set_yticks(list(y), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=10, loc="left")
    axes[-1].set_xlabel("% of synthetic samples")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper right", ncols=2, fontsize=9)
    return fig


def fig_shares(ours: dict[str, dict[str, float]], target: dict[str, dict[str, float]]) -> bytes:
    return _png(shares_figure(ours, target))


def hist_figure(series: dict[str, tuple[list[float], list[int]]], title: str, xlabel: str,
                vline: dict[str, float] | None = None) -> Any:
    """Overlaid histograms in percent; thresholds as dashed lines labelled inside the plot, and the legend
    outside it on the right, so that it never covers a bar or a threshold's label."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(MAX_WIDTH_IN - 1.8, 3.6), constrained_layout=True)
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
    ax.set_ylim(0, ax.get_ylim()[1] * 1.25)  # headroom for the threshold labels above the bars
    top = ax.get_ylim()[1]
    left, right = ax.get_xlim()
    for i, (label, x) in enumerate((vline or {}).items()):
        ax.axvline(x, color="red", linestyle="--", linewidth=1)
        inside = x < (left + right) / 2  # the label on the side of its line that has room, inside the plot
        ax.annotate(f" {label}" if inside else f"{label} ", (x, top * (0.93 - 0.08 * i)), color="red", fontsize=8,
                    ha="left" if inside else "right")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("%")
    fig.legend(loc="outside right upper", fontsize=8)
    return fig


def fig_hist(series: dict[str, tuple[list[float], list[int]]], title: str, xlabel: str,
             vline: dict[str, float] | None = None) -> bytes:
    return _png(hist_figure(series, title, xlabel, vline))


def figures(d: Distributions, idx: dict[str, list[Any]], subsets: Sequence[str],
            similarity: dict[str, Any] | None, aesthetic_threshold: Mapping[str, float]
            ) -> dict[str, tuple[str, bytes]]:
    """key -> (caption, PNG bytes); a figure without data is left out. ``aesthetic_threshold``: the run's
    ``synthetic`` (pair_filter) and ``real`` (curated) thresholds, drawn on the score histogram."""
    out: dict[str, tuple[str, bytes]] = {}
    sets = masks(idx, subsets)
    if any(d.ours.values()):
        out["shares"] = ("Fig. 4: category, style and task shares, this run vs the paper",
                         fig_shares(d.ours, paper.marginals()))
    len_edges = [float(x) for x in range(0, 305, 10)]
    lengths: dict[str, tuple[list[float], list[int]]] = {}
    for name, mask in sets.items():
        for col, label in (("length", "original"), ("enhanced_length", "enhanced")):
            vals = values(idx, col, mask)
            if vals:
                lengths[f"{name} {label}"] = (len_edges, histogram(vals, len_edges))
    if lengths:
        out["lengths"] = ("Fig. 9: prompt length in words (the last bin holds >= 290)",
                          fig_hist(lengths, "Prompt length", "words"))
    aes_edges = [x / 4 for x in range(0, 41)]  # 0.25-wide bins over 0..10
    aes: dict[str, tuple[list[float], list[int]]] = {}
    for name, mask in sets.items():
        vals = values(idx, "aesthetic_predictor_v_2_5_score", mask)
        if vals:
            aes[name] = (aes_edges, histogram(vals, aes_edges))
    if aes:
        syn_thr = float(aesthetic_threshold["synthetic"])
        real_thr = float(aesthetic_threshold["real"])
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
