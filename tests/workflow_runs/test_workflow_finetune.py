"""The demo's second command (docs/finetune.md) on a copy of the session's demo run: `finetune` and `evaluate` with
config/demo-finetune.yaml, then people voting in chromium on `finet2i explore`'s blind page, by keyboard, with the
server killed and restarted between votes, and the report rerun with their win rate.

What is checked: the dataset is left byte for byte as it was; the adapter loads with ``pipe.load_lora_weights``
and changes the images; the metric table (the real vLLM judge included) and the report's "Does it help?"
section; every vote survives a SIGKILL of the server and is counted with its Wilson interval. Expected values
come from the files (the votes file, pairs.parquet), never from the explorer's own summary code.
Named test_workflow_* so that it runs after test_slurm_workflow starts the shared demo run. Screenshots are kept
under the pytest temp folder (or ``$FINET2I_TEST_ARTIFACTS/vote-screenshots``); ``FINET2I_UPDATE_DOCS=1`` also
copies the vote page and the summary into docs/.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.browser import CHROMIUM, require_chromium
from support.workflow import DEMO_CONFIG, copy_workdir, local_demo, planned_jobs, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

FINETUNE_CONFIG = "config/demo-finetune.yaml"


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The demo's copy after `snakemake --configfile config/demo.yaml config/demo-finetune.yaml`."""
    demo = local_demo(tmp_path_factory).wait()
    wd = copy_workdir(demo, tmp_path_factory.mktemp("finetune") / "wd")
    dataset = tree_digest(wd / "results" / "dataset")
    planned = planned_jobs(wd, "--profile", "profiles/local", "--configfile", DEMO_CONFIG, FINETUNE_CONFIG)
    t0 = time.monotonic()
    snakemake(wd, "--profile", "profiles/local", "--configfile", DEMO_CONFIG, FINETUNE_CONFIG, "--cores", "2",
              timeout=1800)
    seconds = time.monotonic() - t0
    bench = {rule: float((wd / f"results/benchmarks/{rule}/{rule}.tsv").read_text().splitlines()[1].split()[0])
             for rule in ("finetune", "evaluate")}
    print(f"\nfinetune + evaluate + report on the demo: {seconds:.0f} s (jobs: {bench})")
    return {"wd": wd, "dataset": dataset, "planned": planned}


def test_only_the_fine_tune_the_evaluation_and_the_report_run_and_the_dataset_stays(run):
    assert {j.split("[")[0] for j in run["planned"]} - {"all", "dataset_card"} == {"finetune", "evaluate", "report"}
    assert tree_digest(run["wd"] / "results" / "dataset") == run["dataset"]


def test_the_adapter_loads_with_load_lora_weights_and_changes_the_images(run):
    import numpy as np
    import torch
    from diffusers import StableDiffusionXLPipeline

    wd = run["wd"]
    stats = json.loads((wd / "results/finetune/finetune.json").read_text())
    assert stats["demo"] and stats["steps"] == 12 and stats["kept"] > 0 and len(stats["losses"]) == 12
    rows = pq.read_table(wd / "results/finetune/samples.parquet").to_pylist()
    assert len(rows) == stats["records_in"] == stats["kept"] + sum(stats["dropped"].values())
    assert not (wd / "results/finetune/checkpoints").exists()
    pipe = StableDiffusionXLPipeline.from_pretrained(str(wd / "resources/demo/models/sdxl"), local_files_only=True,
                                                     add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)

    def render() -> np.ndarray:
        return pipe(prompt=["a photograph of a red fox"], num_inference_steps=4, height=64, width=64,
                    generator=torch.Generator().manual_seed(0), output_type="np").images * 255

    base = render()
    pipe.load_lora_weights(str(wd / "results/finetune/adapter"))
    assert np.abs(render() - base).mean() > 0.1


def test_the_metric_table_and_the_report_section(run):
    wd = run["wd"]
    m = json.loads((wd / "results/evaluate/metrics.json").read_text())
    rows = pq.read_table(wd / "results/evaluate/pairs.parquet").to_pylist()
    assert m["demo"] and m["prompt_set"] == "PartiPrompts" and m["comparisons"] == len(rows) == 8
    for key in ("aesthetic", "clip_score"):
        assert m["metrics"][key]["n"] == 8 and len(m["metrics"][key]["ci95"]) == 2
    judged = m["judge"]["criteria"]
    assert set(judged) == {"alignment", "visual_quality"}
    for c, w in judged.items():  # the real judge's verdicts, as pairs.parquet holds them
        outcomes = [r[f"judge_{c}"] for r in rows]
        assert (w["tuned"], w["base"], w["tie"]) == tuple(outcomes.count(o) for o in ("tuned", "base", "tie"))
    assert m["geneval"]["status"] == "not run"
    html = (wd / "results/report/report.html").read_text()
    assert 'id="does-it-help"' in html and "these numbers mean" in html and "GenEval" in html
    section = html[html.index('id="does-it-help"'):]  # (the samples grid above it has pictures of its own)
    assert section.count('src="data:image/jpeg;base64,') == 2 * 4  # shown_pairs: 4 in the demo
    md = (wd / "results/report/report.md").read_text()
    assert "# Does it help?" in md and "../evaluate/images/base/" in md
    assert "No human votes yet" in html


def explore(results: Path, cache: Path) -> tuple[subprocess.Popen, str]:
    cli = [sys.executable, "-c", "from finet2i.cli.main import main; main()"]
    proc = subprocess.Popen([*cli, "explore", str(results), "--port", "0", "--cache", str(cache)],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = ""
    while "http://" not in line:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "finet2i explore exited before serving"
    return proc, re.search(r"(http://127\.0\.0\.1:\d+)/", line).group(1)


def access_key(page, key: str, code: str) -> None:  # type: ignore[no-untyped-def]
    """Alt+<key> as a keyboard sends it: Chromium finds an access key by the event's unmodified text, which
    Playwright's keyboard API leaves out when Alt is held, so the key event goes through the DevTools protocol."""
    cdp = page.context.new_cdp_session(page)
    event = {"modifiers": 1, "key": key, "code": code, "windowsVirtualKeyCode": ord(key) if key.isdigit() else 187}
    cdp.send("Input.dispatchKeyEvent", {**event, "type": "keyDown", "text": key, "unmodifiedText": key})
    cdp.send("Input.dispatchKeyEvent", {**event, "type": "keyUp"})
    cdp.detach()


def screenshot(page, shots: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    """Kept as a test artifact; with FINET2I_UPDATE_DOCS=1 also copied into docs/ (docs/finetune.md shows it)."""
    import shutil

    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("FINET2I_UPDATE_DOCS") == "1":
        shutil.copyfile(path, Path(__file__).resolve().parents[2] / "docs" / f"{name}.png")


def focused(page, element_id: str) -> None:  # type: ignore[no-untyped-def]
    """Wait until the page's autofocus has given ``element_id`` the focus (Chromium applies it after load: keys
    typed before then are lost)."""
    from playwright.sync_api import expect

    # Playwright's own check, not a page script: the explorer's Content-Security-Policy allows none (no eval).
    expect(page.locator(f"#{element_id}")).to_be_focused(timeout=10_000)


def wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p, d = k / n, 1 + z * z / n
    c, h = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def test_people_vote_by_keyboard_a_killed_server_loses_none_and_the_report_counts_them(run, tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    wd = run["wd"]
    results = wd / "results"
    shots = Path(os.environ.get("FINET2I_TEST_ARTIFACTS") or tmp_path) / "vote-screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    votes_file = results / "human_votes" / "votes.jsonl"
    proc, url = explore(results, tmp_path / "cache")
    answers = {"alice": [("type", "1"), ("alt", "2"), ("alt", "="), ("type", "2"), ("type", "1"), ("alt", "1")],
               "bob": [("type", "1"), ("type", "1"), ("alt", "2"), ("type", "=")]}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            for rater, keys in answers.items():
                page.goto(url + "/vote")
                focused(page, "rater")  # autofocus: the name field takes the keys
                page.keyboard.type(rater)
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                for i, (how, key) in enumerate(keys):
                    assert page.locator("#progress").inner_text() == f"{rater}: question {i + 1} of 16"
                    focused(page, "key")  # the answer field has the focus: typing answers
                    assert page.locator("#left").evaluate("img => img.naturalWidth") > 0
                    if i == 0 and rater == "alice":
                        screenshot(page, shots, "explore-vote")
                    with page.expect_navigation():
                        if how == "type":
                            page.keyboard.type(key)
                            page.keyboard.press("Enter")
                        else:
                            access_key(page, key, {"1": "Digit1", "2": "Digit2", "=": "Equal"}[key])
                    if rater == "alice" and i == 2:  # a hard kill between two votes, then a new server
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait(timeout=30)
                        proc, url = explore(results, tmp_path / "cache")
                        page.goto(url + f"/vote?rater={rater}")  # the new server's form token
                assert page.locator("#progress").inner_text() == f"{rater}: question {len(keys) + 1} of 16"
            lines = [json.loads(x) for x in votes_file.read_text().splitlines()]
            assert [v["rater"] for v in lines] == ["alice"] * 6 + ["bob"] * 4
            assert [v["choice"] for v in lines] == [{"1": "left", "2": "right", "=": "tie"}[k]
                                                    for keys in answers.values() for _, k in keys]
            # a hostile name in the URL: refused, shown as text, never run
            from urllib.parse import quote

            hostile = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
            response = page.goto(url + "/vote?rater=" + quote(hostile))
            assert response.status == 400 and page.evaluate("window.__xss") is None
            assert len(votes_file.read_text().splitlines()) == 10
            page.goto(url + "/votes")
            screenshot(page, shots, "explore-votes")
            for c in ("alignment", "visual_quality"):
                mine = [v["outcome"] for v in lines if v["criterion"] == c]
                won, lost = mine.count("tuned"), mine.count("base")
                row = page.locator(f"#row-{c}").inner_text()
                assert row.split("\t")[1:4] == [str(won), str(lost), str(mine.count("tie"))], row
                if won + lost:
                    lo, hi = wilson(won, won + lost)
                    assert f"{lo * 100:.1f}% to {hi * 100:.1f}%" in row
                    assert f"{won / (won + lost) * 100:.1f}%" in row
            assert "10 votes by 2 rater(s)" in page.locator("#counts").inner_text()
            browser.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    # The votes are an input of the report: it reruns, alone, and shows the people's win rate.
    jobs = planned_jobs(wd, "--profile", "profiles/local", "--configfile", DEMO_CONFIG, FINETUNE_CONFIG)
    assert {j.split("[")[0] for j in jobs} - {"all", "dataset_card"} == {"report"}, jobs
    snakemake(wd, "--profile", "profiles/local", "--configfile", DEMO_CONFIG, FINETUNE_CONFIG, "--cores", "2",
              "results/report/report.html")
    html = (results / "report/report.html").read_text()
    assert "people (2 raters)" in html and "No human votes yet" not in html
