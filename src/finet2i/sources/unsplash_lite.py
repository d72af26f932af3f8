"""The Unsplash Lite dataset (https://github.com/unsplash/datasets), read offline from its files.

The dataset ships ``photos.tsv000`` (TSV, a header line, one row per photo; larger releases split the table
into ``photos.tsv000``, ``photos.tsv001``, ...). Columns used (the dataset's DOCS.md): ``photo_id``,
``photo_url`` (the photo's page), ``photo_image_url`` (an imgix URL that takes ``w``/``q``/``fm`` parameters),
``photo_width``, ``photo_height``, ``photo_description``, ``ai_description``, ``photographer_username``,
``photographer_first_name``, ``photographer_last_name``. Other columns are ignored. The Lite dataset allows
commercial and non-commercial use; photos fall under the Unsplash License; credit the photographer.
"""

from __future__ import annotations

import csv
import sys
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from finet2i.sources import MISSING_FIELDS, manifest_row, missing

LICENSE = "Unsplash License"
REQUIRED = ("source_id", "image_url", "page_url")
# The photos table's header as the dataset's DOCS.md lists it (what a fixture of it must look like).
DOCUMENTED_COLUMNS = (
    "photo_id", "photo_url", "photo_image_url", "photo_submitted_at", "photo_featured", "photo_width",
    "photo_height", "photo_aspect_ratio", "photo_description", "photographer_username", "photographer_first_name",
    "photographer_last_name", "exif_camera_make", "exif_camera_model", "exif_iso", "exif_aperture_value",
    "exif_focal_length", "exif_exposure_time", "photo_location_name", "photo_location_latitude",
    "photo_location_longitude", "photo_location_country", "photo_location_city", "stats_views", "stats_downloads",
    "ai_description", "ai_primary_landmark_name", "ai_primary_landmark_latitude", "ai_primary_landmark_longitude",
    "ai_primary_landmark_confidence", "blur_hash")
COLUMNS = ("photo_id", "photo_url", "photo_image_url", "photo_width", "photo_height", "photo_description",
           "ai_description", "photographer_username", "photographer_first_name", "photographer_last_name")


def tables(path: str | Path) -> list[Path]:
    """The photos table's parts: the file itself, or ``photos.tsv*`` in a folder (in order)."""
    p = Path(path)
    if p.is_file():
        return [p]
    parts = sorted(q for q in p.glob("photos.tsv*") if q.is_file())
    if not parts:
        raise FileNotFoundError(f"{p}: no photos.tsv000 here; point the unsplash_lite source's path at the "
                                f"unzipped Unsplash Lite dataset folder or at its photos.tsv000")
    return parts


def image_url(url: str | None, width: int | None) -> str | None:
    """The photo at ``width`` pixels wide (imgix's ``w``), or the original when ``width`` is null."""
    if not url or not width:
        return url or None
    p = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(p.query))
    q.update(w=str(width), fm="jpg", q="90")
    return urllib.parse.urlunsplit(p._replace(query=urllib.parse.urlencode(sorted(q.items()))))


def read_rows(entry: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    csv.field_size_limit(sys.maxsize)
    rows = []
    for part in tables(entry["path"]):
        with open(part, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            absent = [c for c in ("photo_id", "photo_image_url", "photo_url") if c not in (reader.fieldnames or [])]
            if absent:
                raise ValueError(f"{part}: not an Unsplash photos table (no {', '.join(absent)} column in the "
                                 f"header line)")
            for r in reader:
                rows.append(_row(r, entry, name))
    return rows


def _row(r: Mapping[str, Any], entry: Mapping[str, Any], name: str) -> dict[str, Any]:
    def get(k: str) -> str | None:
        v = (r.get(k) or "").strip()
        return v or None

    user = get("photographer_username")
    full = " ".join(x for x in (get("photographer_first_name"), get("photographer_last_name")) if x)
    row = manifest_row(
        source=name, source_id=get("photo_id"), image_url=image_url(get("photo_image_url"), entry.get("width")),
        page_url=get("photo_url"), photographer=full or user,
        photographer_url=f"https://unsplash.com/@{user}" if user else None, license=LICENSE,
        width=_int(get("photo_width")), height=_int(get("photo_height")),
        source_text=get("ai_description") or get("photo_description"), query="")
    gone = missing(row, REQUIRED)
    if gone:
        row.update(problem=MISSING_FIELDS, detail=f"the row has no {', '.join(gone)}")
    return row


def _int(v: str | None) -> int | None:
    try:
        return int(float(v)) if v else None
    except ValueError:
        return None
