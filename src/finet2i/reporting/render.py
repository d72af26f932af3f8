"""The report's tables and figures as Markdown (figures linked from ``figures/``) and as one self-contained
HTML page (``templates/report.html.j2``, its CSS inlined from ``templates/report.css``, figures embedded as
base64 PNG).

The HTML is rendered with autoescape on: stage names, drop reasons, labels and paths are text, so a prompt
or a model's answer that reaches the report is shown, never interpreted as markup. jinja2 is imported only
when rendering.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from finet2i.reporting.tables import Table, fmt
from finet2i.reporting.thumbnails import Thumb

TITLE = "Fine-T2I pipeline report"
DEMO_BANNER = ("DEMO OUTPUT IS NOT A DATASET: this run used tiny random-weight models and demo thresholds; "
               "its numbers only show that the pipeline runs end to end.")
TEMPLATES = Path(__file__).resolve().parent / "templates"
HTML_TEMPLATE = "report.html.j2"
EXPLORE_URL = "http://127.0.0.1:8000/"  # where `finet2i explore` serves by default
SAMPLES_NOTE = ("A few finished samples of each subset (the first ones in key order), then a few records a stage "
                "dropped (framed red: the stage and its reason); finet2i explore shows them all.")


def explore_line(results_dir: str) -> str:
    """How to browse this run's samples and dropped records (``finet2i explore``, docs/explore.md)."""
    return (f"Browse the samples and every record a stage dropped, with its reason and evidence: run "
            f"`finet2i explore {results_dir}` and open {EXPLORE_URL} (docs/explore.md); "
            f"`finet2i explore {results_dir} --static DIR` writes a copy that opens from disk.")


def subset_title(subset: str) -> str:
    """``pe_ar`` -> ``pe_ar: synthetic_enhanced_prompt_random_resolution`` (the release folder it ships in)."""
    from finet2i.release.layout import FOLDERS

    return f"{subset}: {FOLDERS[subset]}" if subset in FOLDERS else subset


def _short(text: str, words: int = 14) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def _samples_context(samples: dict[str, list[Thumb]]) -> list[dict[str, Any]]:
    out = []
    for subset, thumbs in samples.items():
        kept = sum(t.reason is None for t in thumbs)
        out.append({"title": subset_title(subset), "kept": kept, "dropped": len(thumbs) - kept, "thumbs": [{
            "src": "data:image/jpeg;base64," + base64.b64encode(t.jpeg).decode("ascii"),
            "prompt": t.prompt, "short": _short(t.prompt), "key": t.key, "reason": t.reason, "stage": t.stage,
            "evidence": _short(t.evidence, 24), "score": None if t.score is None else f"{t.score:.2f}",
        } for t in thumbs]})
    return out


def _meta_line(meta: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {fmt(v)}" for k, v in meta.items())


def _markdown_table(t: Table) -> list[str]:
    lines = [f"## {t.title}", ""]
    if t.note:
        lines += [f"_{t.note}_", ""]
    lines.append("| " + " | ".join(t.headers) + " |")
    lines.append("|" + "---|" * len(t.headers))
    for r in t.rows:
        lines.append("| " + " | ".join(fmt(v).replace("|", "\\|") for v in r) + " |")
    lines.append("")
    if t.footer:
        lines += [f"_{t.footer}_", ""]
    return lines


def _markdown_helps(helps: dict[str, Any]) -> list[str]:
    lines = ["# Does it help?", ""]
    if helps.get("demo_note"):
        lines += [f"> **{helps['demo_note']}**", ""]
    for t in helps["tables"]:
        lines += _markdown_table(t)
    if helps["pairs"]:
        lines += ["## Base / fine-tuned, same prompt and seed", "", "| prompt | base | fine-tuned |", "|---|---|---|"]
        for p in helps["pairs"]:
            prompt = p["prompt"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {prompt} | ![base](../evaluate/{p['base_image']}) | "
                         f"![fine-tuned](../evaluate/{p['tuned_image']}) |")
        lines.append("")
    return lines


def render_markdown(tables: list[Table], figures: dict[str, tuple[str, bytes]], flags: list[str],
                    meta: dict[str, Any], demo: bool, results_dir: str | None = None,
                    samples: dict[str, list[Thumb]] | None = None,
                    helps: dict[str, Any] | None = None) -> str:
    lines = [f"# {TITLE}", ""]
    if demo:
        lines += [f"> **{DEMO_BANNER}**", ""]
    lines += [_meta_line(meta), ""]
    if results_dir is not None:
        lines += [explore_line(results_dir), ""]
    if samples:
        lines += ["## Samples", "", SAMPLES_NOTE, ""]
        for subset, thumbs in samples.items():
            lines += [f"### {subset_title(subset)}", "", f"![{subset}](figures/samples_{subset}.png)", ""]
            lines += [f"- dropped by {t.stage}: **{t.reason}**" + (f" ({t.evidence})" if t.evidence else "")
                      for t in thumbs if t.reason]
            lines.append("")
    lines += ["## Flags", ""] + ([f"- {f}" for f in flags] or ["- none"]) + [""]
    for t in tables:
        lines += _markdown_table(t)
    for key, (caption, _) in figures.items():
        lines += [f"## {caption}", "", f"![{caption}](figures/{key}.png)", ""]
    if helps is not None:
        lines += _markdown_helps(helps)
    return "\n".join(lines)


def _environment() -> Any:
    import jinja2

    # autoescape=True, not select_autoescape(): the template's name ends in .j2, which select_autoescape's
    # extension list would not match, leaving the page unescaped.
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def _html_table(t: Table) -> dict[str, Any]:
    return {
        "title": t.title, "note": t.note, "footer": t.footer, "headers": t.headers,
        "rows": [[{"text": fmt(v), "flag": isinstance(v, str) and v.startswith("FLAG")} for v in r] for r in t.rows],
    }


def render_html(tables: list[Table], figures: dict[str, tuple[str, bytes]], flags: list[str],
                meta: dict[str, Any], demo: bool, results_dir: str | None = None,
                samples: dict[str, list[Thumb]] | None = None,
                helps: dict[str, Any] | None = None) -> str:
    context = {
        "samples": _samples_context(samples or {}),
        "samples_note": SAMPLES_NOTE,
        "explore": None if results_dir is None else {"results": results_dir, "url": EXPLORE_URL},
        "title": TITLE,
        "demo": demo,
        "banner": DEMO_BANNER,
        "meta": _meta_line(meta),
        "flags": flags,
        "tables": [_html_table(t) for t in tables],
        "helps": None if helps is None else {**helps, "tables": [_html_table(t) for t in helps["tables"]]},
        "figures": [{"caption": caption, "png_base64": base64.b64encode(png).decode("ascii")}
                    for caption, png in figures.values()],
    }
    return str(_environment().get_template(HTML_TEMPLATE).render(context))
