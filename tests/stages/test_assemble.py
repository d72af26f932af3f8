"""assemble: finished samples -> the release's tars (train-%06d.tar of samples_per_tar), incremental, resumable."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image
from support.release import FOLDER, SUBSET, ids, write_shards

from finet2i.release import layout as release
from finet2i.stages import assemble


def run(tables, root: Path, spt: int = 4, memory_mb: int = 4096) -> dict:
    return assemble.run_assemble(tables, root / "dataset" / FOLDER, root / "assemble" / f"{SUBSET}.json",
                                 subset=SUBSET, samples_per_tar=spt, memory_mb=memory_mb)


def tar_keys(path: Path) -> list[str]:
    with tarfile.open(path) as tf:
        names = tf.getnames()
    assert names[0::3] == [n.replace(".json", ".jpg") for n in names[1::3]]
    return [n.rsplit(".", 1)[0] for n in names[0::3]]


def folder_state(root: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted((root / "dataset" / FOLDER).iterdir())}


def test_layout_names_sizes_members_and_indexes(tmp_path):
    tables = write_shards(tmp_path, [ids(4), ids(5, 4), ids(2, 9)])
    m = run(tables, tmp_path)
    folder = tmp_path / "dataset" / FOLDER
    assert [t["tar"] for t in m["tars"]] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert [t["samples"] for t in m["tars"]] == [4, 4, 3] and m["samples"] == 11
    all_keys = []
    for t in m["tars"]:
        tar = folder / t["tar"]
        keys = tar_keys(tar)
        with tarfile.open(tar) as tf:
            names = tf.getnames()
            for k in keys:
                assert names[names.index(f"{k}.jpg"):][:3] == [f"{k}.jpg", f"{k}.json", f"{k}.txt"]
                meta = json.loads(tf.extractfile(f"{k}.json").read())
                assert list(meta) == list(release.RELEASE_KEYS) and meta["id"] == k
                im = Image.open(io.BytesIO(tf.extractfile(f"{k}.jpg").read()))
                assert im.format == "JPEG" and list(im.size) == meta["image_resolution"]
                assert tf.extractfile(f"{k}.txt").read().decode() == meta["prompt"]
        index = pq.read_table(tar.with_suffix(".parquet")).to_pylist()
        assert [r["id"] for r in index] == keys and {r["tar"] for r in index} == {t["tar"]}
        assert all(r["prompt_id"] and r["record_id"].startswith(SUBSET) for r in index)
        # Each member's offset and size in the index point at exactly its bytes (readers seek, never scan).
        data = tar.read_bytes()
        with tarfile.open(tar) as tf:
            for r in index:
                for ext in release.MEMBERS:
                    at, size = r[f"{ext}_offset"], r[f"{ext}_size"]
                    assert data[at:at + size] == tf.extractfile(f"{r['id']}.{ext}").read(), (r["id"], ext)
        stats = json.loads((folder / t["tar"].replace(".tar", ".stats.json")).read_text())
        assert stats["samples"] == len(keys) and stats["tar_bytes"] == tar.stat().st_size
        all_keys += keys
    assert len(set(all_keys)) == 11
    assert all_keys == sorted(all_keys)  # no task anywhere: no witness needed, pure key order
    assert json.loads((tmp_path / "assemble" / f"{SUBSET}.json").read_text())["tars_rewritten"] == 3


def test_tars_do_not_depend_on_how_the_pipeline_sharded_the_work(tmp_path):
    run(write_shards(tmp_path / "a", [ids(11)]), tmp_path / "a")
    run(write_shards(tmp_path / "b", [ids(3), ids(3, 3), ids(5, 6)]), tmp_path / "b")
    a, b = folder_state(tmp_path / "a"), folder_state(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        if name.endswith(".tar"):
            assert a[name][1] == b[name][1], name


def test_an_index_without_member_offsets_is_rewritten_once(tmp_path):
    """A folder assembled before the index recorded member offsets: the rerun rewrites each tar's index (the tar
    bytes come out the same), then nothing."""
    tables = write_shards(tmp_path, [ids(6)])
    run(tables, tmp_path)
    folder = tmp_path / "dataset" / FOLDER
    tars = {p.name: p.read_bytes() for p in folder.glob("*.tar")}
    for index in folder.glob("*.parquet"):
        t = pq.read_table(index)
        pq.write_table(t.drop_columns([n for n in t.column_names if n.endswith(("_offset", "_size"))]), index)
    assert run(tables, tmp_path)["tars_rewritten"] == 2
    assert {p.name: p.read_bytes() for p in folder.glob("*.tar")} == tars
    assert all("jpg_offset" in pq.read_schema(p).names for p in folder.glob("*.parquet"))
    assert run(tables, tmp_path)["tars_rewritten"] == 0


def test_a_rerun_with_unchanged_samples_rewrites_nothing(tmp_path):
    tables = write_shards(tmp_path, [ids(6), ids(5, 6)])
    run(tables, tmp_path)
    before = folder_state(tmp_path)
    m = run(tables, tmp_path)
    assert m["tars_rewritten"] == 0 and m["tars_unchanged"] == 3 and m["removed"] == []
    assert folder_state(tmp_path) == before


def test_a_changed_sample_rewrites_only_its_tar(tmp_path):
    tables = write_shards(tmp_path, [ids(6), ids(5, 6)])
    first = run(tables, tmp_path)
    before = folder_state(tmp_path)
    # Shard 1 reruns, and one of its prompts now reads differently (same id, so same key and position).
    changed = "00000-000008"
    write_shards(tmp_path, [ids(6), ids(5, 6)], prompts={changed: "a small grey fox in deep snow"})
    m = run(tables, tmp_path)
    key = release.sample_key(7, "prompt", changed)
    holder = next(t["tar"] for t in first["tars"]
                  if key in tar_keys(tmp_path / "dataset" / FOLDER / t["tar"]))
    assert [t["tar"] for t in m["tars"] if t["rewritten"]] == [holder]
    after = folder_state(tmp_path)
    for name in before:
        same = before[name] == after[name]
        assert same is (not name.startswith(holder.removesuffix(".tar"))), name


def test_a_dropped_sample_shifts_later_tars_and_removes_the_last(tmp_path):
    tables = write_shards(tmp_path, [ids(5), ids(4, 5)])  # 9 samples: 4 + 4 + 1
    first = run(tables, tmp_path)
    assert len(first["tars"]) == 3
    keys = [k for t in first["tars"] for k in tar_keys(tmp_path / "dataset" / FOLDER / t["tar"])]
    gone = keys[5]  # in the second tar
    pid = next(p for p in ids(9) if release.sample_key(7, "prompt", p) == gone)
    write_shards(tmp_path, [[p for p in ids(5) if p != pid], [p for p in ids(4, 5) if p != pid]])
    m = run(tables, tmp_path)
    assert [t["rewritten"] for t in m["tars"]] == [False, True]
    assert m["removed"] == ["train-000002.parquet", "train-000002.stats.json", "train-000002.tar"]
    got = [k for t in m["tars"] for k in tar_keys(tmp_path / "dataset" / FOLDER / t["tar"])]
    assert got == [k for k in keys if k != gone]


def test_a_killed_assemble_resumes_without_duplicating_or_losing_a_sample(tmp_path):
    tables = write_shards(tmp_path, [ids(6), ids(6, 6)])
    run(tables, tmp_path)
    folder = tmp_path / "dataset" / FOLDER
    expected = {n: b for n, (_, b) in folder_state(tmp_path).items()}
    # What a kill leaves: one tar half written under its temp name, one tar whose stats never got written,
    # one tar truncated (a crash of another tool, or a copy cut short).
    (folder / ".train-000001.tar.abc123.tmp").write_bytes(b"partial")
    (folder / "train-000001.stats.json").unlink()
    with open(folder / "train-000002.tar", "r+b") as f:
        f.truncate(1000)
    m = run(tables, tmp_path)
    assert sorted(t["tar"] for t in m["tars"] if t["rewritten"]) == ["train-000001.tar", "train-000002.tar"]
    assert m["removed"] == [".train-000001.tar.abc123.tmp"]
    assert {n: b for n, (_, b) in folder_state(tmp_path).items()} == expected


def test_the_same_key_from_two_shards_is_kept_once_and_reported(tmp_path):
    # Two curated shards listing the same photo give one key: the first shard's copy wins, the other is named.
    tables = write_shards(tmp_path, [ids(3), ids(2, 2)])
    m = run(tables, tmp_path)
    assert m["samples"] == 4
    dup = release.sample_key(7, "prompt", "00000-000002")
    assert m["dropped"] == [{"key": dup, "record_id": f"{SUBSET}-00000-000002", "reason": "duplicate_key"}]


def test_an_empty_subset_gets_no_tar_and_no_folder(tmp_path):
    tables = write_shards(tmp_path, [[], []])
    m = run(tables, tmp_path)
    assert m["samples"] == 0 and m["tars"] == []
    assert not (tmp_path / "dataset" / FOLDER).exists()
    # ... and a subset that had tars and lost every sample loses them (no stale data left to load)
    tables = write_shards(tmp_path / "b", [ids(3)])
    run(tables, tmp_path / "b")
    write_shards(tmp_path / "b", [[]])
    run(tables, tmp_path / "b")
    assert not (tmp_path / "b" / "dataset" / FOLDER).exists()


def test_type_witnesses_open_the_first_tar(tmp_path):
    # One sample in 12 has a task: HF infers the json's types from the first 5 samples of the first tar, so it
    # must be among them, or the folder fails to load without its card.
    tables = write_shards(tmp_path, [ids(12)], tasks={"00000-000009": ["Counting"]})
    m = run(tables, tmp_path)
    first = tar_keys(tmp_path / "dataset" / FOLDER / m["tars"][0]["tar"])
    assert first[0] == release.sample_key(7, "prompt", "00000-000009")
    rest = first[1:] + [k for t in m["tars"][1:] for k in tar_keys(tmp_path / "dataset" / FOLDER / t["tar"])]
    assert rest == sorted(rest)


def test_type_witnesses_are_the_fewest_covering_samples():
    assert assemble.type_witnesses([0b011, 0b001, 0b110, 0b100]) == [0, 2]  # ties go to the earliest
    assert assemble.type_witnesses([0b111, 0b001]) == []  # the first already covers everything
    assert assemble.type_witnesses([0b001, 0b111]) == [1]
    assert assemble.type_witnesses([]) == []


def test_batches_read_each_table_once_per_batch_and_give_the_same_bytes(tmp_path, monkeypatch):
    real = assemble.pq.read_table
    states, reads = {}, {}
    for name, batching in {"one_batch": lambda todo: [list(todo)],
                           "per_tar": lambda todo: [[t] for t in todo]}.items():
        root = tmp_path / name
        tables = write_shards(root, [ids(7), ids(7, 7), ids(7, 14)])
        calls: list = []
        monkeypatch.setattr(assemble.pq, "read_table",
                            lambda p, calls=calls, **kw: calls.append(kw.get("filters")) or real(p, **kw))
        monkeypatch.setattr(assemble, "_batches", lambda todo, b, mb, batching=batching: batching(todo))
        m = run(tables, root)
        assert m["samples"] == 21
        reads[name] = [f for f in calls if f and isinstance(f[0], list)]  # the byte reads (key ranges)
        states[name] = {n: b for n, (_, b) in folder_state(root).items() if n.endswith(".tar")}
    assert states["one_batch"] == states["per_tar"]
    assert len(reads["one_batch"]) == 3  # one batch: each table read once, for all 6 tars' key ranges
    assert len(reads["one_batch"][0]) == 6
    assert 6 <= len(reads["per_tar"]) <= 18  # per tar: only the tables holding one of its samples


def test_samples_that_refer_to_their_images_give_the_same_tars(tmp_path):
    """package refers to the kept images instead of copying them (docs/disk.md): the tars are byte-identical to
    those cut from copies, the finished-sample tables hold no JPEG bytes, and a referred image that changed
    under them fails naming the table."""
    import os

    copied = write_shards(tmp_path / "copied", [ids(4), ids(5, 4)])
    referred = write_shards(tmp_path / "referred", [ids(4), ids(5, 4)], refer=True)
    run(copied, tmp_path / "copied", memory_mb=1)  # tiny batches: every tar reads its referred images anew
    run(referred, tmp_path / "referred", memory_mb=1)
    a, b = (sorted((root / "dataset" / FOLDER).glob("*.tar")) for root in (tmp_path / "copied", tmp_path / "referred"))
    assert [p.name for p in a] == [p.name for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))
    assert all(r["jpg"] is None and r["image_key"] for t in referred for r in pq.read_table(t).to_pylist())
    jpg_bytes = sum(r["jpg_size"] for t in referred for r in pq.read_table(t).to_pylist() if r["kept"])
    assert sum(map(os.path.getsize, copied)) - sum(map(os.path.getsize, referred)) > jpg_bytes / 2  # compression

    from support.release import picture

    from finet2i.core import shards

    images = tmp_path / "referred" / "images" / SUBSET / "00001.parquet"
    rows = pq.read_table(images).to_pylist()
    rows[0]["image"] = picture(99, size=(40, 40))
    shards.write_table(images, rows)
    for tar in b:
        tar.with_suffix(".stats.json").unlink()  # every tar must be written again
    import pytest

    with pytest.raises(RuntimeError, match="00001.parquet: the image of sample_id .* rerun package"):
        run(referred, tmp_path / "referred")
