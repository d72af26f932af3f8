"""GPU-hours of a configured run, per GPU stage and in total, from measured rates; "not measured" otherwise.

    .venv/bin/python benchmarks/plan.py --rates benchmarks/rates.example.json                  # production config
    .venv/bin/python benchmarks/plan.py --configfile config/demo.yaml --rates my-rates.json --json

What each stage processes comes from the config at the paper's yields, the way preflight sizes the disk
(finet2i.preflight.disk.estimate: shards x specs per shard, scaled by finet2i.recipe.paper.FUNNEL); how many jobs run
it comes from the rules' wildcard domains, as preflight counts them (finet2i.preflight.plan.job_count). The
rates file gives, per stage, what was measured on one GPU:

    {"gpu": "NVIDIA H100 80GB HBM3", "stages": {
        "embed": {"items_per_s": 32733.8, "load_s": 20.0, "gpu_mem_gb": 2.1,
                  "source": "benchmarks/measured/h100-dedup_gpu-5M.log"}, ...}}

``items_per_s``: throughput at the batch size that maximises it; ``load_s``: model load and engine start-up,
paid once per job; ``gpu_mem_gb``: peak memory. A stage without ``items_per_s`` is "not measured"; one
without ``load_s`` gets its compute hours and "load not measured" (its total is left out). No figure is ever
filled in. GPU-hours = items / items_per_s + jobs x load_s (one GPU per job, as the rules declare; queue
waits are not GPU time and are not counted). Load share per job = load_s / (load_s + items per job /
items_per_s): the issue's target is under 10% at production size; "1 shard/job" gives the same share at one
shard per job (before gpu_jobs), for comparison.

Stages (keys of "stages"), and what one item is:
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# rate key -> (rule whose jobs do the work, disk-estimate stage whose record count it processes, what an item is)
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
    "curated_caption": ("curated_caption", "curated_caption", "photo captioned (Qwen3-VL-8B)"),
    "curated_enhance": ("curated_enhance", "curated_enhance", "caption enhanced"),
    "curated_guard": ("curated_guard", "curated_guard", "caption guarded"),
}
__doc__ += "".join(f"    {k:<19} {v[2]}\n" for k, v in STAGES.items())


@dataclass
class Row:
    stage: str
    rule: str
    item: str
    items: int
    jobs: int
    items_per_s: float | None = None
    load_s: float | None = None
    gpu_mem_gb: float | None = None
    compute_h: float | None = None
    load_h: float | None = None
    gpu_h: float | None = None  # None: not measured (rate or load missing)
    load_share: float | None = None
    load_share_one_shard: float | None = None  # the same at one shard per job (gpu_jobs: 1), for comparison
    note: str = ""

    @property
    def measured(self) -> bool:
        return self.gpu_h is not None


def items_per_stage(config: dict[str, Any], workdir: Path) -> dict[str, int]:
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


def jobs_per_rule(config: dict[str, Any], configfiles: list[Path], workdir: Path) -> dict[str, int]:
    """Jobs of every rule in a full run, as preflight counts them (the rules parsed, no DAG built)."""
    from finet2i.preflight.plan import job_count, parse_rules, rule_enabled

    rules = parse_rules(workdir / "Snakefile", configfiles, workdir)
    return {name: job_count(info, config) for name, info in rules.items() if rule_enabled(name, config)}


def plan(config: dict[str, Any], jobs: dict[str, int], rates: dict[str, Any]) -> list[Row]:
    measured = rates.get("stages", {})
    unknown = sorted(set(measured) - set(STAGES))
    if unknown:
        raise SystemExit(f"rates file: unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    rows = []
    for key, n in items_per_stage(config, ROOT).items():
        rule, _stage, item = STAGES[key]
        if rule not in jobs and f"{rule}_batch" in jobs:  # gpu_jobs: several shards per job
            rule = f"{rule}_batch"
        r = Row(key, rule, item, n, jobs.get(rule, 0))
        m = measured.get(key) or {}
        r.items_per_s, r.load_s, r.gpu_mem_gb = m.get("items_per_s"), m.get("load_s"), m.get("gpu_mem_gb")
        r.note = str(m.get("note", ""))
        if r.items_per_s:
            r.compute_h = n / float(r.items_per_s) / 3600
            if r.load_s is not None:
                r.load_h = r.jobs * float(r.load_s) / 3600
                r.gpu_h = r.compute_h + r.load_h
                per_job = r.compute_h * 3600 / r.jobs if r.jobs else 0.0
                r.load_share = _share(float(r.load_s), per_job)
                one = config["shards"]["count"] if rule.endswith("_batch") else r.jobs  # one job per shard
                r.load_share_one_shard = _share(float(r.load_s), r.compute_h * 3600 / one if one else 0.0)
        rows.append(r)
    return rows


def _share(load_s: float, compute_s: float) -> float:
    return load_s / (load_s + compute_s) if load_s or compute_s else 0.0


def _fmt(v: float | None, spec: str, missing: str = "-") -> str:
    return missing if v is None else format(v, spec)


def render(rows: list[Row], rates: dict[str, Any], configfile: str) -> str:
    lines = [f"GPU plan for {configfile} at the paper's yields; rates: {rates.get('gpu', 'GPU not named')}"
             f"{' (' + rates['source'] + ')' if rates.get('source') else ''}", ""]
    head = (f"{'stage':<19} {'items':>12} {'jobs':>6} {'items/job':>10} {'items/s':>9} {'load s':>7} "
            f"{'mem GB':>6} {'compute h':>10} {'load h':>8} {'GPU-h':>9} {'load/job':>8} {'1 shard/job':>11}")
    lines += [head, "-" * len(head)]
    for r in rows:
        per_job = f"{r.items / r.jobs:,.0f}" if r.jobs else "-"
        left = f"{r.stage:<19} {r.items:>12,} {r.jobs:>6,} {per_job:>10}"
        if not r.items_per_s:
            lines.append(f"{left} {'not measured':>9}")
            continue
        share = "-" if r.load_share is None else f"{100 * r.load_share:.1f}%"
        one = "-" if r.load_share_one_shard is None else f"{100 * r.load_share_one_shard:.1f}%"
        lines.append(
            f"{left} {r.items_per_s:>9,.1f} {_fmt(r.load_s, '.0f', 'n/m'):>7} {_fmt(r.gpu_mem_gb, '.1f'):>6} "
            f"{r.compute_h:>10,.1f} {_fmt(r.load_h, ',.1f', 'n/m'):>8} {_fmt(r.gpu_h, ',.1f', 'n/m'):>9} "
            f"{share:>8} {one:>11}")
    done = [r for r in rows if r.measured]
    missing = [r.stage for r in rows if not r.measured]
    total = sum(r.gpu_h for r in done if r.gpu_h is not None)
    jobs = sum(r.jobs for r in done if not r.stage.startswith("generate.") or r.stage == "generate.z_image")
    lines += ["", f"total GPU-hours over the {len(done)} measured stage(s): {total:,.1f} ({jobs:,} GPU jobs)"]
    if missing:
        lines.append(f"not measured ({len(missing)}), so NOT in the total: {', '.join(missing)}")
    lines.append("n/m: not measured (a stage with a rate but no load_s shows its compute hours only); "
                 "1 shard/job: the load share per job without gpu_jobs")
    notes = [f"  {r.stage}: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["", "notes from the rates file:", *notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--rates", required=True, type=Path, help="JSON of measured per-stage rates")
    parser.add_argument("--json", action="store_true", help="every row as JSON")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from finet2i.workflow.config import load_config

    configfile = ROOT / args.configfile if not Path(args.configfile).is_absolute() else Path(args.configfile)
    config = load_config(configfile, base_dir=ROOT, check_models=False)
    rates = json.loads(args.rates.read_text())
    rows = plan(config, jobs_per_rule(config, [configfile], ROOT), rates)
    if args.json:
        print(json.dumps([{**asdict(r), "measured": r.measured} for r in rows], indent=1))
    else:
        print(render(rows, rates, args.configfile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
