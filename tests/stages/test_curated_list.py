"""The real sources (issue 12): listing Unsplash Lite, Pexels and Pixabay into manifests and downloading from
them, against local servers that speak each API's documented shape (finet2i.demo.fake_apis)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from finet2i.demo.fake_apis import FakeApi, make_photos
from finet2i.sources import MANIFEST_COLUMNS
from finet2i.sources.http import ApiError
from finet2i.sources.listing import run_listing, state_dir
from finet2i.sources.terms import SITES
from finet2i.stages.curated_ingest import run_curated_ingest
from finet2i.workflow.config import ConfigError, load_yaml, missing_sources, validate_config

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-7c1f9e0a2b5d4e33"  # the secret that must never appear anywhere
FIXTURE = ROOT / "tests" / "fixtures" / "unsplash_lite"
INGEST = {"min_side": 64, "allow_private_addresses": True, "retries": 1, "backoff_s": 0.01, "timeout_s": 5}


# What a test's source says about its terms (the gate refuses a site source without; tests/stages/
# test_curated_list_terms.py tests the gate itself).
TERMS = {"permission": "test only: a local fake API, no request leaves the machine"}


def with_terms(sources: list) -> list:
    return [{**s, "terms": s.get("terms", TERMS)} if isinstance(s, dict) and s.get("type") in SITES else s
            for s in sources]


def validated(sources: list, terms: bool = True, **curated) -> dict:
    cfg = load_yaml(ROOT / "config" / "demo.yaml")
    cfg["curated"].update(sources=with_terms(sources) if terms else sources, **curated)
    return validate_config(cfg, base_dir=ROOT, check_models=False)


def api_entry(kind: str, api: FakeApi, **kw) -> dict:
    entry = {"type": kind, "api_url": api.api_url, "key_env": "FAKE_KEY", "backoff_s": 0.01,
             "rate_limit": {"requests": 1000, "seconds": 1}, "queries": ["nature", "city"], **kw}
    return validated([entry])["curated"]["sources"][0]


def manifest(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_config_checks_each_source_type_by_its_own_schema_and_names_the_key():
    cfg = validated([{"type": "pexels", "queries": ["forest"]}, {"type": "pixabay", "queries": ["lake"]},
                     {"type": "unsplash_lite", "path": str(FIXTURE)}])
    pex, pix, uns = cfg["curated"]["sources"]
    assert (pex["per_page"], pex["key_env"], pex["rate_limit"]) == (80, "PEXELS_API_KEY",
                                                                    {"requests": 200, "seconds": 3600})
    assert (pix["per_page"], pix["key_env"], pix["cache_hours"]) == (200, "PIXABAY_API_KEY", 24)
    assert pix["image_size"] == "largeImageURL" and pex["image_size"] == "original"
    assert uns["name"] == "unsplash_lite" and "per_page" not in uns
    with pytest.raises(ConfigError, match=r"curated.sources\[0\].per_page: 81 is greater than the maximum of 80"):
        validated([{"type": "pexels", "queries": ["a"], "per_page": 81}])
    with pytest.raises(ConfigError, match=r"curated.sources\[0\].quries: unknown key; did you mean 'queries'"):
        validated([{"type": "pixabay", "quries": ["a"]}])
    with pytest.raises(ConfigError, match=r"curated.sources\[0\].queries: a pexels source needs at least one query"):
        validated([{"type": "pexels"}])
    # A production run without keys fails before any job, naming the variable.
    msgs = missing_sources(cfg, base_dir=ROOT / "no-such-dir")
    assert any("export PEXELS_API_KEY=" in m for m in msgs) and any("PIXABAY_API_KEY" in m for m in msgs)


def test_pexels_listing_walks_every_page_to_the_last_and_keeps_credits(tmp_path):
    photos = make_photos(12)
    with FakeApi("pexels", KEY, photos) as api:
        entry = api_entry("pexels", api, per_page=4, curated=True)
        stats = run_listing(entry, tmp_path / "pexels.parquet", tmp_path / "pexels.stats.json",
                            environ={"FAKE_KEY": KEY})
        # nature: 6 photos = 2 pages (the second has no next_page); city: 2 pages; curated: 12 = 3 pages.
        assert sum(api.state.hits.values()) == 7 and max(api.state.hits.values()) == 1
    rows = manifest(tmp_path / "pexels.parquet")
    assert [c for c in MANIFEST_COLUMNS] == list(rows[0])
    assert len(rows) == 12 and stats.extra["listed_again"] == 12  # curated lists them all again
    r = rows[0]
    assert r["source"] == "pexels" and r["license"] == "Pexels License" and r["photographer"] == "Photographer 0"
    assert r["page_url"] == "https://www.pexels.com/photo/1000/" and r["source_text"] == "a nature photo number 0"
    assert r["photographer_url"] == "https://www.pexels.com/@p1000" and (r["width"], r["height"]) == (320, 240)


def test_pixabay_listing_stops_at_total_hits_and_a_rerun_asks_nothing_again(tmp_path):
    with FakeApi("pixabay", KEY, make_photos(10)) as api:
        entry = api_entry("pixabay", api, per_page=3)
        run_listing(entry, tmp_path / "p.parquet", tmp_path / "p.stats.json", environ={"FAKE_KEY": KEY})
        first = sum(api.state.hits.values())
        assert first == 4  # nature 5 photos: pages 1-2; city 5: pages 1-2 (page 3 would be out of range)
        stats = run_listing(entry, tmp_path / "p.parquet", tmp_path / "p.stats.json", environ={"FAKE_KEY": KEY})
        assert sum(api.state.hits.values()) == first  # the stored answers (24 h cache) served the rerun
    assert stats.extra["requests_sent"] == 0 and stats.extra["answers_from_cache"] == 4
    rows = manifest(tmp_path / "p.parquet")
    assert len(rows) == 10 and rows[0]["photographer_url"] == "https://pixabay.com/users/Photographer0-1000/"
    assert rows[0]["source_text"] == "a, nature, photo, number, 0" and rows[0]["license"] == "Pixabay Content License"


def test_429_5xx_and_broken_answers_are_retried_with_the_waits_the_server_asked_for(tmp_path):
    waits: list[float] = []
    with FakeApi("pexels", KEY, make_photos(4)) as api:
        entry = api_entry("pexels", api, per_page=80, queries=["nature"], backoff_s=0.5)
        req = "/v1/search?page=1&per_page=80&query=nature"
        api.state.faults[req] = ["429", "429-bare", "503", "badjson"]
        api.state.drop_src_of = {1002}
        stats = run_listing(entry, tmp_path / "x.parquet", tmp_path / "x.stats.json", environ={"FAKE_KEY": KEY},
                            sleep=waits.append)
        assert api.state.hits[req] == 5 and api.state.answered[req] == 1
    assert 7.0 in waits  # Retry-After: 7
    assert [w for w in waits if w in (0.5, 1.0, 2.0, 4.0)] == [1.0, 2.0, 4.0]  # backoff doubles (attempts 2-4)
    rows = manifest(tmp_path / "x.parquet")
    bad = [r for r in rows if r["problem"]]
    assert [(r["source_id"], r["problem"]) for r in bad] == [("1002", "missing_fields")]
    assert "image_url" in bad[0]["detail"] and stats.dropped == {"missing_fields": 1}


def test_an_exhausted_window_waits_for_its_reset_before_the_next_request(tmp_path):
    waits: list[float] = []
    with FakeApi("pixabay", KEY, make_photos(6)) as api:
        entry = api_entry("pixabay", api, per_page=3, rate_limit={"requests": 100, "seconds": 60})
        api.state.faults["/api/?image_type=photo&order=popular&page=1&per_page=3&q=nature&safesearch=true"] = [
            "exhausted"]  # this answer says X-RateLimit-Remaining: 0, X-RateLimit-Reset: 30
        run_listing(entry, tmp_path / "x.parquet", tmp_path / "x.stats.json", environ={"FAKE_KEY": KEY},
                    sleep=waits.append)
        assert sum(api.state.hits.values()) == 2  # nature, then city: one page each
    # The city request waited for the reset (30 s); pacing alone would have been 0.6 s (100 per 60 s).
    assert len(waits) == 1 and 29 <= waits[0] <= 30


def test_a_refused_key_is_a_clear_error_and_nothing_is_written(tmp_path, caplog):
    for kind in ("pexels", "pixabay"):
        with FakeApi(kind, KEY, make_photos(3)) as api:
            entry = api_entry(kind, api)
            out = tmp_path / f"{kind}.parquet"
            with pytest.raises(ApiError, match=r"refused the key in \$FAKE_KEY") as e:
                run_listing(entry, out, tmp_path / f"{kind}.stats.json", environ={"FAKE_KEY": "wrong-" + KEY})
            assert KEY not in str(e.value)
            with pytest.raises(ApiError, match=r"\$FAKE_KEY is not set"):
                run_listing(entry, out, tmp_path / f"{kind}.stats.json", environ={})
    assert list(tmp_path.iterdir()) == []
    assert KEY not in caplog.text


def test_unsplash_lite_fixture_is_listed_offline_in_its_documented_columns(tmp_path):
    entry = validated([{"type": "unsplash_lite", "path": str(FIXTURE), "width": 1080}])["curated"]["sources"][0]
    stats = run_listing(entry, tmp_path / "u.parquet", tmp_path / "u.stats.json")
    rows = manifest(tmp_path / "u.parquet")
    assert stats.extra["requests_sent"] == 0 and len(rows) == 4
    r = rows[0]
    assert r["source"] == "unsplash_lite" and r["license"] == "Unsplash Dataset Terms (Lite)"
    assert r["image_url"].startswith("https://images.unsplash.com/photo-") and "w=1080" in r["image_url"]
    assert r["photographer"] == "Ada Lovelace" and r["photographer_url"] == "https://unsplash.com/@ada"
    assert r["source_text"] and r["page_url"].startswith("https://unsplash.com/photos/")
    assert [x["problem"] for x in rows].count("missing_fields") == 1  # a row without photo_image_url


LISTER = """
import sys
from finet2i.sources.listing import run_listing
import json
entry = json.loads(sys.argv[1])
run_listing(entry, sys.argv[2], sys.argv[3], environ={"FAKE_KEY": sys.argv[4]})
"""


def _killed_midway(args: list[str], api: FakeApi, hold_after: int, script: str) -> None:
    api.state.hold_after = hold_after
    proc = subprocess.Popen([sys.executable, "-c", script, *args], start_new_session=True)
    deadline = time.monotonic() + 60
    while api.state.total <= hold_after and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # what was answered has been stored
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    api.state.hold_after = None


def test_a_killed_listing_resumes_with_the_same_manifest_and_repeats_no_answered_request(tmp_path):
    for kind in ("pexels", "pixabay"):
        with FakeApi(kind, KEY, make_photos(20)) as api:
            entry = api_entry(kind, api, per_page=3)
            whole = tmp_path / f"whole-{kind}.parquet"
            run_listing(entry, whole, tmp_path / "w.stats.json", environ={"FAKE_KEY": KEY})
            uninterrupted = sum(api.state.answered.values())
            api.state.hits.clear()
            api.state.answered.clear()
            api.state.total = 0
            out = tmp_path / f"{kind}.parquet"
            _killed_midway([json.dumps(entry), str(out), str(tmp_path / "k.stats.json"), KEY], api, 3, LISTER)
            assert not out.exists() and len(list(state_dir(out).iterdir())) == 3
            run_listing(entry, out, tmp_path / "k.stats.json", environ={"FAKE_KEY": KEY})
            assert max(api.state.answered.values()) == 1, api.state.answered  # no answered request twice
            assert sum(api.state.answered.values()) == uninterrupted == 8
        assert manifest(out) == manifest(whole)


def _images_answered(api: FakeApi) -> dict[str, int]:
    return {k: v for k, v in api.state.answered.items() if k.startswith("/cdn/")}


INGESTER = """
import sys, json
from finet2i.stages.curated_ingest import run_curated_ingest
run_curated_ingest(json.loads(sys.argv[1]), sys.argv[2], cshard="00000", n_shards=1,
                   settings=json.loads(sys.argv[3]), stats_path=sys.argv[4], workers=2)
"""


def test_three_sources_end_to_end_every_row_accounted_cdn_redirects_and_a_killed_download_resumes(
        tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.chdir(tmp_path)
    photos = make_photos(8)
    with FakeApi("pexels", KEY, photos[:6]) as pex, FakeApi("pixabay", KEY, photos[4:]) as pix, \
            FakeApi("pexels", KEY, make_photos(3, seed=1)) as unsplash_cdn:
        # The fixture's rows, pointed at a local image host (the real ones are images.unsplash.com).
        table = (FIXTURE / "photos.tsv000").read_text().splitlines()
        for i in range(1, 4):
            cells = table[i].split("\t")
            cells[2] = f"{unsplash_cdn.base}/img/{1000 + i - 1}.jpg" if cells[2] else ""
            table[i] = "\t".join(cells)
        Path("unsplash").mkdir()
        Path("unsplash/photos.tsv000").write_text("\n".join(table) + "\n")
        pex.state.drop_src_of = {1001}
        sources = [{"type": "pexels", "api_url": pex.api_url, "key_env": "FAKE_KEY", "queries": ["nature", "city"],
                    "rate_limit": {"requests": 1000, "seconds": 1}},
                   {"type": "pixabay", "api_url": pix.api_url, "key_env": "FAKE_KEY", "queries": ["nature", "city"],
                    "rate_limit": {"requests": 1000, "seconds": 1}},
                   {"type": "unsplash_lite", "path": "unsplash"}]
        cfg = validated(sources, **INGEST)
        for entry in cfg["curated"]["sources"]:
            name = entry["name"]
            run_listing(entry, f"results/curated_list/{name}.parquet", f"results/curated_list/{name}.stats.json",
                        environ={"FAKE_KEY": KEY})
        listed = sum(len(manifest(tmp_path / f"results/curated_list/{n}.parquet"))
                     for n in ("pexels", "pixabay", "unsplash_lite"))
        args = [json.dumps(cfg["curated"]["sources"]), "out/00000.parquet", json.dumps(cfg["curated"]),
                "out/00000.stats.json"]
        _killed_midway(args, pix, 2, INGESTER)
        assert not Path("out/00000.parquet").exists()
        cached = len(list(Path("out/00000.parquet.fetched").iterdir()))
        assert cached >= 2
        stats = run_curated_ingest(cfg["curated"]["sources"], "out/00000.parquet", cshard="00000", n_shards=1,
                                   settings=cfg["curated"], stats_path="out/00000.stats.json", workers=2)
        for api in (pex, pix):
            assert max(_images_answered(api).values()) == 1  # no image fetched twice across the kill
        assert len(_images_answered(pex)) == 5 and len(_images_answered(pix)) == 4  # via the CDN host
        assert len(_images_answered(unsplash_cdn)) == 3 and max(_images_answered(unsplash_cdn).values()) == 1
        # The resumed shard is the shard an uninterrupted download writes.
        run_curated_ingest(cfg["curated"]["sources"], "whole/00000.parquet", cshard="00000", n_shards=1,
                           settings=cfg["curated"], stats_path="whole/00000.stats.json", workers=2)
        assert pq.read_table("whole/00000.parquet").equals(pq.read_table("out/00000.parquet"))
    rows = pq.read_table("out/00000.parquet").to_pylist()
    assert len(rows) == listed == stats.records_in  # every manifest row ends kept or dropped
    assert stats.extra["downloads_resumed"] == cached and not Path("out/00000.parquet.fetched").exists()
    by_reason = {(r["source"], r["drop_reason"]) for r in rows}
    assert ("pexels", "missing_fields") in by_reason and ("unsplash_lite", "missing_fields") in by_reason
    kept = [r for r in rows if r["kept"]]
    assert {r["source"] for r in kept} == {"pexels", "pixabay", "unsplash_lite"}  # the image_generators
    assert all(r["photographer"] and r["page_url"] and r["license"] and r["phash"] for r in kept)
    # The same photos on both sites: byte-identical copies are dropped here; near-copies by curated_dedup.
    assert any(r["drop_reason"] == "duplicate" for r in rows)
    # Packaged (score and captions as their stages add them): image_generator is the source's name, credits in
    # the provenance and in the shard's credits file, one line per shipped photo.
    from finet2i.core import shards
    from finet2i.stages.package import run_package_real

    rows = shards.read_kept("out/00000.parquet", exclude=("image",))
    for r in rows:
        r.update(aesthetic_predictor_v_2_5_score=7.0, prompt="a photo", enhanced_prompt="a detailed photo",
                 prompt_generator="cap", enhancer="cap")
        shards.mark(r, None)
    shards.write_table("caption.parquet", rows)
    run_package_real("caption.parquet", "out/00000.parquet", "real.parquet", cshard="00000", seed=0, settings={},
                     stats_path="real.stats.json", credits_path="real.credits.jsonl")
    shipped = [r for r in pq.read_table("real.parquet").to_pylist() if r["kept"]]
    assert {json.loads(r["json"])["image_generator"] for r in shipped} == {"pexels", "pixabay", "unsplash_lite"}
    assert all(json.loads(r["provenance"])["photographer"] for r in shipped)
    credits = [json.loads(line) for line in Path("real.credits.jsonl").read_text().splitlines()]
    assert [c["key"] for c in credits] == sorted(r["key"] for r in shipped) and Path("real.stats.json").exists()
    assert all(c["photographer"] and c["page_url"] and c["license"] for c in credits)
    # The key is nowhere: not in a file written, not in a log line.
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    assert KEY not in caplog.text


def test_the_same_photo_from_two_sites_is_kept_once_across_shards_with_evidence(tmp_path):
    import io

    from PIL import Image

    from finet2i.core import shards
    from finet2i.plumbing import phash
    from finet2i.stages.curated_dedup import run_curated_dedup

    a, b, c = (p.jpeg for p in make_photos(3, seed=3, size=(640, 480)))
    im = Image.open(io.BytesIO(a)).resize((512, 384))  # the Pixabay copy: smaller, recompressed
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=70)
    assert phash.distance(phash.phash(a), phash.phash(buf.getvalue())) <= 4
    assert phash.distance(phash.phash(a), phash.phash(b)) > 10
    tables = []
    for cshard, rows in (("00000", [("real-00000-000000", "pexels", a), ("real-00000-000001", "pexels", c)]),
                         ("00001", [("real-00001-000000", "pixabay", buf.getvalue()),
                                    ("real-00001-000001", "pixabay", b)])):
        recs = [shards.mark({"id": i, "source": s, "phash": phash.phash(x), "image": x}, None) for i, s, x in rows]
        path = tmp_path / f"ingest-{cshard}.parquet"
        shards.write_stage_output(path, recs, stage="curated_ingest", shard=cshard, started=time.monotonic())
        tables.append(path)
    stats = run_curated_dedup(tables[1], tables, tmp_path / "dedup.parquet", cshard="00001",
                              settings={"near_duplicates": {"max_distance": 4}}, stats_path=tmp_path / "d.json")
    out = pq.read_table(tmp_path / "dedup.parquet").to_pylist()
    assert [(r["id"], r["drop_reason"], r["duplicate_of"]) for r in out] == [
        ("real-00001-000000", "near_duplicate", "real-00000-000000"), ("real-00001-000001", None, None)]
    assert stats.dropped == {"near_duplicate": 1} and out[0]["phash_distance"] <= 4


def test_the_production_configs_commented_sources_validate_and_fail_without_keys_naming_the_variable():
    import yaml

    lines = (ROOT / "config" / "config.yaml").read_text().splitlines()
    start = lines.index("  # sources:")
    block = [ln.replace("  # ", "  ", 1) for ln in lines[start:] if ln.startswith("  #   ") or ln == "  # sources:"]
    sources = yaml.safe_load("curated:\n" + "\n".join(block))["curated"]["sources"]
    assert [s["type"] for s in sources] == ["unsplash_lite", "pexels", "pixabay"]
    # As shipped, each still has the CHANGE_ME placeholder in its terms: refused, naming each site's terms page.
    with pytest.raises(ConfigError) as refused:
        validated(sources, terms=False)
    for i, page in ((0, "unsplash/datasets/blob/master/TERMS.md"), (1, "help.pexels.com"), (2, "pixabay.com/api/docs")):
        assert f"curated.sources[{i}].terms" in str(refused.value) and page in str(refused.value)
    assert str(refused.value).count("CHANGE_ME placeholder") == 3
    for s in sources:
        s["terms"]["permission"] = s["terms"]["permission"].replace("CHANGE_ME", "granted")
    cfg = validated(sources, terms=False)
    msgs = missing_sources(cfg, base_dir=ROOT)
    assert any("export PEXELS_API_KEY=" in m for m in msgs) and any("export PIXABAY_API_KEY=" in m for m in msgs)
