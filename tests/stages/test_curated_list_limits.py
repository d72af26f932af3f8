"""The listing's bounds against hostile or exhausted APIs (issue 23): a month's quota used up is an error at once
(what remains, when it resets), never a long sleep; a server that answers next_page forever stops at the finite
default cap; an answer that trickles is cut off by the request's total deadline; an answer that never ends by the
byte cap; a key echoed back in an answer is redacted before anything is written.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from finet2i.demo.fake_apis import FakeApi, make_photos
from finet2i.sources.http import ApiError
from finet2i.sources.listing import run_listing
from finet2i.workflow.config import load_yaml, validate_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)  # a listing that is not bounded would hang here, not pass
KEY = "sk-test-limits-5e2b8f1a"
PERMISSION = {"permission": "test only: a local server, no request leaves the machine"}


def entry_for(kind: str, api_url: str, **kw) -> dict:
    cfg = load_yaml(ROOT / "config" / "demo.yaml")
    cfg["curated"]["sources"] = [{"type": kind, "api_url": api_url, "key_env": "FAKE_KEY", "queries": ["nature"],
                                  "rate_limit": {"requests": 100000, "seconds": 1}, "backoff_s": 0.01,
                                  "terms": PERMISSION, **kw}]
    return validate_config(cfg, base_dir=ROOT, check_models=False)["curated"]["sources"][0]


class Scripted:
    """A local HTTP server whose every GET is answered by ``answer(handler, n)`` (n: the request's number)."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler, int], None]) -> None:
        self.requests = 0
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                scripted.requests += 1
                try:
                    answer(self, scripted.requests)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> Scripted:
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def send_json(h: BaseHTTPRequestHandler, body: dict, headers: dict | None = None, status: int = 200) -> None:
    data = json.dumps(body).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)


def pexels_page(h: BaseHTTPRequestHandler, n: int, per_page: int = 80, next_page: bool = True) -> dict:
    photos = [{"id": n * 1000 + i, "width": 640, "height": 480, "url": f"https://www.pexels.com/photo/{n}-{i}/",
               "photographer": "P", "photographer_url": "https://www.pexels.com/@p", "alt": "x",
               "src": {"original": f"http://127.0.0.1:9/{n}-{i}.jpg"}} for i in range(per_page)]
    body = {"page": n, "per_page": per_page, "photos": photos, "total_results": 10**9}
    if next_page:
        body["next_page"] = f"http://{h.headers.get('Host')}/v1/search?page={n + 1}&per_page={per_page}"
    return body


# --- a month's quota -------------------------------------------------------------------------------------------

def test_a_monthly_quota_used_up_is_an_error_at_once_saying_what_remains_and_when_it_resets(tmp_path):
    """Pexels' X-Ratelimit-* headers count the month; Reset is the UNIX time of the rollover, days away."""
    reset = int(time.time()) + 9 * 86400

    def answer(h, n):  # (50 pages at most: a bound for the test itself)
        send_json(h, pexels_page(h, n, per_page=2, next_page=n < 50),
                  {"X-Ratelimit-Limit": "20000", "X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": str(reset)})

    waits: list[float] = []
    with Scripted(answer) as api:
        entry = entry_for("pexels", api.url, per_page=2)
        started = time.monotonic()
        with pytest.raises(ApiError) as e:
            run_listing(entry, tmp_path / "p.parquet", tmp_path / "p.stats.json", environ={"FAKE_KEY": KEY},
                        sleep=waits.append)
        assert time.monotonic() - started < 10
        assert api.requests == 1  # the answered page, then no request sent
    message = str(e.value)
    assert "0 of 20000" in message and time.strftime("%Y-%m-%d", time.gmtime(reset)) in message
    assert "days" in message and "max_wait_s" in message
    assert not any(w > 60 for w in waits)  # never slept towards the reset
    assert len(list((tmp_path / "p.parquet.pages").iterdir())) == 1  # the answer received is kept for the rerun


def test_a_429_asking_for_hours_is_an_error_at_once_not_a_sleep(tmp_path):
    def answer(h, n):
        send_json(h, {"error": "rate limited"}, {"Retry-After": str(6 * 3600)}, status=429)

    waits: list[float] = []
    with Scripted(answer) as api:
        entry = entry_for("pexels", api.url)
        with pytest.raises(ApiError, match=r"asks to wait.*in 6\.0 h.*max_wait_s"):
            run_listing(entry, tmp_path / "p.parquet", tmp_path / "p.stats.json", environ={"FAKE_KEY": KEY},
                        sleep=waits.append)
        assert api.requests == 1 and not any(w > 60 for w in waits)


# --- finite caps, deadlines, byte caps ---------------------------------------------------------------------------

def test_a_server_that_always_has_a_next_page_is_listed_no_further_than_the_default_cap(tmp_path):
    def answer(h, n):
        if n > 400:  # a bound for the test itself: an unbounded listing would go on for ever
            return send_json(h, {"error": "enough"}, status=400)
        send_json(h, pexels_page(h, n))

    with Scripted(answer) as api:
        entry = entry_for("pexels", api.url)  # max_per_query / max_photos: the schema's defaults
        assert entry["max_per_query"] is not None and entry["max_photos"] is not None
        stats = run_listing(entry, tmp_path / "p.parquet", tmp_path / "p.stats.json", environ={"FAKE_KEY": KEY},
                            sleep=lambda s: None)
        assert api.requests == -(-entry["max_per_query"] // 80) <= 400
    assert stats.extra["per_query"] == {"nature": entry["max_per_query"]}
    assert pq.read_metadata(tmp_path / "p.parquet").num_rows == entry["max_per_query"]


def test_an_answer_that_trickles_is_cut_off_by_the_requests_total_deadline(tmp_path):
    def answer(h, n):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.end_headers()
        end = time.monotonic() + 8
        while time.monotonic() < end:  # one byte every 0.1 s: each read succeeds, the whole never ends
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.1)

    with Scripted(answer) as api:
        entry = entry_for("pexels", api.url, deadline_s=1, retries=0, timeout_s=5)
        started = time.monotonic()
        with pytest.raises(ApiError, match="deadline"):
            run_listing(entry, tmp_path / "p.parquet", tmp_path / "p.stats.json", environ={"FAKE_KEY": KEY},
                        sleep=lambda s: None)
        assert time.monotonic() - started < 5


def test_an_answer_that_never_ends_is_cut_off_by_the_byte_cap(tmp_path):
    sent = []

    def answer(h, n):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.end_headers()
        chunk = b" " * 65536
        for _ in range(1024):  # 64 MiB at most (a bound for the test itself)
            h.wfile.write(chunk)
            sent.append(len(chunk))

    with Scripted(answer) as api:
        entry = entry_for("pexels", api.url, max_answer_bytes=1 << 20, retries=0)
        with pytest.raises(ApiError, match="max_answer_bytes"):
            run_listing(entry, tmp_path / "p.parquet", tmp_path / "p.stats.json", environ={"FAKE_KEY": KEY},
                        sleep=lambda s: None)
    assert not (tmp_path / "p.parquet").exists()


# --- a key echoed back -------------------------------------------------------------------------------------------

def test_a_key_echoed_back_in_an_answer_is_written_nowhere(tmp_path, caplog):
    """Pixabay sends its key in the query; a server (or a proxy) that echoes the request back must not get it into
    the stored answers, the manifest, the stats or the log."""
    def answer(h, n):
        query = urllib.parse.urlsplit(h.path).query
        key = dict(urllib.parse.parse_qsl(query)).get("key", "")
        hits = [{"id": 7000 + i, "pageURL": f"https://pixabay.com/photos/x-{7000 + i}/?via={key}",
                 "tags": f"nature, {key}", "imageWidth": 640, "imageHeight": 480,
                 "largeImageURL": f"http://127.0.0.1:9/{i}.jpg?key={key}", "user": "u", "user_id": i,
                 key: "the key as a field name"} for i in range(3)]
        send_json(h, {"total": 3, "totalHits": 3, "hits": hits, "request": f"{h.path}", "echo": {"key": key}})

    with Scripted(answer) as api:
        entry = entry_for("pixabay", api.url + "/", per_page=3)
        run_listing(entry, tmp_path / "x.parquet", tmp_path / "x.stats.json", environ={"FAKE_KEY": KEY})
        assert api.requests == 1
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 3  # the stored answer, the manifest, the stats
    for p in written:
        assert KEY.encode() not in p.read_bytes(), p
    assert KEY not in caplog.text
    rows = pq.read_table(tmp_path / "x.parquet").to_pylist()
    assert len(rows) == 3 and "<redacted>" in rows[0]["source_text"]


def test_the_fake_pexels_api_still_lists_to_its_last_page_within_the_caps(tmp_path):
    """The bounds change nothing for an honest API."""
    with FakeApi("pexels", KEY, make_photos(7)) as api:
        entry = entry_for("pexels", api.api_url, per_page=2, queries=["nature", "city"])
        stats = run_listing(entry, tmp_path / "p.parquet", tmp_path / "p.stats.json", environ={"FAKE_KEY": KEY})
    assert stats.extra["per_query"] == {"nature": 4, "city": 3} and stats.extra["requests_sent"] == 4
