"""The weighted taxonomy (``config/taxonomy.yaml``) and the sampling of controlled prompt specs from it.

A spec is what the prompt LLM is asked to write a prompt for (paper 3.1.1): a category and sub-category, a
style, a task, a prompt-structure template and a length target, plus a per-record seed for the LLM sampling.

Sampling is deterministic per ``(seed, shard)`` and prefix-stable: record ``i`` of a shard depends only on the
seed, the shard name and ``i``, so a resumed run never reshuffles, adding shards leaves existing ones alone,
and raising ``specs_per_shard`` only appends records.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

log = logging.getLogger(__name__)

NOT_SPECIFIED = "Not Specified"
TASK_JOIN = " + "


class TaxonomyError(ValueError):
    """A mistake in the taxonomy file; the message names the file and the key."""


@dataclass(frozen=True)
class Choice:
    key: str
    weight: float
    description: str = ""


@dataclass(frozen=True)
class Category:
    key: str
    weight: float
    description: str
    subcategories: tuple[Choice, ...]


@dataclass(frozen=True)
class Task:
    label: str
    weight: float
    components: tuple[str, ...]
    instruction: str  # the components' instructions, one per line; empty for "Not Specified"


@dataclass(frozen=True)
class Template:
    key: str
    weight: float
    instruction: str


@dataclass(frozen=True)
class LengthTarget:
    key: str
    weight: float
    min_words: int
    max_words: int


@dataclass(frozen=True)
class Taxonomy:
    source: str
    categories: tuple[Category, ...]
    styles: tuple[Choice, ...]
    task_components: dict[str, str]
    tasks: tuple[Task, ...]
    templates: tuple[Template, ...]
    length_targets: tuple[LengthTarget, ...]

    def category(self, key: str) -> Category:
        for c in self.categories:
            if c.key == key:
                return c
        raise KeyError(f"{self.source}: no category {key!r}")

    def context(self, spec: Mapping[str, Any]) -> dict[str, str]:
        """Descriptions of a spec's category, sub-category and style, for the prompt LLM's request."""
        cat = self.category(spec["category"])
        sub = next((s for s in cat.subcategories if s.key == spec["subcategory"]), None)
        style = next((s for s in self.styles if s.key == spec["style"]), None)
        return {
            "category_description": cat.description,
            "subcategory_description": sub.description if sub else "",
            "style_description": style.description if style else "",
        }


# ---------------------------------------------------------------------------------------------- loading

_TOP = {"version": False, "categories": True, "styles": True, "task_components": True, "tasks": True,
        "templates": True, "length_targets": True}


def load_taxonomy(path: str | os.PathLike[str]) -> Taxonomy:
    """Read and validate a taxonomy file; raises :class:`TaxonomyError` naming the file and key."""
    p = Path(path)
    if not p.exists():
        raise TaxonomyError(f"{p}: taxonomy file not found (config key `taxonomy`)")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise TaxonomyError(f"{p}: not valid YAML: {e}") from e
    return parse_taxonomy(raw, source=str(p))


def parse_taxonomy(raw: Any, source: str = "<taxonomy>") -> Taxonomy:
    _fields(raw, source, "", _TOP)
    if raw.get("version", 1) != 1:
        raise TaxonomyError(f"{source}: version: {raw['version']!r} is not supported (expected 1)")

    categories = []
    for key, node in _entries(raw, "categories", source).items():
        where = f"categories.{key}"
        _fields(node, source, where, {"weight": True, "description": False, "subcategories": True})
        subs = tuple(_choice(k, v, source, f"{where}.subcategories.{k}")
                     for k, v in _entries(node, "subcategories", source, where).items())
        _some_weight([s.weight for s in subs], source, f"{where}.subcategories")
        categories.append(Category(str(key), _weight(node["weight"], source, f"{where}.weight"),
                                   _text(node.get("description", ""), source, f"{where}.description"), subs))
    _some_weight([c.weight for c in categories], source, "categories")

    styles = tuple(_choice(k, v, source, f"styles.{k}") for k, v in _entries(raw, "styles", source).items())
    _some_weight([s.weight for s in styles], source, "styles")

    components = {str(k): _text(v, source, f"task_components.{k}", required=True)
                  for k, v in _entries(raw, "task_components", source).items()}
    tasks = []
    for label, w in _entries(raw, "tasks", source).items():
        label = str(label)
        where = f"tasks.{label}"
        parts = () if label == NOT_SPECIFIED else tuple(label.split(TASK_JOIN))
        for part in parts:
            if part not in components:
                raise TaxonomyError(f"{source}: {where}: task component {part!r} is not defined under "
                                    f"task_components (defined: {', '.join(components)}); components are "
                                    f"joined by {TASK_JOIN!r}")
        if len(set(parts)) != len(parts):
            raise TaxonomyError(f"{source}: {where}: a task component appears twice")
        tasks.append(Task(label, _weight(w, source, where), parts, "\n".join(components[p] for p in parts)))
    _some_weight([t.weight for t in tasks], source, "tasks")

    templates = []
    for key, node in _entries(raw, "templates", source).items():
        where = f"templates.{key}"
        _fields(node, source, where, {"weight": True, "instruction": True})
        templates.append(Template(str(key), _weight(node["weight"], source, f"{where}.weight"),
                                  _text(node["instruction"], source, f"{where}.instruction", required=True)))
    _some_weight([t.weight for t in templates], source, "templates")

    lengths = []
    for key, node in _entries(raw, "length_targets", source).items():
        where = f"length_targets.{key}"
        _fields(node, source, where, {"weight": True, "min_words": True, "max_words": True})
        lo, hi = node["min_words"], node["max_words"]
        for name, v in (("min_words", lo), ("max_words", hi)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise TaxonomyError(f"{source}: {where}.{name}: expected a whole number >= 1, got {v!r}")
        if lo > hi:
            raise TaxonomyError(f"{source}: {where}: min_words ({lo}) is larger than max_words ({hi})")
        lengths.append(LengthTarget(str(key), _weight(node["weight"], source, f"{where}.weight"), lo, hi))
    _some_weight([x.weight for x in lengths], source, "length_targets")

    return Taxonomy(source, tuple(categories), styles, components, tuple(tasks), tuple(templates),
                    tuple(lengths))


def _fields(node: Any, source: str, where: str, allowed: dict[str, bool]) -> None:
    """``allowed`` maps field name -> required."""
    label = where or "top level"
    if not isinstance(node, dict):
        raise TaxonomyError(f"{source}: {label}: expected a mapping, got {type(node).__name__}")
    for k in node:
        if k not in allowed:
            raise TaxonomyError(f"{source}: {label}: unknown field {k!r} (allowed: {', '.join(allowed)})")
    for k, required in allowed.items():
        if required and k not in node:
            raise TaxonomyError(f"{source}: {label}: missing required field {k!r}")


def _entries(node: dict[str, Any], key: str, source: str, where: str = "") -> dict[Any, Any]:
    full = f"{where}.{key}" if where else key
    value = node.get(key)
    if not isinstance(value, dict) or not value:
        raise TaxonomyError(f"{source}: {full}: expected a non-empty mapping of name -> entry, "
                            f"got {value!r:.60}")
    return value


def _weight(v: Any, source: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise TaxonomyError(f"{source}: {where}: weight must be a finite number, got {v!r}")
    if v < 0:
        raise TaxonomyError(f"{source}: {where}: weight must be >= 0, got {v}")
    return float(v)


def _some_weight(weights: list[float], source: str, where: str) -> None:
    if sum(weights) <= 0:
        raise TaxonomyError(f"{source}: {where}: all weights are 0; give at least one entry a weight > 0")


def _text(v: Any, source: str, where: str, required: bool = False) -> str:
    if not isinstance(v, str) or (required and not v.strip()):
        raise TaxonomyError(f"{source}: {where}: expected {'non-empty ' if required else ''}text, got {v!r}")
    return v.strip()


def _choice(key: Any, node: Any, source: str, where: str) -> Choice:
    if isinstance(node, dict):
        _fields(node, source, where, {"weight": True, "description": False})
        return Choice(str(key), _weight(node["weight"], source, f"{where}.weight"),
                      _text(node.get("description", ""), source, f"{where}.description"))
    return Choice(str(key), _weight(node, source, where))  # shorthand `name: weight`


# --------------------------------------------------------------------------------------------- sampling

SPEC_COLUMNS = ("id", "shard", "index", "category", "subcategory", "style", "task", "task_instruction",
                "template", "template_instruction", "length_target", "min_words", "max_words", "seed")


def _cdf(weights: list[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return np.cumsum(w) / w.sum()


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    # side="right": an entry of weight 0 spans an empty interval and is never drawn.
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _stable_int(text: str) -> int:
    # Python's hash() is salted per process; a digest keeps shard streams identical across runs and machines.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _record_seeds(base: int, index: np.ndarray) -> np.ndarray:
    """SplitMix64 of (base + index): 31-bit seeds that depend only on the record's position."""
    with np.errstate(over="ignore"):
        z = np.uint64(base) + index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    # 31 bits: every backend (vLLM, torch, numpy) accepts it as a seed.
    return (z >> np.uint64(33)).astype(np.int64)


def sample_specs(taxonomy: Taxonomy, shard: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Sample ``n`` specs for ``shard``; the same (taxonomy, shard, seed) always gives the same records."""
    if n < 0:
        raise ValueError(f"sample_specs: n must be >= 0, got {n}")
    if seed < 0:
        raise ValueError(f"sample_specs: seed must be >= 0, got {seed} (config key `seed`)")
    ss = np.random.SeedSequence([seed, _stable_int(f"specs/{shard}")])
    # One row of uniforms per record, drawn in row order: record i uses only the i-th row, so the first k
    # records of a shard do not change when n grows.
    u = np.random.default_rng(ss).random((n, 6))
    base = int(ss.generate_state(1, np.uint64)[0])
    index = np.arange(n, dtype=np.int64)

    cats = taxonomy.categories
    cat_i = _draw(_cdf([c.weight for c in cats]), u[:, 0])
    sub_label = np.empty(n, dtype=object)
    for ci, cat in enumerate(cats):
        mask = cat_i == ci
        if mask.any():
            labels = np.array([s.key for s in cat.subcategories], dtype=object)
            sub_label[mask] = labels[_draw(_cdf([s.weight for s in cat.subcategories]), u[mask, 1])]
    style_i = _draw(_cdf([s.weight for s in taxonomy.styles]), u[:, 2])
    task_i = _draw(_cdf([t.weight for t in taxonomy.tasks]), u[:, 3])
    tmpl_i = _draw(_cdf([t.weight for t in taxonomy.templates]), u[:, 4])
    len_i = _draw(_cdf([x.weight for x in taxonomy.length_targets]), u[:, 5])
    seeds = _record_seeds(base, index).tolist()

    cat_keys = [c.key for c in cats]
    styles = [s.key for s in taxonomy.styles]
    tasks = taxonomy.tasks
    tmpls = taxonomy.templates
    lens = taxonomy.length_targets
    out = []
    for i, ci, sub, si, ti, mi, li, rs in zip(index.tolist(), cat_i.tolist(), sub_label.tolist(),
                                              style_i.tolist(), task_i.tolist(), tmpl_i.tolist(),
                                              len_i.tolist(), seeds, strict=True):
        task, tmpl, lt = tasks[ti], tmpls[mi], lens[li]
        out.append({
            "id": f"{shard}-{i:06d}", "shard": shard, "index": i,
            "category": cat_keys[ci], "subcategory": sub, "style": styles[si],
            "task": task.label, "task_instruction": task.instruction,
            "template": tmpl.key, "template_instruction": tmpl.instruction,
            "length_target": lt.key, "min_words": lt.min_words, "max_words": lt.max_words,
            "seed": rs,
        })
    return out


def spec_marginals(specs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Observed distributions of sampled specs, keyed like :func:`finet2i.recipe.paper.marginals`."""
    from collections import Counter

    n = max(len(specs), 1)
    counts: dict[str, Counter[str]] = {k: Counter() for k in ("category", "subcategory", "style", "task")}
    for s in specs:
        counts["category"][s["category"]] += 1
        counts["subcategory"][f"{s['category']} / {s['subcategory']}"] += 1
        counts["style"][s["style"]] += 1
        counts["task"][s["task"]] += 1
    return {k: {label: c / n for label, c in v.items()} for k, v in counts.items()}
