"""The Unsplash Lite dataset (https://github.com/unsplash/datasets), read offline from its files, as the dataset's
own loaders read them.

The photos table is ``photos.tsv000`` in most releases and ``photos.csv000`` in those before 1.4.x (the
extension changed back and forth: unsplash/datasets PR #71, release 1.4.1); larger releases split it into
``...000``, ``...001``, .... Either name is found, every part read in order. The official loaders
(``how-to/psql/load-data-*.sql``: ``FORMAT csv, DELIMITER E'\\t'``; the pandas notebook: ``read_csv(sep='\\t')``)
read the parts as *quoted CSV with a tab delimiter*: ``"`` quotes a field, ``""`` is a quote inside one, and a
quoted field may span lines (issue #29 found a record with an embedded newline). So does :func:`read_rows`, with
Python's csv module in its default quoting; a header line per part names the columns.

Columns used (the dataset's DOCS.md): ``photo_id``, ``photo_url`` (the photo's page), ``photo_image_url`` (an imgix
URL that takes ``w``/``q``/``fm`` parameters), ``photo_width``, ``photo_height``, ``photo_description``,
``ai_description``, ``photographer_username``, ``photographer_first_name``, ``photographer_last_name``. Other
columns are ignored. The photos come under the Unsplash Dataset Terms (:mod:`finet2i.sources.terms`): internal use
to train models, no publishing or redistribution of any portion without Unsplash's written permission.
"""

from __future__ import annotations

import csv
import sys
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from finet2i.sources import MISSING_FIELDS, manifest_row, missing
from finet2i.sources.terms import SITES

LICENSE = SITES["unsplash_lite"].license
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


PART_GLOBS = ("photos.tsv*", "photos.csv*")  # the photos table's names across releases


def tables(path: str | Path) -> list[Path]:
    """The photos table's parts: the file itself, or ``photos.tsv*`` / ``photos.csv*`` in a folder (in order)."""
    p = Path(path)
    if p.is_file():
        return [p]
    parts = sorted({q for pattern in PART_GLOBS for q in p.glob(pattern) if q.is_file()})
    if not parts:
        raise FileNotFoundError(f"{p}: no photos.tsv000 or photos.csv000 here; point the unsplash_lite source's "
                                f"path at the unzipped Unsplash Lite dataset folder or at its photos table")
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
            # Quoted CSV with a tab delimiter, as the official loaders read it (a quoted field may span lines).
            reader = csv.DictReader(f, delimiter="\t", quotechar='"', doublequote=True)
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
