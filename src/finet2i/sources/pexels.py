"""Pexels API v1 (https://www.pexels.com/api/documentation/), as assumed here (docs/real-sources.md):

``GET {api_url}/search?query=..&per_page<=80&page=N`` (optional ``orientation``, ``size``, ``locale``) and
``GET {api_url}/curated?per_page=..&page=N``, the key in the ``Authorization`` header. An answer is
``{"page", "per_page", "photos": [...], "total_results", "next_page"}``; the last page has no ``next_page``.
A photo: ``id``, ``width``, ``height``, ``url`` (its page), ``photographer``, ``photographer_url``, ``alt`` and
``src`` {``original``, ``large2x``, ``large``, ``medium``, ...}. Limits: 200 requests/hour, 20,000/month by
default, ``X-Ratelimit-Limit/Remaining/Reset`` counting the *month* (Reset: the UNIX time of the monthly
rollover; not sent with a 429). Terms (:mod:`finet2i.sources.terms`): no datasets or ML training through the API
without explicit permission from Pexels; credit the photographer and Pexels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from finet2i.sources import MISSING_FIELDS, manifest_row, missing
from finet2i.sources.terms import SITES

LICENSE = SITES["pexels"].license
CURATED = ":curated"  # the pseudo-query that lists /curated
REQUIRED = ("source_id", "image_url", "page_url")


def queries(entry: Mapping[str, Any]) -> list[str]:
    return [*entry.get("queries", []), *([CURATED] if entry.get("curated") else [])]


def request(entry: Mapping[str, Any], query: str, page: int, key: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    base = str(entry["api_url"]).rstrip("/")
    params: dict[str, Any] = {"per_page": entry["per_page"], "page": page}
    if query == CURATED:
        return f"{base}/curated", params, {"Authorization": key}
    params = {"query": query, **params}
    for k, param in (("orientation", "orientation"), ("min_size", "size"), ("locale", "locale")):
        if entry.get(k):
            params[param] = entry[k]
    return f"{base}/search", params, {"Authorization": key}


def parse(body: Any, entry: Mapping[str, Any], name: str, query: str,
          page: int) -> tuple[list[dict[str, Any]], bool]:
    """The manifest rows of one answer, and whether it was the last page."""
    if not isinstance(body, dict) or not isinstance(body.get("photos"), list):
        raise ValueError("a Pexels answer is an object with a `photos` list")
    rows = []
    for p in body["photos"]:
        p = p if isinstance(p, dict) else {}
        src = p.get("src") if isinstance(p.get("src"), dict) else {}
        row = manifest_row(
            source=name, source_id=p.get("id"), image_url=src.get(entry["image_size"]), page_url=p.get("url"),
            photographer=p.get("photographer"), photographer_url=p.get("photographer_url"), license=LICENSE,
            width=_int(p.get("width")), height=_int(p.get("height")), source_text=p.get("alt") or None,
            query="curated" if query == CURATED else query)
        gone = missing(row, REQUIRED)
        if gone:
            row.update(problem=MISSING_FIELDS, detail=f"the answer has no {', '.join(gone)} for this photo")
        rows.append(row)
    return rows, not body.get("next_page") or not body["photos"]


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
