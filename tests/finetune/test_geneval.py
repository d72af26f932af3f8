"""GenEval is reported as not run, with what is missing, where its detector is not installed; its image layout and
its summary line are what its scripts read and print."""

from __future__ import annotations

import json

from PIL import Image

from finet2i.finetune import geneval


def test_without_the_detector_it_says_what_is_missing(tmp_path):
    st = geneval.status(None, None, cuda=False)
    assert not st["ready"]
    reason = geneval.not_run(st)
    assert reason["status"] == "not run"
    for item in ("evaluate.geneval.repo", "mmdet 2.x", "compiled ops", "open_clip_torch", "clip-benchmark",
                 "evaluate.geneval.detector_dir", "a GPU"):
        assert item in reason["reason"], item
    repo = tmp_path / "geneval"
    (repo / "evaluation").mkdir(parents=True)
    (repo / "evaluation" / "evaluate_images.py").write_text("")
    (tmp_path / f"{geneval.DETECTOR}.pth").write_bytes(b"x")
    st = geneval.status(str(repo), str(tmp_path), cuda=True)
    assert not any("repo" in m or "checkpoint" in m or "GPU" in m for m in st["missing"])


def test_the_layout_and_the_summary_are_genevals(tmp_path):
    meta = [{"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"},
            {"tag": "two_object", "include": [], "prompt": "a photo of a dog and a cup"}]
    seen = []

    def render(prompt, seeds):
        seen.append((prompt, seeds))
        return [Image.new("RGB", (8, 8)) for _ in seeds]

    geneval.write_layout(tmp_path, meta, render, seed=100)
    assert seen[1] == ("a photo of a dog and a cup", [104, 105, 106, 107])
    assert json.loads((tmp_path / "00001" / "metadata.jsonl").read_text()) == meta[1]
    assert sorted(p.name for p in (tmp_path / "00000" / "samples").iterdir()) == [f"{k:04d}.png" for k in range(4)]
    summary = "Summary\n=======\nTotal images: 2212\nTotal prompts: 553\n% correct images: 61.30%\n" \
              "% correct prompts: 58.41%\n\nTask breakdown\n...\nOverall score (avg. over tasks): 0.60723"
    assert geneval.read_overall(summary) == 0.60723 and geneval.read_overall("no score") is None
