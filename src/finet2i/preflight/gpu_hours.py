"""GPU-hours of a configured run, per GPU stage and in total, from a rates file; "not measured" otherwise.

What each stage processes comes from the config at the paper's yields, the way preflight sizes the disk
(:func:`finet2i.preflight.disk.estimate`: shards x specs per shard, scaled by ``finet2i.recipe.paper.FUNNEL``); how
many jobs run it follows from the rules' wildcard domains and ``gpu_jobs`` (as preflight counts them). The rates
file gives, per stage, a throughput and a load time, each with where it comes from::

    {"stages": {"prompts": {"items_per_s": 32.42, "kind": "published", "source": "https://...",
                            "gpu": "...", "precision": "...", "workload": "...", "applies_because": "...",
                            "load_s": 46.1, "load": {"kind": "published", "source": "https://...", ...}},
                "guard": {"items_per_s": null, "why_not": "no published Llama Guard 3 throughput", ...}}}

``kind`` is ``published`` (a public source: benchmarks/rates.published.json) or ``measured`` (raw output under
benchmarks/measured/). A stage without ``items_per_s`` is "not measured" and stays out of every total; one without
``load_s`` counts its compute hours only, and the total says it is a lower bound. No figure is ever filled in.
GPU-hours = items / items_per_s + jobs x load_s (one GPU per job, as the rules declare; queue waits are not GPU
time). Load share per
job = load_s / (load_s + items per job / items_per_s): the target is under 10%. A rate with ``pixels_per_item`` is
scaled to the config's mean pixels per generated image, linearly (a lower bound on the time).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finet2i.core import batching, pipeline

# rate key -> (stage whose rule runs it, disk-estimate stage whose record count it processes, what an item is)
STAGES: dict[str, tuple[str, str, str]] = {
    "prompts": ("prompts", "prompts", "spec -> prompt (Llama-3.1-8B)"),
    "embed": ("embed", "embed", "prompt embedded (all-MiniLM-L6-v2)"),
    "dedup_group": ("dedup_group", "dedup", "prompt deduplicated within its group"),
    "dedup_cross": ("dedup_cross", "dedup", "prompt checked across groups"),
    "guard": ("guard", "guard", "prompt guarded (Llama-Guard-3-8B)"),
    "attributes": ("attributes", "attributes", "prompt checked (Qwen3-VL-8B)"),
    "enhance": ("enhance", "enhance", "prompt enhanced (7B enhancer)"),
    "guard_enhanced": ("guard_enhanced", "guard_enhanced", "enhanced prompt guarded (Llama-Guard-3-8B)"),
    "generate.z_image": ("generate", "generate", "candidate image, Z-Image-Turbo, Table 8 mix"),
    "generate.flux2": ("generate", "generate", "candidate image, FLUX.2-dev, Table 8 mix"),
    "generate.aesthetic": ("generate", "generate", "candidate image scored (SigLIP + V2.5 head)"),
    "pair_filter": ("pair_filter", "pair_filter", "image-prompt pair judged (Qwen3-VL-8B-Thinking)"),
    "curated_score": ("curated_score", "curated_score", "photo scored (SigLIP + V2.5 head)"),
    "curated_caption": ("curated_caption", "curated_caption", "photo captioned (Qwen2.5-VL-7B)"),
    "curated_enhance": ("curated_enhance", "curated_enhance", "caption enhanced"),
    "curated_guard": ("curated_guard", "curated_guard", "caption guarded"),
}
KINDS = ("published", "measured")
MEASURED_FOLDER = "benchmarks/measured/"


class RatesError(ValueError):
    """A rates file that cannot be read or names a figure without saying where it comes from."""


@dataclass
class Row:
    stage: str
    rule: str
    item: str
    items: int
    jobs: int
    items_per_s: float | None = None  # as the plan uses it (scaled to the config's pixels where the figure says)
    load_s: float | None = None
    gpu_mem_gb: float | None = None
    compute_h: float | None = None
    load_h: float | None = None
    gpu_h: float | None = None  # None: not measured (no rate); compute hours only when the load is not measured
    load_share: float | None = None
    load_share_one_shard: float | None = None  # the same at one shard per job (gpu_jobs: 1), for comparison
    note: str = ""
    rate_kind: str | None = None  # published | measured | None (a figure given without a source: tests)
    load_kind: str | None = None
    scale: float = 1.0  # the published rate divided by this (pixels per item)
    figures: dict[str, Any] = field(default_factory=dict)  # the rates file's entry, for the sources listing

    @property
    def measured(self) -> bool:
        """Whether the stage has a rate (published or measured): its GPU-hours are in the total."""
        return self.gpu_h is not None

    @property
    def load_missing(self) -> bool:
        return self.measured and self.load_h is None


def load_rates(*paths: str | Path) -> dict[str, Any]:
    """Rates files merged in order (a later file's stage replaces an earlier one's), each figure checked: a
    ``published`` one names its source, GPU, precision, workload and why it applies; a ``measured`` one points
    under benchmarks/measured/."""
    merged: dict[str, Any] = {"stages": {}}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise RatesError(f"{path}: cannot read a rates file: {e}") from e
        unknown = sorted(set(data.get("stages", {})) - set(STAGES))
        if unknown:
            raise RatesError(f"{path}: unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
        for key, entry in data.get("stages", {}).items():
            for what, fig in (("rate", entry), ("load", entry.get("load"))):
                value = entry.get("items_per_s" if what == "rate" else "load_s")
                if value is not None:
                    _check_figure(path, key, what, fig if isinstance(fig, Mapping) else {})
            merged["stages"][key] = entry
        for k in ("gpu", "source"):
            if data.get(k):
                merged[k] = data[k] if k not in merged else f"{merged[k]}; {data[k]}"
    return merged


def _check_figure(path: str | Path, key: str, what: str, fig: Mapping[str, Any]) -> None:
    where = f"{path}: stages.{key}" + (".load" if what == "load" else "")
    kind, source = fig.get("kind"), fig.get("source")
    if kind not in KINDS or not source:
        raise RatesError(f"{where}: every figure says where it comes from: kind (published or measured) and "
                         f"source; got kind={kind!r}, source={source!r}")
    if kind == "measured" and not str(source).startswith(MEASURED_FOLDER):
        raise RatesError(f"{where}: a measured figure's source is its raw output under {MEASURED_FOLDER}, "
                         f"got {source}")
    if kind == "published":
        missing = [k for k in ("gpu", "precision", "workload", "applies_because") if not fig.get(k)]
        if missing:
            raise RatesError(f"{where}: a published figure names {', '.join(missing)} too (what it was measured on "
                             f"and why it applies to our stage)")


def mean_pixels(config: Mapping[str, Any], workdir: Path = Path(".")) -> float:
    """Pixels of a generated image, averaged over the configured subsets (each renders as many prompts) of their
    Table 8 sizes (as generate draws them: uniformly from the subset's list, scaled down by generate.max_side)."""
    from finet2i.stages.generate import fit_size, load_resolutions, sizes_for_subset

    gen = config["generate"]
    table = load_resolutions(Path(workdir) / gen["resolutions"])
    means = []
    for subset in gen["subsets"]:
        sizes = [fit_size(r.width, r.height, gen.get("max_side")) for r in sizes_for_subset(subset, table)]
        means.append(sum(w * h for w, h in sizes) / len(sizes))
    return sum(means) / len(means) if means else 0.0


def items_per_stage(config: Mapping[str, Any], workdir: Path) -> dict[str, int]:
    """Items each rate key's stage processes in the whole run, at the paper's yields."""
    from finet2i.preflight.disk import estimate

    records = {s.stage: s.records for s in estimate(config, workdir)}
    gen = config["generate"]
    mean_candidates = (gen["candidates"]["min"] + gen["candidates"]["max"]) / 2
    weights = {k: float(g.get("weight", 0)) for k, g in gen["generators"].items()}
    images = records.get("generate", 0) * mean_candidates
    out: dict[str, int] = {}
    for key, (_rule, stage, _item) in STAGES.items():
        if stage not in records:
            continue  # switched off
        if key.startswith("generate."):
            kind = key.split(".", 1)[1]
            share = 1.0 if kind == "aesthetic" else weights.get(kind, 0.0) / (sum(weights.values()) or 1.0)
            if share > 0:
                out[key] = round(images * share)
        else:
            out[key] = records[stage]
    return out


def stage_jobs(config: Mapping[str, Any], stage: str, *, unbatched: bool = False) -> tuple[str, int]:
    """The rule that does a stage's GPU work and its jobs in a full run: <stage>_batch when gpu_jobs batches it
    (``unbatched``: the jobs at one shard per job)."""
    if stage in ("dedup_group", "dedup_cross"):
        return stage, int(config["dedup"]["groups"]) if stage == "dedup_group" else 1
    s = pipeline.stage(stage)
    shards = batching.shard_count(config, stage)
    per_subset = len(config["generate"]["subsets"]) if s.per_subset and not s.all_subsets_in_one_job else 1
    if batching.is_batched(config, stage) and not unbatched:
        return f"{stage}_batch", batching.batch_count(shards, batching.shards_per_job(config, stage)) * per_subset
    return stage, shards * per_subset


def plan(config: Mapping[str, Any], jobs: Mapping[str, int] | None, rates: Mapping[str, Any],
         workdir: Path = Path(".")) -> list[Row]:
    """One row per rate key the config runs. ``jobs``: rule -> jobs (preflight's count from the parsed rules);
    None: counted from the config (:func:`stage_jobs`)."""
    given = rates.get("stages", {})
    unknown = sorted(set(given) - set(STAGES))
    if unknown:
        raise SystemExit(f"rates file: unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    pixels = None
    rows = []
    for key, n in items_per_stage(config, workdir).items():
        stage, _disk, item = STAGES[key]
        rule, count = stage_jobs(config, stage)
        if jobs is not None:
            if rule not in jobs and f"{stage}_batch" in jobs:
                rule = f"{stage}_batch"
            count = jobs.get(rule, 0)
        r = Row(key, rule, item, n, count)
        m = dict(given.get(key) or {})
        r.figures = m
        r.items_per_s, r.load_s, r.gpu_mem_gb = m.get("items_per_s"), m.get("load_s"), m.get("gpu_mem_gb")
        r.rate_kind = m.get("kind") if r.items_per_s else None
        r.load_kind = (m.get("load") or {}).get("kind") if r.load_s is not None else None
        r.note = str(m.get("note", ""))
        if r.items_per_s and m.get("pixels_per_item"):
            pixels = mean_pixels(config, workdir) if pixels is None else pixels
            r.scale = max(pixels / float(m["pixels_per_item"]), 1e-9) if pixels else 1.0
            r.items_per_s = float(m["items_per_s"]) / r.scale
        if r.items_per_s:
            r.compute_h = n / float(r.items_per_s) / 3600
            r.gpu_h = r.compute_h
            if r.load_s is not None:
                r.load_h = r.jobs * float(r.load_s) / 3600
                r.gpu_h = r.compute_h + r.load_h
                per_job = r.compute_h * 3600 / r.jobs if r.jobs else 0.0
                r.load_share = _share(float(r.load_s), per_job)
                one = stage_jobs(config, stage, unbatched=True)[1]  # one job per shard (and subset)
                r.load_share_one_shard = _share(float(r.load_s), r.compute_h * 3600 / one if one else 0.0)
        rows.append(r)
    return rows


def _share(load_s: float, compute_s: float) -> float:
    return load_s / (load_s + compute_s) if load_s or compute_s else 0.0


def _rate(v: float) -> str:
    return f"{v:,.1f}" if v >= 100 else f"{v:.3g}"


def _fmt(v: float | None, spec: str, missing: str = "-") -> str:
    return missing if v is None else format(v, spec)


def total(rows: list[Row]) -> float:
    return sum(r.gpu_h for r in rows if r.gpu_h is not None)


def render(rows: list[Row], rates: Mapping[str, Any], configfile: str) -> str:
    """The plan as a table, then every figure it used with its source, then what is not measured and why."""
    lines = [f"GPU plan for {configfile} at the paper's yields; rates: {rates.get('gpu', 'GPU not named')}"
             f"{' (' + rates['source'] + ')' if rates.get('source') else ''}", ""]
    head = (f"{'stage':<19} {'items':>12} {'jobs':>6} {'items/job':>10} {'items/s':>9} {'load s':>7} "
            f"{'mem GB':>6} {'compute h':>10} {'load h':>8} {'GPU-h':>9} {'load/job':>8} {'1 shard/job':>11}  figures")
    lines += [head, "-" * len(head)]
    for r in rows:
        per_job = f"{r.items / r.jobs:,.0f}" if r.jobs else "-"
        left = f"{r.stage:<19} {r.items:>12,} {r.jobs:>6,} {per_job:>10}"
        if not r.items_per_s:
            lines.append(f"{left} {'not measured':>9}")
            continue
        share = "-" if r.load_share is None else f"{100 * r.load_share:.1f}%"
        one = "-" if r.load_share_one_shard is None else f"{100 * r.load_share_one_shard:.1f}%"
        kinds = f"rate {r.rate_kind or 'unsourced'}" + (f", load {r.load_kind or 'unsourced'}"
                                                        if r.load_s is not None else "")
        lines.append(
            f"{left} {_rate(r.items_per_s):>9} {_fmt(r.load_s, '.0f', 'n/m'):>7} {_fmt(r.gpu_mem_gb, '.1f'):>6} "
            f"{r.compute_h:>10,.1f} {_fmt(r.load_h, ',.1f', 'n/m'):>8} {_fmt(r.gpu_h, ',.1f', 'n/m'):>9} "
            f"{share:>8} {one:>11}  {kinds}")
    done = [r for r in rows if r.measured]
    missing = [r.stage for r in rows if not r.measured]
    no_load = [r.stage for r in done if r.load_missing]
    jobs = sum(r.jobs for r in done if not r.stage.startswith("generate.") or r.stage == done_generate(done))
    kinds = sorted({k for r in done for k in (r.rate_kind, r.load_kind) if k})
    label = " + ".join(kinds) or "given"
    bound = "at least " if missing or no_load else ""
    lines += ["", f"total GPU-hours over the {len(done)} stage(s) with a rate: {bound}{total(rows):,.1f} "
                  f"({jobs:,} GPU jobs) -- an ESTIMATE from {label} figures"]
    if missing:
        lines.append(f"not measured ({len(missing)}), so NOT in the total: {', '.join(missing)}")
    if no_load:
        lines.append(f"load not measured ({len(no_load)}), their compute hours only: {', '.join(no_load)}")
    lines.append("n/m: not measured; 1 shard/job: the load share per job without gpu_jobs")
    lines += ["", "figures (every number above, with its source):"]
    for r in rows:
        lines += [f"  {line}" for line in describe(r)]
    notes = [f"  {r.stage}: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["", "notes from the rates file:", *notes]
    return "\n".join(lines)


def done_generate(done: list[Row]) -> str | None:
    """The one generate row whose jobs count (the three generate keys share generate's jobs)."""
    return next((r.stage for r in done if r.stage.startswith("generate.")), None)


def describe(r: Row) -> list[str]:
    """Where a row's figures come from, one line each."""
    m = r.figures
    out = []
    if r.items_per_s:
        rate = f"{m.get('items_per_s')} items/s" + (f" at {m['pixels_per_item']:,} px, / {r.scale:.2f} for the "
                                                     f"config's mean pixels" if m.get("pixels_per_item") else "")
        out.append(f"{r.stage}: {rate} [{r.rate_kind or 'unsourced'}] {m.get('source', '(no source)')}; "
                   f"{m.get('gpu', 'GPU not named')}, {m.get('precision', '?')}, {m.get('workload', '?')}")
        if m.get("applies_because"):
            out.append(f"    applies: {m['applies_because']}")
    else:
        out.append(f"{r.stage}: not measured" + (f": {m['why_not']}" if m.get("why_not") else ""))
    if r.load_s is not None:
        load = m.get("load") or {}
        out.append(f"{r.stage} load: {r.load_s} s [{r.load_kind or 'unsourced'}] {load.get('source', '(no source)')}; "
                   f"{load.get('gpu', 'GPU not named')}, {load.get('workload', '?')}")
    return out


def as_json(rows: list[Row]) -> list[dict[str, Any]]:
    from dataclasses import asdict

    return [{**{k: v for k, v in asdict(r).items() if k != "figures"}, "measured": r.measured,
             "sources": {"rate": r.figures.get("source") if r.items_per_s else None,
                         "load": (r.figures.get("load") or {}).get("source") if r.load_s is not None else None}}
            for r in rows]


def job_counts(config: Mapping[str, Any], configfiles: list[Path], workdir: Path) -> dict[str, int]:
    """Jobs of every rule in a full run, as preflight counts them (the rules parsed, no DAG built)."""
    from finet2i.preflight.plan import job_count, parse_rules, rule_enabled

    rules = parse_rules(workdir / "Snakefile", configfiles, workdir)
    return {name: job_count(info, config) for name, info in rules.items() if rule_enabled(name, config)}
