"""`finet2i validate`: a small dataset built here from scratch in the release's layout passes, and each
hand-broken copy of it is reported under exactly the problem kind of what was broken (no false alarms)."""

from __future__ import annotations

import copy
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from finet2i.cli.main import main
from finet2i.release import layout as release
from finet2i.release.validate import KINDS, ValidationReport, validate_dataset

ER = "synthetic_enhanced_prompt_random_resolution"
OS = "synthetic_original_prompt_square_resolution"
CUR = release.CURATED
T0, T1 = release.tar_name(0), release.tar_name(1)


def key(*parts: Any) -> str:
    return release.sample_key("test-validate", *parts)


SHARED = key("prompt", 0)  # one prompt, kept in both synthetic subsets


def jpeg(size: tuple[int, int], *, mode: str = "RGB", progressive: bool = False) -> bytes:
    buf = io.BytesIO()
    color: Any = 128 if mode == "L" else (200, 80, 40)
    Image.new(mode, size, color).save(buf, "JPEG", quality=90, progressive=progressive)
    return buf.getvalue()


def png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Sample:
    key: str
    meta: dict[str, Any]
    txt: str
    jpg: bytes
    raw: list[tuple[str, bytes]] | None = field(default=None)  # the tar members, when a case rewrites them

    def members(self) -> list[tuple[str, bytes]]:
        if self.raw is not None:
            return self.raw
        return [(f"{self.key}.jpg", self.jpg), (f"{self.key}.json", json.dumps(self.meta).encode()),
                (f"{self.key}.txt", self.txt.encode())]


Layout = dict[str, dict[str, list[Sample]]]  # folder -> tar name -> samples in tar order


def synthetic(k: str, prompt: str, *, enhanced: bool, size: tuple[int, int], label: str) -> Sample:
    enhanced_prompt = f"{prompt}, in warm evening light with soft shadows"
    meta = {
        "id": k, "prompt": prompt, "enhanced_prompt": enhanced_prompt, "length": len(prompt.split()),
        "enhanced_length": len(enhanced_prompt.split()), "prompt_generator": "Qwen3-32B", "enhancer": "Qwen3-32B",
        "style": "photorealistic", "prompt_category": "People: Emotions", "task": ["counting"],
        "image_aspect_ratio": label, "image_resolution": list(size), "image_generator": "FLUX.1-dev",
        "image_generated_with_enhanced_prompt": enhanced, "aesthetic_predictor_v_2_5_score": 5.75,
    }
    return Sample(k, meta, enhanced_prompt if enhanced else prompt, jpeg(size))


def curated(k: str, caption: str, size: tuple[int, int]) -> Sample:
    meta = {
        "id": k, "prompt": caption, "enhanced_prompt": None, "length": len(caption.split()), "enhanced_length": None,
        "prompt_generator": "Qwen2.5-VL-7B", "enhancer": None, "style": None, "prompt_category": None, "task": None,
        "image_aspect_ratio": None, "image_resolution": list(size), "image_generator": "pexels",
        "image_generated_with_enhanced_prompt": False, "aesthetic_predictor_v_2_5_score": 6,
    }
    return Sample(k, meta, caption + "\n", jpeg(size))


def valid_layout() -> Layout:
    return {
        ER: {
            T0: [synthetic(SHARED, "two cats on a red sofa", enhanced=True, size=(24, 16), label="3:2"),
                 synthetic(key("prompt", 1), "a lighthouse at dawn", enhanced=True, size=(16, 20), label="4:5")],
            T1: [synthetic(key("prompt", 2), "three apples on a plate", enhanced=True, size=(32, 18), label="16:9"),
                 synthetic(key("prompt", 3), "a fox in the snow", enhanced=True, size=(16, 16), label="1:1")],
        },
        OS: {
            T0: [synthetic(SHARED, "two cats on a red sofa", enhanced=False, size=(16, 16), label="1:1"),
                 synthetic(key("prompt", 4), "a blue bicycle", enhanced=False, size=(16, 16), label="1:1"),
                 synthetic(key("prompt", 5), "a bowl of ramen", enhanced=False, size=(24, 24), label="1:1")],
        },
        CUR: {
            T0: [curated(key("real", 0), "A woman reading under a tree.", (20, 16)),
                 curated(key("real", 1), "A harbour with fishing boats.", (16, 24))],
        },
    }


def write_tar(path: Path, samples: list[Sample]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for s in samples:
            for name, data in s.members():
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 1_767_225_600, 0o644
                tf.addfile(info, io.BytesIO(data))


def write_index(path: Path, ids: list[str]) -> None:
    # More columns than the id, as the pipeline's index has: only `id` is compared.
    pq.write_table(pa.table({"id": ids, "tar": [path.with_suffix(".tar").name] * len(ids)}), path)


def write_dataset(root: Path, layout: Layout, *, index: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Fine-T2I (test copy)\n")
    for folder, tars in layout.items():
        (root / folder).mkdir()
        for name, samples in tars.items():
            write_tar(root / folder / name, samples)
            if index:
                write_index((root / folder / name).with_suffix(".parquet"), [s.key for s in samples])
    return root


def kinds(report: ValidationReport) -> set[str]:
    return set(report.counts)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "fine-t2i", valid_layout())


# ----------------------------------------------------------------------------------------------------------
# The valid dataset


def test_valid_dataset_is_ok(dataset: Path) -> None:
    report = validate_dataset(dataset)
    assert report.ok and report.counts == {} and report.problems == [], report.summary()
    assert report.layout == "dataset" and report.root_files == ["README.md"]
    assert [(s.folder, s.tars, s.samples, s.stopped) for s in report.subsets] == [
        (CUR, 1, 2, False), (ER, 2, 4, False), (OS, 1, 3, False)]
    assert report.summary().splitlines()[-1] == "OK"


def test_valid_dataset_without_index_is_ok(tmp_path: Path) -> None:
    # The real release has no parquet index beside its tars.
    assert validate_dataset(write_dataset(tmp_path / "d", valid_layout(), index=False)).ok


# ----------------------------------------------------------------------------------------------------------
# One broken copy per check


@dataclass
class Case:
    id: str
    kind: str
    pre: Callable[[Layout], None] | None = None  # edits the layout before it is written
    post: Callable[[Path], None] | None = None  # edits the written dataset
    also: tuple[str, ...] = ()  # other kinds this breakage necessarily causes


def sample(layout: Layout, folder: str = ER, tar: str = T0, i: int = 0) -> Sample:
    return layout[folder][tar][i]


def set_meta(folder: str, tar: str, i: int, **values: Any) -> Callable[[Layout], None]:
    def edit(layout: Layout) -> None:
        sample(layout, folder, tar, i).meta.update(values)
    return edit


def set_field(folder: str, tar: str, i: int, name: str, value: Any) -> Callable[[Layout], None]:
    def edit(layout: Layout) -> None:
        setattr(sample(layout, folder, tar, i), name, value)
    return edit


def set_raw(folder: str, tar: str, i: int, change: Callable[[Sample, list[tuple[str, bytes]]], list]) -> Callable:
    def edit(layout: Layout) -> None:
        s = sample(layout, folder, tar, i)
        s.raw = change(s, s.members())
    return edit


def rename_key(layout: Layout) -> None:
    s = sample(layout, ER, T0, 1)
    s.key = s.meta["id"] = s.key.upper()


def copy_sample(src: tuple[str, str, int], dst: tuple[str, str]) -> Callable[[Layout], None]:
    def edit(layout: Layout) -> None:
        layout[dst[0]][dst[1]].append(copy.deepcopy(sample(layout, *src)))
    return edit


def other_prompt(layout: Layout) -> None:
    s = sample(layout, OS, T0, 0)
    s.meta["prompt"] = s.txt = "two dogs on a green sofa"


def change_keys(layout: Layout) -> None:
    m = sample(layout, CUR, T0, 0).meta
    del m["style"]
    m["subset"] = "real"


def txt_is_original_prompt(layout: Layout) -> None:
    s = sample(layout, ER, T0, 1)  # rendered with its enhanced prompt
    s.txt = s.meta["prompt"]


def truncated_jpeg(layout: Layout) -> None:
    s = sample(layout, CUR, T0, 0)
    s.jpg = s.jpg[:-40]


def not_square(layout: Layout) -> None:
    s = sample(layout, OS, T0, 1)
    s.meta["image_resolution"], s.jpg = [16, 12], jpeg((16, 12))


def empty_folder(root: Path) -> None:
    (root / "synthetic_original_prompt_random_resolution").mkdir()


def rename(src: str, dst: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        (root / src).rename(root / dst)
    return edit


def remove_subsets(root: Path) -> None:
    for folder in (ER, OS, CUR):
        shutil.rmtree(root / folder)


def bad_tar_name(root: Path) -> None:
    rename(f"{CUR}/{T0}", f"{CUR}/train-0.tar")(root)
    rename(f"{CUR}/train-000000.parquet", f"{CUR}/train-0.parquet")(root)


def truncate_tar(root: Path) -> None:
    path = root / ER / T1
    path.write_bytes(path.read_bytes()[:700])  # the first header and part of the first jpg


def truncate_tar_in_second_sample(root: Path) -> None:
    # The first sample whole, the second cut in its json: the index's first row still matches what was read.
    path = root / ER / T1
    with tarfile.open(path) as tf:
        cut = tf.getmembers()[4].offset_data + 5
    path.write_bytes(path.read_bytes()[:cut])


def garbage_tar(root: Path) -> None:
    (root / ER / T1).write_bytes(b"this is not a tar" * 64)


def tar_without_samples(root: Path) -> None:
    write_tar(root / CUR / T1, [])


def zero_byte_tar(root: Path) -> None:
    (root / CUR / T1).write_bytes(b"")


def index_ids(ids: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / ER / "train-000000.parquet"
        write_index(path, ids(pq.read_table(path).column("id").to_pylist()))
    return edit


def index_without_id(root: Path) -> None:
    pq.write_table(pa.table({"key": ["a", "b"]}), root / CUR / "train-000000.parquet")


def garbage_index(root: Path) -> None:
    (root / CUR / "train-000000.parquet").write_bytes(b"not parquet")


def orphan_index(root: Path) -> None:
    shutil.copy(root / CUR / "train-000000.parquet", root / CUR / "train-000007.parquet")


def prompt_and_txt(folder: str, tar: str, i: int, text: str) -> Callable[[Layout], None]:
    """The json prompt and the txt of one sample (of a subset rendered with its original prompt) set to ``text``."""
    def edit(layout: Layout) -> None:
        s = sample(layout, folder, tar, i)
        s.meta["prompt"], s.txt = text, text
    return edit


def member_not_a_file(root: Path) -> None:
    with tarfile.open(root / CUR / T0, "a") as tf:
        info = tarfile.TarInfo("notes")
        info.type = tarfile.DIRTYPE
        tf.addfile(info)


CASES = [
    Case("no_subsets", "no_subsets", post=remove_subsets),
    Case("bad_folder_name", "bad_folder_name", post=rename(CUR, "curated_v2")),
    Case("empty_folder", "empty_folder", post=empty_folder),
    Case("bad_tar_name", "bad_tar_name", post=bad_tar_name),
    Case("bad_tar-truncated", "bad_tar", post=truncate_tar),
    Case("bad_tar-truncated-later", "bad_tar", post=truncate_tar_in_second_sample),
    Case("bad_tar-garbage", "bad_tar", post=garbage_tar),
    Case("empty_tar-no-members", "empty_tar", post=tar_without_samples),
    Case("empty_tar-zero-bytes", "empty_tar", post=zero_byte_tar),
    Case("bad_member-in-a-folder", "bad_member",
         pre=set_raw(CUR, T0, 1, lambda s, m: [*m, ("notes/readme.txt", b"hello")])),
    Case("bad_member-no-extension", "bad_member", pre=set_raw(CUR, T0, 1, lambda s, m: [*m, ("README", b"hi")])),
    Case("bad_member-directory", "bad_member", post=member_not_a_file),
    Case("missing_member", "missing_member", pre=set_raw(CUR, T0, 0, lambda s, m: m[:2])),
    Case("extra_member", "extra_member", pre=set_raw(CUR, T0, 0, lambda s, m: [*m, (f"{s.key}.cls", b"3")])),
    Case("duplicate_member", "duplicate_member", pre=set_raw(CUR, T0, 0, lambda s, m: [*m, m[2]])),
    Case("member_order", "member_order", pre=set_raw(CUR, T0, 0, lambda s, m: [m[2], m[0], m[1]])),
    Case("bad_key", "bad_key", pre=rename_key),
    Case("duplicate_key-across-tars", "duplicate_key", pre=copy_sample((ER, T0, 1), (ER, T1))),
    Case("duplicate_key-in-one-tar", "duplicate_key", pre=copy_sample((ER, T0, 0), (ER, T0))),
    Case("bad_json-syntax", "bad_json", pre=set_raw(CUR, T0, 0, lambda s, m: [m[0], (m[1][0], b"{not json"), m[2]])),
    Case("bad_json-array", "bad_json", pre=set_raw(CUR, T0, 0, lambda s, m: [m[0], (m[1][0], b"[1, 2]"), m[2]])),
    Case("json_keys", "json_keys", pre=change_keys),
    Case("json_type-string-for-int", "json_type", pre=set_meta(ER, T0, 1, length="5")),
    Case("json_type-string-for-list", "json_type", pre=set_meta(ER, T0, 1, task="counting")),
    Case("json_type-int-for-bool", "json_type", pre=set_meta(CUR, T0, 0, image_generated_with_enhanced_prompt=0)),
    Case("json_type-bool-for-float", "json_type", pre=set_meta(CUR, T0, 0, aesthetic_predictor_v_2_5_score=True)),
    Case("json_null", "json_null", pre=set_meta(CUR, T0, 1, image_generator=None)),
    Case("json_value-resolution", "json_value", pre=set_meta(CUR, T0, 1, image_resolution=[16, 24, 3])),
    Case("json_value-negative-length", "json_value", pre=set_meta(ER, T1, 0, enhanced_length=-1)),
    Case("json_value-nan-score", "json_value", pre=set_meta(ER, T1, 0, aesthetic_predictor_v_2_5_score=float("nan"))),
    Case("json_value-enhanced-null", "json_value", pre=set_meta(ER, T1, 1, enhanced_prompt=None)),
    Case("id_mismatch", "id_mismatch", pre=set_meta(CUR, T0, 0, id=key("someone else"))),
    Case("aspect_ratio-label", "aspect_ratio", pre=set_meta(ER, T1, 0, image_aspect_ratio="7:5")),
    Case("aspect_ratio-not-square", "aspect_ratio", pre=not_square),
    Case("bad_txt", "bad_txt", pre=set_raw(CUR, T0, 0, lambda s, m: [m[0], m[1], (m[2][0], b"\xff\xfe caption")])),
    Case("empty_txt", "empty_txt", pre=set_field(OS, T0, 2, "txt", "  \n")),
    Case("txt_mismatch-enhanced", "txt_mismatch", pre=txt_is_original_prompt),
    Case("txt_mismatch-original", "txt_mismatch", pre=set_field(OS, T0, 1, "txt", "a red bicycle")),
    # Model control markup a stage let through (the demo once shipped a prompt with a </think> inside).
    Case("control_markup-think", "control_markup", pre=prompt_and_txt(CUR, T0, 0, "a red car</think> on a road")),
    Case("control_markup-chat", "control_markup", pre=prompt_and_txt(CUR, T0, 1, "a red car<|im_end|>")),
    Case("control_markup-enhanced", "control_markup", pre=set_meta(CUR, T0, 0, enhanced_prompt="[INST] a car")),
    Case("replacement_char", "replacement_char", pre=prompt_and_txt(CUR, T0, 0, "a red car \ufffd\ufffd on a road")),
    Case("not_jpeg", "not_jpeg", pre=set_field(CUR, T0, 0, "jpg", png((20, 16)))),
    Case("undecodable_image", "undecodable_image", pre=truncated_jpeg),
    Case("not_baseline_jpeg", "not_baseline_jpeg", pre=set_field(CUR, T0, 1, "jpg", jpeg((16, 24), progressive=True))),
    Case("not_rgb", "not_rgb", pre=set_field(CUR, T0, 1, "jpg", jpeg((16, 24), mode="L"))),
    Case("resolution_mismatch", "resolution_mismatch", pre=set_meta(ER, T0, 0, image_resolution=[16, 24])),
    Case("cross_subset_prompt", "cross_subset_prompt", pre=other_prompt),
    Case("index_mismatch-order", "index_mismatch", post=index_ids(lambda ids: ids[::-1])),
    Case("index_mismatch-missing-row", "index_mismatch", post=index_ids(lambda ids: ids[:1])),
    Case("index_mismatch-extra-row", "index_mismatch", post=index_ids(lambda ids: [*ids, key("extra")])),
    Case("bad_index-garbage", "bad_index", post=garbage_index),
    Case("bad_index-no-id-column", "bad_index", post=index_without_id),
    Case("orphan_index", "orphan_index", post=orphan_index),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_breakage_is_reported_under_its_kind(tmp_path: Path, case: Case) -> None:
    layout = valid_layout()
    if case.pre:
        case.pre(layout)
    root = write_dataset(tmp_path / "fine-t2i", layout)
    if case.post:
        case.post(root)
    report = validate_dataset(root)
    assert kinds(report) == {case.kind, *case.also}, report.summary()
    assert not report.ok and report.summary().splitlines()[-1].endswith(("problem", "problems"))
    for p in report.problems:
        assert p.path.startswith(str(root)) and p.detail


def test_every_kind_has_a_case() -> None:
    assert {c.kind for c in CASES} | {k for c in CASES for k in c.also} == set(KINDS)


def test_problems_name_the_file_and_key(dataset: Path) -> None:
    path = dataset / OS / T0
    samples = valid_layout()[OS][T0]
    samples[2].txt = ""
    write_tar(path, samples)
    report = validate_dataset(dataset)
    [p] = report.problems
    assert (p.kind, p.path, p.key) == ("empty_txt", str(path), samples[2].key)
    assert f"{path} {samples[2].key}: txt is empty" in report.summary()


# ----------------------------------------------------------------------------------------------------------
# Layouts: one subset folder, one downloaded tar


def test_one_subset_folder(dataset: Path) -> None:
    report = validate_dataset(dataset / ER)
    assert report.ok, report.summary()
    assert report.layout == "subset" and [(s.folder, s.tars, s.samples) for s in report.subsets] == [(ER, 2, 4)]


def test_one_tar_downloaded_from_the_hub(tmp_path: Path) -> None:
    # `hf download ma-xu/fine-t2i <folder>/train-000000.tar --local-dir d` keeps the folder, adds .cache/, no index.
    root = tmp_path / "d"
    (root / ".cache" / "huggingface").mkdir(parents=True)
    (root / ER).mkdir()
    write_tar(root / ER / T0, valid_layout()[ER][T0])
    for target in (root, root / ER):
        report = validate_dataset(target)
        assert report.ok, report.summary()
        assert [(s.folder, s.tars, s.samples) for s in report.subsets] == [(ER, 1, 2)]
    # The tar alone, in a folder of another name: checked, and the folder name reported.
    other = tmp_path / "downloads"
    other.mkdir()
    shutil.copy(root / ER / T0, other / T0)
    report = validate_dataset(other)
    assert report.layout == "subset" and kinds(report) == {"bad_folder_name"}
    assert report.subsets[0].samples == 2


# ----------------------------------------------------------------------------------------------------------
# Limits


def test_max_samples_stops_each_subset_folder(tmp_path: Path) -> None:
    layout = valid_layout()
    sample(layout, ER, T1, 1).txt = ""  # the 4th sample of ER: past the limit, so not seen
    root = write_dataset(tmp_path / "d", layout)
    assert kinds(validate_dataset(root)) == {"empty_txt"}
    report = validate_dataset(root, max_samples=3)
    assert report.ok, report.summary()
    assert [(s.folder, s.samples, s.tars_read, s.stopped) for s in report.subsets] == [
        (CUR, 2, 1, False), (ER, 3, 2, True), (OS, 3, 1, False)]
    assert "stopped at --max-samples 3; 2 of 2 tars read" in report.summary()
    # A tar read in part compares only the index rows of the samples read.
    report = validate_dataset(root, max_samples=1)
    assert report.ok and [s.samples for s in report.subsets] == [1, 1, 1]
    # Names are checked for every tar, also those the limit leaves unread.
    rename(f"{ER}/{T1}", f"{ER}/train-1.tar")(root)
    rename(f"{ER}/train-000001.parquet", f"{ER}/train-1.parquet")(root)
    assert kinds(validate_dataset(root, max_samples=1)) == {"bad_tar_name"}


def test_counts_count_every_problem_but_keep_a_few(tmp_path: Path) -> None:
    layout = valid_layout()
    for s in layout[ER][T0] + layout[ER][T1]:
        s.txt = "not the prompt"
    root = write_dataset(tmp_path / "d", layout)
    report = validate_dataset(root, keep_per_kind=2)
    assert report.counts == {"txt_mismatch": 4} and len(report.problems) == 2
    assert "  ... 1 more" in report.summary() and report.summary().endswith("4 problems")


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        validate_dataset(tmp_path / "missing")
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        validate_dataset(tmp_path / "f")


# ----------------------------------------------------------------------------------------------------------
# CLI


def invoke(*args: str):
    return CliRunner().invoke(main, ["validate", *args])


def test_cli_ok(dataset: Path) -> None:
    r = invoke(str(dataset))
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1] == "OK" and ER in r.stdout


def test_cli_reports_problems(tmp_path: Path) -> None:
    layout = valid_layout()
    sample(layout, OS, T0, 1).txt = "a red bicycle"
    root = write_dataset(tmp_path / "d", layout)
    r = invoke(str(root))
    assert r.exit_code == 1, r.output
    assert "txt_mismatch: 1" in r.stdout and f"{root / OS / T0} {key('prompt', 4)}" in r.stdout
    assert r.stdout.splitlines()[-1] == "1 problem"
    r = invoke(str(root), "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["counts"] == {"txt_mismatch": 1}
    assert doc["problems"][0]["key"] == key("prompt", 4)
    r = invoke(str(root), "--max-samples", "1")
    assert r.exit_code == 0, r.output


def test_cli_usage_errors(tmp_path: Path) -> None:
    assert invoke(str(tmp_path / "missing")).exit_code == 2
    assert invoke(str(tmp_path), "--max-samples", "0").exit_code == 2
