"""What the fine-tune trains on: the release's samples and captions, the over-long caption filter, the subset
mixture, the buckets and the seeded plan (no model trained here)."""

from __future__ import annotations

import tarfile
from collections import Counter

import pytest

from finet2i.finetune import data


def test_samples_come_from_every_subset_folder_with_the_txt_members_text(tiny_release):
    samples = data.read_samples(tiny_release)
    assert Counter(s.subset for s in samples) == {"pe_ar": 6, "po_as": 6}
    for s in samples:
        with tarfile.open(tiny_release / s.tar) as tf:
            assert tf.extractfile(f"{s.key}.txt").read().decode() == s.caption
        with open(tiny_release / s.tar, "rb") as f:
            f.seek(s.jpg_offset)
            assert f.read(4)[:2] == b"\xff\xd8"  # the JPEG's start, where the index says
    # pe_* samples were rendered from (and are captioned with) the enhanced prompt
    assert all(s.caption.endswith("soft light") for s in samples if s.subset == "pe_ar")


def test_a_release_without_offsets_in_its_index_is_refused_with_what_to_do(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "synthetic_original_prompt_square_resolution"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["k"], "prompt": ["p"]}), folder / "train-000000.parquet")
    with pytest.raises(ValueError, match="rerun `assemble`"):
        data.read_samples(tmp_path)


def test_captions_over_the_clip_limit_are_flagged(tiny_sdxl):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_sdxl, subfolder="tokenizer", local_files_only=True)
    assert tok.model_max_length == 77
    fits = "a red fox in the snow"
    # 75 words of one token each plus BOS and EOS is exactly 77; one more word is too long
    word = "a"
    assert len(tok(word, add_special_tokens=False).input_ids) == 1
    exact, over = " ".join([word] * 75), " ".join([word] * 76)
    assert data.too_long([fits, exact, over], [tok, tok]) == [False, False, True]


@pytest.mark.parametrize(("size", "bucket"), [((1024, 1024), (1024, 1024)), ((1344, 768), (1344, 768)),
                                               ((768, 1344), (768, 1344)), ((2000, 1000), (1472, 704)),
                                               ((640, 480), (1152, 896))])
def test_buckets_keep_the_aspect_ratio_at_about_the_pixel_area(size, bucket):
    w, h = data.bucket_of(*size, resolution=1024, step=64)
    assert (w, h) == bucket and w % 64 == 0 and h % 64 == 0
    assert abs(w * h / 1024**2 - 1) < 0.1


def test_the_mixture_draws_each_subset_by_its_weight():
    subsets = ["a"] * 10 + ["b"] * 4 + ["c"] * 6
    draw = data.epoch_draw(subsets, {"a": 1.0, "b": 2.5, "c": 0.0}, seed=7, epoch=0)
    got = Counter(subsets[i] for i in draw)
    assert got == {"a": 10, "b": 10}  # b: twice each plus a seeded half; c left out
    assert Counter(draw)[10] in (2, 3)
    assert data.epoch_draw(subsets, {"a": 1.0, "b": 2.5, "c": 0.0}, seed=7, epoch=0) == draw
    assert Counter(subsets[i] for i in data.epoch_draw(subsets, {}, seed=7, epoch=0)) == Counter(subsets)


def test_each_step_holds_one_bucket_split_between_processes_and_the_plan_is_the_seeds():
    buckets = [(64, 64)] * 7 + [(96, 32)] * 3
    subsets = ["x"] * 10
    plan = data.make_plan(subsets, buckets, mixture={}, seed=3, batch_per_gpu=2, processes=2, accumulation=1,
                          epochs=2, max_samples=None)
    steps = list(plan.steps())
    assert plan.total_steps == 5 and len(steps) == 5  # ceil(2 x 10 / 4)
    assert [e for _, e, _ in steps] == [0, 0, 0, 1, 1]
    for _, _, step in steps:
        (micro,) = step
        assert [len(p) for p in micro] == [2, 2]
        assert len({it.bucket for p in micro for it in p}) == 1
    # 7 images of one bucket fill 8 and 3 of the other 4: one extra each, every epoch
    assert plan.make_epoch(0)[1] == 2
    again = data.make_plan(subsets, buckets, mixture={}, seed=3, batch_per_gpu=2, processes=2, accumulation=1,
                           epochs=2, max_samples=None)
    assert [s for _, _, s in again.steps()] == [s for _, _, s in steps]
    # a resumed job sees the same steps from where it stopped
    assert [s for _, _, s in plan.steps(3)] == [s for _, _, s in steps[3:]]
    other = data.make_plan(subsets, buckets, mixture={}, seed=4, batch_per_gpu=2, processes=2, accumulation=1,
                           epochs=2, max_samples=None)
    assert [s for _, _, s in other.steps()] != [s for _, _, s in steps]


def test_max_samples_caps_the_steps():
    plan = data.make_plan(["x"] * 40, [(64, 64)] * 40, mixture={}, seed=0, batch_per_gpu=4, processes=1,
                          accumulation=2, epochs=1, max_samples=12)
    assert plan.total_steps == 2  # ceil(12 / 8)
    with pytest.raises(ValueError, match="no sample to train on"):
        data.make_plan(["x"] * 4, [(64, 64)] * 4, mixture={"x": 0}, seed=0, batch_per_gpu=1, processes=1,
                       accumulation=1, epochs=1, max_samples=None)


def test_the_crop_covers_the_bucket_and_depends_only_on_its_seed(tiny_release):
    samples = data.read_samples(tiny_release)
    reader = data.ImageReader(tiny_release)
    wide = next(s for s in samples if s.width > s.height)
    a, at = reader.crop(wide, (64, 64), crop_seed=5)
    b, bt = reader.crop(wide, (64, 64), crop_seed=5)
    assert a.size == (64, 64) and at == bt and a.tobytes() == b.tobytes()
    assert at[0] == 0 and 0 <= at[1] <= 64 * wide.width // wide.height - 64
