"""Model answers that used to ship wrong text (issue 23): a caption in a code fence kept half the fence; two JSON
verdicts after </think> were read as the first; think tags, chat-template tokens and U+FFFD replacement characters
reached prompts and captions (the demo shipped a prompt with a </think> inside). Each is now cleaned at the stage
that wrote it (what was removed is evidence in <stage>_markup) or fails closed, and package never ships one."""

from __future__ import annotations

import re

import pytest
from support.vlm import jpeg

from finet2i.stages import caption, enhance, package, pair_filter, prompts
from finet2i.stages.attributes import parse_verdict

CAPTION = "A red car parked on a wet street at night."
# The test's own oracle for what must never ship (independent of finet2i.plumbing.answers' pattern).
NEVER_SHIPPED = re.compile(r"</?think>|<\|[A-Za-z0-9_]+\|>|\[/?INST\]|</?s>|\ufffd", re.IGNORECASE)


def markup_in(text: str | None) -> bool:
    return bool(text) and bool(NEVER_SHIPPED.search(text))
FENCED = [f"```\n{CAPTION}\n```", f"```text\n{CAPTION}\n```", f"```markdown\n{CAPTION}\n```\n",
          f"  ```\n{CAPTION}"]  # the last: the closing fence cut off by max_tokens


@pytest.mark.parametrize("answer", FENCED)
def test_a_caption_or_prompt_in_a_code_fence_keeps_no_fence(answer):
    assert caption.clean_caption(answer) == CAPTION
    assert caption.clean_caption(answer, long=True) == CAPTION
    assert prompts.clean_prompt(answer) == CAPTION


TWO_VERDICTS = ('<think>It looks fine at first.</think>\n\n{"violations": [], "pass": true}\n'
                '{"violations": ["object_count"], "pass": false}')


def test_two_json_verdicts_after_think_are_no_verdict_not_the_first_one():
    v = pair_filter.parse_judge(TWO_VERDICTS)
    assert v.error and "2 JSON objects" in v.error and not v.passed
    one = pair_filter.parse_judge('<think>ok</think>\n\n{"violations": [], "pass": true} done.')
    assert one.error is None and one.passed  # one verdict with chatter after it still reads
    both = ('{"style_match": true, "category_match": true, "reason": "a"} '
            '{"style_match": false, "category_match": true, "reason": "b"}')
    assert parse_verdict(both, ["style", "category"]) is None  # the attribute verifier fails closed too


# Answers carrying control markup: a template's reasoning end, ChatML and Llama 3 turn tokens, Llama 2 [INST]
# and <s>, byte tokens decoded alone (U+FFFD).
MARKUP = [
    "A cat on a red sofa by the window</think>",
    "Let me think about cats.</think> A cat on a red sofa by the window",
    "<|im_start|>assistant\nA cat on a red sofa by the window<|im_end|>\n<|im_start|>user\nmore",
    "A cat on a red sofa by the window<|eot_id|><|start_header_id|>user<|end_header_id|>",
    "[INST] A cat on a red sofa by the window [/INST]",
    "<s>A cat on a red sofa by the window</s>",
    "A cat on a \ufffd\ufffdred sofa by the \ufffdwindow",
]


class _Says:
    model_name = "scripted"

    def __init__(self, answers):
        self.answers = list(answers)

    def chat(self, conversations, sampling, constraint=None, **kwargs):
        return self.answers[: len(conversations)]


def _spec(i: int) -> dict:
    return {"id": f"00000-{i:06d}", "shard": "00000", "index": i, "category": "Animals", "subcategory": "Cats",
            "style": "Photorealistic", "task": "Not Specified", "template": "t", "length_target": "short",
            "seed": i}


def test_the_prompt_writer_markup_is_cleaned_and_recorded():
    out = prompts.generate_chunk([_spec(i) for i in range(len(MARKUP))], _Says(MARKUP),
                                 prompts.PromptSettings(min_words=3), "scripted")
    for r, answer in zip(out, MARKUP, strict=True):
        assert not markup_in(r["prompt"]), (answer, r["prompt"])
        assert r["prompt_markup"], answer  # evidence: what was removed
        if r["kept"]:
            assert "cat on a" in r["prompt"] and "sofa" in r["prompt"]


def test_the_captioner_markup_is_cleaned_and_recorded():
    rows = [{"id": f"real-00000-{i:06d}", "image": jpeg((30 * i, 90, 160))} for i in range(len(MARKUP))]
    out = caption.caption_chunk(rows, _Says(MARKUP + MARKUP[::-1]), caption.CaptionSettings(), "scripted")
    for r in out:
        assert not markup_in(r["prompt"]) and not markup_in(r["enhanced_prompt"]), r
        assert r["caption_markup"]
    assert sum(r["kept"] for r in out) >= len(MARKUP) - 1


@pytest.mark.parametrize("answer", MARKUP)
def test_the_enhancer_markup_is_cleaned_and_recorded(answer):
    text = answer.replace("</think>", "")  # inside an answer block a think tag is malformed_tags (a fallback)
    [r] = enhance.enhance_chunk([{"id": "00000-000000", "prompt": "a cat", "seed": 1}],
                                _Says([f"<think>rewrite it</think><answer>{text}</answer>"]),
                                enhance.EnhanceSettings(), "scripted")
    assert not markup_in(r["enhanced_prompt"]) and "cat on a" in r["enhanced_prompt"]
    if markup_in(text):
        assert r["enhance_markup"]


@pytest.mark.parametrize("field", ["prompt", "enhanced_prompt", "prompt_used"])
def test_package_never_ships_markup_that_slipped_through(field):
    row = {"id": "00000-000001", "sample_id": "pe_ar-00000-000001", "prompt": "a cat on a sofa",
           "enhanced_prompt": "a cat on a red sofa", "image_generated_with_enhanced_prompt": True,
           "image_generator": "z-image", "aesthetic_predictor_v_2_5_score": 6.0}
    row[field] = "a cat on a sofa</think> ok" if field != "prompt_used" else "a cat \ufffd on a red sofa"
    sample, reason = package.build_sample(row, jpeg((10, 20, 30)), subset="pe_ar", seed=1,
                                          settings=package.PackageSettings())
    assert sample is None and reason == "control_markup"
