"""The curated set's real sources (paper 3.2): what a ``curated.sources`` entry is, and the manifest a listing writes.

Source types (``type:`` in a ``curated.sources`` entry; a plain path, or ``{path, name}``, is a ``folder`` or a
``url_list`` as before):

* ``unsplash_lite``: the Unsplash Lite dataset's ``photos.tsv000`` (or its folder), read offline
  (:mod:`finet2i.sources.unsplash_lite`);
* ``pexels``: Pexels API v1 search / curated (:mod:`finet2i.sources.pexels`);
* ``pixabay``: the Pixabay API (:mod:`finet2i.sources.pixabay`).

Each is listed by the ``curated_list`` rule (:mod:`finet2i.sources.listing`) into a manifest,
``results/curated_list/<name>.parquet``: one row per photo, with the columns of :data:`MANIFEST_COLUMNS`.
``curated_ingest`` downloads from the manifests; the credits travel with every record to the release.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

LISTED_TYPES = ("unsplash_lite", "pexels", "pixabay")  # sources that are listed into a manifest first
API_TYPES = ("pexels", "pixabay")  # sources that need a key and the network to be listed

# A manifest row: where the photo is, who made it, under which license, and the source's own words about it.
MANIFEST_COLUMNS = (
    "source",  # the source's name (image_generator in the release)
    "source_id",  # the photo's id in its source, as text
    "image_url",  # the image at the chosen size (fetched by curated_ingest)
    "page_url",  # the photo's page: the credit link, and the locator its release key is made from
    "photographer",
    "photographer_url",
    "license",
    "width",  # the size the source declares for the photo (its original)
    "height",
    "source_text",  # Unsplash ai_description (else description), Pexels alt, Pixabay tags
    "query",  # the query that listed it first ("" for a dataset)
    "problem",  # a drop reason found while listing (missing_fields, no_ai_training, ai_generated), else null
    "detail",
)
MISSING_FIELDS = "missing_fields"
NO_AI_TRAINING = "no_ai_training"  # Pixabay: the hit says noAiTraining (its creator opted out of AI training)
AI_GENERATED = "ai_generated"  # Pixabay: the hit says isAiGenerated (not a photograph: not for a real-photo set)


def is_listed(entry: Any) -> bool:
    return isinstance(entry, Mapping) and entry.get("type") in LISTED_TYPES


def listed_name(entry: Mapping[str, Any]) -> str:
    """A listed source's name: its ``name``, else its type (``pexels``)."""
    return str(entry.get("name") or entry["type"])


def source_path(source: Any) -> str:
    """Where an entry's items are read from: a listed source's manifest, else its folder or URL-list file."""
    if is_listed(source):
        return manifest_path(listed_name(source))
    return str(source["path"]) if isinstance(source, Mapping) else str(source)


def source_name(source: Any) -> str:
    """What the dataset records as a real image's ``image_generator``: the entry's ``name`` (``pexels``), else
    the folder's name, else the URL-list file's stem (one stat of the path to tell which)."""
    if is_listed(source):
        return listed_name(source)
    if isinstance(source, Mapping) and source.get("name"):
        return str(source["name"])
    p = Path(source_path(source).rstrip("/"))
    return p.name if p.is_dir() else p.stem


def manifest_path(name: str) -> str:
    return f"results/curated_list/{name}.parquet"


def manifest_row(**values: Any) -> dict[str, Any]:
    row = dict.fromkeys(MANIFEST_COLUMNS)
    row.update(values)
    for k in ("source_id", "page_url", "image_url"):
        if row[k] is not None:
            row[k] = str(row[k])
    return row


def missing(row: Mapping[str, Any], required: tuple[str, ...]) -> list[str]:
    return [k for k in required if row.get(k) in (None, "")]
