"""Prompt generation (3.1.1): instructions from specs, defensive cleaning, the stage end to end in vLLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finet2i.core import shards
from finet2i.stages.prompts import (
    EMPTY,
    TOO_SHORT,
    build_messages,
    clean_prompt,
    judge_prompt,
    run_prompts,
)

SETTINGS = {"temperature": 1.4, "top_p": 0.8, "max_tokens": 40, "min_words": 5, "chunk_size": 4}


@pytest.mark.parametrize("raw, expected", [
    ('"A red fox in fresh snow at dawn"', "A red fox in fresh snow at dawn"),
    ("Sure! Here is your prompt:\n\nA red fox jumping over a log", "A red fox jumping over a log"),
    ('**Prompt:** "A cat on a mat, 8K, photorealistic"', "A cat on a mat, 8K, photorealistic"),
    ("Image prompt - a tree on a hill", "a tree on a hill"),
    ("Prompt:\n\nA quiet harbour at night", "A quiet harbour at night"),
    ("1. a dog on a beach\n2. a cat on a sofa", "a dog on a beach"),
    ("A lighthouse in fog.\n\nThis prompt uses a calm mood.", "A lighthouse in fog."),
    ("<think>the user wants</think>\n  A lonely   lighthouse \n", "A lonely lighthouse"),
    ("“An opening quote cut off by max_tokens", "An opening quote cut off by max_tokens"),
    ("", ""), ("   \n ", ""), ('""', ""), ("**Prompt:**", ""),
])
def test_clean_prompt(raw: str, expected: str) -> None:
    assert clean_prompt(raw) == expected


def test_judge_prompt_drops_trivial_generations() -> None:
    assert judge_prompt("", 5) == EMPTY
    assert judge_prompt("a red dog", 5) == TOO_SHORT
    assert judge_prompt("a red dog on grass", 5) is None  # exactly five words is enough


def test_instruction_carries_every_attribute() -> None:
    spec = {"category": "Nature", "subcategory": "Landscape", "style": "Anime", "task": "Colors",
            "task_instruction": "give objects explicit colors", "template": "word_list",
            "template_instruction": "Write comma-separated words.", "length_target": "short",
            "min_words": 11, "max_words": 20}
    system, user = build_messages(spec, {"style_description": "anime and manga"})
    assert system["role"] == "system" and "Write comma-separated words." in system["content"]
    text = user["content"]
    for part in ("Category: Nature", "Sub-category: Landscape", "Style: Anime (anime and manga)",
                 "Task: Colors. give objects explicit colors", "between 11 and 20 words"):
        assert part in text
    none_task = build_messages({**spec, "task": "Not Specified", "task_instruction": ""})[1]["content"]
    assert "Task: none" in none_task


@pytest.mark.vllm
@pytest.mark.slow
def test_run_prompts_end_to_end(tmp_path: Path, prompt_engine: Any) -> None:
    from support.llm import prompt_spec, write_specs

    specs = write_specs(tmp_path / "specs.parquet", 10)

    model = prompt_spec(Path(prompt_engine.spec.path))
    out = tmp_path / "prompts" / "00000.parquet"
    stats = run_prompts(tmp_path / "specs.parquet", out, shard="00000", settings=SETTINGS, model=model,
                        stats_path=tmp_path / "prompts" / "00000.stats.json", llm=prompt_engine,
                        taxonomy=Path(__file__).resolve().parents[2] / "config" / "taxonomy.yaml")
    rows = shards.read_records(out)
    assert [r["id"] for r in rows] == [s["id"] for s in specs]  # every spec comes out, in order
    assert stats.records_in == 10 == stats.kept + sum(stats.dropped.values())
    assert set(stats.dropped) <= {TOO_SHORT, EMPTY}
    assert shards.StageStats.read(tmp_path / "prompts" / "00000.stats.json").kept == stats.kept
    for r in rows:
        assert r["prompt_generator"] == "prompt-llm"
        assert r["length"] == len((r["prompt"] or "").split())
        assert r["category"] and r["seed"] is not None  # spec columns carried on
        if r["kept"]:
            assert r["drop_reason"] is None and r["length"] >= 5
            assert r["prompt"] == clean_prompt(r["prompt"])  # already clean: no quotes, labels, newlines
        else:
            assert r["drop_reason"] == (EMPTY if not r["prompt"] else TOO_SHORT)
    assert not (tmp_path / "prompts" / "00000.parquet.chunks").exists()  # checkpoint cleared when done

    # Same specs, same seeds -> the same prompts, whatever the chunking (each record has its own seed).
    again = tmp_path / "again.parquet"
    run_prompts(tmp_path / "specs.parquet", again, shard="00000", settings={**SETTINGS, "chunk_size": 3},
                model=model, llm=prompt_engine,
                taxonomy=Path(__file__).resolve().parents[2] / "config" / "taxonomy.yaml")
    assert [r["prompt"] for r in shards.read_records(again)] == [r["prompt"] for r in rows]


@pytest.mark.vllm
@pytest.mark.slow
def test_run_prompts_resumes_from_checkpoint(tmp_path: Path, prompt_engine: Any) -> None:
    """A job killed after the first chunk reuses it: the finished chunk is not generated again."""
    from support.llm import prompt_spec, write_specs

    write_specs(tmp_path / "specs.parquet", 6)
    model = prompt_spec(Path(prompt_engine.spec.path))
    out = tmp_path / "prompts.parquet"
    settings = {**SETTINGS, "chunk_size": 3}
    calls: list[int] = []

    class Killed(RuntimeError):
        pass

    class DiesOnSecondChunk:
        model_name = prompt_engine.model_name

        def chat(self, conversations: Any, sampling: Any, constraint: Any = None, *,
                 seeds: Any = None) -> Any:
            calls.append(len(conversations))
            if len(calls) == 2:
                raise Killed("preempted")
            return prompt_engine.chat(conversations, sampling, constraint, seeds=seeds)

    with pytest.raises(Killed):
        run_prompts(tmp_path / "specs.parquet", out, shard="00000", settings=settings, model=model,
                    llm=DiesOnSecondChunk())
    assert not out.exists()
    calls.clear()
    stats = run_prompts(tmp_path / "specs.parquet", out, shard="00000", settings=settings, model=model,
                        llm=DiesOnSecondChunk())
    assert stats.extra["resumed_chunks"] == 1 and stats.records_in == 6
    assert calls == [3]  # only the unfinished chunk went to the model
