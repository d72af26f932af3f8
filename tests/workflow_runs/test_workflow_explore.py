"""``finet2i explore``, used as a person would: a real server over HTTP on the session's demo output, driven by
Debian's chromium through Playwright (no browser download), plus the safety rules (loopback, files under
RESULTS_DIR only, every prompt and model answer escaped) and the static export.

Expected values come from the demo's parquet files read with pyarrow, never from the explorer's own queries.
Named test_workflow_* so that it runs after test_slurm_workflow, which starts the session's shared demo run in
the background (support.workflow.LocalDemo): a test earlier in file order would wait for it alone.
Screenshots are kept under the pytest temp folder (``explore-screenshots/``, or ``$FINET2I_TEST_ARTIFACTS``);
with ``FINET2I_UPDATE_DOCS=1`` the grid, a detail view and a dropped view are also copied into docs/
(docs/explore.md shows them), so that an ordinary test run leaves the checkout unchanged:
``FINET2I_UPDATE_DOCS=1 scripts/run-tests.sh tests/workflow_runs/test_workflow_explore.py`` remakes them.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.browser import chromium, screenshots_dir
from support.workflow import ROOT, local_demo

from finet2i.release import layout as release

HOSTILE = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'

pytestmark = [pytest.mark.slow]


# ----------------------------------------------------------------------------------------------------------
# Fixtures: the demo's results, a server over them, a browser


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """The session's finished demo run (support.workflow.local_demo), read only."""
    return local_demo(tmp_path_factory).wait() / "results"


def serve(results_dir: Path, cache: Path):  # type: ignore[no-untyped-def]
    from finet2i.explore.server import App, make_server

    server = make_server(App(results_dir, cache), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def base_url(results, tmp_path_factory):  # type: ignore[no-untyped-def]
    server = serve(results, tmp_path_factory.mktemp("explore-cache"))
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):  # type: ignore[no-untyped-def]
    with chromium(tmp_path_factory, {"width": 1280, "height": 900}) as context:
        yield context


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshots_dir(tmp_path_factory, "explore-screenshots")


def screenshot(page, shots: Path, name: str, docs: bool = False) -> None:  # type: ignore[no-untyped-def]
    path = shots / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    if docs and os.environ.get("FINET2I_UPDATE_DOCS") == "1":
        shutil.copyfile(path, ROOT / "docs" / f"{name}.png")


# ----------------------------------------------------------------------------------------------------------
# What the files say (pyarrow, independent of the explorer)


def index_rows(results: Path) -> list[dict]:
    rows = []
    for p in sorted((results / "dataset").glob("*/train-*.parquet")):
        for r in pq.read_table(p, columns=["id", "prompt", "enhanced_prompt", "subset", "style", "provenance"]
                               ).to_pylist():
            rows.append({**r, "folder": p.parent.name})
    return rows


def drops(results: Path, stage: str) -> Counter:
    """(subset, reason) -> count of the rows a stage's tables mark not kept."""
    per_subset = stage in ("generate", "pair_filter", "package")
    files = sorted((results / stage).glob("*/*.parquet" if per_subset else "*.parquet"))
    files = [f for f in files if re.fullmatch(r"[\w-]+\.parquet", f.name)]
    out: Counter = Counter()
    for f in files:
        t = pq.read_table(f, columns=["kept", "drop_reason"])
        for kept, reason in zip(t.column("kept").to_pylist(), t.column("drop_reason").to_pylist(), strict=True):
            if not kept:
                out[(f.parent.name if per_subset else None, reason)] += 1
    return out


def count_shown(page) -> int:  # type: ignore[no-untyped-def]
    return int(page.locator("#total").inner_text().replace(",", ""))


def assert_images_loaded(page, selector: str) -> None:  # type: ignore[no-untyped-def]
    imgs = page.locator(selector)
    assert imgs.count() > 0, selector
    for i in range(imgs.count()):
        img = imgs.nth(i)
        img.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete", arg=img.element_handle())
        assert img.evaluate("img => img.naturalWidth") > 0, img.get_attribute("src")


# ----------------------------------------------------------------------------------------------------------
# The browser session


def test_browse_filter_search_detail_and_dropped(results, base_url, browser, shots):
    rows = index_rows(results)
    page = browser.new_page()
    page.goto(base_url + "/")

    # The grid: every sample counted, the funnel on top, thumbnails whose alt text is the prompt.
    assert count_shown(page) == len(rows)
    assert page.locator("details.funnel table tbody tr").count() >= 10
    cards = page.locator("#grid li.card")
    assert cards.count() == min(len(rows), 48)
    prompts = {r["prompt"] for r in rows}
    for i in range(cards.count()):
        assert cards.nth(i).locator("img").get_attribute("alt") in prompts
    assert_images_loaded(page, "#grid li.card img")
    screenshot(page, shots, "explore-grid", docs=True)

    # Keyboard: the first Tab lands on the skip link; the filters are a form submitted with Enter.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"

    # Two filters: the subset with the most samples, then the most common style in it.
    subset, _ = Counter(r["subset"] for r in rows).most_common(1)[0]
    styles = Counter(r["style"] for r in rows if r["subset"] == subset and r["style"])
    style, n_both = styles.most_common(1)[0]
    page.select_option("#f-subset", subset)
    with page.expect_navigation():
        page.click("#apply")
    assert count_shown(page) == sum(r["subset"] == subset for r in rows)
    page.select_option("#f-style", style)
    page.focus("#q")
    with page.expect_navigation():
        page.keyboard.press("Enter")  # submits the form from a text field, as a keyboard user would
    assert count_shown(page) == n_both
    assert page.locator("#f-subset").input_value() == subset and page.locator("#f-style").input_value() == style
    # Each filter's values are counted under the other filters (the values it could switch to).
    labels = page.locator("#f-subset option").all_inner_texts()[1:]
    per_subset = Counter(r["subset"] for r in rows if r["style"] == style)
    assert sorted(labels) == sorted(f"{s} ({n})" for s, n in per_subset.items())
    screenshot(page, shots, "explore-grid-filtered")

    # Full-text search over both prompts (filters cleared first): a word from some prompt.
    page.goto(base_url + "/")
    words = Counter(w for r in rows for w in set(re.findall(r"[a-z]{4,}", r["prompt"].lower())))
    word = next(w for w, n in words.most_common() if n < len(rows))
    expected = [r for r in rows if word in f"{r['prompt']} {r['enhanced_prompt'] or ''}".lower()]
    page.fill("#q", word)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert count_shown(page) == len(expected)
    screenshot(page, shots, "explore-search")

    # A detail view, opened from the keyboard: focus the first card's link, press Enter.
    first = page.locator("#grid li.card a").first
    first.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/sample/"))
    folder, key = page.url.rsplit("/", 2)[-2:]
    row = next(r for r in rows if r["folder"] == folder and r["id"] == key)
    assert page.locator("#prompt").inner_text() == row["prompt"]
    assert page.locator("#full-image").get_attribute("alt") == row["prompt"]
    assert_images_loaded(page, "#full-image")
    provenance = json.loads(row["provenance"] or "{}")
    n_candidates = len(provenance.get("candidate_seeds") or [])
    assert page.locator("#candidates tbody tr").count() == n_candidates
    others = sorted(r["folder"] for r in rows if r["id"] == key and r["folder"] != folder)
    links = page.locator("#others a")
    assert sorted(links.nth(i).inner_text().split("(")[1].rstrip(")") for i in range(links.count())) == others
    assert page.locator("#metadata").inner_text().count("\n") >= len(release.RELEASE_KEYS) - 1
    screenshot(page, shots, "explore-detail", docs=True)
    if others:
        links.first.click()
        page.wait_for_url(re.compile(rf"/sample/{others[0]}/{key}$"))
        assert page.locator("#prompt").inner_text() == row["prompt"]  # one key, one prompt in every subset

    # The dropped view of dedup, reached from the navigation: its reasons and counts as its tables say.
    page.click("header nav >> text=dedup")
    page.wait_for_url(re.compile(r"/dropped/dedup"))
    assert page.locator("#stage").inner_text() == "dedup"
    dedup = drops(results, "dedup")
    if dedup:
        shown = page.locator("#reasons a")
        assert shown.count() == len(dedup)
        reason = page.locator("#reason-heading").inner_text()
        assert any(reason.startswith(r) for _, r in dedup)
        assert page.locator("#dropped li.record .duplicate").count() > 0  # both prompts and the cosine
    else:
        assert "dedup dropped no record" in page.locator("#nothing-dropped").inner_text()
    screenshot(page, shots, "explore-dropped-dedup")

    # The judge's dropped records (pair_filter): per subset and reason, with the judged image and its answer.
    page.click("header nav >> text=pair_filter")
    page.wait_for_url(re.compile(r"/dropped/pair_filter"))
    judge = drops(results, "pair_filter")
    assert judge, "the demo's judge drops part of the pairs"
    reasons = page.locator("#reasons a")
    assert sorted(reasons.nth(i).inner_text() for i in range(reasons.count())) == sorted(
        f"{s}: {r} ({n})" for (s, r), n in judge.items())
    (subset, reason), n = sorted(judge.items())[0]
    page.click(f"#reasons a >> text={subset}: {reason} ({n})")
    page.wait_for_load_state()
    assert page.locator("#reason-heading").inner_text().startswith(f"{reason} in {subset}: {n} records")
    records = page.locator("#dropped li.record")
    assert records.count() == min(n, 24)
    assert "judge_violations" in records.first.locator("table.evidence").inner_text()
    assert_images_loaded(page, "#dropped li.record img")
    screenshot(page, shots, "explore-dropped", docs=True)

    # The funnel's numbers link into the records behind them.
    page.goto(base_url + "/")
    link = page.locator("details.funnel a", has_text=f"{reason}: {judge[(subset, reason)]}").first
    link.click()
    page.wait_for_url(re.compile(r"/dropped/pair_filter\?"))
    assert page.locator("#reason-heading").inner_text().startswith(f"{reason} in {subset}")
    page.close()


def test_facet_counts_match_the_files(results, tmp_path):
    """Totals and per-value counts under two filters and a search, against a count over the indexes."""
    from finet2i.explore.catalog import Catalog
    from finet2i.explore.query import Query

    catalog = Catalog(results, tmp_path)
    rows = index_rows(results)
    subset, _ = Counter(r["subset"] for r in rows).most_common(1)[0]
    style, _ = Counter(r["style"] for r in rows if r["subset"] == subset and r["style"]).most_common(1)[0]
    for word in ("", "a", "the"):
        def hit(r, word=word):  # type: ignore[no-untyped-def]
            return word in f"{r['prompt']} {r['enhanced_prompt'] or ''}".lower()

        total, counts = catalog.facet_counts(Query.from_params({"subset": subset, "style": style, "q": word}))
        assert total == sum(hit(r) and r["subset"] == subset and r["style"] == style for r in rows), word
        assert dict(counts["subset"]) == dict(Counter(r["subset"] for r in rows if hit(r) and r["style"] == style))
        assert dict(counts["style"]) == dict(Counter(r["style"] for r in rows
                                                     if hit(r) and r["subset"] == subset and r["style"]))


@pytest.fixture(scope="module")
def dedup_drops(results, tmp_path_factory) -> Path:
    """The demo's own prompts and MiniLM embeddings through the real dedup jobs at cosine 0.3 (the demo's 0.45
    drops nothing among 20 tiny-LLM prompts): a results folder whose dedup tables hold drops."""
    from finet2i.stages.dedup import jobs as stage
    from finet2i.stages.dedup.settings import DedupSettings

    root = tmp_path_factory.mktemp("dedup-drops") / "results"
    for part in ("prompts", "embed"):
        shutil.copytree(results / part, root / part)
    names = sorted(p.stem for p in (root / "embed").glob("*.npz"))
    settings = DedupSettings(threshold=0.3, groups=2, kmeans_sample=100, seed=7)
    emb = [root / "embed" / f"{n}.npz" for n in names]
    out = root / "dedup"
    stage.run_dedup_centroids(emb, out / "centroids.npy", out / "similarity_histogram.json", settings=settings)
    idx, vec = [out / "assign" / f"{n}.npz" for n in names], [out / "assign" / f"{n}.npy" for n in names]
    for e, v, i in zip(emb, vec, idx, strict=True):
        stage.run_dedup_assign(e, out / "centroids.npy", v, i, settings=settings)
    groups = [out / "group" / f"{g:03d}.npz" for g in range(settings.groups)]
    for g, gp in enumerate(groups):
        stage.run_dedup_group(idx, vec, gp, group=g, settings=settings)
    stage.run_dedup_cross(groups, idx, vec, out / "verdicts.npy", out / "kept_ids.npy", out / "cross.stats.json",
                          settings=settings)
    for n in names:
        stage.run_dedup_keep(root / "prompts" / f"{n}.parquet", root / "embed" / f"{n}.npz",
                             out / "assign" / f"{n}.npz", out / "verdicts.npy", out / "kept_ids.npy",
                             out / f"{n}.parquet", shard=n, settings=settings, stats_path=out / f"{n}.stats.json")
    return root


def test_dedup_drops_show_both_prompts_and_the_cosine(dedup_drops, browser, shots, tmp_path):
    tables = sorted(dedup_drops.glob("dedup/*.parquet"))
    rows = [r for t in tables for r in pq.read_table(t).to_pylist()]
    prompt_of = {r["id"]: r["prompt"] for r in rows}
    dropped = sorted((r for r in rows if not r["kept"]), key=lambda r: r["id"])
    assert dropped, "cosine 0.3 drops some of the demo's prompts"
    server = serve(dedup_drops, tmp_path / "cache")
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/dropped/dedup")
        assert page.locator("#reasons a").all_inner_texts() == [f"{dropped[0]['drop_reason']} ({len(dropped)})"]
        records = page.locator("#dropped li.record")
        assert records.count() == len(dropped)
        first = records.first.locator(".duplicate").inner_text()
        r = next(x for x in dropped if x["id"] in records.first.locator(".rid").inner_text())
        cosine = float(re.search(r"cosine ([\d.]+)", first).group(1))
        assert r["duplicate_of"] in first and abs(cosine - r["similarity"]) < 1e-3
        assert prompt_of[r["duplicate_of"]] in first  # the prompt it duplicates, beside its own
        assert r["prompt"] in records.first.inner_text()
        screenshot(page, shots, "explore-dropped-dedup-0.3")
        page.close()
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------------------------------------
# Safety


def raw_get(base_url: str, path: str, host: str | None = None) -> tuple[int, bytes]:
    """GET with the path sent exactly as given (no client-side normalisation of ``..``)."""
    port = int(base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{port}")
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


@pytest.fixture(scope="module")
def hostile(results, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A copy of the demo's results in which one sample's prompt, one judge answer and one guard answer are
    markup, a secret file lies beside the results folder, and a symlink inside it points at the secret."""
    root = tmp_path_factory.mktemp("hostile")
    copy = root / "results"
    shutil.copytree(results, copy, symlinks=True)
    (root / "secret.txt").write_text("SECRET-NOT-SERVED")
    (copy / "report" / "leak.txt").symlink_to(root / "secret.txt")
    index = sorted((copy / "dataset").glob("synthetic_*/train-*.parquet"))[0]
    t = pq.read_table(index)
    prompts = t.column("prompt").to_pylist()
    prompts[0] = f"a cat {HOSTILE}"
    t = t.set_column(t.schema.get_field_index("prompt"), "prompt", pa.array(prompts, pa.string()))
    pq.write_table(t, index)
    for table in sorted((copy / "pair_filter").glob("*/*.parquet")):
        t = pq.read_table(table)
        if not any(not k for k in t.column("kept").to_pylist()):
            continue
        answers = [HOSTILE if not k else a for k, a in
                   zip(t.column("kept").to_pylist(), t.column("judge_violations").to_pylist(), strict=True)]
        t = t.set_column(t.schema.get_field_index("judge_violations"), "judge_violations",
                         pa.array(answers, pa.string()))
        pq.write_table(t, table)
        break
    key = pq.read_table(index, columns=["id"]).column("id")[0].as_py()
    server = serve(copy, tmp_path_factory.mktemp("hostile-cache"))
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "folder": index.parent.name, "key": key}
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", [
    "/files/../secret.txt", "/files/../../etc/passwd", "/files/%2e%2e/secret.txt", "/files/..%2fsecret.txt",
    "/files/report/../../secret.txt", "/files/report/leak.txt", "/files//etc/passwd", "/files/%00",
    "/image/..%2f..%2f/secret", "/thumb/..%2f../secret", "/thumb/%2e%2e/secret", "/sample/%2e%2e/x",
    "/record-image/generate/..%2f..%2f/00000/x", "/record-image/..%2f/-/secret/x", "/sample/../../secret.txt/x",
    "/static/../../secret.txt",
])
def test_only_files_under_results_are_served(hostile, path):
    status, body = raw_get(hostile["url"], path)
    assert status in (400, 404), (path, status)
    assert b"SECRET-NOT-SERVED" not in body and b"root:" not in body


def test_files_under_results_are_served_and_other_hosts_refused(hostile):
    status, body = raw_get(hostile["url"], "/files/report/report.html")
    assert status == 200 and b"<html" in body[:400].lower()
    status, _ = raw_get(hostile["url"], "/", host="evil.example:80")  # DNS rebinding
    assert status == 403


def test_prompts_and_model_answers_are_shown_as_text(hostile, browser):
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for url in (f"{hostile['url']}/?q=cat", f"{hostile['url']}/sample/{hostile['folder']}/{hostile['key']}",
                f"{hostile['url']}/dropped/pair_filter"):
        status, body = raw_get(hostile["url"], url.split(hostile["url"], 1)[1])
        assert status == 200 and b"<script>window.__xss" not in body and b"&lt;script&gt;" in body, url
        page.goto(url)
        page.wait_for_load_state("load")
        assert page.evaluate("window.__xss") is None, url
        assert "<script>window.__xss = 1</script>" in page.locator("main").inner_text(), url
    assert not dialogs
    page.close()


def test_the_command_binds_loopback_by_default(results, tmp_path):
    cli = [sys.executable, "-c", "from finet2i.cli.main import main; main()"]
    proc = subprocess.Popen([*cli, "explore", str(results), "--port", "0", "--cache", str(tmp_path / "cache")],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "http://" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "finet2i explore exited before serving"
        m = re.search(r"http://([\d.]+):(\d+)/", line)
        assert m and m.group(1) == "127.0.0.1", line
        status, body = raw_get(f"http://127.0.0.1:{m.group(2)}", "/")
        assert status == 200 and f'<strong id="total">{len(index_rows(results))}</strong>'.encode() in body
        status, body = raw_get(f"http://127.0.0.1:{m.group(2)}", "/dropped/pair_filter")
        assert status == 200 and body.count(b'<li class="record">') > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # The report says which command opens the app, for this results folder.
    assert "<code>finet2i explore results</code>" in (results / "report" / "report.html").read_text()


# ----------------------------------------------------------------------------------------------------------
# The static export


def test_static_export_works_from_file_urls(results, browser, tmp_path, shots):
    out = tmp_path / "export"
    cli = [sys.executable, "-c", "from finet2i.cli.main import main; main()"]
    subprocess.run([*cli, "explore", str(results), "--static", str(out), "--per-facet", "2",
                    "--cache", str(tmp_path / "cache")], check=True, capture_output=True, text=True)
    rows = index_rows(results)
    pages = sorted(out.glob("sample/*/*.html"))
    assert 0 < len(pages) <= len(rows)
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto((out / "index.html").as_uri())
    assert count_shown(page) == len(pages)
    assert_images_loaded(page, "#grid li.card img")

    # The filters work in the page (no server): a subset, then a search word.
    subset = page.locator("#f-subset option").nth(1).get_attribute("value")
    exported = [(p.parent.name, p.stem) for p in pages]
    in_subset = [r for r in rows if (r["folder"], r["id"]) in set(exported) and r["subset"] == subset]
    page.select_option("#f-subset", subset)
    page.click("#apply")
    assert count_shown(page) == len(in_subset)
    assert page.locator("#grid li.card:not(.hidden)").count() == len(in_subset)

    # A sample page and the judge's dropped records, with their images, from file://.
    page.locator("#grid li.card:not(.hidden) a").first.click()
    page.wait_for_url(re.compile(r"/sample/.*\.html$"))
    assert_images_loaded(page, "#full-image")
    page.click("header nav >> text=pair_filter")
    page.wait_for_url(re.compile(r"/dropped/pair_filter\.html$"))
    assert page.locator("#dropped li.record").count() > 0
    assert_images_loaded(page, "#dropped li.record img")
    screenshot(page, shots, "explore-static-dropped")
    assert all(u.startswith(out.as_uri()) for u in requests), [u for u in requests if not u.startswith("file:")]
    page.close()
