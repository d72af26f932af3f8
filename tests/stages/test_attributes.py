"""Attribute verification (3.1.3): verdict parsing on hand-written answers, real runs on the tiny Qwen3-VL."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.vlm import vlm_spec

from finet2i.core import shards
from finet2i.stages.attributes import (
    MISMATCH,
    UNPARSEABLE,
    AttributeSettings,
    build_messages,
    parse_verdict,
    run_attributes,
    verdict_regex,
    verify_chunk,
)

CHECK = ("style", "category")


def _records(n: int = 4) -> list[dict]:
    prompts = ["A watercolor painting of a fox in a snowy forest at dawn",
               "A photo of a red bicycle leaning on a brick wall",
               "An anime girl reading a book under a cherry tree",
               "A neon sign that says OPEN above a diner door"]
    styles = ["Watercolor", "Photorealistic", "Anime", "Cyberpunk"]
    cats = [("Nature", "Animals"), ("Nature", "Objects / Entities"), ("People", "Activities"),
            ("Text rendering", "Short text")]
    return [{"id": f"00000-{i:06d}", "shard": "00000", "index": i, "prompt": prompts[i % 4],
             "style": styles[i % 4], "category": cats[i % 4][0], "subcategory": cats[i % 4][1],
             "kept": True, "drop_reason": None} for i in range(n)]


# --- parsing --------------------------------------------------------------------------------------------

def test_parse_good_verdict() -> None:
    v = parse_verdict('{"style_match": true, "category_match": false, "reason": "a city, not nature"}', CHECK)
    assert v is not None and v.mismatched == ["category"] and v.reason == "a city, not nature"


def test_parse_tolerates_fences_and_chatter() -> None:
    text = 'Sure!\n```json\n{"style_match": true, "category_match": true, "reason": "fits"}\n```'
    v = parse_verdict(text, CHECK)
    assert v is not None and v.mismatched == []


@pytest.mark.parametrize("text", [
    "",                                                                   # nothing
    '{"style_match": true, "category_match": tru',                        # truncated JSON
    "The prompt matches both attributes.",                                # prose, no JSON
    '{"style_match": true, "reason": "no category key"}',                 # a checked key missing
    '{"style_match": "yes", "category_match": true, "reason": "x"}',      # not a boolean
    '["style_match", true]',                                              # not an object
])
def test_parse_fails_closed(text: str) -> None:
    assert parse_verdict(text, CHECK) is None


def test_check_list_decides_the_keys() -> None:
    assert parse_verdict('{"style_match": false, "reason": "r"}', ("style",)).mismatched == ["style"]
    import re

    rx = verdict_regex(("style",))
    assert re.fullmatch(rx, '{"style_match": false, "reason": "a photo"}')
    assert not re.fullmatch(rx, '{"style_match": false, "category_match": true, "reason": "x"}')
    with pytest.raises(ValueError, match="attributes.check"):
        AttributeSettings.from_config({"check": ["colour"]})


def test_instruction_names_the_targets() -> None:
    msgs = build_messages(_records(1)[0], CHECK)
    user = msgs[-1]["content"]
    assert "A watercolor painting of a fox" in user and "style: Watercolor" in user
    assert "category: Nature (sub-category: Animals)" in user


class _Scripted:
    """Answers as written, one per conversation: exercises the marking, not a model."""

    model_name = "scripted"

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.seen: list = []

    def chat(self, conversations, sampling, constraint=None):
        self.seen.append(constraint)
        return self.answers[:len(conversations)]


def test_verify_chunk_marks_each_record() -> None:
    answers = ['{"style_match": true, "category_match": true, "reason": "fits"}',
               '{"style_match": false, "category_match": true, "reason": "not a photo"}',
               '{"style_match": true, "category_match"',
               '{"style_match": false, "category_match": false, "reason": "neither"}']
    llm = _Scripted(answers)
    out = verify_chunk(_records(4), llm, AttributeSettings())
    assert [r["drop_reason"] for r in out] == [None, MISMATCH, UNPARSEABLE, MISMATCH]
    assert out[1]["attribute_mismatches"] == "style" and out[3]["attribute_mismatches"] == "style,category"
    assert out[2]["verifier_raw"] == answers[2]  # raw text kept as evidence
    assert llm.seen[0].regex == verdict_regex(CHECK)


def test_constraint_admits_only_parseable_verdicts() -> None:
    import re

    rx = verdict_regex(CHECK)
    good = '{"style_match": true, "category_match": false, "reason": "a street, not a forest"}'
    assert re.fullmatch(rx, good) and parse_verdict(good, CHECK).mismatched == ["category"]
    assert not re.fullmatch(rx, '{ "style_match": true,\t"category_match": true, "reason": ""}')  # no padding
    too_long = '{"style_match": true, "category_match": true, "reason": "' + "x" * 201 + '"}'
    assert not re.fullmatch(rx, too_long)


# --- real runs through vLLM ------------------------------------------------------------------------------

@pytest.mark.vllm
@pytest.mark.slow
def test_run_attributes_on_tiny_qwen3_vl(tmp_path: Path, tiny_qwen3_vl: Path, tiny_vlm) -> None:
    recs = _records(4)
    recs.append({**_records(1)[0], "id": "00000-000009", "kept": False, "drop_reason": "unsafe"})
    guard = tmp_path / "guard" / "00000.parquet"
    shards.write_table(guard, recs)
    out = tmp_path / "attributes" / "00000.parquet"
    stats = run_attributes(guard, out, shard="00000",
                           settings={"enabled": True, "check": ["style", "category"], "chunk_size": 3},
                           model=vlm_spec(tiny_qwen3_vl, "models.verifier"),
                           stats_path=tmp_path / "attributes" / "00000.stats.json", vlm=tiny_vlm)
    rows = shards.read_records(out)
    # Only the guard's kept rows come in; every one of them goes out with a verdict.
    assert [r["id"] for r in rows] == [r["id"] for r in recs[:4]]
    assert stats.records_in == 4 and stats.kept + sum(stats.dropped.values()) == 4
    assert set(stats.dropped) <= {MISMATCH, UNPARSEABLE}
    for r in rows:
        if r["drop_reason"] == UNPARSEABLE:
            assert r["verifier_raw"] is not None
        else:  # the constraint made the random model's answer a verdict
            assert isinstance(r["attribute_reason"], str)
            assert (r["drop_reason"] == MISMATCH) == bool(r["attribute_mismatches"])
    assert sum(r["drop_reason"] != UNPARSEABLE for r in rows) >= 1
    assert shards.StageStats.read(tmp_path / "attributes" / "00000.stats.json").model == tiny_vlm.model_name
    assert not (tmp_path / "attributes" / "00000.parquet.chunks").exists()  # checkpoint cleaned up
