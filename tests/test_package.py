"""Packaging: webdataset tars in the released Fine-T2I layout, the parquet index, deterministic bytes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import skimage.data
import webdataset as wds
from PIL import Image

from finet2i import shards
from finet2i.stages import curated_ingest, package

RELEASE_KEYS = [
    "id", "prompt", "enhanced_prompt", "length", "enhanced_length", "prompt_generator", "enhancer", "style",
    "prompt_category", "task", "image_aspect_ratio", "image_resolution", "image_generator",
    "image_generated_with_enhanced_prompt", "aesthetic_predictor_v_2_5_score",
]


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
        "prompt_generator": "meta-llama/Llama-3.1-8B-Instruct",
        "enhancer": "PromptEnhancer/PromptEnhancer-7B",
        "style": "General & Photorealistic", "category": "People", "subcategory": "Portrait", "task": task,
        "template": "simple", "image_aspect_ratio": "4:3", "image_resolution": [size[0], size[1]],
        "image_generator": "Tongyi-MAI/Z-Image-Turbo",
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


def load_tar(path: Path) -> list[dict]:
    return list(wds.WebDataset(str(path), shardshuffle=False, empty_check=False))


def run_synth(tmp: Path, subset: str, out: Path) -> tuple[shards.StageStats, Path, Path]:
    pairs, images, _ = write_synthetic(tmp, subset)
    tar, index = out / "train-00001.tar", out / "train-00001.parquet"
    stats = package.run_package(pairs, images, tar, index, subset=subset, shard="00001",
                                settings={"jpeg_quality": 90}, stats_path=shards.stats_path(index))
    return stats, tar, index


@pytest.mark.parametrize("subset", ["pe_ar", "po_as"])
def test_synthetic_tar_layout_and_index(tmp_path, subset):
    stats, tar, index = run_synth(tmp_path, subset, tmp_path / "dataset" / subset)
    samples = load_tar(tar)
    keys = [s["__key__"] for s in samples]
    assert keys == [f"{subset}-00001-000000", f"{subset}-00001-000001", f"{subset}-00001-000003"]
    assert stats.kept == 3 and stats.dropped == {"missing_image": 1}
    assert stats.extra["not_packaged"] == [f"{subset}-00001-000004"]
    for s in samples:
        assert {"jpg", "json", "txt"} <= set(s)
        meta = json.loads(s["json"])
        assert list(meta)[:15] == RELEASE_KEYS
        assert meta["id"] == s["__key__"]
        im = Image.open(io.BytesIO(s["jpg"]))
        assert im.format == "JPEG" and meta["image_resolution"] == [im.width, im.height]
        txt = s["txt"].decode()
        assert txt == (meta["enhanced_prompt"] if subset == "pe_ar" else meta["prompt"])
        assert meta["image_generated_with_enhanced_prompt"] is (subset == "pe_ar")
        assert meta["length"] == len(meta["prompt"].split()) and meta["enhanced_length"] > meta["length"]
        assert meta["prompt_category"] == "People: Portrait" and meta["style"] == "General & Photorealistic"
        assert isinstance(meta["aesthetic_predictor_v_2_5_score"], float)
        # provenance beyond the release
        assert meta["subset"] == subset and meta["subcategory"] == "Portrait" and meta["template"] == "simple"
        assert meta["judge_verdict"] == "pass" and meta["guard_verdict"] == "safe"
        assert meta["prompt_id"] == s["__key__"].removeprefix(subset + "-")
        assert "image" not in meta and "kept" not in meta
    metas = {s["__key__"]: json.loads(s["json"]) for s in samples}
    assert metas[keys[0]]["task"] == ["Colors", "Counting"]
    assert metas[keys[1]]["task"] is None
    assert metas[keys[2]]["task"] == ["Reasoning"]
    assert metas[keys[0]]["candidate_scores"] == [4.0, 5.0]
    assert metas[keys[1]]["image_resolution"] == [48, 64]  # the PNG was re-encoded, its size kept
    idx = pq.read_table(index).to_pylist()
    assert [r["id"] for r in idx] == keys
    for r in idx:
        assert r["tar"] == "train-00001.tar" and r["subset"] == subset
        assert r["members"] == [f"{r['id']}.jpg", f"{r['id']}.json", f"{r['id']}.txt"]
        assert {k: r[k] for k in RELEASE_KEYS} == {k: metas[r["id"]][k] for k in RELEASE_KEYS}


def test_tar_bytes_are_deterministic(tmp_path):
    _, tar_a, idx_a = run_synth(tmp_path / "a", "pe_as", tmp_path / "out_a")
    _, tar_b, idx_b = run_synth(tmp_path / "b", "pe_as", tmp_path / "out_b")
    first = tar_a.read_bytes()
    assert first == tar_b.read_bytes()
    _, tar_a2, _ = run_synth(tmp_path / "a", "pe_as", tmp_path / "out_a")  # rerun in place
    assert tar_a2.read_bytes() == first
    assert pq.read_table(idx_a).equals(pq.read_table(idx_b))


def test_field_helpers():
    assert package.normalise_task(["Colors", "Position"]) == ["Colors", "Position"]
    assert package.normalise_task("Not Specified") is None and package.normalise_task(None) is None
    assert package.normalise_task("Counting + Reasoning") == ["Counting", "Reasoning"]
    assert package.aspect_ratio(2048, 1152) == "16:9" and package.aspect_ratio(768, 1024) == "3:4"
    assert package.prompt_category("Text rendering", "Long text") == "Text rendering: Long text"


def test_empty_shard_gives_empty_valid_tar(tmp_path):
    images = tmp_path / "images.parquet"
    pairs = tmp_path / "pairs.parquet"
    row = image_row("po_ar", 0)
    shards.write_table(images, [{**row, "kept": True, "drop_reason": None}])
    shards.write_table(pairs, [shards.mark({k: v for k, v in row.items() if k != "image"}, "low_aesthetic")])
    tar, index = tmp_path / "train-00000.tar", tmp_path / "train-00000.parquet"
    stats = package.run_package(pairs, images, tar, index, subset="po_ar", shard="00000", settings={},
                                stats_path=shards.stats_path(index))
    assert stats.records_in == 0 and load_tar(tar) == []
    assert pq.read_table(index).num_rows == 0
    assert pq.read_table(index).schema.equals(package.INDEX_SCHEMA)


def test_real_subset_from_curated_tables(tmp_path):
    folder = tmp_path / "pexels"
    folder.mkdir()
    for name in ("astronaut", "coffee", "rocket"):
        photo = Image.fromarray(getattr(skimage.data, name)()).resize((80, 60))
        (folder / f"{name}.jpg").write_bytes(encode(photo))
    ingest = tmp_path / "curated" / "ingest" / "00000.parquet"
    curated_ingest.run_curated_ingest([str(folder)], ingest, cshard="00000", n_shards=1,
                               settings={"min_side": 32}, stats_path=shards.stats_path(ingest))
    # What the score, caption and enhance stages add (their own tests cover them): verdicts and prompts.
    rows = shards.read_kept(ingest)
    for i, r in enumerate(rows):
        r.update(aesthetic_predictor_v_2_5_score=7.0 + i, prompt=f"a picture of {r['locator'][:-4]}",
                 prompt_generator="Ertugrul/Qwen2.5-VL-7B-Captioner-Relaxed",
                 enhanced_prompt=f"a detailed, well lit photograph of {r['locator'][:-4]} on a table",
                 enhancer="PromptEnhancer/PromptEnhancer-7B")
        if i == 1:
            r.pop("image")  # bytes dropped upstream: package takes them from the ingest table
        shards.mark(r, "caption_failed" if i == 2 else None)
    enhanced = tmp_path / "curated" / "enhanced" / "00000.parquet"
    shards.write_table(enhanced, rows)
    tar, index = tmp_path / "real" / "train-00000.tar", tmp_path / "real" / "train-00000.parquet"
    stats = package.run_package_real(enhanced, ingest, tar, index, cshard="00000", settings={},
                                     stats_path=shards.stats_path(index))
    samples = load_tar(tar)
    assert stats.kept == 2 == len(samples) == pq.read_table(index).num_rows
    for s in samples:
        meta = json.loads(s["json"])
        assert list(meta)[:15] == RELEASE_KEYS and meta["id"] == s["__key__"]
        assert meta["id"].startswith("real-00000-")
        assert s["txt"].decode() == meta["prompt"]
        assert meta["image_generated_with_enhanced_prompt"] is False
        assert meta["style"] is None and meta["prompt_category"] is None and meta["task"] is None
        assert meta["image_aspect_ratio"] is None and meta["image_generator"] == "pexels"
        assert meta["image_resolution"] == [80, 60]
        assert meta["prompt_generator"] == "Ertugrul/Qwen2.5-VL-7B-Captioner-Relaxed"
        assert meta["subset"] == "real" and meta["locator"].endswith(".jpg")
        assert np.asarray(Image.open(io.BytesIO(s["jpg"]))).shape == (60, 80, 3)
