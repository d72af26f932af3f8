"""Model answers that used to slip through as valid (issue 10, "fail closed everywhere"): each is now dropped or
falls back with a reason, and a refusal never becomes a prompt or a caption."""

from __future__ import annotations

import math

import pytest
from support.vlm import jpeg

from finet2i.plumbing.answers import extract_json_object, is_refusal
from finet2i.stages import caption, curated_score, enhance, guard, pair_filter, prompts
from finet2i.stages.attributes import parse_verdict


def test_guard_codes_on_a_third_line_fail_closed():
    """Read to line two only, "unsafe\\nS1\\nS10" was S1 alone: with only S10 blocked, the prompt passed."""
    verdict = guard.parse_guard_output("unsafe\nS1\nS10")
    assert not verdict.parsed and "3 lines" in verdict.error
    assert guard.decide(verdict, ["S10"]) == guard.UNPARSEABLE


def test_truncated_outer_json_is_no_verdict_even_with_a_complete_inner_object():
    inner = '{"style_match": true, "category_match": true, "reason": "fits"}'
    assert parse_verdict('{"verdict": ' + inner, ["style", "category"]) is None
    assert extract_json_object('{"a": {"b": 1}') is None
    # a complete answer with chatter (and braces inside strings) still reads
    assert parse_verdict('Sure: {"style_match": true, "category_match": false, "reason": "a {b}"} done',
                         ["style", "category"]).mismatched == ["category"]


def _pair_rows(score: float) -> list[dict]:
    return [{"id": "00000-000000", "sample_id": "pe_ar-00000-000000", "subset": "pe_ar", "prompt_used": "a cat",
             "aesthetic_predictor_v_2_5_score": score, "image": jpeg((200, 80, 40))}]


@pytest.mark.parametrize("judge_enabled", [False, True])
def test_nan_aesthetic_score_is_score_invalid_with_or_without_the_judge(judge_enabled):
    class NoJudge:
        model_name = "none"

        def chat(self, *a, **k):
            raise AssertionError("a sample without a valid score must not reach the judge")

    s = pair_filter.PairFilterSettings(aesthetic_threshold=5.5, judge_enabled=judge_enabled)
    [r] = pair_filter.filter_chunk(_pair_rows(math.nan), NoJudge(), s)
    assert r["drop_reason"] == pair_filter.SCORE_INVALID and not r["kept"]


def test_nan_score_of_a_real_photo_is_score_invalid():
    class NanScorer:
        def score(self, images):
            return [math.nan for _ in images]

    rows = [{"id": "real-00000-000000"}]
    [r] = curated_score.score_chunk(rows, {"real-00000-000000": jpeg((40, 80, 200))}, NanScorer(), threshold=1.0)
    assert r["drop_reason"] == curated_score.SCORE_INVALID


REFUSALS = ["I'm sorry, but I can't help with that request.", "I cannot create content like this.",
            "<think>This is not allowed.</think>I won't write that.", "As an AI, I must decline."]


@pytest.mark.parametrize("answer", REFUSALS)
def test_an_enhancer_refusal_falls_back_to_the_original_prompt(answer):
    ex = enhance.extract_enhanced(answer)
    assert ex.fallback and ex.note == enhance.REFUSED
    if "<think>" not in answer:  # a think tag inside an answer block is malformed_tags, a fallback too
        ex = enhance.extract_enhanced(f"<think>ok</think><answer>{answer}</answer>")
        assert ex.fallback and ex.note == enhance.REFUSED


def test_control_characters_never_reach_an_enhanced_prompt():
    ex = enhance.extract_enhanced("<answer>a red\x00 fox in the snow</answer>")
    assert ex.text == "a red fox in the snow"


class _Says:
    model_name = "scripted"

    def __init__(self, answers):
        self.answers = answers

    def chat(self, conversations, sampling, constraint=None, **kwargs):
        return self.answers[: len(conversations)]


def test_captioner_refusals_think_only_answers_and_nul_bytes():
    rows = [{"id": f"real-00000-{i:06d}", "image": jpeg((40 * i, 90, 160))} for i in range(4)]
    answers = ["I'm sorry, I can't describe this image.", "<think>a dog? maybe a cat", "\x00\x00",
               "A brown dog\x00 runs on a beach."]
    out = caption.caption_chunk(rows, _Says(answers), caption.CaptionSettings(), "scripted")
    assert [r["drop_reason"] for r in out] == [caption.REFUSED, caption.EMPTY, caption.EMPTY, None]
    assert [r["prompt"] for r in out] == [None, None, None, "A brown dog runs on a beach."]
    assert out[0]["caption_raw"] == answers[0]


@pytest.mark.parametrize("answer", REFUSALS)
def test_a_refusing_prompt_writer_writes_no_prompt(answer):
    cleaned = prompts.clean_prompt(answer)
    assert prompts.judge_prompt(cleaned, 5) in (prompts.REFUSED, prompts.EMPTY)


@pytest.mark.parametrize("text", ["A sorrel horse in a field", "Cannot Beach at dawn, Oregon coast",
                                  "I can see the ocean from a lighthouse window"])
def test_ordinary_prompts_are_not_refusals(text):
    assert not is_refusal(text)
