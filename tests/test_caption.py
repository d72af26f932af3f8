"""Real-image captions (3.2): answer cleaning, verdicts, and a real run through vLLM on the tiny Qwen3-VL."""

from __future__ import annotations

from pathlib import Path

import pytest
from vlm_fixtures import jpeg, vlm_spec

from finet2i import shards
from finet2i.stages.caption import (
    EMPTY,
    INSTRUCTION,
    UNREADABLE,
    CaptionSettings,
    caption_chunk,
    clean_caption,
    run_caption,
)

pytest_plugins = ["vlm_fixtures"]  # the session-scoped tiny Qwen3-VL and its vLLM engine


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


@pytest.mark.vllm
@pytest.mark.slow
def test_run_caption_on_tiny_qwen3_vl(tmp_path: Path, tiny_qwen3_vl: Path, tiny_vlm) -> None:
    rows = real_rows(4)
    rows[3].update(kept=False, drop_reason="low_aesthetic")
    score = tmp_path / "score" / "00000.parquet"
    shards.write_table(score, rows)
    out = tmp_path / "caption" / "00000.parquet"
    settings = {"temperature": 0.0, "max_tokens": 16, "chunk_size": 2}
    stats = run_caption(score, score, out, shard="00000", settings=settings,  # the score rows hold bytes here
                        model=vlm_spec(tiny_qwen3_vl, "models.captioner"),
                        stats_path=tmp_path / "caption" / "00000.stats.json", vlm=tiny_vlm)
    got = shards.read_records(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows[:3]]
    assert "image" not in shards.read_table(out).column_names
    for r in got:
        assert r["prompt_generator"] == tiny_vlm.model_name and r["source"] == "demo"
        if r["kept"]:
            assert r["prompt"] and r["length"] == len(r["prompt"].split())
        else:
            assert r["drop_reason"] == EMPTY and r["caption_raw"] is not None
    assert stats.stage == "curated_caption" and stats.records_in == 3
    assert stats.kept >= 1
