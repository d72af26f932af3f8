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
