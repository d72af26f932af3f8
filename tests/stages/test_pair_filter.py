"""Pair filtering (3.1.6): judge-answer parsing on hand-written cases, the aesthetic cut, and real runs of the
thinking-judge format through vLLM on the tiny Qwen3-VL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.vlm import jpeg, vlm_spec

from finet2i.core import shards
from finet2i.stages.pair_filter import (
    CRITERIA,
    LOW_AESTHETIC,
    REJECTED,
    SYSTEM_PROMPT,
    UNPARSEABLE,
    UNREADABLE,
    PairFilterSettings,
    filter_chunk,
    parse_judge,
    run_pair_filter,
    verdict_regex,
)


def image_rows(subset: str, scores: list[float], shard: str = "00000") -> list[dict]:
    """Rows as the generate stage writes them (one per prompt, best candidate's JPEG in `image`)."""
    colors = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 30)]
    rows = []
    for i, score in enumerate(scores):
        pid = f"{shard}-{i:06d}"
        rows.append({
            "id": pid, "shard": shard, "index": i, "sample_id": f"{subset}-{pid}", "subset": subset,
            "category": "Nature", "subcategory": "Animals", "style": "Photorealistic",
            "prompt": f"two red foxes number {i}",
            "enhanced_prompt": f"two red foxes in the snow, number {i}",
            "prompt_used": f"two red foxes in the snow, number {i}",
            "image": jpeg(colors[i % 4]), "aesthetic_predictor_v_2_5_score": score,
            "candidate_scores": [score, score - 0.5], "image_generator": "Z-Image-Turbo",
            "image_resolution": "64x48", "image_aspect_ratio": "4:3",
            "image_generated_with_enhanced_prompt": subset.startswith("pe"), "seed": 1000 + i,
        })
    return rows


# --- parsing --------------------------------------------------------------------------------------------

def test_parse_clean_pass() -> None:
    v = parse_judge('The foxes are there, two of them.</think>\n\n{"violations": [], "pass": true}')
    assert v.error is None and not v.rejected and v.reasoning == "The foxes are there, two of them."


def test_parse_strips_think_opening_and_keeps_reasoning() -> None:
    v = parse_judge('<think>\nThree foxes, not two.\n</think>\n\n{"violations": ["counts"], "pass": false}')
    assert v.rejected and v.violations == ["counts"] and v.reasoning == "Three foxes, not two."


def test_any_violation_rejects_even_if_pass_says_true() -> None:
    v = parse_judge('ok</think>{"violations": ["extra_limbs"], "pass": true}')
    assert v.error is None and v.rejected and v.violations == ["extra_limbs"]


def test_repeated_violations_are_listed_once() -> None:
    v = parse_judge('x</think>{"violations": ["objects", "blur", "objects"], "pass": false}')
    assert v.violations == ["objects", "blur"]


def test_fail_without_named_criterion_is_a_rejection() -> None:
    v = parse_judge('hm</think>{"violations": [], "pass": false}')
    assert v.rejected and v.violations == ["unspecified"]


@pytest.mark.parametrize("text,why", [
    ("The image shows two foxes and the snow looks", "</think>"),                  # ran out while thinking
    ('I would answer {"violations": [], "pass": true}', "</think>"),              # JSON but no </think>
    ('fine</think>\n\n{"violations": ["counts", "pass": fal', "JSON"),             # broken JSON
    ("fine</think>\n\nThe image passes every check.", "JSON"),                   # prose verdict
    ('fine</think>{"violations": "counts", "pass": false}', "violations"),       # not a list
    ('fine</think>{"violations": [], "pass": "yes"}', "pass"),                   # not a boolean
    ("", "</think>"),
])
def test_unparseable_answers_fail_closed(text: str, why: str) -> None:
    v = parse_judge(text)
    assert v.error is not None and why in v.error and not v.rejected  # rejected means "read and failed"


def test_system_prompt_enumerates_every_criterion() -> None:
    for cid in CRITERIA:
        assert f"- {cid}:" in SYSTEM_PROMPT
    for word in ("counts", "colors", "positions", "text", "style", "anatomy", "extra", "blur", "watermark"):
        assert word in SYSTEM_PROMPT


def test_verdict_regex_shape() -> None:
    rx = verdict_regex(40)
    assert re.fullmatch(rx, 'two foxes, fine</think>\n\n{"violations": [], "pass": true}')
    assert re.fullmatch(rx, 'x</think>\n\n{"violations": ["counts", "blur"], "pass": false}')
    assert not re.fullmatch(rx, 'x</think>\n\n{"violations": ["ugly"], "pass": false}')  # unknown criterion
    six = ", ".join(['"objects"'] * 6)
    assert not re.fullmatch(rx, f'x</think>\n\n{{"violations": [{six}], "pass": false}}')  # capped list
    assert not re.fullmatch(rx, '<think>x</think>\n\n{"violations": [], "pass": true}')  # no '<' in reasoning
    assert not re.fullmatch(rx, "y" * 41 + '</think>\n\n{"violations": [], "pass": true}')  # reasoning budget
    assert PairFilterSettings(max_tokens=64).reasoning_chars == 0  # tiny budgets leave room for the verdict
    assert PairFilterSettings(max_tokens=2048).reasoning_chars > 5000


# --- one chunk, with hand-written judge answers -----------------------------------------------------------

class _Scripted:
    model_name = "scripted"

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.calls: list[list] = []

    def chat(self, conversations, sampling, constraint=None, *, seeds=None):
        self.calls.append((conversations, seeds))
        answers, self.answers = self.answers[:len(conversations)], self.answers[len(conversations):]
        return answers


def test_filter_chunk_verdicts_and_evidence() -> None:
    rows = image_rows("pe_ar", [5.0, 6.0, 6.5, 7.0, 7.5])
    rows[4]["image"] = b"not a jpeg"
    judge = _Scripted(['fine</think>\n\n{"violations": [], "pass": true}',
                       'three foxes</think>\n\n{"violations": ["counts", "colors"], "pass": false}',
                       'the image shows'])
    out = filter_chunk(rows, judge, PairFilterSettings(aesthetic_threshold=5.5))
    assert [r["drop_reason"] for r in out] == [LOW_AESTHETIC, None, REJECTED, UNPARSEABLE, UNREADABLE]
    [(convs, seeds)] = judge.calls
    assert len(convs) == 3  # low-aesthetic and unreadable rows are not judged
    assert len(set(seeds)) == 3  # one seed per sample, from its sample_id
    user = convs[0][1]["content"]
    assert user[0]["type"] == "image" and "number 1" in user[1]["text"]  # the image + prompt_used
    assert out[2]["judge_violations"] == "counts,colors" and out[2]["judge_reasoning"] == "three foxes"
    assert out[3]["judge_raw"] == "the image shows"
    assert all("image" not in r for r in out)
    assert out[1]["sample_id"] == "pe_ar-00000-000001" and out[1]["candidate_scores"] == [6.0, 5.5]


def test_unsafe_images_are_dropped_apart_from_rejections() -> None:
    """Beyond the paper: a safety violation (nudity, gore, minors) drops as judge_unsafe, and the judge is told
    and constrained to name them; judge.safety: false leaves them out of instruction and grammar."""
    from finet2i.stages.pair_filter import SAFETY_CRITERIA, UNSAFE_IMAGE

    rows = image_rows("pe_ar", [6.0, 6.5, 7.0])
    judge = _Scripted(['</think>\n\n{"violations": ["gore"], "pass": false}',
                       '</think>\n\n{"violations": ["counts", "minors"], "pass": false}',
                       '</think>\n\n{"violations": ["counts"], "pass": false}'])
    out = filter_chunk(rows, judge, PairFilterSettings(aesthetic_threshold=5.5, constrained=True))
    assert [r["drop_reason"] for r in out] == [UNSAFE_IMAGE, UNSAFE_IMAGE, REJECTED]
    assert all(f"- {c}:" in SYSTEM_PROMPT for c in SAFETY_CRITERIA)
    off = PairFilterSettings(safety=False)
    assert all(c not in verdict_regex(0, [c for c in CRITERIA if c not in SAFETY_CRITERIA]) for c in SAFETY_CRITERIA)
    judge = _Scripted(['</think>\n\n{"violations": ["gore"], "pass": false}'])
    [r] = filter_chunk(image_rows("pe_ar", [6.0]), judge, off)
    assert r["drop_reason"] == REJECTED  # not asked about safety: an unknown id is an ordinary rejection
    assert "nudity" not in judge.calls[0][0][0][0]["content"]


def test_score_at_threshold_is_dropped_and_judge_can_be_off() -> None:
    class NoJudge:
        model_name = "none"

        def chat(self, *a, **k):
            raise AssertionError("judge.enabled: false must not call the judge")

    out = filter_chunk(image_rows("po_as", [5.5, 5.51]), NoJudge(),
                       PairFilterSettings(aesthetic_threshold=5.5, judge_enabled=False))
    assert [r["drop_reason"] for r in out] == [LOW_AESTHETIC, None]


def test_the_kept_pairs_images_are_cut_out_when_the_images_table_goes(tmp_path: Path) -> None:
    """pair_filter.keep_dropped_images: false (docs/disk.md): the kept pairs' bytes, and only theirs, are copied
    into the images file that package refers to; the generate table can then be deleted."""
    images = tmp_path / "generate" / "pe_ar" / "00000.parquet"
    shards.write_table(images, image_rows("pe_ar", [3.0, 6.0, 7.0, 8.0]))
    table, stats = tmp_path / "pf" / "pe_ar" / "00000.parquet", tmp_path / "pf" / "pe_ar" / "00000.stats.json"
    kept_file = tmp_path / "pf" / "pe_ar" / "00000.images.parquet"
    judge = _Scripted(['</think>\n\n{"violations": [], "pass": true}',
                       '</think>\n\n{"violations": ["counts"], "pass": false}',
                       '</think>\n\n{"violations": [], "pass": true}'])
    run_pair_filter({"pe_ar": images}, {"pe_ar": table}, {"pe_ar": stats}, shard="00000",
                    settings={"aesthetic_threshold": 5.5, "judge": {"constrained": False}},
                    model=vlm_spec(tmp_path), vlm=judge, kept_images={"pe_ar": kept_file})
    kept = [r["sample_id"] for r in shards.read_records(table) if r["kept"]]
    assert kept == ["pe_ar-00000-000001", "pe_ar-00000-000003"]
    copied = shards.read_table(kept_file).to_pylist()
    source = {r["sample_id"]: r["image"] for r in shards.read_table(images).to_pylist()}
    assert [r["sample_id"] for r in copied] == kept and all(r["image"] == source[r["sample_id"]] for r in copied)


# --- real runs through vLLM ------------------------------------------------------------------------------

@pytest.mark.vllm
@pytest.mark.slow
def test_run_pair_filter_on_tiny_qwen3_vl(tmp_path: Path, tiny_qwen3_vl: Path, tiny_vlm) -> None:
    subsets = ["pe_ar", "po_as"]
    images, tables, stats = {}, {}, {}
    for sub in subsets:
        images[sub] = tmp_path / "images" / sub / "00000.parquet"
        tables[sub] = tmp_path / "pairs" / sub / "00000.parquet"
        stats[sub] = tmp_path / "pairs" / sub / "00000.stats.json"
        shards.write_table(images[sub], image_rows(sub, [3.0, 6.0, 7.0, 8.0]))
    settings = {"aesthetic_threshold": 5.5, "chunk_size": 2,
                "judge": {"enabled": True, "temperature": 0.0, "max_tokens": 128}}
    result = run_pair_filter(images, tables, stats, shard="00000", settings=settings,
                             model=vlm_spec(tiny_qwen3_vl), vlm=tiny_vlm)
    assert sorted(result) == subsets
    parsed = 0
    for sub in subsets:
        rows = shards.read_records(tables[sub])
        assert [r["sample_id"] for r in rows] == [f"{sub}-00000-{i:06d}" for i in range(4)]
        assert "image" not in shards.read_table(tables[sub]).column_names  # bytes stay in the images table
        assert rows[0]["drop_reason"] == LOW_AESTHETIC and rows[0]["judge_reasoning"] is None
        for r in rows[1:]:
            assert r["drop_reason"] in (None, REJECTED, UNPARSEABLE)
            if r["drop_reason"] == UNPARSEABLE:
                assert r["judge_raw"]
            else:
                parsed += 1
                assert (r["drop_reason"] == REJECTED) == bool(r["judge_violations"])
                assert set((r["judge_violations"] or "").split(",")) - {""} <= set(CRITERIA)
        st = shards.StageStats.read(stats[sub])
        assert st.stage == "pair_filter" and st.shard == "00000" and st.extra["subset"] == sub
        assert st.records_in == 4 and st.dropped.get(LOW_AESTHETIC) == 1 and st.model == tiny_vlm.model_name
    assert parsed >= 1  # the constraint turns even a random model's answer into a readable verdict
