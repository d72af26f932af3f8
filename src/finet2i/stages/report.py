"""Stage ``report`` (paper section 4 and appendix A): the funnel and the distribution analysis of a run.

The report reads only small files: every stage's ``*.stats.json`` (the funnel: records in, kept, dropped by
reason, seconds, model), the package stages' per-shard parquet indexes (one row per packaged sample with the
release's keys; the distribution tables), and the dedup stage's similarity histogram. It never rescans images
or prompts, so it stays cheap at 4,480 shards and can be rerun after any stage. Its pictures (a few finished
samples and a few dropped records per subset, finet2i.reporting.thumbnails) are bounded reads: a few row
groups of the first tables.

Outputs (``out_dir``): ``report.html`` (self-contained: figures embedded as PNG), ``report.md`` (tables, with
figures in ``figures/``), ``funnel.json`` (machine-readable funnel, checks and distances to the paper).
The parts live in ``finet2i.reporting``: ``funnel``, ``distributions``, ``tables``, ``figures``, ``render``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from finet2i.core import shards
from finet2i.reporting.distributions import (
    aesthetic_bins_table,
    distribution_tables,
    distributions,
    read_indexes,
    read_similarity,
)
from finet2i.reporting.figures import figures
from finet2i.reporting.funnel import check_conservation, paper_comparison, read_stats
from finet2i.reporting.render import render_html, render_markdown
from finet2i.reporting.tables import funnel_tables
from finet2i.reporting.thumbnails import REAL, Thumb, contact_sheet, dropped_thumbnails, kept_thumbnails

log = logging.getLogger(__name__)


def does_it_help(finetune_stats: str, metrics_path: str, pairs_path: str, votes_path: str | None,
                 shown: int) -> dict[str, Any]:
    """The "Does it help?" section from what finetune and evaluate wrote and the people's votes (when any)."""
    import pyarrow.parquet as pq

    from finet2i.finetune.votes import summarize
    from finet2i.reporting.helps import helps_section

    metrics = shards.read_json(metrics_path)
    votes = summarize(votes_path, metrics["evaluation_id"]) if votes_path else None
    return helps_section(shards.read_json(finetune_stats), metrics, pq.read_table(pairs_path).to_pylist(),
                         Path(metrics_path).parent, votes, shown)


def run_report(stats_paths: list[str], index_paths: list[str], similarity_histogram: str | None,
               out_dir: str, *, settings: Mapping[str, Any], evaluation: Mapping[str, str] | None = None,
               votes: str | None = None, dropped: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """Write report.html, report.md, funnel.json and figures/ under ``out_dir``; return the funnel JSON.
    ``settings``: the run's shape, thresholds and stage wiring (finet2i.workflow.params.report_settings).
    ``evaluation``: {finetune, metrics, pairs} paths when the run fine-tuned and evaluated (the "Does it help?"
    section), ``votes`` the human votes file when there is one.
    ``dropped``: (a stage's table, the table holding its images) for the pictures of dropped records."""
    out = Path(out_dir)
    subsets = list(settings["subsets"])
    demo = bool(settings["demo"])

    rows = read_stats(stats_paths, [*subsets, "real"])
    check_conservation(rows, settings["upstream"])
    flags = [f"{r.label}: shard {bad}" for r in rows for bad in r.inconsistent]
    flags += [f"{r.label}: records lost or added between stages, shard {bad}" for r in rows for bad in r.breaks]
    comparison = paper_comparison(rows, subsets)
    idx = read_indexes(index_paths)
    n_samples = len(idx["subset"])
    dist = distributions(idx, subsets)
    similarity = read_similarity(similarity_histogram)
    if similarity is None:
        flags.append("dedup similarity histogram missing: Fig. 3 not drawn")
    if not n_samples:
        flags.append("no packaged samples: the distribution tables are empty")
    figs = figures(dist, idx, subsets, similarity, settings["aesthetic_threshold"])
    for key, (_, png) in figs.items():
        _write_bytes(out / "figures" / f"{key}.png", png)
    samples = sample_grid(index_paths, dropped, subsets)
    for subset, thumbs in samples.items():
        if thumbs:
            _write_bytes(out / "figures" / f"samples_{subset}.png", contact_sheet(thumbs))
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
    meta = {"shards": settings["shards"]["count"], "specs per shard": settings["shards"]["specs_per_shard"],
            "seed": settings["seed"], "stats files": len(stats_paths), "index files": len(index_paths),
            "packaged samples": n_samples}
    tables = [*funnel_tables(rows, comparison), *distribution_tables(dist, idx, subsets),
              aesthetic_bins_table(idx, subsets)]
    shards.write_json(out / "funnel.json", funnel)
    results_dir = str(out.parent)  # report/ sits in the run's results folder, which `finet2i explore` opens
    helps = None
    if evaluation:
        helps = does_it_help(evaluation["finetune"], evaluation["metrics"], evaluation["pairs"], votes,
                             int(settings.get("shown_pairs") or 0))
    _write_text(out / "report.md", render_markdown(tables, figs, flags, meta, demo, results_dir, samples, helps))
    _write_text(out / "report.html", render_html(tables, figs, flags, meta, demo, results_dir, samples, helps))
    log.info("report: %d stage rows, %d samples, %d flags -> %s", len(rows), n_samples, len(flags), out)
    return funnel


def sample_grid(index_paths: Sequence[str], dropped: Sequence[tuple[str, str]],
                subsets: Sequence[str]) -> dict[str, list[Thumb]]:
    """{subset: a few finished samples, then a few dropped records} in release order (synthetic, then real)."""
    kept = kept_thumbnails(index_paths, subsets)
    drops = dropped_thumbnails(dropped, subsets)
    order = [*subsets, REAL]
    return {s: kept.get(s, []) + drops.get(s, []) for s in order if kept.get(s) or drops.get(s)}


def _write_bytes(path: Path, data: bytes) -> None:
    with shards.atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _write_text(path: Path, text: str) -> None:
    with shards.atomic_path(path) as tmp:
        tmp.write_text(text)
