"""The explorer's HTTP server: the standard library's threading server, a handful of GET routes and one POST.

Routes: ``/`` (the grid; filters in the query string), ``/sample/<folder>/<key>``, ``/dropped/<stage>``
(``?subset=&reason=&page=``), ``/image/<folder>/<key>`` and ``/thumb/<folder>/<key>`` (a release sample's image,
read at its offset in the tar; the thumbnail cached), ``/record-image/<stage>/<subset or ->/<shard>/<id>`` (a
dropped record's image from a stage table), ``/files/<path>`` (any file under RESULTS_DIR, such as
``report/report.html``) and ``/static/explore.css``; when the run has an evaluation (``results/evaluate/``,
docs/finetune.md), the human-preference pages (:mod:`finet2i.explore.preference`): ``/vote`` (GET: the next
question; POST: a vote), ``/vote/image/<pair>/<left|right>`` and ``/votes`` (the summary).

The explorer writes one file, and only by appending: the votes (``results/human_votes/votes.jsonl``).

Every number a request carries (page, score bounds) is checked (a 400 page names it); every number an index row
carries (a member's offset and size) is checked against the tar before a byte is read (a "broken index" page,
422, names the file): a request never ends in a 500 or a traceback.

Safety: binds 127.0.0.1 unless told otherwise; on a loopback address, requests for another Host are refused
(a web page elsewhere cannot reach the app through DNS rebinding); every file read goes through
``media.inside`` (resolved, under RESULTS_DIR, else 404); pages are escaped by the templates and sent with a
Content-Security-Policy that allows no script (the served app needs none, the vote page included: it is a form
with access keys); a vote must carry the server's form token and come from its own pages (``Origin``,
``Sec-Fetch-Site``), and a body over 4 KB is refused unread.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import re
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from finet2i.explore import media, pages, preference
from finet2i.explore.catalog import Catalog
from finet2i.explore.query import BrokenIndex, ExploreError, Query, page_number, safe_id
from finet2i.finetune.votes import VoteError

log = logging.getLogger(__name__)

CSP_APP = "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; base-uri 'none'"
CSP_FILES = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; base-uri 'none'"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def default_cache_dir(results_dir: Path) -> Path:
    """``$XDG_CACHE_HOME/finet2i/explore/<hash of the results folder>`` (thumbnails, the samples table)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "finet2i" / "explore"
    return base / hashlib.sha256(str(results_dir.resolve()).encode()).hexdigest()[:16]


class App:
    """What a request needs: the catalog, the tar reader, the thumbnail cache."""

    def __init__(self, results_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> None:
        root = Path(results_dir).resolve()
        self.cache = Path(cache_dir) if cache_dir else default_cache_dir(root)
        self.catalog = Catalog(root, self.cache)
        self.root = self.catalog.root
        self.tars = media.TarImages(self.root)
        self.thumbs = media.ThumbCache(self.cache)
        self.preference = preference.Preference.open(self.root)
        self.urls = pages.ServerUrls(has_report=(self.root / "report" / "report.html").is_file(),
                                     has_votes=self.preference is not None)

    def sample_image(self, folder: str, key: str) -> bytes | None:
        where = self.catalog.locate(folder, key)
        if where is None:
            return None
        return self.tars.read(folder, where["tar"], key, where["jpg_offset"], where["jpg_size"])


Response = tuple[int, str, bytes]  # status, content type, body
Redirect = tuple[int, str, bytes, str]  # ... and a Location


class Handler(BaseHTTPRequestHandler):
    app: App
    server_version = "finet2i-explore"
    loopback_only = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def do_POST(self) -> None:  # noqa: N802
        self._serve(head=False, post=True)

    def _serve(self, head: bool, post: bool = False) -> None:
        url = urlsplit(self.path)
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        csp = CSP_APP
        location = None
        try:
            if self.loopback_only and host not in LOOPBACK:
                status, ctype, body = self._error(HTTPStatus.FORBIDDEN, f"host {host!r} refused: the explorer "
                                                  f"answers only to localhost (start it with --host to share it)")
            elif post:
                status, ctype, body, location = self._post(url.path)
            else:
                status, ctype, body = self._route(url.path, dict(parse_qsl(url.query)))
                if url.path.startswith("/files/"):
                    csp = CSP_FILES
        except BrokenIndex as e:  # the outputs, not the request, are wrong: say which file, serve nothing of it
            log.warning("explore: %s: %s", self.path, e)
            status, ctype, body = self._error(HTTPStatus.UNPROCESSABLE_ENTITY, f"Broken index: {e}")
        except ExploreError as e:
            status, ctype, body = self._error(HTTPStatus.BAD_REQUEST, str(e))
        except Exception as e:  # a request must never take the server down; the log has the traceback
            log.exception("explore: %s failed", self.path)
            status, ctype, body = self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {e}")
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", csp)
        if ctype.startswith("image/"):
            self.send_header("Cache-Control", "max-age=3600")
        self.end_headers()
        if not head:
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the browser moved on before the bytes came
                log.debug("explore: %s: client went away", self.path)

    def _post(self, path: str) -> Redirect:
        """The one route that takes a post: a vote. Read at most MAX_BODY bytes; answer with the next question."""
        prefs = self.app.preference
        if path != "/vote" or prefs is None:
            status, ctype, body = self._error(HTTPStatus.NOT_FOUND, f"nothing takes a post at {path}")
            return status, ctype, body, ""
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            raise ExploreError("a vote needs a Content-Length") from None
        if not 0 <= length <= preference.MAX_BODY:
            self.close_connection = True  # the body is not read: this connection cannot serve another request
            raise ExploreError(f"a vote is at most {preference.MAX_BODY} bytes")
        form = preference.parse_form(self.rfile.read(length), self.headers.get("Content-Type"))
        rater = prefs.vote(form, origin=self.headers.get("Origin"), fetch_site=self.headers.get("Sec-Fetch-Site"),
                           host=self.headers.get("Host") or "")
        return HTTPStatus.SEE_OTHER, "text/plain; charset=utf-8", b"", self.app.urls.vote(rater)

    def _error(self, status: int, message: str) -> Response:
        return status, "text/html; charset=utf-8", pages.render_error(self.app.urls, status, message).encode()

    def _html(self, text: str) -> Response:
        return HTTPStatus.OK, "text/html; charset=utf-8", text.encode()

    def _bytes(self, data: bytes | None, ctype: str = "image/jpeg") -> Response:
        if data is None:
            return self._error(HTTPStatus.NOT_FOUND, "no such image")
        return HTTPStatus.OK, ctype, data

    def _route(self, path: str, params: dict[str, str]) -> Response:
        app = self.app
        for pattern, handler in ROUTES:
            m = pattern.fullmatch(path)
            if m:
                return handler(self, app, params, *[unquote(g) for g in m.groups()])
        return self._error(HTTPStatus.NOT_FOUND, f"no page at {path}")


def _grid(h: Handler, app: App, params: dict[str, str]) -> Response:
    q = Query.from_params(params)
    return h._html(pages.render_grid(app.catalog, app.urls, q, app.catalog.samples(q)))


def _sample(h: Handler, app: App, params: dict[str, str], folder: str, key: str) -> Response:
    s = app.catalog.sample(folder, key) if safe_id(folder) and safe_id(key) else None
    if s is None:
        return h._error(HTTPStatus.NOT_FOUND, f"no sample {key} in {folder}")
    return h._html(pages.render_sample(app.catalog, app.urls, s))


def _image(h: Handler, app: App, params: dict[str, str], folder: str, key: str) -> Response:
    return h._bytes(app.sample_image(folder, key) if safe_id(folder) and safe_id(key) else None)


def _thumb(h: Handler, app: App, params: dict[str, str], folder: str, key: str) -> Response:
    return h._bytes(app.thumbs.get(folder, key, lambda: app.sample_image(folder, key)))


def _dropped(h: Handler, app: App, params: dict[str, str], stage: str) -> Response:
    page = page_number(params)
    d = app.catalog.dropped(stage, subset=params.get("subset") or None, reason=params.get("reason") or None,
                            page=page)
    return h._html(pages.render_dropped(app.catalog, app.urls, d))


def _record_image(h: Handler, app: App, params: dict[str, str], stage: str, subset: str, shard: str,
                  record_id: str) -> Response:
    table = app.catalog.record_image_table(stage, None if subset == "-" else subset, shard)
    if table is None or not safe_id(record_id):
        return h._error(HTTPStatus.NOT_FOUND, "no such record image")
    return h._bytes(media.record_image(table, record_id))


def _file(h: Handler, app: App, params: dict[str, str], relative: str) -> Response:
    path = media.inside(app.root, relative)
    if path is None:
        return h._error(HTTPStatus.NOT_FOUND, f"no file {relative} under the results folder")
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/json",):
        ctype += "; charset=utf-8"
    return HTTPStatus.OK, ctype, path.read_bytes()


def _css(h: Handler, app: App, params: dict[str, str]) -> Response:
    return HTTPStatus.OK, "text/css; charset=utf-8", (pages.TEMPLATES / "explore.css").read_bytes()


def _preference(app: App) -> preference.Preference:
    if app.preference is None:
        raise ExploreError("this run has no evaluation to vote on: run `snakemake finetune evaluate` first "
                           "(docs/finetune.md)")
    return app.preference


def _vote(h: Handler, app: App, params: dict[str, str]) -> Response:
    prefs = _preference(app)
    rater = (params.get("rater") or "").strip()
    if not rater:
        return h._html(pages.render_vote(app.urls, prefs, None))
    try:
        question = prefs.next_question(rater)
    except VoteError as e:
        raise ExploreError(str(e)) from None
    return h._html(pages.render_vote(app.urls, prefs, question))


def _vote_image(h: Handler, app: App, params: dict[str, str], pair: str, position: str) -> Response:
    try:
        path = _preference(app).image(pair, position, params.get("rater") or "")
    except VoteError as e:
        raise ExploreError(str(e)) from None
    return h._bytes(path.read_bytes() if path else None, "image/png")


def _votes(h: Handler, app: App, params: dict[str, str]) -> Response:
    return h._html(pages.render_votes(app.urls, _preference(app).summary()))


_SEG = r"([^/]+)"
ROUTES: list[tuple[re.Pattern[str], Callable[..., Response]]] = [
    (re.compile(r"/"), _grid),
    (re.compile(rf"/sample/{_SEG}/{_SEG}"), _sample),
    (re.compile(rf"/image/{_SEG}/{_SEG}"), _image),
    (re.compile(rf"/thumb/{_SEG}/{_SEG}"), _thumb),
    (re.compile(rf"/dropped/{_SEG}"), _dropped),
    (re.compile(rf"/record-image/{_SEG}/{_SEG}/{_SEG}/{_SEG}"), _record_image),
    (re.compile(r"/files/(.+)"), _file),
    (re.compile(r"/static/explore\.css"), _css),
    (re.compile(r"/vote"), _vote),
    (re.compile(rf"/vote/image/{_SEG}/(left|right)"), _vote_image),
    (re.compile(r"/votes"), _votes),
]


def make_server(app: App, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0: any free port), not yet serving."""
    handler = type("ExploreHandler", (Handler,), {"app": app, "loopback_only": host in LOOPBACK})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
