"""Kill, change, rerun (issue 10): for every checkpointing stage, a job killed after its first chunk, whose
input then changed under the same ids (a changed upstream setting does exactly that), must rerun to the same
table as a clean run on the new input, never keeping a verdict made for the old content.

The backends answer from what they are shown (the prompt, the image's pixels), so a stale chunk would differ
from a fresh one; the stages' own decision code runs unchanged.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from finet2i.core import shards
from finet2i.models.spec import ModelSpec
from finet2i.stages import attributes, caption, curated_score, enhance, generate, guard, pair_filter, prompts

ROOT = Path(__file__).resolve().parents[2]
SPEC = ModelSpec(key="models.x", path="/nowhere")
N = 6  # rows; chunks of 2


class Killed(BaseException):
    """Like SIGKILL for the job: nothing in a stage may catch it as one record's failure."""


def text_of(conv: list[dict]) -> str:
    content = conv[-1]["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if p["type"] == "text")


def image_of(conv: list[dict]) -> Any:
    return next(p["image"] for p in conv[-1]["content"] if p["type"] == "image")


class Echo:
    """A chat backend whose answer is a function of the conversation; it can die on a given call."""

    model_name = "echo"

    def __init__(self, answer: Callable[[list[dict]], str], die_on_call: int | None = None) -> None:
        self.answer, self.die_on_call, self.calls = answer, die_on_call, 0

    def chat(self, conversations, sampling, constraint=None, *, seeds=None, samplings=None):
        self.calls += 1
        if self.calls == self.die_on_call:
            raise Killed("job killed")
        return [self.answer(c) for c in conversations]


def jpeg(level: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((32, 48, 3), level, np.uint8)).save(out, "JPEG")
    return out.getvalue()


def rows(version: int, **extra) -> list[dict]:
    """N records; version 2 changes the content of every other one under the same id."""
    out = []
    for i in range(N):
        changed = version == 2 and i % 2 == 0
        out.append({"id": f"00000-{i:06d}", "sample_id": f"pe_ar-00000-{i:06d}", "seed": 100 + i,
                    "category": "Animals" if not changed else "Vehicles", "subcategory": "Pets",
                    "style": "Photorealistic", "task": "Not Specified", "length_target": "short",
                    "prompt": f"a {'knife' if changed else 'dog'} number {i} in a garden",
                    "enhanced_prompt": f"a detailed {'knife' if changed else 'dog'} number {i}",
                    "prompt_used": f"a {'knife' if changed else 'dog'} number {i}",
                    "aesthetic_predictor_v_2_5_score": 6.0 + i / 10,
                    "image": jpeg(20 + 25 * i + (60 if changed else 0)), "kept": True, "drop_reason": None,
                    **extra})
    return out


class Scorer:
    model_name = "brightness"

    def score(self, images):
        return [1.0 + float(np.asarray(im.convert("L")).mean()) / 30 for im in images]


class Painter:
    """A generator whose picture depends on the prompt and seed."""

    model_name = "painter"

    def __init__(self, die: list[int]) -> None:
        self.die = die

    def generate(self, prompts_, *, width, height, seeds):
        if self.die and self.die[0] == 0:
            raise Killed("job killed")
        if self.die:
            self.die[0] -= 1
        return [Image.fromarray(np.full((height, width, 3), (sum(map(ord, p)) + s) % 255, np.uint8))
                for p, s in zip(prompts_, seeds, strict=True)]

    def close(self):
        pass


def guard_answer(conv):
    return "unsafe\nS1" if "knife" in text_of(conv) else "safe"


def attribute_answer(conv):
    ok = "knife" not in text_of(conv)
    return f'{{"style_match": true, "category_match": {str(ok).lower()}, "reason": "{text_of(conv)[:20]}"}}'


def judge_answer(conv):
    bad = "knife" in text_of(conv)
    verdict = {"violations": ["objects"] if bad else [], "pass": not bad}
    return "looked</think>\n\n" + json.dumps(verdict)


def caption_answer(conv):
    return f"a grey picture of brightness {int(np.asarray(image_of(conv).convert('L')).mean())} on a wall"


def prompt_answer(conv):
    return f"a photograph of {text_of(conv).split('Category: ')[1].split()[0].lower()} in warm light today"


STAGES: dict[str, Callable[..., Any]] = {
    "guard": lambda i, o, die: guard.run_guard(i, o, shard="00000", settings={"chunk_size": 2}, model=SPEC,
                                               llm=Echo(guard_answer, die)),
    "attributes": lambda i, o, die: attributes.run_attributes(i, o, shard="00000", settings={"chunk_size": 2},
                                                              model=SPEC, vlm=Echo(attribute_answer, die)),
    "enhance": lambda i, o, die: enhance.run_enhance(
        i, o, shard="00000", settings={"chunk_size": 2}, model=SPEC,
        llm=Echo(lambda c: f"<answer>{text_of(c)} at dusk</answer>", die)),
    "prompts": lambda i, o, die: prompts.run_prompts(i, o, shard="00000", settings={"chunk_size": 2}, model=SPEC,
                                                     llm=Echo(prompt_answer, die)),
    "caption": lambda i, o, die: caption.run_caption(i, i, o, shard="00000", settings={"chunk_size": 2},
                                                     model=SPEC, vlm=Echo(caption_answer, die)),
    "pair_filter": lambda i, o, die: pair_filter.run_pair_filter(
        {"pe_ar": i}, {"pe_ar": o}, {"pe_ar": Path(o).with_suffix(".stats.json")}, shard="00000",
        settings={"chunk_size": 2, "aesthetic_threshold": 5.5}, model=SPEC, vlm=Echo(judge_answer, die)),
    "curated_score": lambda i, o, die: curated_score.run_curated_score(
        i, o, cshard="00000", settings={"chunk_size": 2, "aesthetic_threshold": 3.0}, encoder=SPEC, head=SPEC,
        stats_path=Path(o).with_suffix(".stats.json"), scorer=_DyingScorer(die)),
    "generate": lambda i, o, die: generate.run_generate(
        i, o, shard="00000", subset="pe_ar", seed=7, jpeg_quality=90, models={}, aesthetic_encoder=None,
        aesthetic_head=None, generators={"z_image": Painter([die] if die else [])}, scorer=Scorer(),
        settings={"resolutions": str(ROOT / "config" / "resolutions.yaml"), "max_side": 32, "chunk_size": 2,
                  "generators": {"z_image": {"weight": 1.0}}, "candidates": {"min": 1, "max": 1}}),
}


class _DyingScorer(Scorer):
    def __init__(self, die: int | None) -> None:
        self.die, self.calls = die, 0

    def score(self, images):
        self.calls += 1
        if self.calls == self.die:
            raise Killed("job killed")
        return super().score(images)


def _write(path: Path, version: int) -> None:
    shards.write_table(path, rows(version))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_killed_then_changed_input_reruns_to_the_clean_result(stage, tmp_path):
    run = STAGES[stage]
    src, out = tmp_path / "in.parquet", tmp_path / "resumed" / "00000.parquet"
    _write(src, 1)
    with pytest.raises(Killed):
        run(src, out, 2)  # the first chunk is checkpointed, the job dies in the second
    assert list(out.parent.glob("*.chunks/chunk-*.parquet")), "the first chunk was not checkpointed"
    _write(src, 2)  # same ids, other content
    run(src, out, None)
    clean = tmp_path / "clean" / "00000.parquet"
    run(src, clean, None)
    resumed_t, clean_t = pq.read_table(out), pq.read_table(clean)
    assert resumed_t.equals(clean_t), f"{stage}: the resumed table kept results made for the old input"
    text = str(resumed_t.to_pylist())
    assert "knife" in text or stage in ("caption", "curated_score")  # the new content did reach the output
