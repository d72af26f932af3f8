"""The photo sites' terms and formats, as the listing meets them (issue 23): the terms gate (a Pexels, Pixabay or
Unsplash Lite source without a statement of permission is refused before any request, naming its terms page),
Pixabay's per-hit flags (noAiTraining, isAiGenerated) and full-access-only image sizes, and the Unsplash Lite
table read as its official loaders read it (either file name, quoted fields, records that span lines).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from finet2i.demo.fake_apis import FakeApi, make_photos
from finet2i.sources.listing import run_listing
from finet2i.stages.curated_ingest import run_curated_ingest
from finet2i.workflow.config import ConfigError, check_available, load_yaml, validate_config

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-terms-0b7e4a59"
FIXTURE = ROOT / "tests" / "fixtures" / "unsplash_lite"
PERMISSION = {"permission": "test only: a local fake API, no request leaves the machine"}
TERMS_PAGES = {"pexels": "https://help.pexels.com/hc/en-us/articles/900005880463",
               "pixabay": "https://pixabay.com/api/docs/",
               "unsplash_lite": "https://github.com/unsplash/datasets/blob/master/TERMS.md"}


def config_with(sources: list, **curated) -> dict:
    cfg = load_yaml(ROOT / "config" / "demo.yaml")
    cfg["curated"].update(sources=sources, **curated)
    return cfg


def site_entry(kind: str, api: FakeApi | None = None, **kw) -> dict:
    if kind == "unsplash_lite":
        return {"type": kind, "path": str(FIXTURE), **kw}
    return {"type": kind, "api_url": api.api_url if api else "http://127.0.0.1:9/", "key_env": "FAKE_KEY",
            "queries": ["nature"], "rate_limit": {"requests": 1000, "seconds": 1}, **kw}


# --- the terms gate -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["pexels", "pixabay", "unsplash_lite"])
def test_a_site_source_without_terms_is_refused_before_any_request_naming_its_terms_page(kind, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setenv("FAKE_KEY", KEY)
    with FakeApi("pexels" if kind == "unsplash_lite" else kind, KEY, make_photos(3)) as api:
        # check-config and the Snakefile's parse (validate_config): refused, naming the key, the source and the page.
        with pytest.raises(ConfigError) as e:
            validate_config(config_with([site_entry(kind, api)]), base_dir=ROOT, check_models=False)
        assert f"curated.sources[0].terms ({kind} source" in str(e.value) and TERMS_PAGES[kind] in str(e.value)
        # A placeholder is no statement either.
        with pytest.raises(ConfigError, match="CHANGE_ME placeholder"):
            validate_config(config_with([site_entry(kind, api, terms={"permission": "CHANGE_ME: yours"})]),
                            base_dir=ROOT, check_models=False)
        # With terms it validates; the redistribution default is the strict one (from the schema).
        cfg = validate_config(config_with([site_entry(kind, api, terms=PERMISSION)]), base_dir=ROOT,
                              check_models=False)
        entry = cfg["curated"]["sources"][0]
        assert entry["terms"]["redistribute"] is False
        # The run's start (onstart: check_available) refuses a config whose terms went missing after parsing.
        del entry["terms"]
        with pytest.raises(ConfigError, match=TERMS_PAGES[kind].replace(".", r"\.")):
            check_available(cfg, base_dir=tmp_path)
        # And the listing job itself: nothing read, nothing requested, nothing written.
        with pytest.raises(ValueError, match=TERMS_PAGES[kind].replace(".", r"\.")):
            run_listing(entry, tmp_path / "m.parquet", tmp_path / "m.stats.json", environ={"FAKE_KEY": KEY})
        assert api.state.total == 0 and not (tmp_path / "m.parquet").exists()


# --- Pixabay's flags and full-access sizes --------------------------------------------------------------------

def test_pixabay_hits_flagged_no_ai_training_or_ai_generated_are_dropped_with_that_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photos = make_photos(6)  # ids 1000-1005; nature: even ones, city: odd ones
    photos[0].flags = ("noAiTraining",)
    photos[3].flags = ("isAiGenerated",)
    photos[4].flags = ("isLowQuality",)  # recorded, not acted on
    with FakeApi("pixabay", KEY, photos) as api:
        cfg = validate_config(config_with([site_entry("pixabay", api, queries=["nature", "city"], per_page=3,
                                                      terms=PERMISSION)], allow_private_addresses=True,
                                          min_side=64), base_dir=ROOT, check_models=False)
        entry = cfg["curated"]["sources"][0]
        stats = run_listing(entry, "results/curated_list/pixabay.parquet", "results/curated_list/pixabay.stats.json",
                            environ={"FAKE_KEY": KEY})
        rows = {r["source_id"]: r for r in pq.read_table("results/curated_list/pixabay.parquet").to_pylist()}
        assert rows["1000"]["problem"] == "no_ai_training" and "noAiTraining" in rows["1000"]["detail"]
        assert rows["1003"]["problem"] == "ai_generated" and "isAiGenerated" in rows["1003"]["detail"]
        assert rows["1004"]["problem"] is None
        assert stats.dropped == {"no_ai_training": 1, "ai_generated": 1}
        # Ingest drops them with those reasons (the funnel counts them; explore's dropped view lists them) and
        # never downloads their images.
        ingest = run_curated_ingest(cfg["curated"]["sources"], "ingest.parquet", cshard="00000", n_shards=1,
                                    settings=cfg["curated"], stats_path="ingest.stats.json", workers=2)
        assert ingest.dropped.get("no_ai_training") == 1 and ingest.dropped.get("ai_generated") == 1
        assert not any(k.endswith(("/1000.jpg", "/1003.jpg")) for k in api.state.answered)


@pytest.mark.parametrize("size", ["imageURL", "fullHDURL"])
def test_full_access_image_sizes_without_full_access_are_a_config_error_that_says_so(size):
    with pytest.raises(ConfigError, match=rf"curated.sources\[0\].image_size: {size} .*full API access"):
        validate_config(config_with([site_entry("pixabay", image_size=size, terms=PERMISSION)]), base_dir=ROOT,
                        check_models=False)
    validate_config(config_with([site_entry("pixabay", image_size=size, full_api_access=True, terms=PERMISSION)]),
                    base_dir=ROOT, check_models=False)


# --- Unsplash Lite, as the official loaders read it -----------------------------------------------------------

def _lite_rows() -> tuple[list[str], list[dict[str, str]]]:
    with open(FIXTURE / "photos.tsv000", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


@pytest.mark.parametrize("name", ["photos.tsv000", "photos.csv000"])
def test_unsplash_lite_is_read_as_quoted_csv_with_tabs_under_either_name_records_spanning_lines(name, tmp_path):
    """The photos table written both ways the releases did (tsv000 and, before 1.4.x, csv000), as quoted CSV with a
    tab delimiter: a description with a line break and quotes in it, one record over three lines."""
    header, rows = _lite_rows()
    rows[0]["ai_description"] = 'a misty forest,\n"seen" at dawn\tfrom a hill'
    rows[1]["photo_description"] = 'a lake called "Blue"'
    folder = tmp_path / "lite"
    folder.mkdir()
    with open(folder / name, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, header, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    assert (folder / name).read_text().count("\n") > len(rows) + 1  # a record spans lines
    entry = validate_config(config_with([{"type": "unsplash_lite", "path": str(folder), "terms": PERMISSION}]),
                            base_dir=ROOT, check_models=False)["curated"]["sources"][0]
    run_listing(entry, tmp_path / "u.parquet", tmp_path / "u.stats.json")
    listed = pq.read_table(tmp_path / "u.parquet").to_pylist()
    assert len(listed) == len(rows) == 4
    assert [r["source_id"] for r in listed] == [r["photo_id"] for r in rows]
    assert listed[0]["source_text"] == 'a misty forest,\n"seen" at dawn\tfrom a hill'
    assert listed[0]["page_url"] == rows[0]["photo_url"] and listed[0]["photographer"] == "Ada Lovelace"
    # the second row has no ai_description: its photo_description, with its quotes
    assert listed[1]["source_text"] == (rows[1]["ai_description"] or 'a lake called "Blue"')
