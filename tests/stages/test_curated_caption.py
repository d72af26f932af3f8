"""Real-image captions (3.2): answer cleaning, verdicts, the short + long captions of `curated.long_prompt:
captioner` and the short ones of `enhancer`, and real runs through vLLM on the tiny Qwen3-VL."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.vlm import jpeg, vlm_spec

from finet2i.core import shards
from finet2i.models.backends import Sampling
from finet2i.stages.caption import (
    EMPTY,
    EMPTY_LONG,
    INSTRUCTION,
    LONG_INSTRUCTION,
    LONG_REFUSED,
    REFUSED,
    UNREADABLE,
    CaptionSettings,
    caption_chunk,
    clean_caption,
    run_caption,
)


def real_rows(n: int, cshard: str = "00000") -> list[dict]:
    colors = [(30, 120, 200), (200, 160, 40), (90, 90, 90)]
    return [{"id": f"real-{cshard}-{i:06d}", "source": "demo", "width": 64, "height": 48,
             "aesthetic_predictor_v_2_5_score": 7.0, "image": jpeg(colors[i % 3]), "kept": True,
             "drop_reason": None} for i in range(n)]


@pytest.mark.parametrize("raw,want", [
    ("A golden retriever running on a sunny beach.", "A golden retriever running on a sunny beach."),
    ('"A red tram on a rainy street at night."', "A red tram on a rainy street at night."),
    ("Caption: a bowl of ramen, top view", "a bowl of ramen, top view"),
    ("Here is a short prompt: misty pine forest at dawn\n\nI hope this helps!", "misty pine forest at dawn"),
    ("  two  cats\non a sofa ", "two cats on a sofa"),
    ("", ""),
    ('"  "', ""),
    ("...", ""),
])
def test_clean_caption(raw: str, want: str) -> None:
    assert clean_caption(raw) == want


LONG = ("A red fox sits in fresh snow at the edge of a pine forest, its thick winter coat glowing copper "
        "against the pale ground.")


@pytest.mark.parametrize("raw,short,long", [
    # The long caption keeps every paragraph, joined with single spaces; the short one keeps the first.
    (f"{LONG}\n\nSoft morning light comes from the left.\n\nThe background is blurred.",
     LONG, f"{LONG} Soft morning light comes from the left. The background is blurred."),
    # Lead-ins go, also when they stand alone in the first paragraph; trailing chatter goes.
    (f"Here's a detailed description of the image:\n\n{LONG}\n\nI hope this helps!", LONG, LONG),
    (f"Here is a short prompt:\n\n{LONG}", LONG, LONG),
    (f"<think>a fox? yes</think>\n\"{LONG}\n\nShallow depth of field.\"",
     f"\"{LONG}", f"{LONG} Shallow depth of field."),
    (f"Detailed prompt: {LONG}\x00\nLet me know if you want changes.", f"{LONG} Let me know if you want changes.",
     f"{LONG} Let me know if you want changes."),  # chatter in the same paragraph is text: not cut
    ("<think>a fox? a dog? I cannot tell", "", ""),
    ("\n\n  \n\n", "", ""),
])
def test_clean_long_caption_joins_paragraphs(raw: str, short: str, long: str) -> None:
    assert clean_caption(raw) == short
    assert clean_caption(raw, long=True) == long


class _Scripted:
    model_name = "scripted"

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.calls: list[list] = []

    def chat(self, conversations, sampling, constraint=None):
        self.calls.append(conversations)
        return self.answers[:len(conversations)]


def test_caption_chunk_verdicts() -> None:
    rows = real_rows(3)
    rows[2]["image"] = b"\xff\xd8 truncated"
    llm = _Scripted(['Caption: "A dog on a beach at sunset."', "   "])
    out = caption_chunk(rows, llm, CaptionSettings(), "Qwen2.5-VL-7B-Captioner-Relaxed")
    assert [r["drop_reason"] for r in out] == [None, EMPTY, UNREADABLE]
    assert out[0]["prompt"] == "A dog on a beach at sunset." and out[0]["length"] == 7
    assert out[0]["prompt_generator"] == "Qwen2.5-VL-7B-Captioner-Relaxed"
    assert out[1]["prompt"] is None and out[1]["caption_raw"] == "   "
    conv = llm.calls[0][0]
    assert conv[0]["content"][0]["type"] == "image" and conv[0]["content"][1]["text"] == INSTRUCTION
    assert all("image" not in r for r in out)


class _Batched(_Scripted):
    """Like our vLLM backends: takes one Sampling per conversation (`samplings=`), answers by instruction."""

    def __init__(self, short: list[str], long: list[str]) -> None:
        super().__init__([])
        self.short, self.long = list(short), list(long)
        self.samplings: list[list[Sampling]] = []

    def chat(self, conversations, sampling, constraint=None, *, seeds=None, samplings=None):
        self.calls.append(conversations)
        self.samplings.append(list(samplings) if samplings is not None else [sampling] * len(conversations))
        return [(self.long if c[0]["content"][1]["text"].startswith(LONG_INSTRUCTION) else self.short).pop(0)
                for c in conversations]


CAPTIONER = "Qwen2.5-VL-7B-Captioner-Relaxed"
SHORT = "A red fox sits in fresh snow at the edge of a pine forest on a bright winter morning."


def test_captioner_writes_the_short_and_the_long_caption_in_one_batch() -> None:
    rows = real_rows(6)
    rows[5]["image"] = b"\xff\xd8 truncated"
    short = [SHORT, SHORT, "I'm sorry, I can't describe this image.", SHORT, SHORT]
    long = [f"Long caption:\n\n{LONG}\n\nThe light is soft.\n\nI hope this helps!", LONG, LONG, "   ",
            "I'm sorry, but I cannot write a detailed description of this image."]
    vlm = _Batched(short, long)
    settings = CaptionSettings(max_tokens=96, long_max_tokens=400)
    out = caption_chunk(rows, vlm, settings, CAPTIONER, long_prompt="captioner")
    # One engine call per chunk: the 5 readable images' short prompts, then their long prompts.
    assert len(vlm.calls) == 1 and len(vlm.calls[0]) == 10
    assert [c[0]["content"][1]["text"] for c in vlm.calls[0]] == [INSTRUCTION] * 5 + [LONG_INSTRUCTION] * 5
    assert [s.max_tokens for s in vlm.samplings[0]] == [96] * 5 + [400] * 5
    assert [r["drop_reason"] for r in out] == [None, None, REFUSED, EMPTY_LONG, LONG_REFUSED, UNREADABLE]
    first = out[0]
    assert first["prompt"] == SHORT and first["length"] == len(SHORT.split())
    assert first["enhanced_prompt"] == f"{LONG} The light is soft."  # paragraphs joined, no lead-in, no chatter
    assert first["enhanced_length"] == len(first["enhanced_prompt"].split())
    assert first["prompt_generator"] == first["enhancer"] == CAPTIONER
    assert out[1]["enhanced_prompt"] == LONG
    # Dropped: no prompt of either length, the answer that failed as evidence.
    for r, raw in zip(out[2:5], [short[2], long[3], long[4]], strict=True):
        assert r["prompt"] is None and r["enhanced_prompt"] is None and r["caption_raw"] == raw
    assert out[5]["enhancer"] == CAPTIONER and out[5]["enhanced_prompt"] is None


def test_captioner_falls_back_to_one_call_per_answer_length() -> None:
    """A VisionLLM without `samplings=` gets the short prompts, then the long ones, each with its budget."""
    llm = _Scripted([SHORT, SHORT])
    out = caption_chunk(real_rows(2), llm, CaptionSettings(max_tokens=50, long_max_tokens=300), CAPTIONER)
    assert [len(c) for c in llm.calls] == [2, 2]
    assert llm.calls[0][0][0]["content"][1]["text"] == INSTRUCTION
    assert llm.calls[1][0][0]["content"][1]["text"] == LONG_INSTRUCTION
    assert all(r["kept"] and r["prompt"] == r["enhanced_prompt"] == SHORT for r in out)


def test_enhancer_mode_writes_the_short_caption_only() -> None:
    vlm = _Batched([SHORT, "   "], [])
    out = caption_chunk(real_rows(2), vlm, CaptionSettings(), CAPTIONER, long_prompt="enhancer")
    assert len(vlm.calls[0]) == 2 and all(c[0]["content"][1]["text"] == INSTRUCTION for c in vlm.calls[0])
    assert [r["drop_reason"] for r in out] == [None, EMPTY]
    assert out[0]["prompt"] == SHORT
    assert not {"enhanced_prompt", "enhanced_length", "enhancer"} & set(out[0])  # curated_enhance writes them
    with pytest.raises(ValueError, match="curated.long_prompt"):
        caption_chunk(real_rows(1), vlm, CaptionSettings(), CAPTIONER, long_prompt="vlm")


class _Killed(BaseException):
    """Like SIGKILL for the job: no stage catches it as one record's failure."""


class _DiesOnCall(_Batched):
    def __init__(self, short: list[str], long: list[str], die_on_call: int) -> None:
        super().__init__(short, long)
        self.die_on_call = die_on_call

    def chat(self, conversations, sampling, constraint=None, *, seeds=None, samplings=None):
        if len(self.calls) + 1 == self.die_on_call:
            raise _Killed("job killed")
        return super().chat(conversations, sampling, constraint, seeds=seeds, samplings=samplings)


def test_a_checkpoint_of_the_other_long_prompt_writer_is_not_reused(tmp_path: Path) -> None:
    """Killed after one chunk with `enhancer`, rerun with `captioner`: every row gets its long caption."""
    src, out = tmp_path / "score.parquet", tmp_path / "caption" / "00000.parquet"
    shards.write_table(src, real_rows(4))
    spec = vlm_spec(tmp_path / "nowhere", "models.captioner")
    with pytest.raises(_Killed):
        run_caption(src, src, out, shard="00000", settings={"chunk_size": 2}, model=spec,
                    vlm=_DiesOnCall([SHORT] * 4, [], die_on_call=2), long_prompt="enhancer")
    assert list(out.parent.glob("*.chunks/chunk-*.parquet")), "the first chunk was not checkpointed"
    vlm = _Batched([SHORT] * 4, [LONG] * 4)
    stats = run_caption(src, src, out, shard="00000", settings={"chunk_size": 2}, model=spec, vlm=vlm,
                        long_prompt="captioner")
    got = shards.read_records(out)
    assert [r["enhanced_prompt"] for r in got] == [LONG] * 4 and stats.kept == 4
    assert [len(c) for c in vlm.calls] == [4, 4]  # both chunks captioned again, 2 short + 2 long requests each
    with pytest.raises(ValueError, match="curated.long_prompt"):
        run_caption(src, src, tmp_path / "x.parquet", shard="00000", settings={}, model=spec,
                    vlm=_Batched([], []), long_prompt="both")


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("long_prompt", ["captioner", "enhancer"])
def test_run_caption_on_tiny_qwen3_vl(tmp_path: Path, tiny_qwen3_vl: Path, tiny_vlm, long_prompt: str) -> None:
    rows = real_rows(4)
    rows[3].update(kept=False, drop_reason="low_aesthetic")
    score = tmp_path / "score" / "00000.parquet"
    shards.write_table(score, rows)
    out = tmp_path / "caption" / "00000.parquet"
    settings = {"temperature": 0.0, "max_tokens": 16, "long_max_tokens": 48, "chunk_size": 2}
    stats = run_caption(score, score, out, shard="00000", settings=settings,  # the score rows hold bytes here
                        model=vlm_spec(tiny_qwen3_vl, "models.captioner"),
                        stats_path=tmp_path / "caption" / "00000.stats.json", vlm=tiny_vlm,
                        long_prompt=long_prompt)
    got = shards.read_records(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows[:3]]
    assert "image" not in shards.read_table(out).column_names
    for r in got:
        assert r["prompt_generator"] == tiny_vlm.model_name and r["source"] == "demo"
        if r["kept"]:
            assert r["prompt"] and r["length"] == len(r["prompt"].split())
        else:
            assert r["drop_reason"] in (EMPTY, EMPTY_LONG) and r["caption_raw"] is not None
        if long_prompt == "captioner":
            assert r["enhancer"] == tiny_vlm.model_name
            if r["kept"]:
                assert r["enhanced_prompt"] and r["enhanced_length"] == len(r["enhanced_prompt"].split())
        else:
            assert "enhanced_prompt" not in r
    assert stats.stage == "curated_caption" and stats.records_in == 3
    assert stats.kept >= 1


def test_the_sources_own_text_is_a_hint_only_when_asked_for() -> None:
    rows = real_rows(2)
    rows[0]["source_text"] = "green trees covered with fog during daytime"
    for enabled in (False, True):
        vlm = _Batched([SHORT, SHORT], [LONG, LONG])
        caption_chunk(rows, vlm, CaptionSettings(source_text_hint=enabled), CAPTIONER, long_prompt="captioner")
        texts = [c[0]["content"][1]["text"] for c in vlm.calls[0]]
        if not enabled:  # the default: the paper's captioner sees the image only
            assert texts == [INSTRUCTION] * 2 + [LONG_INSTRUCTION] * 2
        else:
            assert texts[0].startswith(INSTRUCTION) and "green trees covered with fog" in texts[0]
            assert "green trees covered with fog" in texts[2] and texts[1] == INSTRUCTION  # no text, no hint
