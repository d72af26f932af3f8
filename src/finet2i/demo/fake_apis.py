"""Local stand-ins for the internet, for the tests and the demo only: HTTP servers on 127.0.0.1 that answer in the
documented shapes of the Pexels API v1 and the Pixabay API, and serve the photos through a redirect to a second
("CDN") host, as the real image URLs do.

What they do that the real services do (as far as their public docs say, docs/real-sources.md): pagination
(``next_page`` for Pexels, ``totalHits`` capped at 500 for Pixabay), the key checks (401 without a valid
``Authorization`` for Pexels; HTTP 400 "Invalid or missing API key" for Pixabay), ``X-Ratelimit-*`` headers.
What the tests add: scripted faults per request (429 with or without ``Retry-After``, 5xx, a body that is not
JSON, a photo without its ``src``), a count of every request by endpoint and public parameters, and a gate that
holds every request after the Nth (a job can be killed while it waits).
"""

from __future__ import annotations

import io
import json
import threading
import urllib.parse
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Photo:
    id: int
    jpeg: bytes
    width: int
    height: int
    photographer: str
    text: str  # Pexels alt / Pixabay tags
    words: tuple[str, ...] = ()  # the queries that find it


def make_photos(n: int, seed: int = 0, size: tuple[int, int] = (320, 240)) -> list[Photo]:
    """``n`` distinct JPEG photographs (smooth random colour fields: each hashes far from the others)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = []
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        words = ("nature",) if i % 2 == 0 else ("city",)
        photos.append(Photo(1000 + i, buf.getvalue(), size[0], size[1], f"Photographer {i}",
                            f"a {words[0]} photo number {i}", words))
    return photos


@dataclass
class FakeState:
    key: str
    photos: list[Photo]
    kind: str  # "pexels" or "pixabay"
    hits: Counter[str] = field(default_factory=Counter)  # "<path>?<public params>" -> requests
    answered: Counter[str] = field(default_factory=Counter)  # the same, for 200 answers
    faults: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    hold_after: int | None = None  # requests after this many total wait on `release`
    release: threading.Event = field(default_factory=threading.Event)
    total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    cdn: str = ""  # base URL of the image host
    drop_src_of: set[int] = field(default_factory=set)  # photo ids answered without their image URLs


def _public(path: str, params: dict[str, str]) -> str:
    return path + "?" + urllib.parse.urlencode(sorted((k, v) for k, v in params.items() if k != "key"))


class _Handler(BaseHTTPRequestHandler):
    state: FakeState
    role: str  # "api" or "cdn"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        st = self.state
        url = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(url.query))
        req = _public(url.path, params)
        with st.lock:
            st.total += 1
            st.hits[req] += 1
            n = st.total
            fault = st.faults[req].pop(0) if st.faults.get(req) else None
        if st.hold_after is not None and n > st.hold_after:
            st.release.wait(60)
            self.close_connection = True
            return
        if self.role == "cdn" or url.path.startswith("/img/"):
            return self._image(url.path, req)
        if fault == "429":
            return self._send(429, b'{"error": "rate limited"}', headers={"Retry-After": "7"})
        if fault == "429-bare":
            return self._send(429, b'{"error": "rate limited"}')
        if fault == "503":
            return self._send(503, b"unavailable", "text/plain")
        if fault == "badjson":
            return self._send(200, b'{"photos": [', headers=self._limits())
        if st.kind == "pexels":
            return self._pexels(url.path, params, req)
        return self._pixabay(params, req)

    def _limits(self) -> dict[str, str]:
        return {"X-Ratelimit-Limit": "20000", "X-Ratelimit-Remaining": "19999", "X-Ratelimit-Reset": "1900000000"}

    def _found(self, query: str) -> list[Photo]:
        if query in ("", ":curated"):
            return self.state.photos
        return [p for p in self.state.photos if query in p.words]

    def _image_url(self, p: Photo) -> str:
        host = self.headers.get("Host", "127.0.0.1")
        return f"http://{host}/img/{p.id}.jpg"

    def _pexels(self, path: str, params: dict[str, str], req: str) -> None:
        st = self.state
        if self.headers.get("Authorization") != st.key:
            return self._send(401, b'{"error": "Unauthorized"}')
        found = self._found(":curated" if path.endswith("/curated") else params.get("query", ""))
        per_page, page = min(80, int(params.get("per_page", 15))), int(params.get("page", 1))
        chunk = found[(page - 1) * per_page: page * per_page]
        photos = []
        for p in chunk:
            src = {} if p.id in st.drop_src_of else {k: self._image_url(p) for k in
                                                     ("original", "large2x", "large", "medium")}
            photos.append({"id": p.id, "width": p.width, "height": p.height,
                           "url": f"https://www.pexels.com/photo/{p.id}/", "photographer": p.photographer,
                           "photographer_url": f"https://www.pexels.com/@p{p.id}", "alt": p.text, "src": src})
        body: dict[str, Any] = {"page": page, "per_page": per_page, "photos": photos, "total_results": len(found)}
        if page * per_page < len(found):
            body["next_page"] = f"http://{self.headers.get('Host')}{path}?page={page + 1}&per_page={per_page}"
        with st.lock:
            st.answered[req] += 1
        self._send(200, json.dumps(body).encode(), headers=self._limits())

    def _pixabay(self, params: dict[str, str], req: str) -> None:
        st = self.state
        if params.get("key") != st.key:
            return self._send(400, b"[ERROR 400] Invalid or missing API key.", "text/plain")
        found = self._found(params.get("q", ""))
        per_page, page = int(params.get("per_page", 20)), int(params.get("page", 1))
        total_hits = min(500, len(found))
        if (page - 1) * per_page >= max(total_hits, 1):
            return self._send(400, b'[ERROR 400] "page" is out of valid range.', "text/plain")
        hits = []
        for p in found[(page - 1) * per_page: min(page * per_page, total_hits)]:
            url = None if p.id in st.drop_src_of else self._image_url(p)
            hits.append({"id": p.id, "pageURL": f"https://pixabay.com/photos/x-{p.id}/", "type": "photo",
                         "tags": p.text.replace(" ", ", "), "imageWidth": p.width, "imageHeight": p.height,
                         "webformatURL": url, "largeImageURL": url, "user": p.photographer.replace(" ", ""),
                         "user_id": p.id})
        body = {"total": len(found), "totalHits": total_hits, "hits": hits}
        with st.lock:
            st.answered[req] += 1
        self._send(200, json.dumps(body).encode(),
                   headers={"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "99", "X-RateLimit-Reset": "0"})

    def _image(self, path: str, req: str) -> None:
        st = self.state
        pid = int(path.rsplit("/", 1)[-1].split(".")[0])
        photo = next((p for p in st.photos if p.id == pid), None)
        if photo is None:
            return self._send(404, b"no such photo", "text/plain")
        if self.role == "api" and st.cdn:  # the API host redirects image URLs to the CDN host
            self.send_response(302)
            self.send_header("Location", f"{st.cdn}/cdn/{pid}.jpg")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with st.lock:
            st.answered[req] += 1
        self._send(200, photo.jpeg, "image/jpeg")


class FakeApi:
    """A fake Pexels or Pixabay on 127.0.0.1 plus its image CDN on ``localhost`` (another host name)."""

    def __init__(self, kind: str, key: str, photos: list[Photo]) -> None:
        self.state = FakeState(key=key, photos=photos, kind=kind)
        self._servers = [self._serve("api"), self._serve("cdn")]
        self.state.cdn = f"http://localhost:{self._servers[1].server_address[1]}"
        host, port = self._servers[0].server_address[:2]
        self.base = f"http://{host}:{port}"
        self.api_url = f"{self.base}/v1" if kind == "pexels" else f"{self.base}/api/"

    def _serve(self, role: str) -> ThreadingHTTPServer:
        handler = type(f"{role}Handler", (_Handler,), {"state": self.state, "role": role})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def close(self) -> None:
        self.state.release.set()
        for s in self._servers:
            s.shutdown()
            s.server_close()

    def __enter__(self) -> FakeApi:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
