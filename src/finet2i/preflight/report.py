"""Preflight's report: one row per check (GO, WARN or NO-GO with what to do), its table and its JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

GO, WARN, NOGO = "GO", "WARN", "NO-GO"


@dataclass(frozen=True)
class Check:
    status: str
    check: str  # what was checked: "config", "model", "partition", "rule <name>", "account", "disk", ...
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    jobs: dict[str, int] = field(default_factory=dict)  # rule -> jobs in the plan
    disk: list[dict[str, Any]] = field(default_factory=list)

    def add(self, status: str, check: str, detail: str) -> None:
        self.checks.append(Check(status, check, detail))

    @property
    def ok(self) -> bool:
        return not any(c.status == NOGO for c in self.checks)

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.checks)

    def table(self) -> str:
        width = max([len(c.check) for c in self.checks] + [5])
        lines = [f"{'STATUS':6}  {'CHECK':{width}}  DETAIL"]
        for c in sorted(self.checks, key=lambda c: {NOGO: 0, WARN: 1, GO: 2}[c.status]):
            first, *rest = c.detail.splitlines() or [""]
            lines.append(f"{c.status:6}  {c.check:{width}}  {first}")
            lines += [f"{'':6}  {'':{width}}  {line}" for line in rest]
        verdict = ("GO" if self.ok else f"NO-GO: {self.count(NOGO)} problem(s) to fix") + \
            f" ({self.count(WARN)} warning(s); {sum(self.jobs.values()):,} jobs planned; {self.seconds:.1f} s)"
        return "\n".join(lines + ["", verdict])

    def to_json(self) -> str:
        return json.dumps({"ok": self.ok, "seconds": round(self.seconds, 2), "jobs": self.jobs,
                           "disk": self.disk, "checks": [asdict(c) for c in self.checks]}, indent=2)


def names(items: list[str], limit: int = 5) -> str:
    """A row's list of names, cut after ``limit``: ``a, b, c, d, e and 3 more``."""
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")
