"""package / package_real: each kept sample finished as the release ships it (key, JPEG, 15-key json, txt)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import skimage.data
from PIL import Image

from finet2i.core import shards
from finet2i.release import layout as release
from finet2i.stages import curated_ingest, package

# Written out from the release's samples, not imported: the test pins the format, not our constant.
RELEASE_KEYS = [
    "id", "prompt", "enhanced_prompt", "length", "enhanced_length", "prompt_generator", "enhancer", "style",
    "prompt_category", "task", "image_aspect_ratio", "image_resolution", "image_generator",
    "image_generated_with_enhanced_prompt", "aesthetic_predictor_v_2_5_score",
]
SEED = 20260201


def encode(im: Image.Image, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    im.save(out, fmt)
    return out.getvalue()


def image_row(subset: str, i: int, *, size=(64, 48), fmt="JPEG", task=None) -> dict:
    im = Image.fromarray(skimage.data.astronaut()).resize(size).rotate(7 * i)
    prompt = f"a photo of an astronaut number {i} floating above a blue planet"
    enhanced = prompt + ", cinematic lighting, detailed suit, stars in the background, 8k"
    return {
        "sample_id": f"{subset}-00001-{i:06d}", "subset": subset, "id": f"00001-{i:06d}", "shard": "00001",
        "index": i, "prompt": prompt, "enhanced_prompt": enhanced, "length": 99, "enhanced_length": 99,
        "prompt_generator": "Llama-3.1-8B-Instruct",
        "enhancer": "promptenhancer-7b",
        "style": "General & Photorealistic", "category": "People", "subcategory": "Portrait", "task": task,
        "template": "simple", "image_aspect_ratio": "4:3", "image_resolution": [size[0], size[1]],
        "image_generator": "Z-Image-Turbo",
        "image_generated_with_enhanced_prompt": subset.startswith("pe"),
        "aesthetic_predictor_v_2_5_score": 5.0 + i / 10, "seed": 1000 + i,
        "candidate_scores": [4.0, 5.0 + i / 10],
        "guard_verdict": "safe", "image": encode(im, fmt),
        "prompt_used": enhanced if subset.startswith("pe") else prompt,
    }


def write_synthetic(tmp: Path, subset: str) -> tuple[Path, Path, list[dict]]:
    rows = [image_row(subset, 0, task="Colors + Counting"), image_row(subset, 1, size=(48, 64), fmt="PNG"),
            image_row(subset, 2), image_row(subset, 3, task="Reasoning")]
    images = tmp / "images" / subset / "00001.parquet"
    shards.write_table(images, [{**r, "kept": True, "drop_reason": None} for r in rows])
    pairs = []
    for r in rows:
        v = {k: val for k, val in r.items() if k != "image"}
        v.update(judge_verdict="pass", judge_reasoning="matches the prompt")
        shards.mark(v, "judge_rejected" if r["index"] == 2 else None)
        pairs.append(v)
    # A kept verdict whose image row is missing: must be reported, not crash or ship a sample without a jpg.
    ghost = {k: val for k, val in image_row(subset, 4).items() if k != "image"}
    pairs.append(shards.mark(ghost, None))
    pairs_path = tmp / "pairs" / subset / "00001.parquet"
    shards.write_table(pairs_path, pairs)
    return pairs_path, images, rows


def run_synth(tmp: Path, subset: str, settings: dict | None = None) -> tuple[shards.StageStats, list[dict]]:
    pairs, images, _ = write_synthetic(tmp, subset)
    out = tmp / "package" / subset / "00001.parquet"
    stats = package.run_package(pairs, images, out, subset=subset, shard="00001", seed=SEED,
                                settings={"jpeg_quality": 90, **(settings or {})}, stats_path=shards.stats_path(out))
    return stats, package.sample_jpgs(pq.read_table(out).to_pylist(), out)  # jpg from where a sample refers to it


def kept(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["kept"]]


@pytest.mark.parametrize("subset", ["pe_ar", "po_as"])
def test_synthetic_samples_carry_exactly_the_release_keys(tmp_path, subset):
    stats, rows = run_synth(tmp_path, subset)
    assert stats.kept == 3 and stats.dropped == {"missing_image": 1}
    dropped = [r for r in rows if not r["kept"]]
    assert [(r["id"], r["drop_reason"]) for r in dropped] == [(f"{subset}-00001-000004", "missing_image")]
    samples = kept(rows)
    assert [r["key"] for r in samples] == sorted(r["key"] for r in samples)  # written in key order
    by_prompt = {r["prompt_id"]: r for r in samples}
    assert set(by_prompt) == {"00001-000000", "00001-000001", "00001-000003"}
    for r in samples:
        meta = json.loads(r["json"])
        assert list(meta) == RELEASE_KEYS  # exactly the 15 keys, in the release's order
        assert release.KEY_RE.match(r["key"]) and meta["id"] == r["key"]
        assert r["key"] == release.sample_key(SEED, "prompt", r["prompt_id"])
        im = Image.open(io.BytesIO(r["jpg"]))
        assert im.format == "JPEG" and im.mode == "RGB" and not im.info.get("progressive")
        assert meta["image_resolution"] == [im.width, im.height]
        assert r["txt"] == (meta["enhanced_prompt"] if subset == "pe_ar" else meta["prompt"])
        assert meta["image_generated_with_enhanced_prompt"] is (subset == "pe_ar")
        assert meta["length"] == len(meta["prompt"].split()) and meta["enhanced_length"] > meta["length"]
        assert meta["prompt_category"] == "People: Portrait" and meta["style"] == "General & Photorealistic"
        assert meta["image_generator"] == "Z-Image-Turbo" and meta["enhancer"] == "promptenhancer-7b"
        assert isinstance(meta["aesthetic_predictor_v_2_5_score"], float)
        # The typed columns repeat the json; provenance lives in the table, not the json.
        assert {k: r[k] for k in RELEASE_KEYS if k != "id"} == {k: meta[k] for k in RELEASE_KEYS if k != "id"}
        prov = json.loads(r["provenance"])
        assert prov["template"] == "simple" and prov["judge_verdict"] == "pass" and prov["guard_verdict"] == "safe"
        assert r["subset"] == subset and r["subcategory"] == "Portrait" and r["record_id"] == r["id"]
        assert "image" not in prov and "kept" not in prov
        assert r["nonnull"] == package.nonnull_mask(meta)
    assert json.loads(by_prompt["00001-000000"]["json"])["task"] == ["Colors", "Counting"]
    assert json.loads(by_prompt["00001-000003"]["json"])["task"] == ["Reasoning"]
    assert json.loads(by_prompt["00001-000001"]["json"])["task"] is None
    assert json.loads(by_prompt["00001-000000"]["provenance"])["candidate_scores"] == [4.0, 5.0]
    assert json.loads(by_prompt["00001-000001"]["json"])["image_resolution"] == [48, 64]  # PNG re-encoded


def test_one_prompt_has_one_key_in_every_subset(tmp_path):
    keys = {}
    for subset in ("pe_ar", "pe_as", "po_ar", "po_as"):
        _, rows = run_synth(tmp_path / subset, subset)
        keys[subset] = {r["prompt_id"]: r["key"] for r in kept(rows)}
    assert keys["pe_ar"] == keys["pe_as"] == keys["po_ar"] == keys["po_as"]
    # ... and another seed gives other keys (two runs merged never collide)
    assert release.sample_key(SEED + 1, "prompt", "00001-000000") != keys["pe_ar"]["00001-000000"]


def test_provenance_in_json_is_a_switch(tmp_path):
    _, rows = run_synth(tmp_path, "pe_ar", {"provenance_in_json": True})
    meta = json.loads(kept(rows)[0]["json"])
    assert list(meta)[:15] == RELEASE_KEYS and meta["template"] == "simple" and meta["seed"] >= 1000


def test_finished_samples_are_deterministic(tmp_path):
    _, a = run_synth(tmp_path / "a", "pe_as")
    _, b = run_synth(tmp_path / "b", "pe_as")
    assert a == b
    assert [r["digest"] for r in a] == [r["digest"] for r in b]


def test_field_helpers():
    assert package.normalise_task(["Colors", "Position"]) == ["Colors", "Position"]
    assert package.normalise_task("Not Specified") is None and package.normalise_task(None) is None
    assert package.normalise_task("Counting + Reasoning") == ["Counting", "Reasoning"]
    assert package.aspect_ratio(2048, 1152) == "16:9" and package.aspect_ratio(768, 1024) == "3:4"
    assert package.prompt_category("Text rendering", "Long text") == "Text rendering: Long text"


def _encoded(mode: str, fmt: str, **save) -> bytes:
    rgb = Image.fromarray(skimage.data.astronaut()).resize((40, 30))
    im = rgb.convert(mode) if mode != "I;16" else Image.fromarray(
        np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    out = io.BytesIO()
    im.save(out, fmt, **save)
    return out.getvalue()


@pytest.mark.parametrize("mode,fmt,save", [
    ("RGB", "PNG", {}), ("RGBA", "PNG", {}), ("P", "PNG", {}), ("L", "JPEG", {}), ("CMYK", "JPEG", {}),
    ("RGB", "JPEG", {"progressive": True}), ("I;16", "PNG", {}), ("RGB", "WEBP", {}),
])
def test_every_image_ships_as_a_baseline_rgb_jpeg(mode, fmt, save):
    data, w, h = release.release_jpeg(_encoded(mode, fmt, **save), 90)
    im = Image.open(io.BytesIO(data))
    assert data[:2] == b"\xff\xd8" and im.format == "JPEG" and im.mode == "RGB" and (w, h) == (40, 30)
    assert not im.info.get("progressive") and not im.info.get("progression")
    assert np.asarray(im).std() > 10  # a picture, not a blank


def test_a_baseline_rgb_jpeg_passes_through_untouched():
    data = _encoded("RGB", "JPEG")
    assert release.release_jpeg(data, 50)[0] is data


def test_empty_shard_gives_a_valid_empty_table(tmp_path):
    images = tmp_path / "images.parquet"
    pairs = tmp_path / "pairs.parquet"
    row = image_row("po_ar", 0)
    shards.write_table(images, [{**row, "kept": True, "drop_reason": None}])
    shards.write_table(pairs, [shards.mark({k: v for k, v in row.items() if k != "image"}, "low_aesthetic")])
    out = tmp_path / "package.parquet"
    stats = package.run_package(pairs, images, out, subset="po_ar", shard="00000", seed=SEED, settings={},
                                stats_path=shards.stats_path(out))
    assert stats.records_in == 0
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.schema.equals(package.STAGING_SCHEMA)


def test_real_subset_from_curated_tables(tmp_path):
    folder = tmp_path / "pexels"
    folder.mkdir()
    for name in ("astronaut", "coffee", "rocket"):
        photo = Image.fromarray(getattr(skimage.data, name)()).resize((80, 60))
        (folder / f"{name}.jpg").write_bytes(encode(photo))
    ingest = tmp_path / "curated_ingest" / "00000.parquet"
    curated_ingest.run_curated_ingest([str(folder)], ingest, cshard="00000", n_shards=1,
                                      settings={"min_side": 32}, stats_path=shards.stats_path(ingest))
    # What the score and caption stages add (their own tests cover them): verdicts and prompts.
    rows = shards.read_kept(ingest)
    for i, r in enumerate(rows):
        r.update(aesthetic_predictor_v_2_5_score=7.0 + i, prompt=f"a picture of {r['locator'][:-4]}",
                 prompt_generator="Qwen2.5-VL-7B-Captioner-Relaxed",
                 enhanced_prompt=f"a detailed, well lit photograph of {r['locator'][:-4]} on a table",
                 enhancer="Qwen2.5-VL-7B-Captioner-Relaxed")
        if i == 1:
            r.pop("image")  # bytes dropped upstream: package takes them from the ingest table
        shards.mark(r, "caption_failed" if i == 2 else None)
    table = tmp_path / "curated_caption" / "00000.parquet"
    shards.write_table(table, rows)
    out = tmp_path / "package_real" / "00000.parquet"
    stats = package.run_package_real(table, ingest, out, cshard="00000", seed=SEED, settings={},
                                     stats_path=shards.stats_path(out))
    samples = package.sample_jpgs(kept(pq.read_table(out).to_pylist()), out)
    assert stats.kept == 2 == len(samples)
    for r in samples:
        meta = json.loads(r["json"])
        assert list(meta) == RELEASE_KEYS and meta["id"] == r["key"] and release.KEY_RE.match(r["key"])
        assert r["key"] == release.sample_key(SEED, "curated", "pexels", r["source_id"])
        assert r["source_id"].endswith(".jpg") and r["record_id"].startswith("real-00000-")
        assert r["txt"] == meta["prompt"]
        assert meta["image_generated_with_enhanced_prompt"] is False
        assert meta["style"] is None and meta["prompt_category"] is None and meta["task"] is None
        assert meta["image_aspect_ratio"] is None and meta["image_generator"] == "pexels"
        assert meta["image_resolution"] == [80, 60]
        assert meta["prompt_generator"] == meta["enhancer"] == "Qwen2.5-VL-7B-Captioner-Relaxed"
        assert r["subset"] == "real"
        assert np.asarray(Image.open(io.BytesIO(r["jpg"]))).shape == (60, 80, 3)


def test_rows_that_cannot_ship_keep_their_id_and_reason(tmp_path):
    base = {k: v for k, v in image_row("pe_ar", 0).items() if k != "image"}
    image = image_row("pe_ar", 0)["image"]
    rows = [
        base,
        {**base, "sample_id": "pe_ar-00001-000099"},  # another record, the same prompt id: the same key
        {**base, "id": "00001-000001", "sample_id": "pe_ar-00001-000001", "prompt": "  "},
        {**base, "id": "00001-000002", "sample_id": "pe_ar-00001-000002", "prompt_used": " \n"},
        {**base, "id": "00001-000003", "sample_id": "pe_ar-00001-000003"},
    ]
    images = {r["sample_id"]: image for r in rows}
    images["pe_ar-00001-000003"] = b"not an image"
    out = tmp_path / "package.parquet"
    stats = package.package_rows(rows, images, subset="pe_ar", shard="00001", seed=SEED, out_path=out,
                                 stats_path=shards.stats_path(out), settings={})
    got = {r["id"]: r["drop_reason"] for r in pq.read_table(out).to_pylist()}
    assert got == {"pe_ar-00001-000000": None, "pe_ar-00001-000099": "duplicate_key",
                   "pe_ar-00001-000001": "empty_prompt", "pe_ar-00001-000002": "empty_txt",
                   "pe_ar-00001-000003": "bad_image"}
    assert stats.records_in == 5 and stats.kept == 1


def test_samples_refer_to_their_images_instead_of_copying_them(tmp_path):
    """docs/disk.md: a JPEG that ships as it is stays where it was (the kept images file); package records where,
    and its size. A PNG is re-encoded, so its new bytes are stored."""
    stats, _ = run_synth(tmp_path, "pe_ar")
    out = tmp_path / "package" / "pe_ar" / "00001.parquet"
    rows = {r["prompt_id"]: r for r in kept(pq.read_table(out).to_pylist())}
    jpeg, png = rows["00001-000000"], rows["00001-000001"]
    assert jpeg["jpg"] is None and jpeg["image_key_column"] == "sample_id" and jpeg["image_key"] == jpeg["id"]
    assert (out.parent / jpeg["image_table"]).resolve() == (tmp_path / "images" / "pe_ar" / "00001.parquet").resolve()
    assert png["jpg"] is not None and png["image_table"] is None and png["jpg_size"] == len(png["jpg"])
    filled = package.sample_jpgs([dict(jpeg)], out)[0]
    assert len(filled["jpg"]) == jpeg["jpg_size"] and Image.open(io.BytesIO(filled["jpg"])).format == "JPEG"
    assert stats.extra["referenced"] == 2 and stats.extra["reencoded"] == 1
