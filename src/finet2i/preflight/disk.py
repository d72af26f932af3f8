"""How much disk a configured run writes under results/, per stage, and whether the filesystem has it.

The stages are the pipeline's (finet2i.core.pipeline.STAGES, those the config enables), so a stage inserted
there is sized too. Record counts follow the pipeline: a stage receives what its upstream stage keeps, from the
config (shards x specs per shard) and the paper's yields between stages (finet2i.recipe.paper.FUNNEL, scaled to
the config's size). Bytes per record come from the figures in ``FIGURES``, each with its source, named per stage
in ``PER_RECORD``; a stage without one is sized by a generic row and says so. Images dominate (terabytes) and
their figures are the paper's own. Every stage keeps one table row per record it received (kept or dropped,
finet2i.core.runner), so a stage's table is sized by what reaches it, not by what it keeps.

The image bytes are held once besides the release's tars (docs/disk.md): the package tables refer to the kept
images instead of copying them. With ``pair_filter.keep_dropped_images: false`` (the default) the generate tables
are temp() outputs, deleted once their shard is filtered, and the kept pairs' images are what pair_filter cuts out
of them: the estimate counts the generate tables of the shards in flight only (``in_flight``). With ``true`` it
counts every generate table.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finet2i.core import pipeline
from finet2i.core.settings import lookup
from finet2i.preflight.report import GO, NOGO, WARN, Report
from finet2i.recipe import paper

_RELEASE_SAMPLES = sum(paper.SUBSET_COUNTS.values()) + paper.REAL_COUNT


@dataclass(frozen=True)
class Figure:
    bytes: float
    source: str


FIGURES: dict[str, Figure] = {
    "jpeg": Figure(2e12 / _RELEASE_SAMPLES,
                   f"paper (abstract): ~2 TB for {_RELEASE_SAMPLES:,} released samples"),
    "real_download": Figure(258.5e9 / paper.REAL_DOWNLOADED,
                            f"paper Table 3: 258.5 GB for {paper.REAL_DOWNLOADED:,} downloaded photos"),
    "vector": Figure(384 * 2, "exact: 384 float16 values per prompt (all-MiniLM-L6-v2, results/embed/*.npz)"),
    "prompt_row": Figure(1_000, "estimate: a prompt of <= 150 words (~1 KB of text) and its spec columns"),
    "verdict_row": Figure(1_500, "estimate: the prompt plus a model's verdict and raw answer"),
    "enhanced_row": Figure(3_000, "estimate: the prompt plus its 100-300-word enhanced prompt"),
    "pair_row": Figure(3_500, "estimate: both prompts, scores, the judge's reasoning (no image)"),
    "caption_row": Figure(2_000, "estimate: a short and a long caption"),
}

# What one record of a stage's table holds (FIGURES keys). A stage not named here is still sized, by
# GENERIC_ROW, and its sources say so. The curated branch's first stage holds what its sources bring
# (curated_inputs), and package_real their kept photos at the same bytes per photo.
PER_RECORD: dict[str, tuple[str, ...]] = {
    "specs": ("prompt_row",),
    "prompts": ("prompt_row",),
    "embed": ("vector",),
    "dedup": ("prompt_row",),
    "guard": ("verdict_row",),
    "attributes": ("verdict_row",),
    "enhance": ("enhanced_row",),
    "guard_enhanced": ("enhanced_row",),
    "generate": ("enhanced_row", "jpeg"),
    "pair_filter": ("pair_row",),  # + the kept pairs' images unless keep_dropped_images (estimate)
    "package": ("pair_row",),  # the JPEGs are referred to, not copied (finet2i.stages.package)
    "curated_score": ("caption_row",),
    "curated_caption": ("caption_row",),
    "curated_enhance": ("caption_row",),
    "curated_guard": ("caption_row",),
}
# The largest text row declared above: a stage without a figure is not under-counted.
GENERIC_ROW = max(f.bytes for k, f in FIGURES.items() if k.endswith("_row"))
# The tables that assemble cuts into the release's tars (rules/assemble.smk).
PACKAGED = ("package", "package_real")
# Shards whose generate tables exist at once when they are temp() (pair_filter.keep_dropped_images: false): a
# shard's four tables wait for its last one, then for its pair_filter job (which has priority over generation).
# About the GPU jobs a group runs at once; `finet2i preflight --gpus N` sets it.
IN_FLIGHT = 64


@dataclass(frozen=True)
class StageSize:
    stage: str
    records: int
    bytes: int
    sources: tuple[str, ...]


def estimate(config: Mapping[str, Any], workdir: Path = Path("."), in_flight: int = IN_FLIGHT) -> list[StageSize]:
    """Bytes each enabled stage (finet2i.core.pipeline.STAGES) holds under results/ at the end of the run (its
    temp() tables: at most ``in_flight`` shards' worth, at once), plus dataset/ for the release.

    A stage receives what its upstream stage keeps (``pipeline.upstream``); a stage keeps what it receives
    unless the paper says how many it kept (FUNNEL, scaled to the config's specs and subsets).
    """
    specs = int(config["shards"]["count"]) * int(config["shards"]["specs_per_shard"])
    scale = specs / paper.FUNNEL["prompts"]
    subsets = len(config["generate"]["subsets"])
    kept: dict[str, int] = {}
    photos: tuple[int, float, tuple[str, ...]] | None = None  # the curated sources: photos, bytes, how known
    out: list[StageSize] = []
    for s in pipeline.enabled_stages(config):
        up = pipeline.upstream(s.name, config)
        if up is None or up.name not in kept:  # a branch's first stage
            if s.branch == pipeline.CURATED:
                photos = curated_inputs(config, workdir)
                kept[s.name] = photos[0]
                out.append(StageSize(s.name, photos[0], round(photos[1]), photos[2]))
                continue
            n = round(paper.FUNNEL["prompts"] * scale)
            fans_out = False
        else:
            fans_out = s.per_subset and not up.per_subset  # one record per prompt and subset from here on
            n = kept[up.name] * (subsets if fans_out else 1)
        kept[s.name] = n
        if s.name in paper.FUNNEL and not fans_out:
            # The paper's count after the stage (over its four subsets for a per-subset stage). Not for the stage
            # that fans out to the subsets: its count (generate: 4 x attributes) is what reaches it.
            per = paper.FUNNEL[s.name] * scale
            kept[s.name] = round(per * subsets / len(paper.SUBSETS)) if s.per_subset else round(per)
        if s.name == "package_real" and photos is not None:
            # The paper gives the curated branch's yield only, as what it ships: its kept share of the photos.
            n = round(n * paper.REAL_COUNT / paper.REAL_DOWNLOADED)
            per_photo = photos[1] / photos[0] if photos[0] else 0.0
            out.append(StageSize(s.name, n, round(n * per_photo),
                                 (*photos[2], f"paper section 3.2: {paper.REAL_COUNT:,} of {paper.REAL_DOWNLOADED:,} "
                                              f"downloaded photos kept")))
            continue
        out.append(_sized(s.name, n))
    keep = bool(lookup(config, "pair_filter.keep_dropped_images"))
    out = [_images_once(x, kept, keep, int(config["shards"]["count"]), in_flight) for x in out]
    shipped = {x.stage: x for x in out if x.stage in PACKAGED}
    synthetic = shipped["package"].records if "package" in shipped else 0
    real = shipped["package_real"] if "package_real" in shipped else None
    real_bytes = real.records * photos[1] / photos[0] if real and photos and photos[0] else 0.0
    out.append(StageSize("dataset", synthetic + (real.records if real else 0),
                         round(synthetic * FIGURES["jpeg"].bytes + real_bytes),
                         ("the tars: the kept JPEGs, which results/ holds once more (pair_filter's images files "
                          "or the generate tables, and curated_ingest)",)))
    return out


def _images_once(size: StageSize, kept: Mapping[str, int], keep: bool, shards: int, in_flight: int) -> StageSize:
    """The image bytes where the pipeline holds them (docs/disk.md): the generate tables, whole or in flight; the
    kept pairs' images beside pair_filter's verdicts; the finished samples refer to them."""
    jpeg = FIGURES["jpeg"]
    if size.stage == "generate" and not keep:
        share = min(1.0, in_flight / shards) if shards else 1.0
        return StageSize(size.stage, size.records, round(size.bytes * share), (*size.sources, (
            f"temp(): a shard's tables are deleted once it is filtered (pair_filter.keep_dropped_images: false); "
            f"counted: {min(in_flight, shards):,} of {shards:,} shards in flight at once (preflight --gpus)")))
    if size.stage == "pair_filter" and not keep:
        n = kept.get("pair_filter", 0)
        return StageSize(size.stage, size.records, round(size.bytes + n * jpeg.bytes), (*size.sources, (
            f"+ the {n:,} kept pairs' images ({{subset}}/{{shard}}.images.parquet) x {jpeg.source}")))
    if size.stage == "package_real":
        return StageSize(size.stage, size.records, round(size.records * FIGURES["caption_row"].bytes), (
            *size.sources[:-1], "the photos are referred to in the ingest tables, not copied",
            FIGURES["caption_row"].source))
    return size


def _sized(stage: str, records: int) -> StageSize:
    figures = PER_RECORD.get(stage)
    if figures is None:
        return StageSize(stage, records, round(records * GENERIC_ROW),
                         (f"estimate: no size figure declared for stage {stage}; a generic row of "
                          f"{GENERIC_ROW:,.0f} bytes (the largest text row declared)",))
    sources = tuple(FIGURES[f].source for f in figures)
    if stage == "package":  # the kept samples: the paper's count, each a row that refers to its JPEG
        sources = (*sources, f"paper Table 2: {paper.FUNNEL['pair_filter']:,} pairs kept; the JPEGs are referred to "
                             f"where pair_filter (or generate) keeps them, not copied")
    return StageSize(stage, records, round(records * sum(FIGURES[f].bytes for f in figures)), sources)


# Table 3: per source, photos downloaded and their size on disk.
PAPER_SOURCES = {"pexels": (233_342, 192.6e9), "pixabay": (163_524, 9.7e9), "unsplash_lite": (24_997, 56.2e9)}
PIXABAY_MAX_PER_QUERY = 500  # the API gives at most 500 hits per query


def _listed_count(entry: Mapping[str, Any], workdir: Path) -> tuple[int | None, str]:
    """How many photos a listed source (unsplash_lite, pexels, pixabay) brings, and how that is known."""
    from finet2i.sources import listed_name, manifest_path

    manifest = workdir / manifest_path(listed_name(entry))
    cap = entry.get("max_photos")
    if manifest.exists():
        import pyarrow.parquet as pq

        return pq.ParquetFile(manifest).metadata.num_rows, f"its manifest ({manifest_path(listed_name(entry))})"
    if entry.get("type") == "unsplash_lite":
        from finet2i.sources.unsplash_lite import tables

        try:
            rows = sum(max(sum(1 for _ in t.open(errors="replace")) - 1, 0) for t in tables(workdir / entry["path"]))
        except (FileNotFoundError, OSError):
            rows = None
        if rows is not None:
            return (min(rows, cap) if cap else rows), "rows of its photos table" + (", capped" if cap else "")
    if cap:
        return int(cap), "its max_photos"
    queries = len(entry.get("queries") or []) + (1 if entry.get("curated") else 0)
    if entry.get("max_per_query") and queries:
        return int(entry["max_per_query"]) * queries, "max_per_query x queries"
    if entry.get("type") == "pixabay" and queries:
        return PIXABAY_MAX_PER_QUERY * queries, f"the API's {PIXABAY_MAX_PER_QUERY} per query x queries"
    return None, "no bound in the config"


def curated_inputs(config: Mapping[str, Any], workdir: Path) -> tuple[int, float, tuple[str, ...]]:
    """(photos, bytes, how each figure is known) that the curated sources bring in: a folder is measured, a URL
    list counted; a listed source is counted from its manifest, its table, or its caps (else the paper's count
    for that source, Table 3), at the paper's bytes per photo of that source (Table 3)."""
    from finet2i.workflow.config import source_path

    photos, size, how = 0, 0.0, []
    per = FIGURES["real_download"]
    for entry in config["curated"].get("sources") or []:
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind in (None, "folder", "url_list"):
            path = workdir / source_path(entry)
            if path.is_dir():
                files = [f for f in path.rglob("*") if f.is_file()]
                photos += len(files)
                size += sum(f.stat().st_size for f in files)
                how.append(f"{source_path(entry)}: measured ({len(files):,} files)")
            elif path.is_file():
                n = sum(1 for line in path.read_text(errors="replace").splitlines() if line.strip())
                photos += n
                size += n * per.bytes
                how.append(f"{source_path(entry)}: {n:,} URLs x {per.source}")
            continue
        assert isinstance(entry, dict)
        paper_n, paper_bytes = PAPER_SOURCES.get(str(kind), (0, 0.0))
        n, known = _listed_count(entry, workdir)
        if n is None:
            n, known = paper_n, "paper Table 3 (no max_photos in the config)"
        photos += n
        size += n * (paper_bytes / paper_n if paper_n else per.bytes)
        how.append(f"{entry.get('name', kind)}: {n:,} photos ({known}) x paper Table 3's bytes per {kind} photo")
    return photos, size, tuple(how)


def used_bytes(folder: Path) -> int:
    """Bytes already under ``folder`` (a resumed run needs only the rest)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def free_bytes(folder: Path) -> tuple[int, Path]:
    """Free bytes of the filesystem that holds ``folder`` (or would: its nearest existing parent)."""
    probe = folder.resolve()
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free, probe


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


# How to put the run's outputs on another filesystem (docs/storage.md): symlinks, so that the rules' relative
# paths, the profile and .snakemake/ stay in the workflow folder.
MOVE_RESULTS = ("mkdir -p /big/fs/finet2i/results /big/fs/finet2i/logs && ln -s /big/fs/finet2i/results results "
                "&& ln -s /big/fs/finet2i/logs logs")


def _check_disk(config: dict[str, Any], results: Path, workdir: Path, report: Report,
                in_flight: int = IN_FLIGHT) -> None:
    sizes = estimate(config, workdir, in_flight)
    total = sum(s.bytes for s in sizes)
    used = used_bytes(results) if results.exists() else 0
    free, fs = free_bytes(results)
    need = max(total - used, 0)
    report.disk = [{"stage": s.stage, "records": s.records, "bytes": s.bytes, "sources": list(s.sources)}
                   for s in sizes]
    biggest = ", ".join(f"{s.stage} {human(s.bytes)}" for s in sorted(sizes, key=lambda s: -s.bytes)[:3])
    where = f"{results} -> {results.resolve()}" if results.is_symlink() else str(results)
    detail = (f"the run writes ~{human(total)} under {where} ({biggest}; per stage: --json); "
              f"{human(used)} already there; {human(free)} free on {fs}")
    if need > free:
        report.add(NOGO, "disk", detail + f": short by {human(need - free)}; put results/ (and logs/) on a "
                                          f"larger filesystem with a symlink: {MOVE_RESULTS} (docs/storage.md)")
    elif need > 0.8 * free:
        report.add(WARN, "disk", detail + ": less than 20% headroom")
    else:
        report.add(GO, "disk", detail)
