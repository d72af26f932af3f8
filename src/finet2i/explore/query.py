"""What the explorer's queries are made of: the grid's filters as they travel in the URL (:class:`Query`, with the
facets and orders it may name), the names a request may carry (:func:`safe_id`), :class:`ExploreError` for a
request or an outputs folder that cannot be served, and a list of parquet files written as DuckDB SQL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SAFE_ID = re.compile(r"^(?!\.)[A-Za-z0-9_.:-]{1,200}$")  # a file or folder name: never "." or ".."


class ExploreError(ValueError):
    """A request or an outputs folder the explorer cannot serve; the message says what to do."""


class BrokenIndex(ExploreError):
    """A release index row that does not match its tar (an offset or size outside the member it names): the
    page says which file to rebuild; the explorer serves no bytes from it."""


MAX_PAGE = 1_000_000  # pages of a grid or a dropped list; beyond it no page has rows (and SQL offsets overflow)
MAX_ABS_NUMBER = 1e9  # a score filter beyond this is no score


def page_number(params: Mapping[str, str], key: str = "page") -> int:
    """A page number from the query string: an integer in 0..MAX_PAGE (a negative one is page 0), else 400."""
    raw = (params.get(key) or "").strip()
    if not raw:
        return 0
    if not re.fullmatch(r"-?\d{1,12}", raw):
        raise ExploreError(f"{key}={raw[:40]!r} is not a page number")
    page = max(0, int(raw))
    if page > MAX_PAGE:
        raise ExploreError(f"{key}={page}: pages go up to {MAX_PAGE:,}")
    return page


@dataclass(frozen=True)
class Facet:
    param: str  # URL parameter
    label: str
    column: str  # column of the samples table


FACETS: tuple[Facet, ...] = (
    Facet("subset", "subset", "subset"),
    Facet("category", "category", "category"),
    Facet("subcategory", "sub-category", "subcategory"),
    Facet("style", "style", "style"),
    Facet("task", "task", "task_label"),
    Facet("generator", "image generator", "image_generator"),
    Facet("aspect", "aspect ratio", "image_aspect_ratio"),
    Facet("prompt_used", "prompt used", "prompt_used"),
)
FACET_BY_PARAM = {f.param: f for f in FACETS}
ORDERS = {"": "rid", "score": "score DESC NULLS LAST, rid", "-score": "score ASC NULLS LAST, rid"}


def _number(params: Mapping[str, str], key: str) -> float | None:
    """A finite number within +-MAX_ABS_NUMBER from the query string (nan, inf, 1e999 are refused), else 400."""
    raw = (params.get(key) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ExploreError(f"{key}={raw[:40]!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > MAX_ABS_NUMBER:
        raise ExploreError(f"{key}={raw[:40]!r} is not a finite number within +-{MAX_ABS_NUMBER:g}")
    return value


@dataclass(frozen=True)
class Query:
    """The grid's filters, as they travel in the URL."""

    facets: tuple[tuple[str, str], ...] = ()  # (param, value), sorted
    text: str = ""
    min_score: float | None = None
    max_score: float | None = None
    order: str = ""
    page: int = 0

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Query:
        facets = tuple(sorted((k, v) for k, v in params.items() if k in FACET_BY_PARAM and v != ""))
        order = params.get("order", "")
        if order not in ORDERS:
            raise ExploreError(f"order={order!r}: expected one of {sorted(ORDERS)}")
        return cls(facets, (params.get("q") or "").strip(), _number(params, "min_score"),
                   _number(params, "max_score"), order, page_number(params))

    def params(self, **changes: Any) -> dict[str, str]:
        """URL parameters of this query with ``changes`` applied (None or "" removes a parameter)."""
        out: dict[str, Any] = dict(self.facets)
        out.update({"q": self.text, "min_score": self.min_score, "max_score": self.max_score,
                    "order": self.order, "page": self.page or None})
        out.update(changes)
        return {k: str(v) for k, v in out.items() if v not in (None, "")}

    def value(self, param: str) -> str:
        return dict(self.facets).get(param, "")


def safe_id(value: str) -> bool:
    return bool(_SAFE_ID.match(value))


# A list of parquet files as DuckDB reads it (single quotes doubled): the catalog's and the stages' queries.
def _esc(path: Path) -> str:
    return str(path).replace("'", "''")


def _files_sql(paths: Sequence[Path]) -> str:
    return "[" + ", ".join(f"'{_esc(p)}'" for p in paths) + "]"
