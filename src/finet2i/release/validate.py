"""`finet2i validate DATASET_DIR`: check that a folder follows the released Fine-T2I layout (``ma-xu/fine-t2i``).

A loader written for the release (webdataset, HF ``datasets``) silently drops or mis-reads what does not follow
its conventions; this checker says which file and key break which convention, before anyone trains on it. The
conventions themselves live in :mod:`finet2i.release.layout`; this module only reads them.

DATASET_DIR may be

- the dataset root, holding subset folders (``curated``, ``synthetic_enhanced_prompt_random_resolution``, ...)
  and possibly a ``README.md`` or other root files (listed, not checked); hidden folders such as the
  ``.cache`` that ``hf download --local-dir`` leaves are skipped. A Hugging Face cache snapshot
  (``~/.cache/huggingface/hub/datasets--ma-xu--fine-t2i/snapshots/<commit>``) is such a root: its symlinks
  are followed;
- one subset folder, recognised by its release name (or by holding tars and no folders); a folder holding a
  single tar downloaded from the hub is checked the same way::

      hf download ma-xu/fine-t2i synthetic_enhanced_prompt_random_resolution/train-000000.tar \\
          --repo-type dataset --local-dir fine-t2i
      finet2i validate fine-t2i                                                  # as a root, or
      finet2i validate fine-t2i/synthetic_enhanced_prompt_random_resolution     # as one subset folder

Every tar is read as a stream, one sample (three members) at a time, so memory holds one sample's bytes, the
key list of the tar being read (for the parquet index check), the keys of the subset folder being read (for
duplicates) and, across the synthetic subsets, a 16-byte hash of each key's prompt (for
``cross_subset_prompt``). Decoding every image is the slow part (a few ms to tens of ms each): use
``--max-samples N`` for a quick look at a huge folder.

Each problem has a short kind (:data:`KINDS` says what each means), the file it was found in, the sample key
when there is one, and a detail that says what was expected. Exit status: 0 no problem, 1 any problem, 2 usage
error (DATASET_DIR missing).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import tarfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finet2i.release.layout import (
    ASPECT_RATIOS,
    FEATURES,
    KEY_RE,
    MEMBERS,
    NOT_NULL,
    RELEASE_KEYS,
    SUBSET_OF_FOLDER,
    TAR_RE,
)

log = logging.getLogger(__name__)

# Every problem kind, with what it means; the summary and the tests use these names.
KINDS: dict[str, str] = {
    "no_subsets": "the root holds no subset folder and no tar",
    "bad_folder_name": "a subset folder is not named like one of the release's five folders",
    "empty_folder": "a subset folder holds no tar",
    "bad_tar_name": "a tar is not named train-NNNNNN.tar (six digits)",
    "bad_tar": "a tar cannot be read to its end (not a tar, truncated, compressed)",
    "empty_tar": "a tar holds no sample",
    "bad_member": "a tar member is not a regular file named <key>.<ext> at the tar's top level, or is too large",
    "missing_member": "a sample lacks one of its jpg, json, txt members",
    "extra_member": "a sample has a member other than jpg, json, txt",
    "duplicate_member": "a sample has the same member twice",
    "member_order": "a sample's members are not in the order jpg, json, txt",
    "bad_key": "a sample key is not a lowercase uuid",
    "duplicate_key": "a key appears twice in one subset folder",
    "bad_json": "the json member is not a UTF-8 JSON object",
    "json_keys": "the json does not hold exactly the release's 15 keys",
    "json_type": "a json value is not of the type the dataset card declares",
    "json_null": "a json value is null where the release never has null",
    "json_value": "a json value is of the right type but impossible (negative length, bad resolution, NaN, ...)",
    "id_mismatch": "the json id is not the sample key",
    "aspect_ratio": "a synthetic image_aspect_ratio is not a Table 8 label, or a square subset's image is not square",
    "bad_txt": "the txt member is not UTF-8",
    "empty_txt": "the txt member is empty or blank",
    "txt_mismatch": "the txt is not the prompt the image was rendered with (json enhanced_prompt or prompt)",
    "not_jpeg": "the jpg member is not a JPEG (no FF D8 start marker)",
    "undecodable_image": "the jpg member does not decode",
    "not_baseline_jpeg": "the jpg is a progressive JPEG",
    "not_rgb": "the decoded image is not RGB",
    "resolution_mismatch": "the decoded size is not the json image_resolution [w, h]",
    "cross_subset_prompt": "one key carries different prompts in two synthetic subsets",
    "bad_index": "the sibling parquet index cannot be read or has no id column",
    "index_mismatch": "the sibling parquet index does not list the tar's keys, one row per sample, in order",
    "orphan_index": "a parquet index has no tar of the same name beside it",
}

SYNTHETIC_PREFIX = "synthetic_"
SQUARE_SUFFIX = "_square_resolution"
MAX_MEMBER_BYTES = 256 * 1024 * 1024  # no release member is near this; a bigger one is a broken tar, not read
DEFAULT_KEEP_PER_KIND = 1000  # problems kept per kind in the report; counts always count every one
_SNIPPET = 60
_SUMMARY_WIDTH = 240  # an example line in the summary; --json has the whole detail


# ----------------------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class Problem:
    """One broken convention: what (kind), where (the file, and the sample key when there is one), and why."""

    kind: str
    path: str
    key: str | None
    detail: str

    def location(self) -> str:
        return f"{self.path} {self.key}" if self.key else self.path


@dataclass
class SubsetSummary:
    """What was read of one subset folder; ``stopped`` when --max-samples cut the reading short."""

    folder: str
    path: str
    tars: int = 0
    tars_read: int = 0
    samples: int = 0
    stopped: bool = False
    other_files: int = 0


@dataclass
class ValidationReport:
    """The result of :func:`validate_dataset`. ``counts`` counts every problem; ``problems`` keeps at most
    ``keep_per_kind`` of each kind, so a dataset broken everywhere does not fill memory."""

    root: str
    layout: str  # "dataset" (a root of subset folders) or "subset" (one subset folder)
    subsets: list[SubsetSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    root_files: list[str] = field(default_factory=list)
    max_samples: int | None = None

    @property
    def ok(self) -> bool:
        return not self.counts

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root, "layout": self.layout, "ok": self.ok, "total": self.total,
            "counts": dict(self.counts), "max_samples": self.max_samples, "root_files": list(self.root_files),
            "subsets": [asdict(s) for s in self.subsets], "problems": [asdict(p) for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def summary(self, examples: int = 3) -> str:
        """Per subset folder its tars and samples, then each problem kind with a few locations, then the verdict."""
        lines = [f"{self.root} ({'dataset root' if self.layout == 'dataset' else 'one subset folder'})"]
        if self.root_files:
            lines.append(f"  root files (not checked): {', '.join(self.root_files)}")
        width = max((len(s.folder) for s in self.subsets), default=0)
        for s in self.subsets:
            line = f"  {s.folder:<{width}}  {_plural(s.tars, 'tar')}, {_plural(s.samples, 'sample')}"
            if s.stopped:
                line += f" (stopped at --max-samples {self.max_samples}; {s.tars_read} of {s.tars} tars read)"
            if s.other_files:
                line += f" ({_plural(s.other_files, 'other file')} ignored)"
            lines.append(line)
        by_kind: dict[str, list[Problem]] = defaultdict(list)
        for p in self.problems:
            by_kind[p.kind].append(p)
        for kind, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"{kind}: {n}  ({KINDS[kind]})")
            for p in by_kind[kind][:examples]:
                line = f"  {p.location()}: {p.detail}"
                lines.append(line if len(line) <= _SUMMARY_WIDTH else line[:_SUMMARY_WIDTH - 3] + "...")
            if n > examples:
                lines.append(f"  ... {n - examples} more")
        lines.append("OK" if self.ok else _plural(self.total, "problem"))
        return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _Collector:
    """Counts every problem, keeps the first ``keep`` of each kind."""

    def __init__(self, keep: int | None) -> None:
        self.keep = keep
        self.problems: list[Problem] = []
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, path: str, key: str | None, detail: str) -> None:
        assert kind in KINDS, kind
        self.counts[kind] += 1
        if self.keep is None or self.counts[kind] <= self.keep:
            self.problems.append(Problem(kind, path, key, detail))


# ----------------------------------------------------------------------------------------------------------
# Entry point


def validate_dataset(path: str | os.PathLike[str], *, max_samples: int | None = None,
                     keep_per_kind: int | None = DEFAULT_KEEP_PER_KIND) -> ValidationReport:
    """Check a dataset root or one subset folder against the release's conventions (see the module docstring).

    ``max_samples`` stops each subset folder after that many samples (the rest is not read, so not checked).
    Raises FileNotFoundError / NotADirectoryError when ``path`` is not a folder; everything else is a problem
    in the report."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be at least 1, got {max_samples}")
    layout, folders, root_files = _find_layout(root)
    report = ValidationReport(root=str(root), layout=layout, root_files=root_files, max_samples=max_samples)
    out = _Collector(keep_per_kind)
    if layout == "dataset" and not folders:
        out.add("no_subsets", str(root), None, "no subset folder (curated, synthetic_...) and no tar here")
    prompts: dict[str, tuple[bytes, str, str]] = {}  # key -> (prompt hash, folder, tar) over synthetic folders
    for folder in folders:
        report.subsets.append(_check_folder(folder, out, prompts, max_samples))
    report.problems, report.counts = out.problems, dict(out.counts)
    return report


def _folder_name(folder: Path) -> str:
    """The folder's own name (a symlink's, not its target's), also when the path is ``.`` or ``..``."""
    return folder.name if folder.name not in ("", ".", "..") else folder.resolve().name


def _find_layout(root: Path) -> tuple[str, list[Path], list[str]]:
    """("subset", [root], []) when root is one subset folder, else ("dataset", subset folders, root files).

    A root is one subset folder when it has a release folder's name, or holds tars and no folder (a tar
    downloaded into a folder of another name: its name is then reported)."""
    if _folder_name(root) in SUBSET_OF_FOLDER:
        return "subset", [root], []
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    folders = [p for p in entries if p.is_dir()]
    files = [p.name for p in entries if not p.is_dir()]
    if not folders and any(name.endswith(".tar") for name in files):
        return "subset", [root], []
    return "dataset", folders, files


# ----------------------------------------------------------------------------------------------------------
# One subset folder


@dataclass
class _FolderContext:
    """What the checks of one subset folder share: its name, where to report, keys seen so far."""

    name: str
    synthetic: bool
    square: bool
    out: _Collector
    prompts: dict[str, tuple[bytes, str, str]]
    seen: dict[str, str] = field(default_factory=dict)  # key -> the tar it was first seen in


def _check_folder(folder: Path, out: _Collector, prompts: dict[str, tuple[bytes, str, str]],
                  max_samples: int | None) -> SubsetSummary:
    name = _folder_name(folder)
    if name not in SUBSET_OF_FOLDER:
        out.add("bad_folder_name", str(folder), None,
                f"folder {name!r} is not a release folder ({', '.join(sorted(SUBSET_OF_FOLDER))})")
    ctx = _FolderContext(name, name.startswith(SYNTHETIC_PREFIX), name.endswith(SQUARE_SUFFIX), out, prompts)
    summary = SubsetSummary(folder=name, path=str(folder))
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    tars = [p for p in files if p.suffix == ".tar"]
    tar_names = {p.name for p in tars}
    summary.tars = len(tars)
    summary.other_files = sum(1 for p in files if p.suffix not in (".tar", ".parquet"))
    if not tars:
        out.add("empty_folder", str(folder), None, f"subset folder {name!r} holds no .tar file")
    for p in tars:  # every name, also of the tars --max-samples leaves unread
        if not TAR_RE.match(p.name):
            out.add("bad_tar_name", str(p), None, f"tar {p.name!r} is not named like train-000000.tar")
    for p in files:
        if p.suffix == ".parquet" and p.with_suffix(".tar").name not in tar_names:
            out.add("orphan_index", str(p), None, f"index {p.name} has no {p.with_suffix('.tar').name} beside it")
    budget = max_samples
    for tar in tars:
        if budget is not None and budget <= 0:
            summary.stopped = True
            break
        n, stopped = _check_tar(tar, ctx, budget)
        summary.tars_read += 1
        summary.samples += n
        if budget is not None:
            budget -= n
        if stopped:
            summary.stopped = True
            break
    log.info("%s: %d of %d tars read, %d samples", folder, summary.tars_read, summary.tars, summary.samples)
    return summary


# ----------------------------------------------------------------------------------------------------------
# One tar


@dataclass
class _RawSample:
    """One sample as the tar holds it: consecutive members sharing a key."""

    key: str
    members: dict[str, bytes] = field(default_factory=dict)  # ext -> bytes
    order: list[str] = field(default_factory=list)  # exts in tar order, repeats included


Report = Callable[[str, str | None, str], None]  # (kind, key, detail) for the tar being read


def _check_tar(tar: Path, ctx: _FolderContext, budget: int | None) -> tuple[int, bool]:
    """Check every sample of one tar (at most ``budget``), then its parquet index; returns (samples read,
    stopped by the budget)."""
    where = str(tar)

    def report(kind: str, key: str | None, detail: str) -> None:
        ctx.out.add(kind, where, key, detail)

    if tar.stat().st_size == 0:
        report("empty_tar", None, f"{tar.name} is an empty file")
        return 0, False
    keys: list[str] = []
    in_tar: set[str] = set()
    stopped = False
    samples = _SampleStream(tar, report)
    try:
        for sample in samples:
            if budget is not None and len(keys) >= budget:
                stopped = True
                break
            _check_sample(sample, where, ctx, in_tar, report)
            keys.append(sample.key)
            in_tar.add(sample.key)
    finally:
        samples.close()
    complete = not stopped and not samples.failed
    log.info("%s: %d samples%s", tar, len(keys), "" if complete else " (not read to its end)")
    if not keys and not stopped and complete:
        report("empty_tar", None, f"{tar.name} holds no sample")
    index = tar.with_suffix(".parquet")
    if index.is_file():
        _check_index(index, keys, complete, ctx.out)
    return len(keys), stopped


class _SampleStream:
    """Iterate a tar's samples without reading it whole; a read error becomes a ``bad_tar`` problem and ends the
    stream (``failed`` then says the tar was not read to its end)."""

    def __init__(self, tar: Path, report: Report) -> None:
        self.tar = tar
        self.report = report
        self.failed = False
        self.complete = 0  # samples read whole
        self._it = self._samples()

    def __iter__(self) -> Iterator[_RawSample]:
        return self._it

    def close(self) -> None:
        self._it.close()

    def _samples(self) -> Iterator[_RawSample]:
        current: _RawSample | None = None
        try:
            with tarfile.open(self.tar, mode="r|") as tf:
                for info in tf:
                    parsed = self._member(info)
                    if parsed is None:
                        continue
                    key, ext = parsed
                    reader = tf.extractfile(info)
                    assert reader is not None  # a regular file, checked in _member
                    data = reader.read()
                    if current is not None and current.key != key:
                        self.complete += 1
                        yield current
                        current = None
                    if current is None:
                        current = _RawSample(key)
                    current.order.append(ext)
                    current.members.setdefault(ext, data)
        except (tarfile.TarError, OSError, EOFError) as e:
            # The sample being read is cut short: it is named here, not checked (its missing members would
            # only repeat this problem).
            self.failed = True
            self.report("bad_tar", current.key if current else None,
                        f"{self.tar.name} cannot be read past sample {self.complete}: {e}")
            return
        if current is not None:
            self.complete += 1
            yield current

    def _member(self, info: tarfile.TarInfo) -> tuple[str, str] | None:
        """(key, ext) of a member worth reading; a problem and None for one that is not."""
        name = info.name
        if not info.isfile():
            self.report("bad_member", None, f"member {name!r} is not a regular file")
            return None
        if info.size > MAX_MEMBER_BYTES:
            self.report("bad_member", None, f"member {name!r} is {info.size} bytes, not read")
            return None
        if "/" in name or "." not in name or name.startswith("."):
            self.report("bad_member", None, f"member {name!r} is not named <key>.<ext> at the tar's top level")
            return None
        key, ext = name.split(".", 1)  # as webdataset splits it: the key ends at the first dot
        return key, ext


# ----------------------------------------------------------------------------------------------------------
# One sample

Issues = list[tuple[str, str]]  # (kind, detail) found in one sample


def _check_sample(sample: _RawSample, where: str, ctx: _FolderContext, in_tar: set[str], report: Report) -> None:
    key = sample.key
    issues: Issues = []
    issues += _check_key(key, ctx, in_tar, where)
    issues += _check_members(sample)
    meta: dict[str, Any] | None = None
    if "json" in sample.members:
        meta, json_issues = _check_json(sample.members["json"], key, ctx)
        issues += json_issues
    if "txt" in sample.members:
        issues += _check_txt(sample.members["txt"], meta)
    if "jpg" in sample.members:
        issues += _check_jpg(sample.members["jpg"], meta)
    if ctx.synthetic and meta is not None and isinstance(meta.get("prompt"), str):
        issues += _check_cross_subset(key, meta["prompt"], ctx, where)
    grouped: dict[str, list[str]] = {}
    for kind, detail in issues:
        grouped.setdefault(kind, []).append(detail)
    for kind, details in grouped.items():
        report(kind, key, "; ".join(details))


def _check_key(key: str, ctx: _FolderContext, in_tar: set[str], where: str) -> Issues:
    issues: Issues = []
    if not KEY_RE.match(key):
        issues.append(("bad_key", f"key {key!r} is not a lowercase uuid"))
    if key in in_tar:
        issues.append(("duplicate_key", f"key {key} appears twice in this tar (its members are not together)"))
    elif key in ctx.seen:
        issues.append(("duplicate_key", f"key {key} is also in {ctx.seen[key]}"))
    else:
        ctx.seen[key] = where
    return issues


def _check_members(sample: _RawSample) -> Issues:
    issues: Issues = []
    present = list(dict.fromkeys(sample.order))
    missing = [ext for ext in MEMBERS if ext not in sample.members]
    extra = [ext for ext in present if ext not in MEMBERS]
    repeated = sorted({ext for ext in sample.order if sample.order.count(ext) > 1})
    if missing:
        issues.append(("missing_member", "no " + ", ".join(f"{sample.key}.{e}" for e in missing)))
    if extra:
        issues.append(("extra_member", "unexpected " + ", ".join(f"{sample.key}.{e}" for e in extra)))
    if repeated:
        issues.append(("duplicate_member", "twice: " + ", ".join(f"{sample.key}.{e}" for e in repeated)))
    known = [ext for ext in present if ext in MEMBERS]
    if known != [ext for ext in MEMBERS if ext in known]:
        issues.append(("member_order", f"members in order {', '.join(known)}; the release has jpg, json, txt"))
    return issues


# ---- json


def _check_json(raw: bytes, key: str, ctx: _FolderContext) -> tuple[dict[str, Any] | None, Issues]:
    """Parse and check the json; returns the parsed object (None when unusable) for the txt and jpg checks."""
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return None, [("bad_json", f"{key}.json does not parse: {e}")]
    if not isinstance(meta, dict):
        return None, [("bad_json", f"{key}.json holds a {type(meta).__name__}, not an object")]
    issues: Issues = []
    missing = [k for k in RELEASE_KEYS if k not in meta]
    extra = [k for k in meta if k not in FEATURES]
    if missing or extra:
        parts = [f"{word} {_names(keys)}" for word, keys in (("missing", missing), ("extra", extra)) if keys]
        issues.append(("json_keys", f"{key}.json: " + "; ".join(parts)))
    for k in RELEASE_KEYS:
        if k not in meta:
            continue
        value = meta[k]
        if value is None:
            if k in NOT_NULL:
                issues.append(("json_null", f"{k} is null"))
        elif not _has_type(value, FEATURES[k]):
            issues.append(("json_type", f"{k}: expected {_type_text(FEATURES[k])}, got {_short(value)}"))
    issues += _check_values(meta, key)
    if ctx.synthetic:
        issues += _check_aspect(meta, ctx.square)
    return meta, issues


def _has_type(value: Any, spec: str | list[str]) -> bool:
    if isinstance(spec, list):
        return isinstance(value, list) and all(_has_type(v, spec[0]) for v in value)
    if spec == "string":
        return isinstance(value, str)
    if spec == "bool":
        return isinstance(value, bool)
    if spec == "int64":
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    if spec == "float64":  # a whole score written as 6 is still a float64 to HF datasets
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise ValueError(f"release.FEATURES has a type this validator does not know: {spec!r}")


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} (+{len(names) - limit} more)"


def _type_text(spec: str | list[str]) -> str:
    return f"list of {spec[0]}" if isinstance(spec, list) else spec


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    text = text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."
    return f"{type(value).__name__} {text}"


def _snippet(text: str) -> str:
    return repr(text if len(text) <= _SNIPPET else text[:_SNIPPET] + "...")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_values(meta: dict[str, Any], key: str) -> Issues:
    """Values of the right type that still cannot be right; a value of the wrong type is left to json_type."""
    issues: Issues = []
    sample_id = meta.get("id")
    if isinstance(sample_id, str) and sample_id != key:
        issues.append(("id_mismatch", f"json id {sample_id!r} is not the member key {key!r}"))
    for k in ("length", "enhanced_length"):
        if _is_int(meta.get(k)) and meta[k] < 0:
            issues.append(("json_value", f"{k} is negative: {meta[k]}"))
    res = meta.get("image_resolution")
    if isinstance(res, list) and all(_is_int(v) for v in res) and (len(res) != 2 or min(res) <= 0):
        issues.append(("json_value", f"image_resolution {res} is not [width, height] of two positive ints"))
    score = meta.get("aesthetic_predictor_v_2_5_score")
    if isinstance(score, float) and not math.isfinite(score):
        issues.append(("json_value", f"aesthetic_predictor_v_2_5_score is {score}"))
    prompt = meta.get("prompt")
    if isinstance(prompt, str) and not prompt.strip():
        issues.append(("json_value", "prompt is blank"))
    if meta.get("image_generated_with_enhanced_prompt") is True:
        enhanced = meta.get("enhanced_prompt")
        if not isinstance(enhanced, str) or not enhanced.strip():
            issues.append(("json_value", "image_generated_with_enhanced_prompt is true but enhanced_prompt is "
                                         f"{'null' if enhanced is None else _short(enhanced)}"))
    return issues


def _resolution(meta: dict[str, Any] | None) -> tuple[int, int] | None:
    """The json's (width, height) when it is well formed, else None (its problem is reported elsewhere)."""
    res = None if meta is None else meta.get("image_resolution")
    if isinstance(res, list) and len(res) == 2 and all(_is_int(v) and v > 0 for v in res):
        return res[0], res[1]
    return None


def _check_aspect(meta: dict[str, Any], square: bool) -> Issues:
    """Synthetic images are rendered at a Table 8 size; the square subsets only at its square sizes."""
    issues: Issues = []
    label = meta.get("image_aspect_ratio")
    if isinstance(label, str) and label not in ASPECT_RATIOS:
        issues.append(("aspect_ratio", f"image_aspect_ratio {label!r} is not one of {', '.join(ASPECT_RATIOS)}"))
    if square:
        if isinstance(label, str) and label != "1:1":
            issues.append(("aspect_ratio", f"image_aspect_ratio {label!r} in a square-resolution subset"))
        size = _resolution(meta)
        if size is not None and size[0] != size[1]:
            issues.append(("aspect_ratio", f"image_resolution {list(size)} is not square"))
    return issues


# ---- txt


def _check_txt(raw: bytes, meta: dict[str, Any] | None) -> Issues:
    """The txt is what a webdataset loader trains on: the prompt the image was rendered with, never blank."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return [("bad_txt", f"txt is not UTF-8: {e}")]
    if not text.strip():
        return [("empty_txt", f"txt is {'empty' if not text else 'blank'}")]
    if meta is None or not isinstance(meta.get("image_generated_with_enhanced_prompt"), bool):
        return []
    source = "enhanced_prompt" if meta["image_generated_with_enhanced_prompt"] else "prompt"
    expected = meta.get(source)
    if not isinstance(expected, str):
        return []  # already a json problem
    # Ends are stripped on both sides: a trailing newline does not change the prompt a model is trained on.
    if text.strip() != expected.strip():
        return [("txt_mismatch", f"txt {_snippet(text.strip())} is not json {source} {_snippet(expected.strip())}")]
    return []


# ---- jpg


def _check_jpg(raw: bytes, meta: dict[str, Any] | None) -> Issues:
    """A baseline RGB JPEG of the json's size: what the release holds and what its loaders assume."""
    if raw[:2] != b"\xff\xd8":
        return [("not_jpeg", f"jpg starts with {raw[:8].hex(' ') or 'nothing'}, not the JPEG marker ff d8")]
    from PIL import Image

    issues: Issues = []
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.format not in ("JPEG", "MPO"):  # MPO: a camera JPEG with extra frames, still a JPEG
                return [("not_jpeg", f"PIL reads the jpg as {im.format}")]
            if im.info.get("progressive") or im.info.get("progression"):
                issues.append(("not_baseline_jpeg", "jpg is progressive"))
            if im.mode != "RGB":
                issues.append(("not_rgb", f"jpg mode is {im.mode}, not RGB"))
            im.load()
            size = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return [*issues, ("undecodable_image", f"jpg does not decode: {e}")]
    expected = _resolution(meta)
    if expected is not None and tuple(size) != expected:
        issues.append(("resolution_mismatch", f"jpg is {size[0]}x{size[1]}, json image_resolution is "
                                              f"[{expected[0]}, {expected[1]}]"))
    return issues


# ---- across subsets


def _check_cross_subset(key: str, prompt: str, ctx: _FolderContext, where: str) -> Issues:
    """One prompt has one key in every synthetic subset it survives in; another prompt under that key means two
    prompts were given the same key (or a subset was packaged from another run)."""
    digest = hashlib.blake2b(prompt.encode("utf-8"), digest_size=16).digest()
    first = ctx.prompts.get(key)
    if first is None:
        ctx.prompts[key] = (digest, ctx.name, where)
        return []
    if first[1] != ctx.name and first[0] != digest:
        return [("cross_subset_prompt", f"json prompt {_snippet(prompt)} differs from the prompt of the same key "
                                        f"in {first[2]}")]
    return []


# ----------------------------------------------------------------------------------------------------------
# Parquet index


def _check_index(index: Path, keys: list[str], complete: bool, out: _Collector) -> None:
    """A sibling index must list the tar's samples one row each, in tar order: tools seek by row number.
    When the tar was not read to its end, only the rows of the samples read are compared."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = str(index)
    try:
        pf = pq.ParquetFile(index)
        if "id" not in pf.schema_arrow.names:
            out.add("bad_index", where, None, f"{index.name} has no id column (columns: {pf.schema_arrow.names})")
            return
        ids = pf.read(columns=["id"]).column("id").to_pylist()
    except (OSError, pa.ArrowException) as e:
        out.add("bad_index", where, None, f"{index.name} cannot be read: {e}")
        return
    if complete and len(ids) != len(keys):
        out.add("index_mismatch", where, None, f"{index.name} has {_plural(len(ids), 'row')}, the tar "
                                            f"{_plural(len(keys), 'sample')}")
    for i, (row_id, key) in enumerate(zip(ids, keys, strict=False)):
        if row_id != key:
            out.add("index_mismatch", where, key, f"row {i} of {index.name} has id {row_id!r}, sample {i} of the "
                                                  f"tar is {key!r}")
            return
