"""The static export: ``finet2i explore RESULTS_DIR --static OUT --per-facet N``.

A folder that works from ``file://`` or any static host, for sharing a look at a dataset the way the paper's
authors share theirs: ``index.html`` (the funnel and a grid of up to N samples per value of every facet, with
the same filters and search done in the page by a few lines of inline script), one page per exported sample
(``sample/<folder>/<key>.html``, its image and thumbnail beside it), and per stage and drop reason the first
N dropped records with their evidence and images (``dropped/<stage>[--<subset>--<reason>].html``), plus a copy
of the run's report. Pages are made by the same templates as the served app (only the links differ) and have
their CSS inlined; nothing is fetched from elsewhere.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from finet2i.explore import media, pages
from finet2i.explore.catalog import SamplePage
from finet2i.explore.query import FACETS, ExploreError, Query

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

FILTER_JS = """(function () {
  var form = document.getElementById('filters');
  if (!form) return;
  var cards = Array.prototype.slice.call(document.querySelectorAll('#grid li.card'));
  var selects = Array.prototype.slice.call(form.querySelectorAll('select'));
  function apply() {
    var words = form.q.value.toLowerCase().split(/\\s+/).filter(Boolean);
    var lo = parseFloat(form.min_score.value), hi = parseFloat(form.max_score.value), n = 0;
    cards.forEach(function (c) {
      var ok = selects.every(function (s) { return !s.value || c.dataset[s.name] === s.value; }) &&
               words.every(function (w) { return c.dataset.text.indexOf(w) >= 0; });
      var score = parseFloat(c.dataset.score);
      if (!isNaN(lo)) ok = ok && score >= lo;
      if (!isNaN(hi)) ok = ok && score <= hi;
      c.classList.toggle('hidden', !ok);
      if (ok) n++;
    });
    document.getElementById('total').textContent = n;
  }
  form.addEventListener('submit', function (e) {
    e.preventDefault();
    apply();
    var p = new URLSearchParams();
    new FormData(form).forEach(function (v, k) { if (v) p.append(k, v); });
    history.replaceState(null, '', '#' + p.toString());
  });
  form.addEventListener('change', apply);
  new URLSearchParams(location.hash.slice(1)).forEach(function (v, k) { if (form[k]) form[k].value = v; });
  apply();
})();"""


def _name(value: str | None) -> str:
    return _UNSAFE.sub("_", value or "-")


class StaticUrls:
    """Links between the exported files, relative to the page being written (``depth`` folders deep)."""

    static = True
    filter_js = FILTER_JS
    votes = None  # voting needs the server: the export has no human-preference pages

    def __init__(self, depth: int, exported: set[tuple[str, str]], dropped: set[str], report: bool) -> None:
        self.prefix = "../" * depth
        self.exported = exported
        self.dropped_pages = dropped
        self.css_text = (pages.TEMPLATES / "explore.css").read_text()
        self.report = self.prefix + "report.html" if report else None

    def grid(self, params: dict[str, str] | None = None) -> str:
        return self.prefix + "index.html" + (f"#{urlencode(params)}" if params else "")

    def sample(self, folder: str, key: str) -> str | None:
        return self.prefix + sample_path(folder, key) if (folder, key) in self.exported else None

    def thumb(self, folder: str, key: str) -> str:
        return self.prefix + f"thumb/{quote(_name(folder))}/{quote(_name(key))}.jpg"

    def image(self, folder: str, key: str) -> str:
        return self.prefix + f"image/{quote(_name(folder))}/{quote(_name(key))}.jpg"

    def dropped(self, stage: str, subset: str | None = None, reason: str | None = None, page: int = 0) -> str | None:
        name = dropped_path(stage, subset, reason)
        return self.prefix + name if page == 0 and name in self.dropped_pages else None

    def record_image(self, stage: str, subset: str | None, shard: str, record_id: str) -> str | None:
        return self.prefix + record_image_path(stage, subset, shard, record_id)


def sample_path(folder: str, key: str) -> str:
    return f"sample/{quote(_name(folder))}/{quote(_name(key))}.html"


def dropped_path(stage: str, subset: str | None, reason: str | None) -> str:
    if reason is None:
        return f"dropped/{_name(stage)}.html"
    return f"dropped/{_name(stage)}--{_name(subset)}--{_name(reason)}.html"


def record_image_path(stage: str, subset: str | None, shard: str, record_id: str) -> str:
    return f"record/{_name(stage)}/{_name(subset)}/{_name(shard)}/{_name(record_id)}.jpg"


def _write(out: Path, relative: str, data: str | bytes) -> None:
    from urllib.parse import unquote

    path = out / unquote(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)


def export(app: Any, out: str | Path, *, per_facet: int) -> Path:
    """Write the export of ``app``'s results folder to ``out``; returns the path of ``index.html``."""
    out = Path(out)
    if out.resolve() == app.root or app.root in out.resolve().parents:
        raise ExploreError(f"{out}: the export must not be written inside the results folder {app.root}; "
                           f"give --static a folder elsewhere")
    out.mkdir(parents=True, exist_ok=True)
    catalog = app.catalog
    rows = catalog.sampled(per_facet)
    exported = {(r["folder"], r["id"]) for r in rows}

    # Which dropped pages exist: per stage, one per (subset, reason) (the stage's page is its first reason).
    dropped_pages: dict[str, tuple[str, str | None, str | None]] = {}
    for st in catalog.record_stages():
        first = catalog.dropped(st.name, page_size=0)
        dropped_pages[dropped_path(st.name, None, None)] = (st.name, None, None)
        for x in first.reasons:
            dropped_pages[dropped_path(st.name, x["subset"], x["reason"])] = (st.name, x["subset"], x["reason"])
    report = catalog.root / "report" / "report.html"
    if report.is_file():
        shutil.copyfile(report, out / "report.html")

    def urls(depth: int) -> StaticUrls:
        return StaticUrls(depth, exported, set(dropped_pages), report.is_file())

    # The grid: every exported sample on one page; counts over the export.
    counts = {f.param: sorted(Counter(str(r[f.column]) for r in rows if r[f.column] is not None).items(),
                              key=lambda x: (-x[1], x[0])) for f in FACETS}
    grid = SamplePage(len(rows), rows, counts, 0, 1)
    _write(out, "index.html", pages.render_grid(catalog, urls(0), Query(), grid))

    for r in rows:
        folder, key = r["folder"], r["id"]
        sample = catalog.sample(folder, key)
        if sample is None:
            continue
        _write(out, sample_path(folder, key), pages.render_sample(catalog, urls(2), sample))
        data = app.sample_image(folder, key)
        if data is not None:
            _write(out, urls(0).image(folder, key), data)
            _write(out, urls(0).thumb(folder, key), media.thumbnail(data))

    for name, (stage, subset, reason) in dropped_pages.items():
        d = catalog.dropped(stage, subset=subset, reason=reason, page_size=per_facet)
        _write(out, name, pages.render_dropped(catalog, urls(1), d))
        if d.image_stage:
            for r in d.rows:
                table = catalog.record_image_table(d.image_stage, r["_subset"], r["_shard"])
                data = media.record_image(table, r["id"]) if table else None
                if data is not None:
                    _write(out, record_image_path(d.image_stage, r["_subset"], r["_shard"], r["id"]), data)
    log.info("explore: exported %d samples and %d dropped pages to %s", len(rows), len(dropped_pages), out)
    return out / "index.html"
