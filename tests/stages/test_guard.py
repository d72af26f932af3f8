"""Safety guard (3.1.3): the Llama-Guard-3 answer parser, fail-closed verdicts, the stage through vLLM."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from finet2i.core import shards
from finet2i.models.backends import Sampling
from finet2i.stages.guard import (
    ANSWER_REGEX,
    TOO_LONG,
    UNPARSEABLE,
    UNSAFE,
    GuardSettings,
    GuardVerdict,
    decide,
    guard_chunk,
    parse_guard_output,
    run_guard,
)

ALL = [f"S{i}" for i in range(1, 15)]


@pytest.mark.parametrize("raw, safe, cats", [
    ("safe", True, ()),
    ("\n\nsafe", True, ()),  # Llama Guard answers may start with blank lines
    ("Safe.", True, ()),
    ("unsafe\nS1", False, ("S1",)),
    ("unsafe\nS1,S10", False, ("S1", "S10")),
    (" unsafe \n S2, s9 ,S2\n", False, ("S2", "S9")),
    ("unsafe S7", False, ("S7",)),
])
def test_parse_well_formed_answers(raw: str, safe: bool, cats: tuple[str, ...]) -> None:
    assert parse_guard_output(raw) == GuardVerdict(safe, cats)


@pytest.mark.parametrize("raw", [
    None, "", "   \n", "unsafe", "unsafe\n", "unsafe\nS15", "unsafe\nviolence", "I can't help with that.",
    "The prompt is safe", "safe\nS1", "uns",
])
def test_parse_bad_answers_fail_closed(raw: str | None) -> None:
    verdict = parse_guard_output(raw)
    assert verdict.safe is None and verdict.error
    assert decide(verdict, ALL) == UNPARSEABLE
    assert decide(verdict, []) == UNPARSEABLE  # even with nothing blocked: an unread verdict never passes


def test_decide_uses_the_blocked_list() -> None:
    assert decide(GuardVerdict(True), ALL) is None
    assert decide(GuardVerdict(False, ("S1",)), ["S1", "S4"]) == UNSAFE
    assert decide(GuardVerdict(False, ("S6",)), ["S1", "S4"]) is None  # flagged but allowed: kept


def test_answer_regex_is_the_answer_grammar() -> None:
    for ok in ("safe", "unsafe\nS1", "unsafe\nS1,S14"):
        assert re.fullmatch(ANSWER_REGEX, ok)
    for bad in ("unsafe", "unsafe\nS15", "Safe", "safe\n", "unsafe\nS1, S2"):
        assert not re.fullmatch(ANSWER_REGEX, bad)


class _Answers:
    """Hand-written answers, to pin how the stage treats each kind (the real model is tested below)."""

    model_name = "canned"

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.seen: list[str] = []

    def chat(self, conversations: list[Any], sampling: Sampling, constraint: Any = None) -> list[str]:
        self.seen += [c[-1]["content"] for c in conversations]
        return self.answers[:len(conversations)]


def test_guard_chunk_verdicts_and_evidence() -> None:
    records = [{"id": f"00000-{i:06d}", "prompt": p} for i, p in enumerate(
        ["a calm lake", "a violent scene", "a legal advice poster", "a garbled one", "word " * 151])]
    llm = _Answers(["safe", "unsafe\nS1", "unsafe\nS6", "I think it is fine"])
    out = guard_chunk(records, llm, GuardSettings(blocked_categories=("S1",), max_words=150))
    assert llm.seen == ["a calm lake", "a violent scene", "a legal advice poster", "a garbled one"]
    by = {r["prompt"].strip()[:12]: r for r in out}
    assert by["a calm lake"]["kept"] and by["a calm lake"]["guard_verdict"] == "safe"
    assert by["a violent sc"]["drop_reason"] == UNSAFE and by["a violent sc"]["guard_categories"] == ["S1"]
    assert by["a legal advi"]["kept"] and by["a legal advi"]["guard_categories"] == ["S6"]
    garbled = by["a garbled on"]
    assert garbled["drop_reason"] == UNPARSEABLE and garbled["guard_raw"] == "I think it is fine"
    long = by["word word wo"]
    assert long["drop_reason"] == TOO_LONG and long["guard_raw"] is None  # never sent to the model


def test_guard_over_captions_and_their_enhanced_versions() -> None:
    """Beyond the paper (curated_guard): both model-written texts are guarded; either unsafe drops the image,
    the length limit of the original prompts does not apply, and the evidence names the column."""
    records = [{"id": "real-00000-000000", "prompt": "a dog", "enhanced_prompt": "long " * 400},
               {"id": "real-00000-000001", "prompt": "a cat", "enhanced_prompt": "a cat, bloodied"},
               {"id": "real-00000-000002", "prompt": "a bird", "enhanced_prompt": "a bird, drawn"}]
    llm = _Answers(["safe", "safe", "safe", "unsafe\nS1", "safe", "garbled"])
    out = guard_chunk(records, llm, GuardSettings(max_words=0), ("prompt", "enhanced_prompt"), "curated_guard")
    assert len(llm.seen) == 6  # two texts per image, none skipped for length
    assert [r["drop_reason"] for r in out] == [None, UNSAFE, UNPARSEABLE]
    assert out[1]["curated_guard_flagged"] == "enhanced_prompt" and out[1]["curated_guard_categories"] == ["S1"]
    assert out[2]["curated_guard_verdict"] is None and "enhanced_prompt: garbled" in out[2]["curated_guard_raw"]
    assert "guard_verdict" not in out[0]  # the original guard's evidence columns are left alone


@pytest.mark.vllm
@pytest.mark.slow
def test_run_guard_end_to_end(tmp_path: Path, guard_engine: Any) -> None:
    from support.llm import guard_spec, write_prompts

    prompts = ["a photo of a red fox in fresh snow", "a man stabbing a stranger with a knife in a dark alley",
               "a watercolor of two cups on a wooden table", " ".join(["very"] * 20) + " long prompt",
               "an anime girl reading under a cherry tree"]
    write_prompts(tmp_path / "keep.parquet", prompts)
    model = guard_spec(Path(guard_engine.spec.path))
    settings = {"blocked_categories": ALL, "max_words": 12, "constrained": True, "chunk_size": 2}
    out = tmp_path / "guard" / "00000.parquet"
    stats = run_guard(tmp_path / "keep.parquet", out, shard="00000", settings=settings, model=model,
                      llm=guard_engine)
    rows = shards.read_records(out)
    assert len(rows) == 5 == stats.kept + sum(stats.dropped.values())
    assert rows[3]["drop_reason"] == TOO_LONG and rows[3]["guard_raw"] is None
    for r in rows[:3] + rows[4:]:
        verdict = parse_guard_output(r["guard_raw"])
        assert verdict.parsed  # constrained decoding: the guard always answers in its format
        assert r["guard_verdict"] == ("safe" if verdict.safe else "unsafe")
        assert r["drop_reason"] == (UNSAFE if not verdict.safe else None)
    assert set(stats.dropped) <= {TOO_LONG, UNSAFE}
    assert stats.model == "guard-llm"

    # Nothing blocked: the same verdicts (greedy), and no prompt is dropped as unsafe.
    lenient = tmp_path / "lenient.parquet"
    stats2 = run_guard(tmp_path / "keep.parquet", lenient, shard="00000",
                       settings={**settings, "blocked_categories": []}, model=model, llm=guard_engine)
    rows2 = shards.read_records(lenient)
    assert [r["guard_raw"] for r in rows2] == [r["guard_raw"] for r in rows]
    assert UNSAFE not in stats2.dropped and stats2.dropped == {TOO_LONG: 1}
