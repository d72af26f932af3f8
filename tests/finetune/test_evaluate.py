"""The evaluation on the tiny models: fixed prompts and seeds, both sides rendered, every score with its interval,
the judge's verdicts mapped back through the randomised sides, GenEval reported as not run, and a job killed
after rendering that renders nothing again."""

from __future__ import annotations

import hashlib

import pyarrow.parquet as pq
import pytest
from PIL import Image

from finet2i.finetune import prompts
from finet2i.finetune.evaluate import run_evaluate
from finet2i.models.spec import ModelSpec

pytestmark = [pytest.mark.slow]


class Killed(BaseException):
    pass


class FirstImageJudge:
    """Always prefers the first image it is shown on alignment, and calls visual quality a tie; can die once."""

    model_name = "first-image-judge"

    def __init__(self, die: bool = False) -> None:
        self.die = die
        self.seen: list[str] = []

    def chat(self, conversations, sampling, constraint=None, *, seeds=None, samplings=None):
        if self.die:
            raise Killed
        self.seen += [c[-1]["content"][-1]["text"] for c in conversations]
        assert all(sum(p["type"] == "image" for p in c[-1]["content"]) == 2 for c in conversations)
        return ['</think>\n\n{"alignment": "1", "visual_quality": "tie"}'] * len(conversations)


@pytest.fixture(scope="module")
def models(tiny_sdxl, tiny_clip, tiny_models):
    # The session's tiny SigLIP + V2.5 head (support.generation), not the demo's folder: a fresh clone has none.
    return dict(base=ModelSpec("models.finetune_base", path=str(tiny_sdxl)),
                aesthetic_encoder=tiny_models.spec("siglip"),
                aesthetic_head=tiny_models.spec("head"),
                clip=ModelSpec("models.clip_scorer", path=str(tiny_clip)),
                judge_model=ModelSpec("models.judge", path="/unused"))


SETTINGS = {"max_prompts": 8, "steps": 2, "resolution": 64, "bootstrap_resamples": 200}


def test_both_models_are_scored_and_judged_on_fixed_prompts(tiny_adapter, models, tmp_path):
    judge = FirstImageJudge()
    out = tmp_path / "evaluate"
    m = run_evaluate(tiny_adapter, out, settings=SETTINGS, seed=7, vlm=judge, **models)
    rows = pq.read_table(out / "pairs.parquet").to_pylist()
    assert m["prompt_set"] == "PartiPrompts" and m["comparisons"] == 8 == len(rows)
    assert len({r["category"] for r in rows}) == 8  # one prompt from each of 8 categories
    for r in rows:
        for side in ("base", "tuned"):
            png = out / r[f"{side}_image"]
            assert Image.open(png).size == (64, 64)
            assert hashlib.sha256(png.read_bytes()).hexdigest() == r[f"{side}_sha256"]
        # the judge always picks the first image: the tuned model wins exactly where it was shown first
        assert r["judge_alignment"] == ("tuned" if r["tuned_left"] else "base")
        assert r["judge_visual_quality"] == "tie"
    assert {r["tuned_left"] for r in rows} == {True, False}
    assert any(r["base_sha256"] != r["tuned_sha256"] for r in rows), "the adapter changed no image"
    alignment = m["judge"]["criteria"]["alignment"]
    assert alignment["tuned"] == sum(r["tuned_left"] for r in rows) and alignment["tie"] == 0
    assert m["judge"]["criteria"]["visual_quality"]["win_rate"] is None
    for key in ("aesthetic", "clip_score"):
        metric = m["metrics"][key]
        base = [r[f"{'aesthetic' if key == 'aesthetic' else 'clip'}_base"] for r in rows]
        assert metric["n"] == 8 and metric["base"] == pytest.approx(sum(base) / 8)
        assert metric["ci95"][0] <= metric["difference"] <= metric["ci95"][1]
    assert m["geneval"]["status"] == "not run" and "mmdet 2.x" in m["geneval"]["reason"]
    assert not (out / ".partial").exists()
    # the same settings render the same images (fixed seeds)
    again = run_evaluate(tiny_adapter, tmp_path / "again", settings=SETTINGS, seed=7, vlm=FirstImageJudge(), **models)
    assert again["evaluation_id"] == m["evaluation_id"]


def test_a_job_killed_after_rendering_renders_nothing_again(tiny_adapter, models, tmp_path):
    out = tmp_path / "evaluate"
    settings = {**SETTINGS, "max_prompts": 4}
    with pytest.raises(Killed):
        run_evaluate(tiny_adapter, out, settings=settings, seed=7, vlm=FirstImageJudge(die=True), **models)
    # the rendered images waited under .partial/ (Snakemake deletes the declared images/ of a failed job)
    assert len(list((out / ".partial").glob("*/*/*.png"))) == 8
    m = run_evaluate(tiny_adapter, out, settings=settings, seed=7, vlm=FirstImageJudge(), **models)
    assert "render_base" not in m["seconds"] or m["seconds"]["render_base"] == 0.0


def test_a_prompt_file_of_ones_own(tmp_path):
    tsv = tmp_path / "mine.tsv"
    tsv.write_text("Prompt\tCategory\na <b>bold</b> cat\tAnimals\na dog\tAnimals\n\na tree\tPlants\n")
    name, comps = prompts.comparisons(tsv, None, 2, seed=1)
    assert name == "mine.tsv" and [c.prompt for c in comps] == ["a <b>bold</b> cat"] * 2 + ["a dog"] * 2 + \
        ["a tree"] * 2
    assert len({c.seed for c in comps}) == 6 and [c.pair_id for c in comps][:2] == ["p00000-s0", "p00000-s1"]
    txt = tmp_path / "lines.txt"
    txt.write_text("one prompt\nanother prompt\n")
    assert [c.prompt for c in prompts.comparisons(txt, 1, 1, seed=1)[1]] in (["one prompt"], ["another prompt"])
    with pytest.raises(FileNotFoundError, match="evaluate.prompts"):
        prompts.comparisons(tmp_path / "missing.tsv", None, 1, seed=1)
    _, parti = prompts.read_prompts(None)
    assert len(parti) == 1632 and len({r["category"] for r in parti}) == 12
