"""The Pixabay API (https://pixabay.com/api/docs/), as assumed here (docs/real-sources.md):

``GET {api_url}?key=..&q=..&image_type=photo&per_page=3..200&page=N`` (also ``min_width``, ``min_height``,
``orientation``, ``safesearch``, ``order``, ``editors_choice``). An answer is ``{"total", "totalHits", "hits"}``;
``totalHits`` is what the API will hand out for the query (by default at most 500), so the last page is the one
that reaches it. A hit: ``id``, ``pageURL``, ``tags``, ``imageWidth``, ``imageHeight``, ``webformatURL``,
``largeImageURL`` (1280 px at most), ``user``, ``user_id``; with full API access only, ``fullHDURL`` and
``imageURL`` (config: ``full_api_access``). A wrong key answers HTTP 400 "Invalid or missing API key". Limits:
100 requests per 60 s, ``X-RateLimit-Limit/Remaining/Reset`` (Reset: seconds). Terms: answers cached 24 h,
images downloaded (no hotlinking), no systematic mass downloads, show where images come from
(:mod:`finet2i.sources.terms`).

Hits carry flags that the API docs we could read do not describe (``noAiTraining``, ``isAiGenerated``,
``isGRated``, ``isLowQuality``; seen in live answers mirrored by public client code). Read by their names:
``noAiTraining: true`` (the creator opted out of AI training) lists the photo with ``problem: no_ai_training``,
``isAiGenerated: true`` (not a photograph: this is a real-photo set) with ``ai_generated``; curated_ingest drops
both with that reason, so they are counted in the funnel. The other two are recorded in ``detail`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from finet2i.sources import AI_GENERATED, MISSING_FIELDS, NO_AI_TRAINING, manifest_row, missing
from finet2i.sources.terms import SITES

LICENSE = SITES["pixabay"].license
REQUIRED = ("source_id", "image_url", "page_url")


def queries(entry: Mapping[str, Any]) -> list[str]:
    return list(entry.get("queries", []))


def request(entry: Mapping[str, Any], query: str, page: int, key: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    params: dict[str, Any] = {"key": key, "q": query, "image_type": entry["image_type"],
                              "per_page": entry["per_page"], "page": page,
                              "safesearch": str(bool(entry["safesearch"])).lower(), "order": entry["order"]}
    if entry.get("editors_choice"):
        params["editors_choice"] = "true"
    for k in ("min_width", "min_height", "orientation", "lang"):
        if entry.get(k):
            params[k] = entry[k]
    return str(entry["api_url"]), params, {}


def parse(body: Any, entry: Mapping[str, Any], name: str, query: str,
          page: int) -> tuple[list[dict[str, Any]], bool]:
    if not isinstance(body, dict) or not isinstance(body.get("hits"), list):
        raise ValueError("a Pixabay answer is an object with a `hits` list")
    rows = []
    for h in body["hits"]:
        h = h if isinstance(h, dict) else {}
        user, user_id = h.get("user"), h.get("user_id")
        row = manifest_row(
            source=name, source_id=h.get("id"), image_url=h.get(entry["image_size"]), page_url=h.get("pageURL"),
            photographer=user, photographer_url=f"https://pixabay.com/users/{user}-{user_id}/"
            if user and user_id is not None else None, license=LICENSE,
            width=_int(h.get("imageWidth")), height=_int(h.get("imageHeight")), source_text=h.get("tags") or None,
            query=query)
        gone = missing(row, REQUIRED)
        if h.get("noAiTraining") is True:
            row.update(problem=NO_AI_TRAINING, detail="the hit says noAiTraining: true (its creator opted out of "
                                                      "AI training)")
        elif h.get("isAiGenerated") is True:
            row.update(problem=AI_GENERATED, detail="the hit says isAiGenerated: true (not a photograph)")
        elif gone:
            row.update(problem=MISSING_FIELDS, detail=f"the answer has no {', '.join(gone)} for this photo")
        elif h.get("isGRated") is False or h.get("isLowQuality") is True:
            row.update(detail=f"isGRated: {h.get('isGRated')}, isLowQuality: {h.get('isLowQuality')}")
        rows.append(row)
    return rows, _last(body, len(body["hits"]), page, entry)


def _last(body: Mapping[str, Any], n: int, page: int, entry: Mapping[str, Any]) -> bool:
    total = _int(body.get("totalHits"))
    if n < int(entry["per_page"]) or total is None:
        return True
    return page * int(entry["per_page"]) >= total


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
