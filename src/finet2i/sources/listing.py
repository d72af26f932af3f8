"""Listing a real source into a manifest (rule ``curated_list``): resumable, paced, and without the key on disk.

One job per listed source (``unsplash_lite``, ``pexels``, ``pixabay``), on a node with network (the rule is a
``localrule``: it runs where Snakemake runs, never on an offline compute node). Nothing is read or requested
before the source's terms gate passes (:mod:`finet2i.sources.terms`: the config states how this run may use
it). For an API source it walks each query's pages in order, page 1, 2, ... until the last page or a cap
(``max_per_query`` and ``max_photos`` have finite defaults, and no query is asked for more pages than its cap
needs: a server that answers ``next_page`` forever is listed no further).

**Resume and the answer cache** are one thing: every answer is stored, atomically, as it arrives, in
``results/curated_list/<name>.pages/<request id>.json`` (the request id hashes the endpoint and its parameters
*without* the key). A rerun (a killed job, a longer query list, a higher cap) reads the stored answers and asks
the API only for pages it has no answer for, so no answered request is ever sent twice. An answer older than
the source's ``cache_hours`` is asked again (Pixabay's terms: cache 24 h); ``null`` keeps answers for good.

The manifest (``results/curated_list/<name>.parquet``, columns :data:`finet2i.sources.MANIFEST_COLUMNS`) is
built from the stored answers in query and page order, so a resumed listing writes the same manifest as an
uninterrupted one. A photo listed by two queries is written once (the first); the stats count the repeats. A
photo whose answer lacks a needed field keeps its row, with ``problem: missing_fields``: ``curated_ingest``
drops it with that reason, so every listed photo is accounted for in the funnel.

The key comes from the environment variable the source names (``key_env``); it is sent to the API and nowhere
else: not in the stored answers (an answer that echoes it back is scrubbed before it is stored or parsed), the
request ids, the manifest, the stats, the log, or an error message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from finet2i.core import shards
from finet2i.sources import MANIFEST_COLUMNS, listed_name, pexels, pixabay, terms, unsplash_lite
from finet2i.sources.http import ApiError, PoliteClient, RateLimit

log = logging.getLogger(__name__)

STAGE = "curated_list"
APIS = {"pexels": pexels, "pixabay": pixabay}
SECRET_PARAMS = ("key",)  # Pixabay's key parameter; Pexels sends it as a header

MANIFEST_SCHEMA = pa.schema([(c, pa.int64() if c in ("width", "height") else pa.string()) for c in MANIFEST_COLUMNS])


def request_id(url: str, params: Mapping[str, Any]) -> str:
    public = sorted((k, str(v)) for k, v in params.items() if k not in SECRET_PARAMS)
    return hashlib.sha256(json.dumps([url, public]).encode()).hexdigest()[:24]


def state_dir(manifest: str | os.PathLike[str]) -> Path:
    return Path(f"{manifest}.pages")


def _stored(path: Path, cache_hours: float | None, client: PoliteClient) -> Any | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or cut off by a kill before the rename (never: writes are atomic)
    if cache_hours is not None and time.time() - float(saved.get("fetched_at", 0)) > cache_hours * 3600:
        return None
    return client.scrub_body(saved["body"])  # an answer stored before scrubbing existed is cleaned on the way out


def _store(path: Path, shown: str, body: Any) -> None:
    with shards.atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"request": shown, "fetched_at": time.time(), "body": body}))


def api_key(entry: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    env = str(entry["key_env"])
    key = (environ.get(env) or "").strip()
    if not key:
        raise ApiError(f"curated source {listed_name(entry)!r} ({entry['type']}): the environment variable "
                       f"${env} is not set; put the API key there on the node that runs the listing "
                       f"(README: 'Real photos: Unsplash Lite, Pexels, Pixabay')")
    return key


def list_api(entry: Mapping[str, Any], pages: Path, *, environ: Mapping[str, str],
             sleep: Callable[[float], None] = time.sleep) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every row the source's queries list (caps applied, repeats removed) and what it cost."""
    name, api = listed_name(entry), APIS[entry["type"]]
    key = api_key(entry, environ)
    rate = entry["rate_limit"]
    client = PoliteClient(rate=RateLimit(int(rate["requests"]), float(rate["seconds"])), key_env=entry["key_env"],
                          secrets=(key,), secret_params=SECRET_PARAMS, timeout_s=float(entry["timeout_s"]),
                          retries=int(entry["retries"]), backoff_s=float(entry["backoff_s"]),
                          max_wait_s=float(entry["max_wait_s"]), deadline_s=float(entry["deadline_s"]),
                          max_bytes=int(entry["max_answer_bytes"]), sleep=sleep)
    cap_query, cap_total = int(entry["max_per_query"]), int(entry["max_photos"])
    max_pages = -(-cap_query // int(entry["per_page"])) + 1  # one more page than the cap needs, then stop
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    repeats = 0
    from_cache = 0
    per_query: dict[str, int] = {}
    try:
        for query in api.queries(entry):
            listed = 0
            page = 1
            while True:
                url, params, headers = api.request(entry, query, page, key)
                path = pages / f"{request_id(url, params)}.json"
                shown = client.shown(url, params)
                body = _stored(path, entry.get("cache_hours"), client)
                if body is not None:
                    from_cache += 1
                else:
                    body = client.get_json(url, params, headers).body
                    try:
                        api.parse(body, entry, name, query, page)
                    except ValueError as e:
                        raise ApiError(f"{shown}: the answer is not shaped as the API documents ({e}); nothing "
                                       f"was stored for this page, rerun to ask again") from None
                    _store(path, shown, body)
                page_rows, last = api.parse(body, entry, name, query, page)
                for row in page_rows:
                    if listed >= cap_query:
                        break
                    listed += 1
                    sid = row["source_id"] or f"{query}#{page}#{listed}"
                    if sid in seen:
                        repeats += 1
                        continue
                    seen.add(sid)
                    rows.append(row)
                    if len(rows) >= cap_total:
                        break
                if last or listed >= cap_query or len(rows) >= cap_total:
                    break
                if page >= max_pages:
                    log.warning("%s: query %r: still a next page after %d pages (%d photos listed): stopped "
                                "(max_per_query %d)", name, query, page, listed, cap_query)
                    break
                page += 1
            per_query[query] = listed
            if len(rows) >= cap_total:
                break
    except ApiError as e:
        raise ApiError(client.scrub(str(e))) from None
    cost = {"requests_sent": client.requests_sent, "answers_from_cache": from_cache,
            "listed_again": repeats, "waited_s": round(client.waited_s, 3), "per_query": per_query}
    return rows, cost


def run_listing(entry: Mapping[str, Any], out_path: str | os.PathLike[str], stats_path: str | os.PathLike[str], *,
                environ: Mapping[str, str] | None = None,
                sleep: Callable[[float], None] = time.sleep) -> shards.StageStats:
    """List one source into its manifest, then write its stats (the completion marker)."""
    started = time.monotonic()
    name = listed_name(entry)
    terms.require(entry, f"curated source {name!r}")  # before any file is read or request sent
    if entry["type"] == "unsplash_lite":
        rows, cost = unsplash_lite.read_rows(entry, name), {"requests_sent": 0}
        seen: set[str] = set()
        unique = []
        for r in rows:
            if r["source_id"] is None or r["source_id"] not in seen:
                seen.add(r["source_id"])
                unique.append(r)
        cost["listed_again"] = len(rows) - len(unique)
        rows = unique[: entry["max_photos"]] if entry.get("max_photos") is not None else unique
    else:
        rows, cost = list_api(entry, state_dir(out_path), environ=os.environ if environ is None else environ,
                              sleep=sleep)
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    with shards.atomic_path(out_path) as tmp:
        pq.write_table(table, tmp)
    verdicts = [shards.mark({"id": r["source_id"]}, r["problem"]) for r in rows]
    problems = Counter(r["problem"] for r in rows if r["problem"])
    log.info("%s: %d photos listed (%s), %s", name, len(rows), dict(problems) or "no problems", cost)
    return shards.write_stats(stats_path, verdicts, stage=STAGE, shard=name, started=started, **cost)
