"""What each photo site's terms say about this use, and the gate that refuses a run without a statement of
permission (docs/real-sources.md, "Terms").

Listing photos from Pexels, Pixabay or Unsplash Lite to build a training set is exactly the use their terms
single out (the research quoted below; re-read the pages, they change). So a ``curated.sources`` entry of those
types must say, in the config, how this run is allowed to use the source::

    - type: pexels
      queries: [forest]
      terms:
        permission: "written permission from Pexels, 2026-03-02, ticket #12345"   # required, your words
        redistribute: false    # default: the photos never enter the shareable dataset (results/dataset/)
        license: null          # default: the type's license below; a written agreement may name its own

Without ``terms`` (or with the shipped ``CHANGE_ME`` placeholder) ``finet2i check-config``, the Snakefile's
parse (so the run's start), ``finet2i preflight`` and the listing job itself refuse, naming the source and the
page to read, before any request is sent. The statement is recorded, not verified: it is the user's.

A folder or URL-list source (photos the user brought) may carry the same ``terms`` (all keys optional); without
it its photos are redistributable and their license "not stated in the config" (the card says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PLACEHOLDER = "CHANGE_ME"


@dataclass(frozen=True)
class SiteTerms:
    """A source type's terms, as far as the project's research could read them (quotes in docs/real-sources.md)."""

    type: str
    license: str  # what a sample of this source records as its license (unless the config's terms name another)
    summary: str  # what the terms say about building datasets / training / redistribution, short
    attribution: str  # the credit the site asks for
    pages: tuple[str, ...]  # the pages to read, the first one first

    @property
    def page(self) -> str:
        return self.pages[0]


SITES: dict[str, SiteTerms] = {
    "pexels": SiteTerms(
        type="pexels",
        license="Pexels License",
        summary=("Pexels' help centre: \"Don't use the API to build datasets or train ML/AI models\" unless you "
                 "have explicit permission from Pexels; the Terms forbid \"bulk, large-scale, or systematic "
                 "copying unless explicit permission has been granted\" and distributing photos on a "
                 "\"Standalone\" basis (unaltered)."),
        attribution="\"Photo by <photographer> on Pexels\" with a link to the photo page, and a prominent link "
                    "to Pexels (API guidelines)",
        pages=("https://help.pexels.com/hc/en-us/articles/900005880463-What-are-the-Terms-and-Conditions",
               "https://www.pexels.com/api/documentation/", "https://www.pexels.com/license/",
               "https://www.pexels.com/terms-of-service/"),
    ),
    "pixabay": SiteTerms(
        type="pixabay",
        license="Pixabay Content License",
        summary=("The API docs: \"Systematic mass downloads are not allowed\", answers must be cached for 24 h, "
                 "show users where the images are from. The Terms forbid distributing content on a "
                 "\"Standalone\" basis; their wording on machine learning could not be read first-hand (copies "
                 "conflict): read it yourself. Hits flagged noAiTraining or isAiGenerated are dropped."),
        attribution="show where the images are from (the API docs ask it; the license does not require credit)",
        pages=("https://pixabay.com/api/docs/", "https://pixabay.com/service/terms/",
               "https://pixabay.com/service/license-summary/"),
    ),
    "unsplash_lite": SiteTerms(
        type="unsplash_lite",
        license="Unsplash Dataset Terms (Lite)",
        summary=("TERMS.md 2.A: the Lite photos may be used \"internally ... to train machine learning models or "
                 "algorithms for your internal business purposes\"; 3.A/3.B: without Unsplash's written permission "
                 "you must not \"disclose, deliver, disseminate, or publish any portion\" nor \"redistribute\" the "
                 "data. The README: \"It cannot be used to redistribute the images\"."),
        attribution="credit the dataset as \"Unsplash Lite Dataset <version>\" with a link to unsplash.com/data "
                    "(the dataset's README); keep every proprietary notice (TERMS 6)",
        pages=("https://github.com/unsplash/datasets/blob/master/TERMS.md", "https://unsplash.com/data"),
    ),
}
GATED_TYPES = tuple(SITES)  # the types whose entries must state their terms


class TermsRefused(ValueError):
    """A listed source without a statement of how this run may use it."""


def site(entry_type: str) -> SiteTerms | None:
    return SITES.get(entry_type)


def stated(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The entry's ``terms`` mapping, or None."""
    terms = entry.get("terms") if isinstance(entry, Mapping) else None
    return terms if isinstance(terms, Mapping) else None


def refusal(entry: Mapping[str, Any], where: str) -> str | None:
    """Why ``entry`` may not be used (a sentence naming the source and the page to read), or None."""
    kind = entry.get("type") if isinstance(entry, Mapping) else None
    terms = SITES.get(str(kind)) if kind else None
    if terms is None:
        return None
    name = str(entry.get("name") or kind)
    given = stated(entry)
    permission = str((given or {}).get("permission") or "").strip()
    if given is None:
        problem = "states no terms"
    elif not permission:
        problem = "has terms without a permission"
    elif PLACEHOLDER in permission:
        problem = f"still has the {PLACEHOLDER} placeholder in terms.permission"
    else:
        return None
    return (f"{where} ({kind} source {name!r}) {problem}: {terms.summary} Read {terms.page} (also "
            f"{', '.join(terms.pages[1:]) or '-'}), then say in the config how this run is allowed to use it: "
            f"terms: {{permission: \"<the permission you hold, or the clause you rely on>\", redistribute: false}}. "
            f"Nothing was requested from {kind}.")


def require(entry: Mapping[str, Any], where: str = "curated source") -> None:
    """Raise :class:`TermsRefused` unless the entry states its terms (the listing's own last gate)."""
    why = refusal(entry, where)
    if why is not None:
        raise TermsRefused(why)


@dataclass(frozen=True)
class Rights:
    """What travels with every sample of one source: its license and whether it may be redistributed."""

    source: str  # the source's name (the release's image_generator)
    type: str  # folder, url_list, unsplash_lite, pexels, pixabay
    license: str | None
    redistributable: bool
    permission: str | None
    summary: str | None
    attribution: str | None
    pages: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "type": self.type, "license": self.license,
                "redistributable": self.redistributable, "permission": self.permission, "summary": self.summary,
                "attribution": self.attribution, "pages": list(self.pages)}


def _own_default(key: str) -> Any:
    """A folder's terms default, from the schema (definitions.source_terms_own): a plain-string source has none."""
    from finet2i.core.settings import _schema

    return _schema()["definitions"]["source_terms_own"]["properties"][key]["default"]


def rights(entry: Any, name: str) -> Rights:
    """The rights of one ``curated.sources`` entry (validated: defaults filled) whose samples are named ``name``."""
    kind = str(entry.get("type") or "folder") if isinstance(entry, Mapping) else "folder"
    given = stated(entry) or {}
    known = SITES.get(kind)
    license_ = given.get("license") or (known.license if known else None)
    redistribute = given.get("redistribute")
    if redistribute is None:  # an entry that was not validated, or a plain path: the schema's default
        redistribute = False if known else _own_default("redistribute")
    return Rights(source=name, type=kind, license=license_, redistributable=bool(redistribute),
                  permission=given.get("permission"), summary=known.summary if known else None,
                  attribution=known.attribution if known else None, pages=known.pages if known else ())


def rights_by_name(sources: Any) -> dict[str, dict[str, Any]]:
    """Per source name (the samples' ``source``), its :class:`Rights` as a dict; two entries of one name (two
    folders called ``pexels``) share the stricter: redistributable only if both are."""
    from finet2i.sources import source_name

    out: dict[str, dict[str, Any]] = {}
    for entry in sources or []:
        r = rights(entry, source_name(entry)).as_dict()
        if r["source"] in out:
            first = out[r["source"]]
            r["redistributable"] = bool(first["redistributable"] and r["redistributable"])
            r["license"] = first["license"] if first["license"] == r["license"] else \
                "; ".join(x for x in (first["license"], r["license"]) if x) or None
        out[r["source"]] = r
    return out


def describe(entry: Any, where: str) -> str | None:
    """One line for check-config and preflight: a site source's terms summary, its pages and what the config
    states (None for a source that is not a photo site)."""
    kind = entry.get("type") if isinstance(entry, Mapping) else None
    known = SITES.get(str(kind)) if kind else None
    if known is None:
        return None
    given = stated(entry) or {}
    share = "its photos may ship in results/dataset/" if given.get("redistribute") else \
        "its photos never enter results/dataset/"
    return (f"{where} ({kind} {str(entry.get('name') or kind)!r}): {known.summary} Terms: "
            f"{', '.join(known.pages)}. This config states: permission \"{given.get('permission')}\"; "
            f"redistribute: {str(bool(given.get('redistribute'))).lower()} ({share}).")
