"""Image generation stage (paper 3.1.5, Table 8): subsets, sizes, deterministic plans, best-of-N selection."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from finet2i.core import shards
from finet2i.stages import generate as g

ROOT = Path(__file__).resolve().parents[2]
RESOLUTIONS = ROOT / "config" / "resolutions.yaml"

SETTINGS: dict[str, Any] = {
    "subsets": ["pe_ar", "pe_as", "po_ar", "po_as"],
    "resolutions": str(RESOLUTIONS),
    "generators": {
        "z_image": {"weight": 0.7, "steps": 2, "guidance": 0.0},
        "flux2": {"weight": 0.3, "steps": 2, "guidance": 4.0},
    },
    "candidates": {"min": 1, "max": 3},
    "max_side": 64,
    "chunk_size": 3,
}


def _enhanced_rows(n: int, shard: str = "00001") -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "id": f"{shard}-{i:06d}",
                "shard": shard,
                "index": i,
                "category": "Animals",
                "subcategory": "Pets",
                "style": "Photorealistic",
                "task": "Not Specified",
                "template": "plain",
                "length_target": "short",
                "seed": 1000 + i,
                "prompt": f"a small dog number {i} in a garden",
                "prompt_generator": "llm",
                "enhanced_prompt": f"A detailed photo of small dog number {i} in a sunlit garden, 35mm",
                "enhancer": "pe",
                "kept": True,
                "drop_reason": None,
            }
        )
    return rows


def _write_input(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path / "results" / "enhanced" / "00001.parquet"
    shards.write_table(path, rows)
    return path


def _run(in_path: Path, out_path: Path, **overrides: Any) -> shards.StageStats:
    """run_generate with this file's defaults (shard 00001, subset pe_ar, SETTINGS, seed 7); backends and
    anything else the test cares about come as keyword arguments."""
    kwargs: dict[str, Any] = dict(shard="00001", subset="pe_ar", settings=SETTINGS, models={},
                                  aesthetic_encoder=None, aesthetic_head=None, seed=7, jpeg_quality=90)
    return g.run_generate(in_path, out_path, **{**kwargs, **overrides})


class Counting:
    """Wraps a real generator and counts the images it renders (and can fail on one prompt)."""

    def __init__(self, inner: Any, fail_on: str | None = None) -> None:
        self.inner, self.fail_on, self.images = inner, fail_on, 0
        self.model_name = inner.model_name

    def generate(self, prompts: list[str], *, width: int, height: int, seeds: list[int]) -> list[Any]:
        if self.fail_on and any(self.fail_on in p for p in prompts):
            raise RuntimeError("CUDA out of memory (simulated)")
        self.images += len(prompts)
        return self.inner.generate(prompts, width=width, height=height, seeds=seeds)


# --- Table 8 and sizes -------------------------------------------------------------------------------------


def test_resolutions_yaml_is_table_8() -> None:
    table = g.load_resolutions(RESOLUTIONS)
    assert [(r.width, r.height) for r in table["square"]] == [
        (s, s) for s in (512, 768, 1024, 1536, 2048, 2560)
    ]
    assert {r.aspect_ratio for r in table["square"]} == {"1:1"}
    assert Counter(r.aspect_ratio for r in table["landscape"]) == {"4:3": 3, "3:2": 2, "16:9": 3, "5:4": 2}
    assert Counter(r.aspect_ratio for r in table["portrait"]) == {"3:4": 3, "2:3": 2, "9:16": 3, "4:5": 2}
    assert g.Resolution("16:9", 2560, 1440) in table["landscape"]
    assert g.Resolution("9:16", 720, 1280) in table["portrait"]
    for group in table.values():
        for r in group:
            w, h = (int(x) for x in r.aspect_ratio.split(":"))
            assert r.width * h == pytest.approx(r.height * w, rel=0.01), r  # label matches the size
            assert r.width % 16 == 0 and r.height % 16 == 0  # renderable as listed
            assert (r.width > r.height) == (group is table["landscape"]) or r.width == r.height
    assert g.sizes_for_subset("pe_as", table) == table["square"]
    # AR draws from all of Table 8, squares included (the release's random-resolution subset has 2048x2048)
    assert g.sizes_for_subset("po_ar", table) == table["square"] + table["landscape"] + table["portrait"]
    assert len(g.sizes_for_subset("pe_ar", table)) == 26 and g.Resolution("1:1", 2048, 2048) in (
        g.sizes_for_subset("pe_ar", table)
    )


def test_fit_size_scales_down_keeping_aspect_and_multiples() -> None:
    assert g.fit_size(2048, 1536, None) == (2048, 1536)
    assert g.fit_size(2048, 1536, 64) == (64, 48)
    assert g.fit_size(2560, 2560, 64) == (64, 64)
    assert g.fit_size(720, 1280, 64) == (32, 64)  # 36 rounds to the nearest multiple of 16
    assert g.fit_size(512, 512, 4096) == (512, 512)  # never scaled up
    for w, h in [(1152, 768), (1920, 1536), (1440, 2560)]:
        fw, fh = g.fit_size(w, h, 256)
        assert max(fw, fh) == 256 and fw % 16 == 0 and fh % 16 == 0
        assert fw / fh == pytest.approx(w / h, rel=0.15)


def test_unknown_subset_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown subset"):
        g.parse_subset("pe_xx")


# --- per-prompt plans --------------------------------------------------------------------------------------


def test_plans_are_deterministic_per_prompt_and_follow_the_config() -> None:
    s = g.GenerateSettings.from_config(SETTINGS)
    table = g.load_resolutions(RESOLUTIONS)
    rows = _enhanced_rows(400)
    kinds = ["z_image", "flux2"]
    plans = [g.plan_record(r, "pe_ar", 7, s, g.sizes_for_subset("pe_ar", table), kinds) for r in rows]
    again = g.plan_record(rows[5], "pe_ar", 7, s, g.sizes_for_subset("pe_ar", table), kinds)
    assert again == plans[5]  # depends on (seed, id, subset) only
    other_subset = [g.plan_record(r, "po_ar", 7, s, g.sizes_for_subset("po_ar", table), kinds) for r in rows]
    other_seed = [g.plan_record(r, "pe_ar", 8, s, g.sizes_for_subset("pe_ar", table), kinds) for r in rows]
    assert [p.seeds for p in plans] != [p.seeds for p in other_subset]
    assert [p.seeds for p in plans] != [p.seeds for p in other_seed]
    counts = Counter(len(p.seeds) for p in plans)
    assert set(counts) == {1, 2, 3}
    share = Counter(p.kind for p in plans)["flux2"] / len(plans)
    assert 0.22 < share < 0.38  # weight 0.3
    # AR: squares and non-squares alike, uniform over the 26 entries (6 squares: expected share 6/26 = 0.23)
    square_share = sum(p.resolution.width == p.resolution.height for p in plans) / len(plans)
    assert 0.15 < square_share < 0.32
    assert {p.resolution.aspect_ratio for p in plans} >= {"1:1", "4:3", "16:9", "3:4", "9:16"}
    assert (2048, 2048) in {(p.resolution.width, p.resolution.height) for p in plans}
    assert all(max(p.width, p.height) == 64 for p in plans)
    square = [g.plan_record(r, "po_as", 7, s, g.sizes_for_subset("po_as", table), kinds) for r in rows]
    assert {(p.width, p.height, p.resolution.aspect_ratio) for p in square} == {(64, 64, "1:1")}  # AS: squares only
    assert len({p.resolution.width for p in square}) == 6  # every Table 8 square size is drawn
    only_z = g.GenerateSettings.from_config(
        {
            **SETTINGS,
            "generators": {"z_image": {"weight": 1.0, "steps": 2}, "flux2": {"weight": 0.0, "steps": 2}},
        }
    )
    assert {g.plan_record(r, "pe_ar", 7, only_z, table["square"], ["z_image"]).kind for r in rows[:50]} == {
        "z_image"
    }


def test_best_candidate_is_the_highest_score(tiny_generators) -> None:
    class Fixed:
        model_name = "fixed"

        def score(self, images: list[Any]) -> list[float]:
            return [2.0, 9.5, 5.0][: len(images)]

    plan = g.Plan(
        kind="z_image", resolution=g.Resolution("4:3", 1024, 768), width=64, height=48, seeds=(11, 22, 33)
    )
    row = _enhanced_rows(1)[0]
    out = g.render_record(row, plan, "po_ar", tiny_generators["z_image"], Fixed(), jpeg_quality=90)
    assert out["kept"] and out["seed"] == 22 and out["aesthetic_predictor_v_2_5_score"] == 9.5
    assert out["candidate_seeds"] == [11, 22, 33] and out["candidate_scores"] == [2.0, 9.5, 5.0]
    assert out["spec_seed"] == row["seed"]
    # The kept JPEG is the render of seed 22, not of the others.
    (expected,) = tiny_generators["z_image"].generate([row["prompt"]], width=64, height=48, seeds=[22])
    kept = np.asarray(Image.open(io.BytesIO(out["image"])), dtype=np.float32)
    (other,) = tiny_generators["z_image"].generate([row["prompt"]], width=64, height=48, seeds=[11])
    assert (
        np.abs(kept - np.asarray(expected, np.float32)).mean()
        < np.abs(kept - np.asarray(other, np.float32)).mean()
    )


# --- the stage end to end, on the tiny real models ---------------------------------------------------


@pytest.mark.parametrize("subset", ["pe_ar", "po_as"])
def test_run_generate_renders_the_subset(subset: str, tmp_path: Path, tiny_generators, tiny_scorer) -> None:
    rows = _enhanced_rows(5)
    rows.append({**_enhanced_rows(6)[5], "kept": False, "drop_reason": "unsafe"})  # dropped upstream
    in_path = _write_input(tmp_path, rows)
    out_path = tmp_path / "results" / "images" / subset / "00001.parquet"
    stats = _run(in_path, out_path, subset=subset, generators=tiny_generators, scorer=tiny_scorer)
    out = pq.read_table(out_path).to_pylist()
    assert [r["id"] for r in out] == [r["id"] for r in rows[:5]]  # input order, upstream drops not rendered
    assert stats.records_in == 5 and stats.kept == 5 and stats.extra["subset"] == subset
    assert shards.stats_path(out_path).exists()
    enhanced = subset.startswith("pe")
    for r, src in zip(out, rows, strict=False):
        assert r["sample_id"] == f"{subset}-{src['id']}" and r["subset"] == subset
        assert r["prompt_used"] == (src["enhanced_prompt"] if enhanced else src["prompt"])
        assert r["image_generated_with_enhanced_prompt"] is enhanced
        assert r["enhanced_prompt"] == src["enhanced_prompt"] and r["category"] == src["category"]
        assert r["image_generator"] in {"z-image", "flux2"}
        img = Image.open(io.BytesIO(r["image"]))
        assert img.format == "JPEG" and f"{img.width}x{img.height}" == r["image_resolution"]
        if subset.endswith("_as"):
            assert r["image_aspect_ratio"] == "1:1" and img.size == (64, 64)
        else:
            # AR: any Table 8 entry, squares included; the label matches the rendered shape
            assert max(img.size) == 64 and (r["image_aspect_ratio"] == "1:1") == (img.width == img.height)
        assert 1 <= len(r["candidate_seeds"]) <= 3 and len(r["candidate_scores"]) == len(r["candidate_seeds"])
        best = int(np.argmax(r["candidate_scores"]))
        assert r["aesthetic_predictor_v_2_5_score"] == max(r["candidate_scores"])
        assert r["seed"] == r["candidate_seeds"][best]
        assert r["spec_seed"] == src["seed"]
        assert r["kept"] is True and r["drop_reason"] is None


def test_rerun_reproduces_bytes_and_resume_skips_done_chunks(
    tmp_path: Path, tiny_generators, tiny_scorer
) -> None:
    in_path = _write_input(tmp_path, _enhanced_rows(4))
    counted = {k: Counting(v) for k, v in tiny_generators.items()}
    kwargs = dict(
        subset="pe_as",
        # Flux.2 alone (the cheaper tiny pipeline) and at most 2 candidates keep three full runs fast.
        settings={
            **SETTINGS,
            "chunk_size": 2,
            "candidates": {"min": 1, "max": 2},
            "generators": {"z_image": {"weight": 0, "steps": 2}, "flux2": {"weight": 1, "steps": 2}},
        },
        scorer=tiny_scorer,
    )
    first = tmp_path / "a.parquet"
    _run(in_path, first, generators=counted, **kwargs)
    rendered = sum(c.images for c in counted.values())
    assert rendered == sum(len(r["candidate_seeds"]) for r in pq.read_table(first).to_pylist())

    # A fresh run elsewhere reproduces every image byte for byte.
    second = tmp_path / "b.parquet"
    _run(in_path, second, generators=tiny_generators, **kwargs)
    a, b = pq.read_table(first).to_pylist(), pq.read_table(second).to_pylist()
    assert [r["image"] for r in a] == [r["image"] for r in b]

    # A job killed after its first chunk: the rerun renders only the remaining chunk.
    third = tmp_path / "c.parquet"
    calls: list[int] = []

    def dying(chunk):
        calls.append(len(chunk))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return chunk

    counted2 = {k: Counting(v) for k, v in tiny_generators.items()}
    original_run = shards.ChunkCheckpoint.run

    def run_then_die(self, records, fn):
        return original_run(self, records, lambda chunk: dying(fn(chunk)))

    shards.ChunkCheckpoint.run = run_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(in_path, third, generators=counted2, **kwargs)
    finally:
        shards.ChunkCheckpoint.run = original_run
    counted3 = {k: Counting(v) for k, v in tiny_generators.items()}
    stats = _run(in_path, third, generators=counted3, **kwargs)
    assert stats.extra["resumed_chunks"] == 1
    c = pq.read_table(third).to_pylist()
    assert [r["image"] for r in c] == [r["image"] for r in a]
    assert 0 < sum(x.images for x in counted3.values()) < rendered


def test_one_failed_prompt_is_dropped_not_fatal(tmp_path: Path, tiny_generators, tiny_scorer) -> None:
    rows = _enhanced_rows(4)
    rows[2]["enhanced_prompt"] = "POISON " + rows[2]["enhanced_prompt"]
    rows[3]["enhanced_prompt"] = None  # the enhancer left nothing
    in_path = _write_input(tmp_path, rows)
    failing = {k: Counting(v, fail_on="POISON") for k, v in tiny_generators.items()}
    out_path = tmp_path / "out.parquet"
    stats = _run(in_path, out_path, generators=failing, scorer=tiny_scorer)
    out = {r["id"]: r for r in pq.read_table(out_path).to_pylist()}
    bad = out[rows[2]["id"]]
    assert bad["kept"] is False and bad["drop_reason"] == g.GENERATION_FAILED
    assert "out of memory" in bad["generation_error"] and bad["image"] is None
    assert out[rows[3]["id"]]["drop_reason"] == g.MISSING_PROMPT
    assert stats.kept == 2 and stats.dropped == {g.GENERATION_FAILED: 1, g.MISSING_PROMPT: 1}


def test_missing_generator_model_is_a_config_error(tmp_path: Path, tiny_scorer) -> None:
    in_path = _write_input(tmp_path, _enhanced_rows(1))
    with pytest.raises(ValueError, match="models.z_image"):
        _run(in_path, tmp_path / "o.parquet", scorer=tiny_scorer)


def test_production_path_loads_models_from_specs(tmp_path: Path, tiny_models) -> None:
    """No backends given: the stage loads the generators and the scorer from their ModelSpecs itself."""
    in_path = _write_input(tmp_path, _enhanced_rows(3))
    out_path = tmp_path / "out.parquet"
    stats = _run(
        in_path,
        out_path,
        subset="po_ar",
        models={"z_image": tiny_models.spec("z_image"), "flux2": tiny_models.spec("flux2")},
        aesthetic_encoder=tiny_models.spec("siglip"),
        aesthetic_head=tiny_models.spec("head"),
    )
    assert stats.kept == 3
    assert not out_path.with_name(out_path.name + ".chunks").exists()  # checkpoint removed once complete


def test_scorer_that_does_not_load_fails_the_job(tmp_path: Path, tiny_generators) -> None:
    """A missing scorer is a configuration error: it must not turn into one 'generation_failed' per prompt."""
    from finet2i.models.spec import ModelNotAvailable, ModelSpec

    in_path = _write_input(tmp_path, _enhanced_rows(2))
    nowhere = ModelSpec(key="models.aesthetic_encoder", path=str(tmp_path / "no-siglip"))
    with pytest.raises(ModelNotAvailable, match="models.aesthetic_encoder"):
        _run(in_path, tmp_path / "o.parquet", aesthetic_encoder=nowhere, aesthetic_head=nowhere,
             generators=tiny_generators)


# --- batching by resolution bucket ---------------------------------------------------------------------------


def test_images_per_call_scales_with_pixels() -> None:
    from finet2i.models.backends.diffusers_gen import images_per_call

    assert images_per_call(4, 1024, 1024) == 4
    assert images_per_call(4, 2048, 2048) == 1 and images_per_call(1, 2048, 2048) == 1  # never zero
    assert images_per_call(4, 512, 512) == 4  # small images are not packed beyond batch_size
    assert images_per_call(1, 64, 48) == 1  # batch_size 1: one image per call at any size
    assert images_per_call(4, 1280, 768) == 4  # 0.94 MP


@pytest.mark.parametrize("subset", ["pe_ar", "po_as"])
def test_one_pipeline_call_per_size_bucket(subset: str, tmp_path: Path, tiny_generators, tiny_scorer) -> None:
    """Images of one (generator, size) share pipeline calls, every candidate of a prompt with them: a chunk
    costs one call per bucket instead of one per image (what the stage did before), same images kept."""
    from finet2i.models.backends.diffusers_gen import DiffusersGenerator

    def fresh(batch_size: int) -> dict[str, DiffusersGenerator]:  # the session's pipelines, new call counters
        return {k: DiffusersGenerator(k, v.pipe, model_name=v.model_name, steps=v.steps, guidance=v.guidance,
                                      call_kwargs=v.call_kwargs, batch_size=batch_size)
                for k, v in tiny_generators.items()}

    rows = _enhanced_rows(10)
    in_path = _write_input(tmp_path, rows)
    settings = {**SETTINGS, "chunk_size": 64}  # the whole shard in one chunk
    s = g.GenerateSettings.from_config(settings)
    sizes = g.sizes_for_subset(subset, g.load_resolutions(RESOLUTIONS))
    plans = [g.plan_record(r, subset, 7, s, sizes, ["z_image", "flux2"]) for r in rows]
    buckets = {(p.kind, p.width, p.height) for p in plans}
    images = sum(len(p.seeds) for p in plans)

    batched = fresh(batch_size=64)  # 64 >= any bucket here (10 prompts x 3 candidates at most): a bucket per call
    _run(in_path, tmp_path / "batched.parquet", subset=subset, settings=settings, generators=batched,
         scorer=tiny_scorer)
    calls = sum(gen.pipeline_calls for gen in batched.values())
    assert calls == len(buckets) < images, (calls, len(buckets), images)
    out = pq.read_table(tmp_path / "batched.parquet").to_pylist()
    assert all(r["kept"] for r in out) and len(out) == len(rows)
    assert {r["image_resolution"] for r in out} == {f"{w}x{h}" for _, w, h in buckets}


def test_one_image_per_call_is_the_baseline(tmp_path: Path, tiny_generators, tiny_scorer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The count the bucketing saves: one image per call (the stage before bucketing) costs a call per image."""
    from finet2i.models.backends import diffusers_gen
    from finet2i.models.backends.diffusers_gen import DiffusersGenerator

    monkeypatch.setattr(diffusers_gen, "images_per_call", lambda batch_size, width, height: 1)
    gens = {k: DiffusersGenerator(k, v.pipe, model_name=v.model_name, steps=v.steps, guidance=v.guidance,
                                  call_kwargs=v.call_kwargs) for k, v in tiny_generators.items()}
    rows = _enhanced_rows(4)
    _run(_write_input(tmp_path, rows), tmp_path / "o.parquet", subset="pe_ar",
         settings={**SETTINGS, "chunk_size": 64}, generators=gens, scorer=tiny_scorer)
    out = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert sum(gen.pipeline_calls for gen in gens.values()) == sum(len(r["candidate_seeds"]) for r in out)
