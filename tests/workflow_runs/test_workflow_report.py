"""The demo's report as a person sees it: Debian's chromium (through Playwright, no browser download) opens
results/report/report.html of the session's shared demo run in a 1300 px wide window, a laptop's.

Nothing is wider than the window (no sideways scrolling; every figure shown at its own size, not squeezed),
and the samples grid shows, for every subset that shipped samples, its first finished samples and a few
dropped records with the stage and reason, every thumbnail a decoded image. Expected values come from the
demo's parquet files read with pyarrow.

Screenshots are kept under the pytest temp folder (``report-screenshots/``, or ``$FINET2I_TEST_ARTIFACTS``);
with ``FINET2I_UPDATE_DOCS=1`` the samples grid is also copied to docs/demo-report.png, the picture README.md
shows: ``FINET2I_UPDATE_DOCS=1 scripts/run-tests.sh tests/workflow_runs/test_workflow_report.py`` remakes it.
Named test_workflow_* so that it runs after test_slurm_workflow, which starts the shared demo run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.browser import chromium, screenshots_dir
from support.workflow import ROOT, local_demo

from finet2i.reporting.thumbnails import KEPT_PER_SUBSET

WINDOW = {"width": 1300, "height": 900}  # a laptop's browser window

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """The session's finished demo run (support.workflow.local_demo), read only."""
    return local_demo(tmp_path_factory).wait() / "results"


@pytest.fixture(scope="module")
def page(tmp_path_factory):  # type: ignore[no-untyped-def]
    with chromium(tmp_path_factory, WINDOW) as context:
        yield context.new_page()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshots_dir(tmp_path_factory, "report-screenshots")


def kept_per_subset(results: Path) -> dict[str, int]:
    """Finished samples per subset code, from the package tables (pyarrow, not the report)."""
    out: dict[str, int] = {}
    for table in [*sorted((results / "package").glob("*/*.parquet")), *sorted((results / "package_real")
                                                                                .glob("*.parquet"))]:
        subset = table.parent.name if table.parent.name != "package_real" else "real"
        kept = pq.read_table(table, columns=["kept"]).column("kept").to_pylist()
        out[subset] = out.get(subset, 0) + sum(kept)
    return out


def test_the_demo_report_fits_a_laptop_window_and_shows_the_samples(results: Path, page, shots: Path) -> None:
    report = results / "report" / "report.html"
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    page.screenshot(path=str(shots / "report-full.png"), full_page=True)

    # Nothing wider than the window: no sideways scrolling, no image past the right edge, no figure squeezed.
    width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] <= width[1] <= WINDOW["width"], width
    images = page.evaluate("""[...document.images].map(i => ({alt: i.alt, right: i.getBoundingClientRect().right,
        shown: i.getBoundingClientRect().width, natural: i.naturalWidth, thumb: !!i.closest('.thumb')}))""")
    assert images and all(i["natural"] > 0 for i in images), "an image did not decode"
    assert all(i["right"] <= WINDOW["width"] for i in images), [i for i in images if i["right"] > WINDOW["width"]]
    figures = [i for i in images if not i["thumb"]]
    assert figures and all(i["shown"] >= i["natural"] - 1 for i in figures), \
        [(i["alt"], i["natural"], i["shown"]) for i in figures if i["shown"] < i["natural"] - 1]

    # The samples grid: every subset that shipped samples, its first ones, then drops with stage and reason.
    expected = {s: n for s, n in kept_per_subset(results).items() if n}
    groups = page.evaluate("""[...document.querySelectorAll('#samples ~ h3')].map(h => ({
        title: h.textContent, kept: h.nextElementSibling.querySelectorAll('.thumb:not(.dropped)').length,
        dropped: [...h.nextElementSibling.querySelectorAll('.thumb.dropped b')].map(b => b.textContent)}))""")
    shown = {g["title"].split(":", 1)[0]: g for g in groups}
    assert set(shown) == set(expected), (set(shown), expected)
    for subset, n in expected.items():
        assert shown[subset]["kept"] == min(n, KEPT_PER_SUBSET), (subset, shown[subset], n)
    drops = [d for g in groups for d in g["dropped"]]
    assert drops and all(d.startswith(("pair_filter: ", "curated_")) and ": " in d for d in drops), drops

    # The picture README.md shows: the first subsets of the grid, at the window's size.
    page.evaluate("document.getElementById('samples').scrollIntoView()")
    grid = shots / "demo-report.png"
    page.screenshot(path=str(grid))
    print(f"screenshots: {shots}")
    if os.environ.get("FINET2I_UPDATE_DOCS") == "1":
        shutil.copyfile(grid, ROOT / "docs" / "demo-report.png")
