"""The explorer's HTML: the grid, a sample's detail view, a stage's dropped records, the funnel above them.

Rendered from ``templates/*.html.j2`` by jinja2 with autoescape on, so every prompt, model answer, reason and
path is text in the page (a prompt ``<script>...`` shows as those characters). The same templates make the
served app and the static export; they differ only in how links are made (:class:`ServerUrls`,
``finet2i.explore.static.StaticUrls``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from finet2i.explore.catalog import Catalog, SamplePage
from finet2i.explore.dropped import DroppedPage
from finet2i.explore.query import FACETS, Query
from finet2i.reporting.tables import fmt as report_fmt

TEMPLATES = Path(__file__).resolve().parent / "templates"
TITLE = "finet2i explore"

# Provenance keys grouped into the detail view's verdict table, by prefix (the stage that wrote them).
VERDICT_PREFIXES = (("guard_enhanced_", "guard (enhanced prompt)"), ("guard_", "guard"),
                    ("attribute_", "attributes"), ("verifier_", "attributes"), ("judge_", "judge"),
                    ("curated_guard_", "guard (real image captions)"))


class ServerUrls:
    """Links of the served app: absolute paths on this server."""

    static = False
    css = "/static/explore.css"

    def __init__(self, has_report: bool = True, has_votes: bool = False) -> None:
        self.report = "/files/report/report.html" if has_report else None
        self.votes = "/votes" if has_votes else None  # the human-preference summary; the vote page is vote()

    def vote(self, rater: str | None = None) -> str:
        return "/vote" + (f"?{urlencode({'rater': rater})}" if rater else "")

    def vote_image(self, pair: str, position: str, rater: str) -> str:
        return f"/vote/image/{quote(pair)}/{quote(position)}?{urlencode({'rater': rater})}"

    def grid(self, params: dict[str, str] | None = None) -> str:
        return "/" + (f"?{urlencode(params)}" if params else "")

    def sample(self, folder: str, key: str) -> str | None:
        return f"/sample/{quote(folder)}/{quote(key)}"

    def thumb(self, folder: str, key: str) -> str:
        return f"/thumb/{quote(folder)}/{quote(key)}"

    def image(self, folder: str, key: str) -> str:
        return f"/image/{quote(folder)}/{quote(key)}"

    def dropped(self, stage: str, subset: str | None = None, reason: str | None = None, page: int = 0) -> str | None:
        params = {k: v for k, v in (("subset", subset), ("reason", reason), ("page", page or None)) if v}
        return f"/dropped/{quote(stage)}" + (f"?{urlencode(params)}" if params else "")

    def record_image(self, stage: str, subset: str | None, shard: str, record_id: str) -> str | None:
        return f"/record-image/{quote(stage)}/{quote(subset or '-')}/{quote(shard)}/{quote(record_id)}"


@functools.cache
def environment() -> Any:
    """One jinja2 environment per process: templates are compiled once."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["tojson_text"] = lambda v: json.dumps(v, ensure_ascii=False, indent=1, default=str)
    return env


def fmt(v: Any) -> str:
    """The report's formatting (``finet2i.reporting.tables.fmt``), and lists and objects of provenance."""
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x) for x in v) if v else "[]"
    if isinstance(v, dict):
        return json.dumps(v, ensure_ascii=False, default=str)
    return report_fmt(v)


def funnel_rows(catalog: Catalog, urls: Any) -> list[dict[str, Any]]:
    """The report's funnel rows, each number with the link to the records behind it (None where none)."""
    rows = []
    for r in catalog.funnel():
        packaged = r.stage in ("package", "package_real")
        rows.append({
            "label": r.label, "records_in": r.records_in, "kept": r.kept,
            "kept_url": urls.grid({"subset": r.subset} if r.subset else {}) if packaged else None,
            "dropped": [{"reason": k, "count": v, "url": urls.dropped(r.stage, r.subset, k)}
                        for k, v in sorted(r.dropped.items())],
        })
    return rows


def _base(catalog: Catalog, urls: Any) -> dict[str, Any]:
    return {"title": TITLE, "urls": urls, "root": str(catalog.root), "funnel": funnel_rows(catalog, urls),
            "stages": [s.name for s in catalog.record_stages()]}


def render_grid(catalog: Catalog, urls: Any, q: Query, page: SamplePage) -> str:
    facets = [{"param": f.param, "label": f.label, "value": q.value(f.param),
               "options": page.facet_counts.get(f.param, [])} for f in FACETS]
    for f in facets:  # the selected value stays selectable even when nothing else matches
        if f["value"] and f["value"] not in [v for v, _ in f["options"]]:
            f["options"] = [(f["value"], 0), *f["options"]]
    return environment().get_template("grid.html.j2").render(
        **_base(catalog, urls), q=q, page=page, facets=facets,
        prev_url=urls.grid(q.params(page=q.page - 1 or None)) if q.page > 0 else None,
        next_url=urls.grid(q.params(page=q.page + 1)) if q.page + 1 < page.pages else None)


def _verdicts(provenance: dict[str, Any]) -> list[dict[str, Any]]:
    groups: dict[str, list[tuple[str, Any]]] = {}
    for key in sorted(provenance):
        for prefix, label in VERDICT_PREFIXES:
            if key.startswith(prefix):
                groups.setdefault(label, []).append((key, provenance[key]))
                break
    return [{"label": label, "fields": fields} for label, fields in groups.items()]


def _candidates(provenance: dict[str, Any]) -> list[dict[str, Any]]:
    seeds, scores = provenance.get("candidate_seeds") or [], provenance.get("candidate_scores") or []
    chosen = provenance.get("seed")
    return [{"seed": s, "score": sc, "chosen": s == chosen} for s, sc in zip(seeds, scores, strict=False)]


def render_sample(catalog: Catalog, urls: Any, sample: dict[str, Any]) -> str:
    record, provenance = sample["record"], sample["provenance"]
    others = [{**o, "url": urls.sample(o["folder"], record["id"])} for o in sample["others"]]
    return environment().get_template("sample.html.j2").render(
        **_base(catalog, urls), s=sample, record=record, provenance=provenance, others=others,
        candidates=_candidates(provenance), verdicts=_verdicts(provenance),
        image_url=urls.image(sample["folder"], record["id"]))


def render_dropped(catalog: Catalog, urls: Any, d: DroppedPage) -> str:
    for r in d.rows:
        r["_image_url"] = (urls.record_image(d.image_stage, r["_subset"], r["_shard"], r["id"])
                           if d.image_stage else None)
        r["_evidence"] = [(c, r.get(c)) for c in d.evidence if c in r]
        if r.get("duplicate_of"):
            r["_duplicate_prompt"] = d.duplicates.get(r["duplicate_of"])
    reasons = [{**x, "url": urls.dropped(d.stage, x["subset"], x["reason"]),
                "current": x["reason"] == d.reason and (d.subset is None or x["subset"] == d.subset)}
               for x in d.reasons]
    return environment().get_template("dropped.html.j2").render(
        **_base(catalog, urls), d=d, reasons=reasons,
        prev_url=urls.dropped(d.stage, d.subset, d.reason, d.page - 1) if d.page > 0 else None,
        next_url=urls.dropped(d.stage, d.subset, d.reason, d.page + 1) if d.page + 1 < d.pages else None)


def render_vote(urls: Any, prefs: Any, question: dict[str, Any] | None) -> str:
    """The vote page: the rater's name form (``question`` None), the next question, or the end."""
    return environment().get_template("vote.html.j2").render(
        title=TITLE, urls=urls, q=question, token=prefs.token, pairs=len(prefs.pairs), keys=KEY_HINTS,
        demo=bool(prefs.metrics.get("demo")))


KEY_HINTS = (("1", "left"), ("2", "right"), ("=", "tie"))


def render_votes(urls: Any, summary: dict[str, Any]) -> str:
    from finet2i.finetune.votes import QUESTIONS

    return environment().get_template("votes.html.j2").render(title=TITLE, urls=urls, s=summary,
                                                              questions=QUESTIONS)


def render_error(urls: Any, status: int, message: str) -> str:
    return environment().get_template("error.html.j2").render(title=TITLE, urls=urls, status=status,
                                                              message=message)
