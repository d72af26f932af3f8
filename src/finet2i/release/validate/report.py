"""The validator's report: each problem found (:class:`Problem`, with its kind from :data:`KINDS`), what was read
of each subset folder (:class:`SubsetSummary`), the whole result (:class:`ValidationReport`: JSON and the
summary ``finet2i validate`` prints), and the collector the checks report into.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

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
    "control_markup": "a prompt, enhanced prompt or txt holds model control markup (think tags, chat-template "
                      "tokens such as <|im_start|>, <|eot_id|>, [INST])",
    "replacement_char": "a prompt, enhanced prompt or txt holds U+FFFD replacement characters (a broken decode)",
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

DEFAULT_KEEP_PER_KIND = 1000  # problems kept per kind in the report; counts always count every one
_SUMMARY_WIDTH = 240  # an example line in the summary; --json has the whole detail


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
