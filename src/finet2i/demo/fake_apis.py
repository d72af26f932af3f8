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
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
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
    flags: tuple[str, ...] = ()  # Pixabay hit flags that are true (noAiTraining, isAiGenerated, ...)


def make_photos(n: int, seed: int = 0, size: tuple[int, int] = (320, 240), first_id: int = 1000) -> list[Photo]:
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
        photos.append(Photo(first_id + i, buf.getvalue(), size[0], size[1], f"Photographer {i}",
                            f"a {words[0]} photo number {i}", words))
    return photos


@dataclass
class FakeState:
    key: str
    photos: list[Photo]
    kind: str  # "pexels", "pixabay", or "demo" (both under /pexels and /pixabay, photos in `catalog`)
    catalog: dict[str, list[Photo]] = field(default_factory=dict)
    last_request: float = 0.0
    hits: Counter[str] = field(default_factory=Counter)  # "<path>?<public params>" -> requests
    answered: Counter[str] = field(default_factory=Counter)  # the same, for 200 answers
    faults: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    hold_after: int | None = None  # requests after this many total wait on `release`
    release: threading.Event = field(default_factory=threading.Event)
    total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    cdn: str = ""  # base URL of the image host
    drop_src_of: set[int] = field(default_factory=set)  # photo ids answered without their image URLs


# The flags a Pixabay hit carries in live answers (every hit has all four; not described in the API docs we read).
PIXABAY_FLAGS = ("noAiTraining", "isAiGenerated", "isGRated", "isLowQuality")


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
        if url.path == "/health":
            return self._send(200, HEALTH, "text/plain")
        with st.lock:
            st.last_request = time.monotonic()
            st.total += 1
            st.hits[req] += 1
            n = st.total
            fault = st.faults[req].pop(0) if st.faults.get(req) else None
        if st.hold_after is not None and n > st.hold_after:
            st.release.wait(60)
            self.close_connection = True
            return
        if self.role == "cdn" or url.path.startswith(("/img/", "/cdn/")):
            return self._image(url.path, req)
        if fault == "429":
            return self._send(429, b'{"error": "rate limited"}', headers={"Retry-After": "7"})
        if fault == "429-bare":
            return self._send(429, b'{"error": "rate limited"}')
        if fault == "503":
            return self._send(503, b"unavailable", "text/plain")
        self._exhausted = fault == "exhausted"
        if fault == "badjson":
            return self._send(200, b'{"photos": [', headers=self._limits())
        kind = st.kind
        if kind == "demo":
            kind = url.path.split("/")[1]
            if kind not in ("pexels", "pixabay"):
                return self._send(404, b"not found", "text/plain")
        if kind == "pexels":
            return self._pexels(url.path, params, req)
        return self._pixabay(params, req)

    def _limits(self) -> dict[str, str]:
        return {"X-Ratelimit-Limit": "20000", "X-Ratelimit-Remaining": "19999", "X-Ratelimit-Reset": "1900000000"}

    def end_headers(self) -> None:
        if getattr(self, "_exhausted", False):  # scripted: this answer spends the last request of the window
            self.send_header("X-RateLimit-Remaining", "0")
            self.send_header("X-RateLimit-Reset", "30")
        super().end_headers()

    def _found(self, query: str, kind: str) -> list[Photo]:
        photos = self.state.catalog.get(kind, self.state.photos)
        if query in ("", ":curated"):
            return photos
        return [p for p in photos if query in p.words]

    def _image_url(self, p: Photo) -> str:
        host = self.headers.get("Host", "127.0.0.1")
        return f"http://{host}/img/{p.id}.jpg"

    def _pexels(self, path: str, params: dict[str, str], req: str) -> None:
        st = self.state
        if self.headers.get("Authorization") != st.key:
            return self._send(401, b'{"error": "Unauthorized"}')
        found = self._found(":curated" if path.endswith("/curated") else params.get("query", ""), "pexels")
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
        found = self._found(params.get("q", ""), "pixabay")
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
                         "user_id": p.id, **{flag: flag in p.flags for flag in PIXABAY_FLAGS}})
        body = {"total": len(found), "totalHits": total_hits, "hits": hits}
        with st.lock:
            st.answered[req] += 1
        self._send(200, json.dumps(body).encode(),
                   headers={"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "99", "X-RateLimit-Reset": "0"})

    def _image(self, path: str, req: str) -> None:
        st = self.state
        pid = int(path.rsplit("/", 1)[-1].split(".")[0])
        every = [p for photos in (st.photos, *st.catalog.values()) for p in photos]
        photo = next((p for p in every if p.id == pid), None)
        if photo is None:
            return self._send(404, b"no such photo", "text/plain")
        if path.startswith("/img/") and st.cdn:  # the API host redirects image URLs to the CDN host
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


# -- the demo's sources --------------------------------------------------------------------------------------
# config/demo.yaml lists Pexels and Pixabay from one such server on a fixed loopback port (the manifests'
# image URLs must stay valid from one Snakemake run to the next), and its Unsplash Lite table points there too.
# The demo's onstart (rules/demo.smk) starts it in a process of its own, or finds it already running (its answers
# depend on nothing but this code, so two demos can share one), and takes a *lease* on it; the run's onsuccess /
# onerror hands the lease back, and the server exits as soon as no run holds one: a finished demo leaves no
# process and no port behind. A run killed before it could hand its lease back is covered by the idle timeout.
DEMO_PORT = 38917
DEMO_KEY_ENV = "FINET2I_DEMO_API_KEY"
DEMO_KEY = "finet2i-demo-key"  # not a secret: the fake APIs' key, set by the Snakefile for the demo only
DEMO_IDLE_S = 1800
HEALTH = b"finet2i-demo-sources"


def demo_catalog() -> dict[str, list[Photo]]:
    """Five photos on each site, the first Pexels photo also on Pixabay (re-encoded, smaller: the same photo
    posted twice, which curated_dedup keeps once), two more Pixabay hits flagged ``noAiTraining`` and
    ``isAiGenerated`` (dropped while listing as ``no_ai_training`` / ``ai_generated``), and three for Unsplash
    Lite."""
    from PIL import Image

    pexels = make_photos(5, seed=11, size=(480, 360), first_id=1000)
    pixabay = make_photos(4, seed=12, size=(480, 360), first_id=2000)
    copy = io.BytesIO()
    Image.open(io.BytesIO(pexels[0].jpeg)).resize((400, 300)).save(copy, "JPEG", quality=80)
    pixabay.append(Photo(2004, copy.getvalue(), 400, 300, "Photographer 0", "the same photo, reposted",
                         pexels[0].words))
    opted_out, generated = make_photos(2, seed=14, size=(480, 360), first_id=2005)
    pixabay += [Photo(**{**opted_out.__dict__, "flags": ("noAiTraining",)}),
                Photo(**{**generated.__dict__, "flags": ("isAiGenerated",)})]
    return {"pexels": pexels, "pixabay": pixabay,
            "unsplash": make_photos(3, seed=13, size=(480, 360), first_id=3000)}


def demo_environment() -> None:
    """The fake APIs' key, for the demo's listing jobs (a real key is never needed for the demo)."""
    os.environ.setdefault(DEMO_KEY_ENV, DEMO_KEY)


def _ask(port: int, path: str) -> bytes | None:
    import http.client

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.read()
    except (OSError, http.client.HTTPException):  # not there, or stopping while it answered
        return None


def _healthy(port: int) -> bool:
    return _ask(port, "/health") == HEALTH


def ensure_demo_server(port: int = DEMO_PORT, wait_s: float = 60.0) -> str:
    """Start the demo's fake sources in a process of their own unless they already answer on ``port``, and take a
    lease on them for this run; returns the lease, to give back with :func:`release_demo_server`."""
    import uuid

    lease = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    started: subprocess.Popen[bytes] | None = None
    while time.monotonic() < deadline:
        answer = _ask(port, f"/lease?run={lease}")
        if answer == b"leased":
            return lease
        if answer is None and _healthy(port):
            raise RuntimeError(f"127.0.0.1:{port} is held by a demo server of another finet2i version (it takes "
                               f"no lease; it exits {DEMO_IDLE_S // 60} min after its last request): wait for it "
                               f"to exit, then run the demo again")
        if answer is None and (started is None or started.poll() is not None):
            # Nobody answers (or the one we started lost the port to another demo's, which then stopped):
            # start one. A server that answers "stopping" is let go first.
            started = subprocess.Popen([sys.executable, "-m", "finet2i.demo.fake_apis", str(port)],
                                       start_new_session=True, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)
    raise RuntimeError(f"the demo's fake photo APIs did not start on 127.0.0.1:{port}; is the port taken by "
                       f"another program? (finet2i.demo.fake_apis.DEMO_PORT)")


def release_demo_server(lease: str | None, port: int = DEMO_PORT, wait_s: float = 10.0) -> bool:
    """Give a run's lease back; the server exits once no run holds one. True when the port is free afterwards."""
    if lease:
        _ask(port, f"/release?run={lease}")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not _healthy(port):
            return True
        if not lease:
            return False
        time.sleep(0.1)
    return not _healthy(port)


class _DemoHandler(_Handler):
    """The demo server's handler: the fake APIs plus /lease and /release (runs that use the server)."""

    leases: set[str]
    stop: threading.Event

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urllib.parse.urlsplit(self.path)
        if url.path in ("/lease", "/release"):
            run = dict(urllib.parse.parse_qsl(url.query)).get("run", "")
            with self.state.lock:
                self.state.last_request = time.monotonic()
                if self.stop.is_set():
                    answer = b"stopping"  # the last lease went back: a new run starts a new server
                elif url.path == "/lease" and run:
                    self.leases.add(run)
                    answer = b"leased"
                else:
                    self.leases.discard(run)
                    if not self.leases:
                        self.stop.set()
                    answer = b"released"
            return self._send(200, answer, "text/plain")
        return super().do_GET()


def serve_demo(port: int = DEMO_PORT, idle_s: float = DEMO_IDLE_S) -> None:
    """Serve until the last lease is given back (or ``idle_s`` without a request, should a run die holding one)."""
    state = FakeState(key=DEMO_KEY, photos=[], kind="demo", catalog=demo_catalog())
    state.cdn = f"http://localhost:{port}"
    state.last_request = time.monotonic()
    stop = threading.Event()
    handler = type("demoHandler", (_DemoHandler,), {"state": state, "role": "api", "leases": set(), "stop": stop})
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        return  # another demo's server took the port first: it answers the same
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    while not stop.wait(1.0) and time.monotonic() - state.last_request < idle_s:
        pass
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    serve_demo(int(sys.argv[1]) if len(sys.argv) > 1 else DEMO_PORT)
