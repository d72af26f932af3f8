"""`finet2i validate DATASET_DIR`: check that a folder follows the released Fine-T2I layout (``ma-xu/fine-t2i``).

A loader written for the release (webdataset, HF ``datasets``) silently drops or mis-reads what does not follow
its conventions; this checker says which file and key break which convention, before anyone trains on it. The
conventions themselves live in :mod:`finet2i.release.layout`; the validator only reads them.

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

What is checked: subset folder names and tar names (``train-NNNNNN.tar``); that every tar reads to its end and
holds samples of three regular members; each sample's key (a lowercase uuid, once per subset folder), its
members (jpg, json, txt, in that order), its json (the 15 keys of the release, their types and values), its txt
(the prompt the image was rendered with; no model control markup or U+FFFD in it or in the json's prompts), its
jpg (a baseline RGB JPEG of the json's size); across the synthetic subsets, one prompt per key; and each tar's
sibling parquet index (one row per sample, in tar order).

Each problem has a short kind (:data:`KINDS` says what each means), the file it was found in, the sample key
when there is one, and a detail that says what was expected. Exit status: 0 no problem, 1 any problem, 2 usage
error (DATASET_DIR missing).

This module walks the folders (a dataset root, its subset folders, their tars in order, the ``--max-samples``
budget); the rest is in

- ``report``: :class:`ValidationReport`, :class:`Problem`, :data:`KINDS` and the collector the checks report into;
- ``tars``: reading samples out of a tar as a stream;
- ``samples``: the checks of one sample (key, members, json, txt, jpg, across subsets);
- ``index``: the check of a tar's parquet index.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from finet2i.release.layout import SUBSET_OF_FOLDER, TAR_RE
from finet2i.release.validate.index import _check_index
from finet2i.release.validate.report import (
    DEFAULT_KEEP_PER_KIND,
    KINDS,
    Problem,
    SubsetSummary,
    ValidationReport,
    _Collector,
)
from finet2i.release.validate.samples import _check_sample, _FolderContext
from finet2i.release.validate.tars import MAX_MEMBER_BYTES, _SampleStream

__all__ = [
    "DEFAULT_KEEP_PER_KIND",
    "KINDS",
    "MAX_MEMBER_BYTES",
    "Problem",
    "SubsetSummary",
    "ValidationReport",
    "validate_dataset",
]

log = logging.getLogger(__name__)

SYNTHETIC_PREFIX = "synthetic_"
SQUARE_SUFFIX = "_square_resolution"


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
