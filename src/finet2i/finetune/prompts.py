"""The evaluation's fixed prompt set: PartiPrompts (Yu et al. 2022, Apache-2.0; 1,632 prompts in 12 categories,
shipped in the package as ``finet2i/data/PartiPrompts.tsv``) or a user's file, drawn evenly over the categories
with the run's seed, each prompt with its fixed seeds.

A user's file is a TSV with a ``Prompt`` column (and optionally ``Category``), as PartiPrompts is, or plain text
with one prompt per line.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from finet2i.finetune.data import seed_of

PARTI = "PartiPrompts"


@dataclass(frozen=True)
class Comparison:
    """One prompt rendered with one seed by the base and by the fine-tuned model."""

    pair_id: str  # p<prompt index>-s<k>: a file name, a URL part, a vote's key
    prompt: str
    category: str
    seed: int
    tuned_left: bool  # where the judge (and the raters) see the fine-tuned image: left (first) or right


def read_prompts(path: str | os.PathLike[str] | None) -> tuple[str, list[dict[str, str]]]:
    """(the set's name, its rows {prompt, category}) from ``path``, or PartiPrompts when None."""
    if path is None:
        text = (resources.files("finet2i") / "data" / "PartiPrompts.tsv").read_text(encoding="utf-8")
        name = PARTI
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config key evaluate.prompts: {p} does not exist (a TSV with a Prompt column, "
                                    f"or one prompt per line)")
        text, name = p.read_text(encoding="utf-8"), p.name
    lines = text.splitlines()
    header = lines[0].split("\t") if lines else []
    if "Prompt" in header:
        rows = [{"prompt": (r.get("Prompt") or "").strip(), "category": (r.get("Category") or "").strip() or "-"}
                for r in csv.DictReader(lines, delimiter="\t")]
    else:
        rows = [{"prompt": line.strip(), "category": "-"} for line in lines]
    rows = [r for r in rows if r["prompt"]]
    if not rows:
        raise ValueError(f"{path or PARTI}: no prompt found")
    return name, rows


def pick(rows: list[dict[str, str]], n: int | None, seed: int) -> list[tuple[int, dict[str, str]]]:
    """``n`` rows (all when None), taken in turn from each category (categories in name order, each category's
    rows in a seeded order), so that a small set covers every category; (index in the file, row), by index."""
    import random

    if n is None or n >= len(rows):
        return list(enumerate(rows))
    by_cat: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_cat.setdefault(r["category"], []).append(i)
    for cat, idx in by_cat.items():
        random.Random(seed_of(seed, "prompts", cat)).shuffle(idx)
    picked: list[int] = []
    depth = 0
    while len(picked) < n:
        for cat in sorted(by_cat):
            if depth < len(by_cat[cat]) and len(picked) < n:
                picked.append(by_cat[cat][depth])
        depth += 1
    return [(i, rows[i]) for i in sorted(picked)]


def comparisons(path: str | os.PathLike[str] | None, n: int | None, per_prompt: int,
                seed: int) -> tuple[str, list[Comparison]]:
    """The evaluation's comparisons: each picked prompt with ``per_prompt`` seeds and a seeded side."""
    name, rows = read_prompts(path)
    out = []
    for i, r in pick(rows, n, seed):
        for k in range(per_prompt):
            pid = f"p{i:05d}-s{k}"
            out.append(Comparison(pid, r["prompt"], r["category"], seed_of(seed, "evaluate", i, k) % 2**31,
                                  seed_of(seed, "side", pid) % 2 == 1))
    return name, out
