"""The report's "Does it help?" section (paper section 5): what the fine-tune trained on, the evaluation's metric
table, the judge's and the people's win rates, and base / fine-tuned image pairs for a sample of prompts.

Everything comes from the files ``finetune`` and ``evaluate`` wrote (``finetune.json``, ``metrics.json``,
``pairs.parquet``, the images) and the votes' summary: nothing is recomputed here. The pairs are shown as small
JPEG copies of the evaluation's PNGs, so that the self-contained HTML stays small at 1024 px.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from finet2i.reporting.tables import Table, pct

THUMB = 384
DEMO_NOTE = ("DEMO: a few LoRA steps on a tiny random-weight SD-XL and a random judge; these numbers mean "
             "nothing about the dataset.")


def _interval(ci: list[float] | None, scale: float = 1.0, unit: str = "") -> str | None:
    if not ci:
        return None
    return f"{ci[0] * scale:+.4g}{unit} to {ci[1] * scale:+.4g}{unit}"


def _rate_interval(ci: list[float] | None) -> str | None:
    return None if not ci else f"{ci[0] * 100:.1f}% to {ci[1] * 100:.1f}%"


def finetune_table(ft: dict[str, Any]) -> Table:
    dropped = ft.get("dropped", {}).get("prompt_too_long", 0)
    rows = [
        ["base model", ft.get("model")],
        ["samples in the release", ft.get("records_in")],
        ["dropped: caption over the text encoder's limit", dropped],
        ["samples per epoch (mixture)", ft.get("epoch_size")],
        ["optimizer steps", ft.get("steps")],
        ["images per step (batch x GPUs x accumulation)", ft.get("images_per_step")],
        ["resolution buckets", ", ".join(f"{k}: {v}" for k, v in (ft.get("buckets") or {}).items())],
        ["LoRA", f"rank {ft['lora']['rank']}, alpha {ft['lora']['alpha']}, {ft['lora']['parameters']:,} parameters"
         if ft.get("lora") else None],
        ["learning rate", (ft.get("settings") or {}).get("learning_rate")],
        ["last loss", (ft.get("losses") or [None])[-1]],
        ["device, processes", f"{ft.get('device')}, {ft.get('processes')}"],
        ["seconds (setup, training)", f"{ft['seconds']['setup']}, {ft['seconds']['train']}" if ft.get("seconds")
         else None],
    ]
    return Table("Does it help? The fine-tune (results/finetune/finetune.json)", ["", "value"], rows,
                 note="LoRA on the UNet's attention projections of the base model, trained on this run's dataset "
                      "(docs/finetune.md); the adapter loads with pipe.load_lora_weights('results/finetune/adapter').")


def metric_table(m: dict[str, Any]) -> Table:
    rows = []
    for metric in (m.get("metrics") or {}).values():
        if metric.get("status") == "not run":
            rows.append([metric.get("label"), None, None, None, None, f"not run: {metric.get('reason')}"])
            continue
        rows.append([metric.get("label"), metric.get("base"), metric.get("tuned"), metric.get("difference"),
                     _interval(metric.get("ci95")), metric.get("model")])
    g = m.get("geneval") or {}
    if g.get("status") == "run":
        rows.append(["GenEval overall", g.get("base"), g.get("tuned"), g.get("difference"), None,
                     f"{g.get('prompts')} prompts x {g.get('images_per_prompt')} images"])
    else:
        rows.append(["GenEval", None, None, None, None, f"not run ({g.get('reason', 'no status')})"])
    return Table(
        f"Does it help? Metrics on {m.get('prompts')} {m.get('prompt_set')} prompts x {m.get('images_per_prompt')} "
        f"seed(s)", ["metric", "base", "fine-tuned", "difference", "95% interval of the difference", "scorer"], rows,
        note="Means over the same prompts and seeds for both models; the interval is a paired bootstrap over the "
             f"prompts. Rendered at {m['render']['width']}x{m['render']['height']}, {m['render']['steps']} steps, "
             f"guidance {m['render']['guidance']}." if m.get("render") else "")


def preference_table(m: dict[str, Any], votes: dict[str, Any] | None) -> Table:
    rows = []
    judge = m.get("judge") or {}
    for c, w in (judge.get("criteria") or {}).items():
        rows.append([f"judge ({judge.get('model')})", c, w["tuned"], w["base"], w["tie"], pct(w["win_rate"]),
                     _rate_interval(w["ci95"])])
    if judge.get("status") == "not run":
        rows.append(["judge", "-", None, None, None, None, f"not run: {judge.get('reason')}"])
    if votes and votes.get("votes"):
        for c, w in votes["criteria"].items():
            rows.append([f"people ({len(votes['raters'])} raters)", c, w["tuned"], w["base"], w["tie"],
                         pct(w["win_rate"]), _rate_interval(w["ci95"])])
    footer = f"{judge.get('unparseable', 0)} judge answer(s) could not be read and are not counted."
    if not (votes and votes.get("votes")):
        footer += (" No human votes yet: run `finet2i explore results`, open /vote, then rerun the report "
                   "(snakemake report) to see them here.")
    elif votes.get("earlier_evaluations"):
        footer += f" {votes['earlier_evaluations']} vote(s) cast on an earlier evaluation are not counted."
    return Table("Does it help? Pairwise preference (fine-tuned against base)",
                 ["who", "criterion", "fine-tuned wins", "base wins", "ties", "win rate", "Wilson 95% interval"],
                 rows, note="Win rate: the fine-tuned image chosen, over the comparisons not tied; sides were "
                            "randomised per pair (and per rater).", footer=footer)


def _thumb_b64(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((THUMB, THUMB))
        out = io.BytesIO()
        im.save(out, "JPEG", quality=85)
    return base64.b64encode(out.getvalue()).decode("ascii")


def shown_pairs(pairs: list[dict[str, Any]], evaluate_dir: Path, n: int) -> list[dict[str, Any]]:
    """``n`` pairs spread evenly over the evaluation (in its order), with their scores and images."""
    if n <= 0 or not pairs:
        return []
    step = max(1, len(pairs) // n)
    out = []
    for p in pairs[::step][:n]:
        out.append({
            "pair_id": p["pair_id"], "prompt": p["prompt"],
            "base_image": p["base_image"], "tuned_image": p["tuned_image"],
            "base_b64": _thumb_b64(evaluate_dir / p["base_image"]),
            "tuned_b64": _thumb_b64(evaluate_dir / p["tuned_image"]),
            "scores": {k: p.get(k) for k in ("aesthetic_base", "aesthetic_tuned", "clip_base", "clip_tuned",
                                            "judge_alignment", "judge_visual_quality") if k in p},
        })
    return out


def helps_section(ft: dict[str, Any], metrics: dict[str, Any], pairs: list[dict[str, Any]], evaluate_dir: Path,
                  votes: dict[str, Any] | None, n_pairs: int) -> dict[str, Any]:
    return {"tables": [metric_table(metrics), preference_table(metrics, votes), finetune_table(ft)],
            "pairs": shown_pairs(pairs, evaluate_dir, n_pairs),
            "demo_note": DEMO_NOTE if metrics.get("demo") else None}
