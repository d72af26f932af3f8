"""How much disk a configured run writes under results/, per stage, and whether the filesystem has it.

Record counts come from the config (shards x specs per shard) and the paper's yields between stages
(finet2i.recipe.paper.FUNNEL, scaled to the config's size). Bytes per record come from the figures in ``FIGURES``,
each with its source; images dominate (terabytes) and their figures are the paper's own. Every stage keeps one
table row per record it received (kept or dropped, finet2i.core.runner), so a stage's table is sized by what
reaches it, not by what it keeps.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finet2i.core import pipeline
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

# Stage -> (what reaches it, per-record figure(s)). "Reaches" names a FUNNEL count before the stage.
_SYNTHETIC: dict[str, tuple[str, tuple[str, ...], int]] = {
    # stage: (funnel count of the records it receives, figures per record, copies per record (subsets))
    "specs": ("prompts", ("prompt_row",), 1),
    "prompts": ("prompts", ("prompt_row",), 1),
    "embed": ("prompts", ("vector",), 1),
    "dedup": ("prompts", ("prompt_row",), 1),
    "guard": ("dedup", ("verdict_row",), 1),
    "attributes": ("guard", ("verdict_row",), 1),
    "enhance": ("attributes", ("enhanced_row",), 1),
    "guard_enhanced": ("attributes", ("enhanced_row",), 1),
    "generate": ("attributes", ("enhanced_row", "jpeg"), 4),
    "pair_filter": ("attributes", ("pair_row",), 4),
}


@dataclass(frozen=True)
class StageSize:
    stage: str
    records: int
    bytes: int
    sources: tuple[str, ...]


def estimate(config: Mapping[str, Any], workdir: Path = Path(".")) -> list[StageSize]:
    """Bytes each enabled stage writes under results/ for the whole run (plus dataset/ for the release)."""
    specs = int(config["shards"]["count"]) * int(config["shards"]["specs_per_shard"])
    scale = specs / paper.FUNNEL["prompts"]
    subsets = len(config["generate"]["subsets"])
    fig = FIGURES
    out: list[StageSize] = []
    for name, (reaches, figures, copies) in _SYNTHETIC.items():
        if not pipeline.enabled(name, config):
            continue
        n = round(paper.FUNNEL[reaches] * scale) * (subsets if copies == 4 else 1)
        out.append(StageSize(name, n, round(n * sum(fig[f].bytes for f in figures)),
                             tuple(fig[f].source for f in figures)))
    kept = round(paper.FUNNEL["pair_filter"] * scale * subsets / 4)
    if pipeline.enabled("package", config):
        out.append(StageSize("package", kept, round(kept * (fig["jpeg"].bytes + fig["pair_row"].bytes)),
                             (fig["jpeg"].source, f"paper Table 2: {paper.FUNNEL['pair_filter']:,} pairs kept")))
    real_in, real_kept = 0, 0
    if pipeline.enabled("curated_ingest", config):
        real_in, real_bytes, how = curated_inputs(config, workdir)
        real_kept = round(real_in * paper.REAL_COUNT / paper.REAL_DOWNLOADED)
        per = real_bytes / real_in if real_in else 0.0
        out.append(StageSize("curated_ingest", real_in, round(real_bytes), how))
        for name in ("curated_score", "curated_caption", "curated_enhance", "curated_guard"):
            if pipeline.enabled(name, config):
                out.append(StageSize(name, real_in, round(real_in * fig["caption_row"].bytes),
                                     (fig["caption_row"].source,)))
        out.append(StageSize("package_real", real_kept, round(real_kept * per),
                             (*how, f"paper section 3.2: {paper.REAL_COUNT:,} of {paper.REAL_DOWNLOADED:,} "
                                    f"downloaded photos kept")))
    released = kept + real_kept
    out.append(StageSize("dataset", released,
                         round(kept * fig["jpeg"].bytes + sum(x.bytes for x in out if x.stage == "package_real")),
                         ("the tars hold the package tables' JPEGs once more",)))
    return out


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
