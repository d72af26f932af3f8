"""The report turns stats JSONs and dataset indexes into the funnel and the paper's tables and figures."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finet2i.core import pipeline
from finet2i.recipe import paper
from finet2i.reporting.distributions import resolution_label
from finet2i.reporting.funnel import read_stats
from finet2i.reporting.render import DEMO_BANNER, render_html
from finet2i.reporting.tables import Table
from finet2i.stages.report import run_report
from finet2i.workflow.params import report_settings

ROOT = Path(__file__).resolve().parents[2]
SUBSETS = ["pe_ar", "pe_as", "po_ar", "po_as"]
CONFIG = {"seed": 7, "shards": {"count": 2, "specs_per_shard": 10}, "generate": {"subsets": SUBSETS},
          "pair_filter": {"aesthetic_threshold": 5.5}, "curated": {"aesthetic_threshold": 6.5},
          "dedup": {"threshold": 0.8}}
SETTINGS = report_settings(CONFIG)


def _stats(path: Path, stage: str, shard: str, records_in: int, kept: int, dropped: dict[str, int],
           model: str | None = None, **extra) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written by hand (not StageStats.write, which refuses inconsistent counts) to also test the flag.
    path.write_text(json.dumps({"stage": stage, "shard": shard, "records_in": records_in, "kept": kept,
                                "dropped": dropped, "seconds": 1.5, "model": model, "extra": extra}))
    return str(path)


@pytest.fixture()
def run_dir(tmp_path):
    r = tmp_path / "results"
    stats = []
    for shard in ("00000", "00001"):
        stats.append(_stats(r / "specs" / f"{shard}.stats.json", "specs", shard, 10, 10, {}))
        stats.append(_stats(r / "prompts" / f"{shard}.stats.json", "prompts", shard, 10, 8, {"too_short": 2},
                            model="prompt-llm"))
        stats.append(_stats(r / "dedup" / f"{shard}.stats.json", "dedup", shard, 8, 4,
                            {"duplicate": 4}))
        stats.append(_stats(r / "guard" / f"{shard}.stats.json", "guard", shard, 4, 4, {}))
        for subset in SUBSETS:
            stats.append(_stats(r / "generate" / subset / f"{shard}.stats.json", "generate", shard, 4, 4, {}))
            stats.append(_stats(r / "pair_filter" / subset / f"{shard}.stats.json", "pair_filter", shard, 4, 2,
                                {"aesthetic": 1, "judge": 1}, model="judge"))
    # A broken shard: 5 in, 3 kept, 1 dropped.
    stats.append(_stats(r / "attributes" / "00000.stats.json", "attributes", "00000", 5, 3, {"style": 1}))
    stats.append(_stats(r / "curated_score" / "00000.stats.json", "curated_score", "00000", 6, 3,
                        {"aesthetic": 3}))

    styles = list(paper.STYLE_TABLE)
    joints = list(paper.SUBCATEGORY_TABLE)
    tasks = list(paper.TASK_TABLE)
    indexes = []
    for s_i, subset in enumerate([*SUBSETS, "real"]):
        n = 6 if subset != "real" else 3
        rows = []
        for i in range(n):
            cat, sub = joints[(i + s_i) % len(joints)]
            syn = subset != "real"
            rows.append({
                "id": f"{subset}-00000-{i:06d}", "style": styles[i % len(styles)] if syn else None,
                "prompt_category": cat if syn else None, "subcategory": sub if syn else None,
                "task": tasks[-1] if i % 2 else tasks[i % 4],
                # Indexes may store [w, h] or "WxH": half the subsets use each form.
                "image_resolution": ([1024, 768] if i % 2 else [1024, 1024]) if s_i % 2 else
                ("1024x768" if i % 2 else "1024x1024"),
                "image_aspect_ratio": "4:3" if i % 2 else "1:1", "length": 10 + 7 * i,
                "enhanced_length": 80 + 20 * i, "aesthetic_predictor_v_2_5_score": 5.6 + 0.3 * i,
                "subset": subset,
            })
        p = r / "dataset" / subset / "train-00000.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), p)
        indexes.append(str(p))
    sim = r / "dedup" / "similarity_histogram.json"
    counts = [1, 3, 9, 20, 30, 18, 9, 5, 3, 2, 1, 1]
    sim.write_text(json.dumps({"bin_edges": [x / 10 for x in range(-2, 11)], "counts": counts,
                               "threshold": 0.8, "sample_size": 2000}))
    return tmp_path, stats, indexes, str(sim)


def test_funnel_sums_shards_and_splits_subsets(run_dir):
    tmp, stats, indexes, sim = run_dir
    funnel = run_report(stats, indexes, sim, str(tmp / "report"), settings=SETTINGS)
    by = {s["label"]: s for s in funnel["stages"]}
    assert by["prompts"]["records_in"] == 20 and by["prompts"]["kept"] == 16
    assert by["prompts"]["dropped"] == {"too_short": 4} and by["prompts"]["models"] == ["prompt-llm"]
    assert by["pair_filter [po_as]"]["kept"] == 4 and by["pair_filter [po_as]"]["shards"] == 2
    assert by["pair_filter [pe_ar]"]["dropped"] == {"aesthetic": 2, "judge": 2}
    labels = [s["label"] for s in funnel["stages"]]
    # Pipeline order, curated stages after the synthetic branch.
    order = ["specs", "prompts", "dedup", "guard", "attributes", "generate [pe_ar]", "pair_filter [pe_ar]",
             "curated_score"]
    assert [labels.index(x) for x in order] == sorted(labels.index(x) for x in order)
    cmp = {c["step"]: c for c in funnel["paper_comparison"]}
    assert cmp["dedup"]["paper_kept"] == 5_555_147 and cmp["dedup"]["ours_kept"] == 8
    assert cmp["dedup"]["ours_retention"] == pytest.approx(0.5)
    assert cmp["dedup"]["paper_retention"] == pytest.approx(5_555_147 / 44_800_567)
    assert cmp["pair_filter"]["ours_kept"] == 16 and cmp["pair_filter"]["paper_kept"] == 6_145_693
    assert cmp["pair_filter [pe_ar]"]["ours_retention"] == pytest.approx(0.5)
    assert cmp["real images"]["ours_kept"] == 3 and cmp["real images"]["paper_kept"] == 168_424
    assert funnel["samples"] == {"pe_ar": 6, "pe_as": 6, "po_ar": 6, "po_as": 6, "real": 3}


def test_funnel_order_follows_the_pipeline(tmp_path, monkeypatch):
    """Rows come in finet2i.core.pipeline's order whatever order the files are given in; a stage the pipeline
    does not declare comes last; per-subset stages take their subset from the path, package_real from extra."""
    r = tmp_path / "results"
    stats = [_stats(r / "old_stage" / "00000.stats.json", "old_stage", "00000", 1, 1, {})]
    for s in reversed(pipeline.STAGES):
        if s.name == "package_real":
            stats.append(_stats(r / "dataset" / "real" / "package_real-00000.stats.json", s.name, "00000", 2, 2,
                                {}, subset="real"))
        elif s.per_subset:
            stats += [_stats(tmp_path / s.results / sub / "00000.stats.json", s.name, "00000", 2, 2, {})
                      for sub in reversed(SUBSETS)]
        else:
            stats.append(_stats(tmp_path / s.results / "00000.stats.json", s.name, "00000", 2, 2, {}))
    labels = [row.label for row in read_stats(stats, [*SUBSETS, "real"])]
    expected = []
    for s in pipeline.STAGES:
        if s.per_subset:
            expected += [f"{s.name} [{sub}]" for sub in sorted(SUBSETS)]
        else:
            expected.append(f"{s.name} [real]" if s.name == "package_real" else s.name)
    assert labels == [*expected, "old_stage"]
    # The order is read from finet2i.core.pipeline, not a copy of it.
    backwards = tuple(reversed(pipeline.stage_order()))
    monkeypatch.setattr(pipeline, "stage_order", lambda: backwards)
    stages = [row.stage for row in read_stats(stats, [*SUBSETS, "real"])]
    assert list(dict.fromkeys(stages)) == [*backwards, "old_stage"]


def test_real_images_row_reads_package_real(run_dir):
    tmp, stats, indexes, sim = run_dir
    real = _stats(tmp / "results" / "dataset" / "real" / "00000.stats.json", "package_real", "00000", 3, 2,
                  {"too_small": 1}, subset="real")
    funnel = run_report([*stats, real], indexes, sim, str(tmp / "report"), settings=SETTINGS)
    cmp = {c["step"]: c for c in funnel["paper_comparison"]}
    assert cmp["real images"]["ours_kept"] == 2  # not curated_score's 3
    assert [s["label"] for s in funnel["stages"]][-1] == "package_real [real]"


def test_html_escapes_prompts_and_stage_names(tmp_path):
    evil = "<script>alert('x')</script>"
    stats = [_stats(tmp_path / "x" / "00000.stats.json", evil, "00000", 3, 2, {f"judge said {evil}": 1},
                    model=evil)]
    funnel = run_report(stats, [], None, str(tmp_path / "report"), settings=SETTINGS)
    assert funnel["stages"][0]["stage"] == evil
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    table = Table(f"title {evil}", [evil], [[f"a prompt: {evil}"], ["FLAG: <b>bold</b>"]], note=evil,
                  footer=evil)
    page = render_html([table], {}, [evil], {"seed": evil}, demo=True)
    assert "<script" not in page.lower() and "<b>" not in page
    assert page.count("&lt;script&gt;") == 7 and "FLAG: &lt;b&gt;bold&lt;/b&gt;" in page


def test_inconsistent_stats_are_flagged(run_dir):
    tmp, stats, indexes, sim = run_dir
    funnel = run_report(stats, indexes, sim, str(tmp / "report"), settings=SETTINGS)
    assert any(f.startswith("attributes: shard 00000") and "in 5 != kept 3 + dropped 1" in f
               for f in funnel["flags"])
    html = (tmp / "report" / "report.html").read_text()
    assert "FLAG: 1 shard(s) in != kept + dropped" in html
    md = (tmp / "report" / "report.md").read_text()
    assert re.search(r"\| attributes \|.*FLAG", md)
    assert "| guard |" in md and re.search(r"\| guard \|.*\| OK \(in = dedup kept\) \|", md)


def test_records_lost_between_stages_are_flagged(run_dir):
    """Conservation: attributes received 5 records on shard 00000 where the guard kept 4."""
    tmp, stats, indexes, sim = run_dir
    funnel = run_report(stats, indexes, sim, str(tmp / "report"), settings=SETTINGS)
    assert "attributes: records lost or added between stages, shard 00000: in 5 != guard kept 4" in funnel["flags"]
    row = next(r for r in funnel["stages"] if r["stage"] == "attributes")
    assert row["upstream"] == "guard" and len(row["breaks"]) == 1
    pair = next(r for r in funnel["stages"] if r["label"] == "pair_filter [pe_ar]")
    assert pair["upstream"] == "generate [pe_ar]" and pair["breaks"] == []  # per subset, 4 in = 4 kept


def test_tables_and_figures(run_dir):
    tmp, stats, indexes, sim = run_dir
    out = tmp / "report"
    funnel = run_report(stats, indexes, sim, str(out), settings=SETTINGS)
    md = (out / "report.md").read_text()
    # Table 5: one synthetic sample per style cycle, counts per subset, the paper's share beside ours.
    assert "## Style x subset (Table 5)" in md
    row = next(line for line in md.splitlines() if line.startswith("| General & Photorealistic |"))
    assert "20.1%" in row  # the paper's 1,232,817 / 6,145,693
    assert "## Category / sub-category x subset (Table 6)" in md and "| People | Portrait |" in md
    assert "## Task x subset (Table 7)" in md and "| Not Specified |" in md
    # Table 8: resolutions as width x height whatever form the index stores them in, real included.
    res = next(line for line in md.splitlines() if line.startswith("| 4:3 1024x768 |"))
    assert res.endswith("| 3 | 3 | 3 | 3 | 1 | 13 |")  # odd rows: 3 per synthetic subset, 1 real
    assert set(funnel["distances_to_paper"]) == {"category", "subcategory", "style", "task"}
    assert all(0 < d <= 1 for d in funnel["distances_to_paper"].values())
    for fig in ("shares", "lengths", "aesthetic", "similarity"):
        png = out / "figures" / f"{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
    html = (out / "report.html").read_text()
    # Self-contained: every image is embedded, nothing is fetched.
    assert html.count("data:image/png;base64,") == 4
    assert not re.search(r"src=['\"](?!data:)", html)
    assert DEMO_BANNER not in html
    assert funnel["similarity_histogram"]["sample_size"] == 2000


def test_demo_output_is_labelled(run_dir):
    tmp, stats, indexes, sim = run_dir
    funnel = run_report(stats, indexes, sim, str(tmp / "report"), settings={**SETTINGS, "demo": True})
    assert funnel["demo"] is True
    assert "DEMO OUTPUT IS NOT A DATASET" in (tmp / "report" / "report.html").read_text()
    assert "DEMO OUTPUT IS NOT A DATASET" in (tmp / "report" / "report.md").read_text()


def test_missing_inputs_are_reported_not_fatal(tmp_path):
    stats = [_stats(tmp_path / "specs" / "00000.stats.json", "specs", "00000", 3, 3, {})]
    funnel = run_report(stats, [], None, str(tmp_path / "report"), settings=SETTINGS)
    assert "dedup similarity histogram missing: Fig. 3 not drawn" in funnel["flags"]
    assert "no packaged samples: the distribution tables are empty" in funnel["flags"]
    assert (tmp_path / "report" / "report.html").exists() and (tmp_path / "report" / "figures").is_dir()
    assert funnel["distances_to_paper"]["style"] is None


def test_bad_stats_file_names_the_file(tmp_path):
    bad = tmp_path / "guard" / "00000.stats.json"
    bad.parent.mkdir()
    bad.write_text('{"stage": "guard"}')
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        read_stats([bad], SUBSETS)


def test_bad_similarity_histogram_names_the_file(run_dir):
    tmp, stats, indexes, _ = run_dir
    bad = tmp / "sim.json"
    bad.write_text(json.dumps({"bin_edges": [0, 1], "counts": [1, 2], "threshold": 0.8, "sample_size": 3}))
    with pytest.raises(ValueError, match="sim.json: 2 bin_edges for 2 counts"):
        run_report(stats, indexes, str(bad), str(tmp / "report"), settings=SETTINGS)


def test_resolution_label():
    assert resolution_label([2048, 1536]) == "2048x1536"
    assert resolution_label("[768, 1024]") == "768x1024"
    assert resolution_label("1024x1024") == "1024x1024"
    assert resolution_label(None) is None


def test_snakemake_report_smoke(run_dir):
    """`snakemake` runs rule report from rules/report.smk, then `snakemake --report` renders report/."""
    tmp, stats, indexes, sim = run_dir
    wd = tmp / "wf"
    wd.mkdir()
    for part in ("rules", "workflow_scripts", "report", "envs"):
        shutil.copytree(ROOT / part, wd / part)
    shutil.copytree(tmp / "results", wd / "results")
    rel = [str(Path(p).relative_to(tmp)) for p in stats]
    idx = [str(Path(p).relative_to(tmp)) for p in indexes]
    (wd / "config.yaml").write_text(json.dumps({**CONFIG, "demo": True, "taxonomy": "taxonomy.yaml"}))
    (wd / "Snakefile").write_text(textwrap.dedent(f"""
        configfile: "config.yaml"
        report: "report/workflow.rst"

        from finet2i.core.codehash import script_fingerprint
        from finet2i.workflow.params import report_settings

        def script_code(script):  # as rules/common.smk defines it
            return script_fingerprint(workflow.basedir + "/" + script)

        def threads_of(rule):
            return 1

        def resources_of(rule):
            return {{"mem_mb": 1000, "runtime": 10}}

        def report_inputs(wildcards):
            return {{"stats": {rel!r}, "indexes": {idx!r},
                    "similarity_histogram": ["results/dedup/similarity_histogram.json"]}}

        include: "rules/report.smk"

        rule all:
            default_target: True
            input: "results/report/report.html"
        """))
    run = [sys.executable, "-m", "snakemake", "-c1", "--quiet"]
    proc = subprocess.run(run, cwd=wd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "DEMO OUTPUT IS NOT A DATASET" in (wd / "results" / "report" / "report.html").read_text()
    proc = subprocess.run([*run, "--report", "smk-report.html"], cwd=wd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (wd / "smk-report.html").stat().st_size > 10_000


def test_the_report_says_how_to_browse_the_run(run_dir):
    tmp, stats, indexes, sim = run_dir
    run_report(stats, indexes, sim, str(tmp / "report"), settings=SETTINGS)
    html = (tmp / "report" / "report.html").read_text()
    assert f"<code>finet2i explore {tmp}</code>" in html and 'href="http://127.0.0.1:8000/"' in html
    assert f"`finet2i explore {tmp}`" in (tmp / "report" / "report.md").read_text()


# --- the report's pictures and figures ------------------------------------------------------------------------

def _jpeg(color: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG")
    return out.getvalue()


def _picture_tables(root: Path, rows_per_table: int = 40) -> tuple[list[str], list[tuple[str, str]]]:
    """Finished-sample tables (kept rows with a JPEG, and one package drop without) for pe_ar and real, and a
    judged table with its image table for pe_ar: the inputs of the report's pictures."""
    indexes = []
    for subset, folder in (("pe_ar", root / "package" / "pe_ar"), ("real", root / "package_real")):
        folder.mkdir(parents=True, exist_ok=True)
        for shard in ("00000", "00001"):
            rows = [{"id": f"{shard}-{i:06d}", "kept": i != 0, "drop_reason": "bad_image" if i == 0 else None,
                     "key": f"{subset}-{shard}-{i:04d}", "jpg": None if i == 0 else _jpeg((i * 5, 100, 150)),
                     "txt": f"prompt {i} of {subset}", "aesthetic_predictor_v_2_5_score": 5.0 + i / 100}
                    for i in range(rows_per_table)]
            path = folder / f"{shard}.parquet"
            pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=16)
            indexes.append(str(path))
    judged, images = root / "pair_filter" / "pe_ar" / "00000.parquet", root / "generate" / "pe_ar" / "00000.parquet"
    judged.parent.mkdir(parents=True), images.parent.mkdir(parents=True)
    reasons = ["aesthetic_low", "aesthetic_low", "judge_rejected", "aesthetic_low", None, "judge_unsafe"] * 4
    pq.write_table(pa.Table.from_pylist([
        {"id": f"00000-{i:06d}", "kept": r is None, "drop_reason": r, "prompt_used": f"judged prompt {i}",
         "aesthetic_predictor_v_2_5_score": 4.0, "judge_reasoning": "a hand with six fingers" if r else None}
        for i, r in enumerate(reasons)]), judged)
    pq.write_table(pa.Table.from_pylist([{"id": f"00000-{i:06d}", "image": _jpeg((200, 0, i))}
                                         for i in range(len(reasons))]), images, row_group_size=4)
    return indexes, [(str(judged), str(images))]


def test_pictures_a_few_finished_samples_and_a_few_drops_with_their_reason(tmp_path):
    from PIL import Image

    from finet2i.reporting.thumbnails import (
        DROPPED_PER_SUBSET,
        KEPT_PER_SUBSET,
        THUMB_SIDE,
        dropped_thumbnails,
        kept_thumbnails,
    )

    indexes, dropped = _picture_tables(tmp_path / "results")
    kept = kept_thumbnails(indexes, SUBSETS)
    assert set(kept) == {"pe_ar", "real"} and all(len(v) == KEPT_PER_SUBSET for v in kept.values())
    # The first kept rows in key order (the package drop without an image is skipped), as small JPEGs.
    assert [t.key for t in kept["pe_ar"][:2]] == ["pe_ar-00000-0001", "pe_ar-00000-0002"]
    for t in kept["pe_ar"]:
        with Image.open(__import__("io").BytesIO(t.jpeg)) as im:
            assert im.format == "JPEG" and max(im.size) <= THUMB_SIDE
        assert t.reason is None and t.prompt.startswith("prompt ")
    drops = dropped_thumbnails(dropped, SUBSETS)["pe_ar"]
    assert len(drops) == DROPPED_PER_SUBSET
    # One of each reason first, then the earliest others; each with its stage, evidence and own image.
    assert [t.reason for t in drops] == ["aesthetic_low", "judge_rejected", "judge_unsafe", "aesthetic_low"]
    assert all(t.stage == "pair_filter" and "six fingers" in t.evidence for t in drops)
    assert drops[0].prompt == "judged prompt 0" and drops[1].key == "00000-000002"


def test_the_report_shows_the_pictures_in_html_and_markdown(run_dir, tmp_path):
    tmp, stats, indexes, sim = run_dir
    pictures, dropped = _picture_tables(tmp_path / "pictures")
    out = tmp / "report"
    run_report(stats, indexes + pictures, sim, str(out), settings=SETTINGS, dropped=dropped)
    html = (out / "report.html").read_text()
    assert '<h2 id="samples">Samples</h2>' in html
    assert html.count('<figure class="thumb" ') == 16 and html.count('<figure class="thumb dropped" ') == 4
    assert html.count("data:image/jpeg;base64,") == 20 and "pair_filter: judge_unsafe" in html
    assert not re.search(r"src=['\"](?!data:)", html)  # still self-contained
    md = (out / "report.md").read_text()
    assert "![pe_ar](figures/samples_pe_ar.png)" in md and "- dropped by pair_filter: **judge_rejected**" in md
    for subset in ("pe_ar", "real"):
        assert (out / "figures" / f"samples_{subset}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _overlaps(fig) -> list[str]:  # type: ignore[no-untyped-def]
    """Texts of the figure (tick labels, titles, annotations) that its legends cover."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    boxes = [lg.get_window_extent(renderer) for lg in legends]
    texts = [t for ax in fig.axes for t in (*ax.get_yticklabels(), *ax.get_xticklabels(), ax.title, *ax.texts)]
    return [t.get_text() for t in texts if t.get_text()
            and any(b.overlaps(t.get_window_extent(renderer)) for b in boxes)]


def test_figures_fit_a_laptop_screen_and_no_legend_covers_a_label():
    import matplotlib.pyplot as plt

    from finet2i.reporting.figures import DPI, MAX_WIDTH_IN, hist_figure, shares_figure

    target = paper.marginals()
    ours = {k: {label: share * 0.8 for label, share in v.items()} for k, v in target.items()}
    edges = [x / 4 for x in range(41)]
    figs = {"shares": shares_figure(ours, target),
            "aesthetic": hist_figure({"synthetic": (edges, [0] * 16 + [3, 5, 8, 4] + [0] * 20),
                                      "real": (edges, [0] * 20 + [1, 2, 3] + [0] * 17)}, "Aesthetic score",
                                     "score", {"synthetic > 5.5": 5.5, "real >= 6.5": 6.5})}
    for name, fig in figs.items():
        width = fig.get_size_inches()[0] * DPI
        assert width <= MAX_WIDTH_IN * DPI <= 1000, (name, width)  # inside a 1300 px window, with margins
        assert _overlaps(fig) == [], name
        plt.close(fig)


def test_does_it_help_reads_the_evaluation_and_the_votes(run_dir):
    """The section shows what evaluate and finetune wrote and what people voted, escaped, with small copies of
    the pairs' images; nothing is recomputed (the metric numbers are the file's)."""
    import io

    from PIL import Image

    from finet2i.core import shards
    from finet2i.finetune import votes

    tmp, stats, indexes, sim = run_dir
    ev = tmp / "evaluate"
    rows = []
    for i in range(3):
        row = {"pair_id": f"p{i:05d}-s0", "prompt": f"<script>alert({i})</script> a cat",
               "base_image": f"images/base/p{i:05d}-s0.png", "tuned_image": f"images/tuned/p{i:05d}-s0.png",
               "base_sha256": f"b{i}", "tuned_sha256": f"t{i}"}
        for side in ("base", "tuned"):
            (ev / row[f"{side}_image"]).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (1024, 768), (9, 99, 199)).save(ev / row[f"{side}_image"])
        rows.append(row)
    shards.write_table(ev / "pairs.parquet", rows)
    evaluation = votes.evaluation_id(rows)
    metric = {"label": "Aesthetic Predictor V2.5", "model": "aes", "n": 3, "base": 5.125, "tuned": 5.75,
              "difference": 0.625, "ci95": [0.25, 1.0]}
    shards.write_json(ev / "metrics.json", {
        "demo": False, "evaluation_id": evaluation, "prompt_set": "PartiPrompts", "prompts": 3, "images_per_prompt": 1,
        "render": {"width": 1024, "height": 768, "steps": 30, "guidance": 5.0},
        "metrics": {"aesthetic": metric, "clip_score": {"label": "CLIPScore", "status": "not run",
                                                        "reason": "evaluate.clip_score: false"}},
        "judge": {"model": "judge-vl", "unparseable": 1, "criteria": {
            "alignment": {"n": 2, "tuned": 2, "base": 0, "tie": 0, "win_rate": 1.0, "ci95": [0.342, 1.0]}}},
        "geneval": {"status": "not run", "reason": "not installed: mmdet 2.x (found none)"}})
    shards.write_json(tmp / "finetune" / "finetune.json", {
        "model": "sdxl", "records_in": 10, "kept": 8, "dropped": {"prompt_too_long": 2}, "epoch_size": 8,
        "steps": 1, "images_per_step": 8, "buckets": {"1024x1024": 8}, "losses": [0.1], "device": "cuda",
        "processes": 1, "lora": {"rank": 4, "alpha": 4, "parameters": 100}, "settings": {"learning_rate": 1e-4},
        "seconds": {"setup": 1.0, "train": 2.0}})
    vote_file = tmp / "human_votes" / "votes.jsonl"
    for pair in ("p00000-s0", "p00001-s0"):
        left = votes.tuned_left(evaluation, "ann", pair)
        votes.append(vote_file, votes.make_vote(evaluation=evaluation, rater="ann", pair=pair,
                                                criterion="visual_quality", choice="1" if left else "2",
                                                known_pairs=[r["pair_id"] for r in rows]))
    run_report(stats, indexes, sim, str(tmp / "report"), settings={**SETTINGS, "shown_pairs": 2},
               evaluation={"finetune": str(tmp / "finetune" / "finetune.json"), "metrics": str(ev / "metrics.json"),
                           "pairs": str(ev / "pairs.parquet")}, votes=str(vote_file))
    html = (tmp / "report" / "report.html").read_text()
    section = html[html.index('id="does-it-help"'):]
    assert "<script>alert" not in html and "&lt;script&gt;alert(0)" in section
    assert "<td>0.625</td>" in section and "+0.25 to +1" in section and "not run: evaluate.clip_score" in section
    assert "GenEval" in section and "mmdet 2.x" in section
    assert "people (1 raters)" in section and "100.0%" in section  # ann chose the fine-tuned image twice
    thumbs = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', section)
    assert len(thumbs) == 4
    import base64

    assert Image.open(io.BytesIO(base64.b64decode(thumbs[0]))).size == (384, 288)  # a small copy, not the PNG
    md = (tmp / "report" / "report.md").read_text()
    assert "# Does it help?" in md and "![base](../evaluate/images/base/p00000-s0.png)" in md


def test_a_finished_sample_that_refers_to_its_image_is_pictured_from_there(tmp_path):
    """Package tables refer to the kept images instead of copying them (docs/disk.md): the report reads them."""
    from finet2i.plumbing.images import reference_to
    from finet2i.reporting.thumbnails import kept_thumbnails

    images = tmp_path / "pair_filter" / "pe_ar" / "00000.images.parquet"
    table = tmp_path / "package" / "pe_ar" / "00000.parquet"
    images.parent.mkdir(parents=True), table.parent.mkdir(parents=True)
    jpgs = {f"s{i}": _jpeg((i * 40, 10, 10)) for i in range(3)}
    pq.write_table(pa.Table.from_pylist([{"sample_id": k, "image": v} for k, v in jpgs.items()]), images)
    pq.write_table(pa.Table.from_pylist([
        {"id": k, "kept": True, "key": f"pe_ar-{k}", "jpg": None, "jpg_size": len(v), "txt": f"prompt {k}",
         "image_table": reference_to(images, table), "image_key_column": "sample_id", "image_key": k}
        for k, v in jpgs.items()]), table)
    thumbs = kept_thumbnails([str(table)], SUBSETS)["pe_ar"]
    assert [t.key for t in thumbs] == ["pe_ar-s0", "pe_ar-s1", "pe_ar-s2"] and all(t.jpeg for t in thumbs)
