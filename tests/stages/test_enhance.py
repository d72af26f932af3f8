"""Prompt enhancement (3.1.4): answer extraction, fallback to the original, the stage through vLLM."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from finet2i.core import shards
from finet2i.models.backends import Sampling
from finet2i.stages.enhance import (
    NO_ANSWER_TAG,
    EnhanceSettings,
    enhance_chunk,
    extract_enhanced,
    record_seed,
    run_enhance,
)

SETTINGS = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "constrained": False, "chunk_size": 4}


@pytest.mark.parametrize("raw, text, note", [
    ("<think>add light</think>\n<answer> A red fox,\n soft light </answer>", "A red fox, soft light", None),
    ("<answer>first</answer> <answer>second</answer>", "first", None),
    ("A plain rewrite without tags", "A plain rewrite without tags", NO_ANSWER_TAG),
    ("<think>reasoning</think>\nA rewrite after thinking", "A rewrite after thinking", NO_ANSWER_TAG),
])
def test_extract_answers(raw: str, text: str, note: str | None) -> None:
    ex = extract_enhanced(raw)
    assert (ex.text, ex.note, ex.fallback) == (text, note, False)


@pytest.mark.parametrize("raw, note", [
    (None, "empty_output"), ("", "empty_output"), ("  \n", "empty_output"),
    ("<answer>  </answer>", "empty_answer"),
    ("<think>only reasoning</think>", "no_answer"),
    ("<think>cut off by max_tokens", "unterminated_think"),
    ("<think>ok</think>\n<answer>A red fox in", "unterminated_answer"),
    ("text </answer> stray", "malformed_tags"),
    ("<answer> <answer> a fox in snow </answer>", "malformed_tags"),  # seen from the tiny demo model
])
def test_extract_falls_back(raw: str | None, note: str) -> None:
    ex = extract_enhanced(raw)
    assert ex.fallback and ex.text is None and ex.note == note


class _Answers:
    """Hand-written answers handed out in call order (the real model is tested below)."""

    model_name = "canned"

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)

    def chat(self, conversations: list[Any], sampling: Sampling, constraint: Any = None) -> list[str]:
        taken, self.answers = self.answers[:len(conversations)], self.answers[len(conversations):]
        return taken


def test_fallback_keeps_the_original_and_never_drops() -> None:
    records = [{"id": "a", "prompt": "a red fox", "seed": 1}, {"id": "b", "prompt": "a blue car", "seed": 2},
               {"id": "c", "prompt": "", "seed": 3}]
    out = enhance_chunk(records, _Answers(["<answer>A red fox in snow, soft light</answer>", "<think>hm"]),
                        EnhanceSettings(), "canned")
    assert [r["kept"] for r in out] == [True, True, True]
    assert out[0]["enhanced_prompt"] == "A red fox in snow, soft light" and out[0]["enhanced_length"] == 7
    assert out[0]["enhance_fallback"] is False and out[0]["enhance_raw"] is None
    assert out[1]["enhanced_prompt"] == "a blue car" and out[1]["enhance_fallback"] is True
    assert out[1]["enhance_note"] == "unterminated_think" and out[1]["enhance_raw"] == "<think>hm"
    assert out[2]["enhance_note"] == "empty_input" and out[2]["enhanced_prompt"] == ""
    assert all(r["enhancer"] == "canned" for r in out)


def test_record_seed_for_records_without_one() -> None:
    assert record_seed({"id": "x", "seed": 5}) == 5
    a = record_seed({"id": "real-00000-000001"})
    assert a == record_seed({"id": "real-00000-000001"}) != record_seed({"id": "real-00000-000002"})
    assert 0 <= a < 2**31


@pytest.mark.vllm
@pytest.mark.slow
def test_run_enhance_end_to_end(tmp_path: Path, prompt_engine: Any) -> None:
    from support.llm import prompt_spec, write_prompts

    prompts = ["a red fox in fresh snow", "two cups of coffee on a wooden table", "an old lighthouse at dusk",
               "a robot reading a newspaper", "a bowl of ramen, top view"]
    write_prompts(tmp_path / "attributes.parquet", prompts)
    model = prompt_spec(Path(prompt_engine.spec.path))
    out = tmp_path / "enhanced" / "00000.parquet"
    stats = run_enhance(tmp_path / "attributes.parquet", out, shard="00000", settings=SETTINGS, model=model,
                        llm=prompt_engine)
    rows = shards.read_records(out)
    assert stats.records_in == stats.kept == 5 and stats.dropped == {}  # enhance never drops
    assert stats.extra["fallbacks"] == sum(r["enhance_fallback"] for r in rows)
    for r, original in zip(rows, prompts, strict=True):
        assert r["prompt"] == original and r["enhancer"] == "prompt-llm"
        assert r["enhanced_prompt"] and r["enhanced_length"] == len(r["enhanced_prompt"].split())
        assert "<answer>" not in r["enhanced_prompt"] and "<think>" not in r["enhanced_prompt"]
        if r["enhance_fallback"]:
            assert r["enhanced_prompt"] == original and r["enhance_note"] and r["enhance_raw"] is not None
        else:
            assert r["enhance_note"] in (None, NO_ANSWER_TAG)

    again = tmp_path / "again.parquet"
    run_enhance(tmp_path / "attributes.parquet", again, shard="00000", settings=SETTINGS, model=model,
                llm=prompt_engine)
    assert [r["enhanced_prompt"] for r in shards.read_records(again)] == [r["enhanced_prompt"] for r in rows]


@pytest.mark.vllm
@pytest.mark.slow
def test_constrained_enhance_always_has_an_answer_block(tmp_path: Path, prompt_engine: Any) -> None:
    """With ``constrained: true`` the output is held to ``[<think>..</think>]<answer>..</answer>``: a record
    either gets an extracted answer or was cut off by max_tokens, never an unformatted reply."""
    from support.llm import prompt_spec, write_prompts

    write_prompts(tmp_path / "in.parquet", ["a red fox in fresh snow", "a robot reading a newspaper"])
    out = tmp_path / "out.parquet"
    run_enhance(tmp_path / "in.parquet", out, shard="00000", model=prompt_spec(Path(prompt_engine.spec.path)),
                settings={**SETTINGS, "constrained": True, "max_tokens": 160}, llm=prompt_engine)
    for r in shards.read_records(out):
        assert r["enhance_note"] in (None, "unterminated_think", "unterminated_answer")


@pytest.mark.vllm
@pytest.mark.slow
def test_real_image_captions_are_enhanced_from_their_column(tmp_path: Path, prompt_engine: Any) -> None:
    """The curated branch: captions in another column, ids like real-00000-000001, no spec seed."""
    from support.llm import prompt_spec

    records = [shards.mark({"id": f"real-00000-{i:06d}", "caption": c}, None)
               for i, c in enumerate(["a mountain lake at sunrise", "a street market in the rain"])]
    shards.write_stage_output(tmp_path / "caption.parquet", records, stage="caption", shard="00000",
                              started=time.monotonic())
    model = prompt_spec(Path(prompt_engine.spec.path))
    out = tmp_path / "enh.parquet"
    run_enhance(tmp_path / "caption.parquet", out, shard="00000", settings=SETTINGS, model=model,
                llm=prompt_engine, prompt_column="caption")
    rows = shards.read_records(out)
    assert [r["kept"] for r in rows] == [True, True]
    for r in rows:
        assert r["enhanced_prompt"] and (not r["enhance_fallback"] or r["enhanced_prompt"] == r["caption"])
    with pytest.raises(KeyError, match="prompt"):
        run_enhance(tmp_path / "caption.parquet", tmp_path / "x.parquet", shard="00000", settings=SETTINGS,
                    model=model, llm=prompt_engine)
