"""The dataset read by the clients people use on the released Fine-T2I: webdataset over a brace pattern, HF
``load_dataset`` (plain, streaming, through the dataset card), a torch DataLoader with 2 workers. On small
assembled folders here; tests/workflow_runs/test_workflow.py runs a release-only loader on the demo output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import webdataset as wds
import yaml
from support.release import FOLDER, SUBSET, ids, write_shards

from finet2i.release import layout as release
from finet2i.stages import assemble, dataset_card

datasets = pytest.importorskip("datasets")


def build(root: Path, n: int = 11, tasks: dict | None = None, spt: int = 4) -> Path:
    tables = write_shards(root, [ids(n // 2), ids(n - n // 2, n // 2)], tasks=tasks)
    manifest = root / "assemble" / f"{SUBSET}.json"
    assemble.run_assemble(tables, root / "dataset" / FOLDER, manifest, subset=SUBSET, samples_per_tar=spt)
    empty = root / "assemble" / "real.json"  # a subset the filters emptied: no folder, no config
    assemble.run_assemble(write_shards(root, [[]], "real"), root / "dataset" / "curated", empty, subset="real",
                          samples_per_tar=spt)
    dataset_card.run_dataset_card([manifest, empty], None, root / "dataset" / "README.md", settings={"seed": 7})
    return root / "dataset"


def load(path: str, *args, root: Path, **kwargs):
    return datasets.load_dataset(path, *args, split="train", cache_dir=str(root / "hf-cache"), **kwargs)


def test_webdataset_over_a_brace_pattern(tmp_path):
    ds = build(tmp_path)
    n = len(list((ds / FOLDER).glob("*.tar")))
    url = str(ds / FOLDER / f"train-{{000000..{n - 1:06d}}}.tar")
    samples = list(wds.WebDataset(url, shardshuffle=False).decode("pil").to_tuple("__key__", "jpg", "json", "txt"))
    assert len(samples) == 11 and len({k for k, *_ in samples}) == 11
    for key, im, meta, txt in samples:
        assert release.KEY_RE.match(key) and meta["id"] == key and im.mode == "RGB"
        assert txt == (meta["enhanced_prompt"] if meta["image_generated_with_enhanced_prompt"] else meta["prompt"])


def test_torch_dataloader_with_two_workers_sees_every_sample_once(tmp_path):
    import torch.utils.data

    ds = build(tmp_path)
    urls = [str(p) for p in sorted((ds / FOLDER).glob("*.tar"))]
    pipe = wds.WebDataset(urls, shardshuffle=False, workersplitter=wds.split_by_worker).to_tuple("__key__")
    loader = torch.utils.data.DataLoader(pipe, num_workers=2, batch_size=None)
    keys = [k for (k,) in loader]
    assert len(keys) == 11 and len(set(keys)) == 11


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_load_dataset_webdataset_plain(tmp_path, streaming):
    ds = build(tmp_path)
    got = load("webdataset", root=tmp_path, data_files=str(ds / FOLDER / "*.tar"), streaming=streaming)
    rows = list(got)
    assert len(rows) == 11
    assert {r["__key__"] for r in rows} == {r["json"]["id"] for r in rows}


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_load_dataset_through_the_card_uses_the_declared_types(tmp_path, streaming):
    # Every sample has task: null; inferred, that is a null column; declared, it is a list of strings.
    ds = build(tmp_path)
    got = load(str(ds), FOLDER, root=tmp_path, streaming=streaming)
    assert got.features["json"]["task"] == datasets.List(datasets.Value("string"))
    assert got.features["json"]["image_resolution"] == datasets.List(datasets.Value("int64"))
    rows = list(got)
    assert len(rows) == 11 and all(r["json"]["task"] is None for r in rows)


def test_a_folder_with_one_task_in_a_later_position_still_loads_without_the_card(tmp_path):
    # The failure the release layout must avoid: the first samples all null, a later one a list. The two
    # prompts with a task are the last two in key order, in the last tar.
    last = sorted(ids(12), key=lambda p: release.sample_key(7, "prompt", p))[-2:]
    ds = build(tmp_path, n=12, tasks={last[0]: ["Counting"], last[1]: ["Reasoning"]})
    got = load("webdataset", root=tmp_path, data_files=str(ds / FOLDER / "*.tar"))
    tasks = [r["json"]["task"] for r in got]
    assert sorted(map(str, filter(None, tasks))) == ["['Counting']", "['Reasoning']"]


def test_the_card_declares_every_json_key_and_skips_empty_subsets(tmp_path):
    ds = build(tmp_path)
    text = (ds / "README.md").read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert [c["config_name"] for c in header["configs"]] == [FOLDER]
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": f"{FOLDER}/*.tar"}]
    info = header["dataset_info"][0]
    js = next(f for f in info["features"] if f["name"] == "json")["struct"]
    assert [f["name"] for f in js] == list(release.RELEASE_KEYS)
    assert info["splits"][0]["num_examples"] == 11
    assert "`curated` (no sample survived the filters: no tar, no config) | 0 | 0" in text
    assert json.loads(json.dumps(header))  # plain YAML types only


def test_validate_passes_on_an_assembled_dataset_with_its_card(tmp_path):
    from finet2i.release.validate import validate_dataset

    report = validate_dataset(build(tmp_path, tasks={"00000-000003": ["Counting"]}))
    assert report.ok, report.summary()
    assert report.total == 0
