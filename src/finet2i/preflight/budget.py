"""What a GPU-hour budget buys, and what a number of released samples costs (``finet2i plan``).

The cost of a run is :mod:`finet2i.preflight.gpu_hours`'s total under a rates file: every stage with a rate
counts its compute hours and, where its load is known, its jobs' loads. A stage without a rate costs nothing here
and the answer says so: the fit is then an upper bound on what the budget buys.

**The budget fit.** A run's *shape* is which subsets it renders, how many candidates per prompt (at most) and
which generators; its size is the shard count (``shards.count`` x ``shards.specs_per_shard`` specs). The fit keeps
the configured shape (the recipe) and takes the largest shard count whose cost fits; only when not even one shard
fits does it give the shape up, one step at a time: fewer candidates, then without the most expensive generator,
then fewer subsets (the last one first). Every step tried is listed.

**Samples.** Expected released samples per subset are the paper's (Table 2) scaled by the run's specs over the
paper's 44,800,567 prompts. The paper's yields were measured with 1-3 candidates and both generators: fewer
candidates pass the aesthetic threshold less often, which this does not model (the answer says so).

The config written holds only what the fit sets (shards, subsets, candidates, generator weights); run it over the
recipe: ``snakemake --configfile config/config.yaml plan.yaml``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finet2i.preflight import gpu_hours
from finet2i.recipe import paper

MAX_SHARDS = 10_000_000  # the search's ceiling: 4e11 specs at the default shard size


@dataclass(frozen=True)
class Shape:
    subsets: tuple[str, ...]
    candidates: tuple[int, int]  # (min, max)
    weights: tuple[tuple[str, float], ...]  # generator -> weight

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Shape:
        gen = config["generate"]
        return cls(tuple(gen["subsets"]), (int(gen["candidates"]["min"]), int(gen["candidates"]["max"])),
                   tuple((k, float(g["weight"])) for k, g in gen["generators"].items()))

    def label(self) -> str:
        gens = "+".join(k for k, w in self.weights if w > 0)
        return f"{','.join(self.subsets)}; candidates {self.candidates[0]}-{self.candidates[1]}; {gens}"


@dataclass
class Fit:
    shape: Shape
    shards: int  # 0: not even one shard fits
    specs: int
    gpu_hours: float  # counted (see uncounted)
    uncounted: list[str] = field(default_factory=list)  # stages without a rate: not in gpu_hours
    no_load: list[str] = field(default_factory=list)  # stages whose load is not counted
    samples: dict[str, int] = field(default_factory=dict)
    rows: list[gpu_hours.Row] = field(default_factory=list)

    @property
    def total_samples(self) -> int:
        return sum(self.samples.values())


def shaped(config: Mapping[str, Any], shape: Shape, shards: int) -> dict[str, Any]:
    """A copy of ``config`` with the run's shape and shard count."""
    out = copy.deepcopy(dict(config))
    out["shards"] = {**out["shards"], "count": int(shards)}
    gen = out["generate"]
    gen["subsets"] = list(shape.subsets)
    gen["candidates"] = {"min": shape.candidates[0], "max": shape.candidates[1]}
    for kind, weight in shape.weights:
        gen["generators"][kind] = {**gen["generators"][kind], "weight": weight}
    return out


def expected_samples(config: Mapping[str, Any]) -> dict[str, int]:
    """Released samples per subset at the paper's yields (Table 2 scaled to the config's specs)."""
    specs = int(config["shards"]["count"]) * int(config["shards"]["specs_per_shard"])
    scale = specs / paper.FUNNEL["prompts"]
    return {s: round(paper.SUBSET_COUNTS[s] * scale) for s in config["generate"]["subsets"]}


def evaluate(config: Mapping[str, Any], shape: Shape, shards: int, rates: Mapping[str, Any],
             workdir: Path = Path(".")) -> Fit:
    """The run of ``shape`` at ``shards`` shards: its counted GPU-hours and expected samples."""
    run = shaped(config, shape, max(1, shards))
    rows = gpu_hours.plan(run, None, rates, workdir)
    fit = Fit(shape, shards, shards * int(config["shards"]["specs_per_shard"]), gpu_hours.total(rows),
              [r.stage for r in rows if not r.measured], [r.stage for r in rows if r.load_missing],
              expected_samples(run) if shards else {s: 0 for s in shape.subsets}, rows)
    if not shards:
        fit.gpu_hours = 0.0
    return fit


def largest(config: Mapping[str, Any], shape: Shape, budget: float, rates: Mapping[str, Any],
            workdir: Path = Path(".")) -> Fit:
    """The most shards of ``shape`` whose counted GPU-hours fit ``budget`` (0 shards when one does not)."""
    if evaluate(config, shape, 1, rates, workdir).gpu_hours > budget:
        return evaluate(config, shape, 0, rates, workdir)
    lo, hi = 1, 2
    while hi < MAX_SHARDS and evaluate(config, shape, hi, rates, workdir).gpu_hours <= budget:
        lo, hi = hi, hi * 2
    hi = min(hi, MAX_SHARDS)
    while hi - lo > 1:  # cost grows with shards: the largest lo with cost(lo) <= budget
        mid = (lo + hi) // 2
        if evaluate(config, shape, mid, rates, workdir).gpu_hours <= budget:
            lo = mid
        else:
            hi = mid
    return evaluate(config, shape, lo, rates, workdir)


def ladder(config: Mapping[str, Any], rates: Mapping[str, Any], workdir: Path = Path(".")) -> list[Shape]:
    """The configured shape, then cheaper ones, one step at a time: fewer candidates, without the most expensive
    generator (by its counted hours per image), then fewer subsets."""
    start = Shape.of(config)
    shapes = [start]
    lo, hi = start.candidates
    for top in range(hi - 1, max(lo, 1) - 1, -1):
        shapes.append(Shape(start.subsets, (min(lo, top), top), start.weights))
    last = shapes[-1]
    on = [k for k, w in last.weights if w > 0]
    if len(on) > 1:
        rows = {r.stage: r for r in gpu_hours.plan(shaped(config, last, 1), None, rates, workdir)}

        def per_image(kind: str) -> float:
            r = rows.get(f"generate.{kind}")
            return r.compute_h / r.items if r is not None and r.compute_h and r.items else 0.0

        for kind in sorted(on, key=per_image, reverse=True)[:-1]:
            weights = tuple((k, 0.0 if k == kind else w) for k, w in last.weights)
            last = Shape(last.subsets, last.candidates, weights)
            shapes.append(last)
    for n in range(len(last.subsets) - 1, 0, -1):
        shapes.append(Shape(last.subsets[:n], last.candidates, last.weights))
    return shapes


def fit_budget(config: Mapping[str, Any], budget: float, rates: Mapping[str, Any],
               workdir: Path = Path(".")) -> tuple[Fit, list[Fit]]:
    """The largest run that fits ``budget`` GPU-hours, and every shape tried on the way to it."""
    tried = []
    for shape in ladder(config, rates, workdir):
        fit = largest(config, shape, budget, rates, workdir)
        tried.append(fit)
        if fit.shards:
            return fit, tried
    return tried[-1], tried


def fit_samples(config: Mapping[str, Any], samples: int, rates: Mapping[str, Any],
                workdir: Path = Path(".")) -> Fit:
    """The configured shape at the fewest shards that release ``samples`` synthetic samples, and its cost."""
    shape = Shape.of(config)
    per_shard = sum(expected_samples(shaped(config, shape, 1)).values())
    shards = max(1, math.ceil(samples / per_shard)) if per_shard else 1
    while sum(expected_samples(shaped(config, shape, shards)).values()) < samples:  # rounding
        shards += 1
    return evaluate(config, shape, shards, rates, workdir)


def overlay(fit: Fit) -> dict[str, Any]:
    """The config keys the fit sets, to merge over the recipe (``--configfile config/config.yaml plan.yaml``)."""
    return {
        "shards": {"count": fit.shards},
        "generate": {"subsets": list(fit.shape.subsets),
                     "candidates": {"min": fit.shape.candidates[0], "max": fit.shape.candidates[1]},
                     "generators": {k: {"weight": w} for k, w in fit.shape.weights}},
    }


def write_config(fit: Fit, path: str | Path, header: str) -> None:
    import yaml

    text = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    Path(path).write_text(text + yaml.safe_dump(overlay(fit), sort_keys=False))


def describe(fit: Fit, budget: float | None = None) -> list[str]:
    """The fit in a few lines: size, cost, samples, and what the cost leaves out."""
    lines = []
    if not fit.shards:
        return [f"not even one shard of {fit.shape.label()} fits {budget:,.0f} GPU-hours"]
    lines.append(f"{fit.shards:,} shard(s) x {fit.specs // fit.shards:,} specs = {fit.specs:,} specs; "
                 f"{fit.shape.label()}")
    lines.append(f"GPU-hours counted: {fit.gpu_hours:,.1f}" + (f" of {budget:,.0f}" if budget is not None else ""))
    lines.append("expected samples at the paper's yields: " + ", ".join(f"{s} {n:,}" for s, n in fit.samples.items())
                 + f" (total {fit.total_samples:,})")
    if fit.uncounted:
        lines.append(f"NOT counted (no rate in the rates file): {', '.join(fit.uncounted)}: the run costs more than "
                     f"this, so it buys fewer shards than this")
    if fit.no_load:
        lines.append(f"load not counted: {', '.join(fit.no_load)}")
    return lines
