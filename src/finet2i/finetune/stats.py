"""The evaluation's statistics, in the standard library: a paired bootstrap interval for a metric's difference,
Wilson's interval for a win rate, and agreement between raters (Cohen's kappa).

* **Paired bootstrap** (Efron & Tibshirani, percentile method): resample the prompts with replacement, the mean of
  (fine-tuned - base) each time; the 2.5th and 97.5th percentiles are the 95% interval. Seeded: the same
  scores give the same interval.
* **Wilson score interval** (Wilson 1927) of a proportion ``wins / (wins + losses)``: unlike the normal
  approximation it stays inside [0, 1] and behaves at 0, n and small n. Ties are reported beside it, not in it.
* **Cohen's kappa** for two raters over the pairs both rated: (observed - chance agreement) / (1 - chance).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def percentile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), ``q`` in [0, 1]."""
    if not sorted_xs:
        raise ValueError("percentile of nothing")
    pos = q * (len(sorted_xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def paired_difference(base: Sequence[float], tuned: Sequence[float], *, resamples: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """Means of both sides, the mean difference (tuned - base) and its 95% bootstrap interval over the pairs."""
    if len(base) != len(tuned):
        raise ValueError(f"{len(base)} base scores for {len(tuned)} fine-tuned scores")
    diffs = [t - b for b, t in zip(base, tuned, strict=True)]
    out: dict[str, Any] = {"n": len(diffs), "base": mean(base), "tuned": mean(tuned), "difference": mean(diffs),
                           "ci95": None}
    if len(diffs) >= 2:
        rng = random.Random(seed)
        n = len(diffs)
        boot = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
        out["ci95"] = [percentile(boot, 0.025), percentile(boot, 0.975)]
    return out


def wilson(wins: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of the proportion ``wins / n`` (None when n = 0)."""
    if n <= 0:
        return None
    p = wins / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def win_rate(outcomes: Sequence[str]) -> dict[str, Any]:
    """``outcomes``: "tuned", "base" or "tie" per comparison. Win rate = tuned wins / decided comparisons, with
    its Wilson 95% interval; ties counted apart."""
    c = Counter(outcomes)
    unknown = set(c) - {"tuned", "base", "tie"}
    if unknown:
        raise ValueError(f"outcomes must be tuned, base or tie; got {sorted(unknown)}")
    decided = c["tuned"] + c["base"]
    ci = wilson(c["tuned"], decided)
    return {"n": sum(c.values()), "tuned": c["tuned"], "base": c["base"], "tie": c["tie"],
            "win_rate": c["tuned"] / decided if decided else None, "ci95": list(ci) if ci else None,
            "tie_rate": c["tie"] / sum(c.values()) if c else None}


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels over the same items (None when chance agreement is total)."""
    if len(a) != len(b):
        raise ValueError("kappa needs the two raters' labels of the same items")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    chance = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    if chance >= 1.0:
        return None
    return (observed - chance) / (1 - chance)
