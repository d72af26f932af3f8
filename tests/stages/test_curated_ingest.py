"""Curated inputs made by other people (issue 10): every file and list line accounted for, downloads that
cannot be turned against the machine, and no secret of a signed URL in any output or log."""

from __future__ import annotations

import http.server
import io
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from finet2i.core import shards
from finet2i.plumbing import download
from finet2i.stages import curated_ingest

SETTINGS = {"min_side": 16, "timeout_s": 2.0, "retries": 1, "backoff_s": 0.01, "deadline_s": 5.0}


def photo(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def ingest(sources: list[Path], tmp_path: Path, name: str = "00000", **settings) -> tuple[list[dict], dict]:
    out = tmp_path / "out" / f"{name}.parquet"
    stats = curated_ingest.run_curated_ingest([str(s) for s in sources], out, cshard="00000", n_shards=1,
                                              settings={**SETTINGS, **settings}, stats_path=shards.stats_path(out),
                                              workers=2)
    rows = shards.read_records(out)
    assert len(rows) == stats.records_in
    return rows, stats.extra


def reasons(rows: list[dict]) -> dict[str, str | None]:
    return {r["locator"]: r["drop_reason"] for r in rows}


# ------------------------------------------------------------------------------------------- accounting


def test_two_sources_with_the_same_name_keep_all_their_files(tmp_path):
    for parent, names in (("a", ["x.jpg", "y.jpg"]), ("b", ["x.jpg"])):
        (tmp_path / parent / "pexels").mkdir(parents=True)
        for i, n in enumerate(names):
            (tmp_path / parent / "pexels" / n).write_bytes(photo(hash((parent, i)) % 1000))
    rows, _ = ingest([tmp_path / "a" / "pexels", tmp_path / "b" / "pexels"], tmp_path)
    assert len(rows) == 3 and all(r["kept"] for r in rows)  # was 2: b/pexels/x.jpg merged into a's by key


def test_two_lists_with_the_same_relative_line_keep_both_files(tmp_path):
    for parent in ("a", "b"):
        (tmp_path / parent).mkdir()
        (tmp_path / parent / "img.jpg").write_bytes(photo(ord(parent)))
        (tmp_path / parent / "list.txt").write_text("img.jpg\n")
    rows, _ = ingest([tmp_path / "a" / "list.txt", tmp_path / "b" / "list.txt"], tmp_path)
    assert len(rows) == 2 and all(r["kept"] for r in rows)


def test_every_line_and_file_has_a_row_with_its_reason(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    (root / "good.jpg").write_bytes(photo(1))
    (root / "doc.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n")
    os.mkfifo(root / "pipe.jpg")
    (tmp_path / "outside.jpg").write_bytes(photo(2))
    (root / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    (root / os.fsdecode(b"caf\xe9.jpg")).write_bytes(photo(3))
    (root / ".DS_Store").write_bytes(b"\0\0")
    lst = root / "list.txt"
    lst.write_bytes(b"good.jpg\n../outside.jpg\n/dev/zero\npipe.jpg\nbad \xff line\ngood.jpg\n# a comment\n\n")
    rows, extra = ingest([root], tmp_path)  # the folder, with the list inside it as a file of its own
    got = reasons(rows)
    assert got["good.jpg"] is None
    assert got["doc.eps"] == "unsupported_format"  # never handed to Ghostscript
    assert got["pipe.jpg"] == "not_a_regular_file"  # a FIFO would block the read forever
    assert got["link.jpg"] == "outside_source"
    assert got["caf\\xe9.jpg"] == "unreadable_name"
    assert got["list.txt"] == "not_an_image"
    assert extra["skipped_hidden"] == 1 and len(rows) == 6

    rows, _ = ingest([lst], tmp_path, name="list")
    got = [(r["locator"], r["drop_reason"]) for r in rows]
    by_reason = sorted(reason or "kept" for _, reason in got)
    assert by_reason == sorted(["kept", "duplicate_listing", "outside_source", "outside_source",
                                "not_a_regular_file", "unreadable_line"])  # six lines, six rows
    dup = next(r for r in rows if r["drop_reason"] == "duplicate_listing")
    first = next(r for r in rows if r["kept"])
    assert dup["duplicate_of"] == first["id"]


# ------------------------------------------------------------------------------------------- downloads


class _Server(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []
    photo = photo(7)

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        _Server.hits.append(self.path)
        if self.path.startswith("/trickle"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"\xff")
                self.wfile.flush()
                time.sleep(0.2)
            return
        if self.path.startswith("/busy") and sum(h.startswith("/busy") for h in _Server.hits) == 1:
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.end_headers()
            return
        if self.path.startswith("/to-file"):
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.photo)))
        self.end_headers()
        self.wfile.write(self.photo)


@pytest.fixture()
def server() -> Iterator[str]:
    _Server.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def fetch(url: str, **kw) -> download.Fetched:
    s = dict(timeout_s=2.0, retries=2, backoff_s=0.01, max_bytes=1 << 20, deadline_s=5.0,
             allow_private_addresses=True)
    return download.fetch_url(url, download.FetchSettings(**{**s, **kw}))


def test_private_addresses_are_refused_without_a_connection(server):
    for url in (f"{server}/a.jpg", "http://169.254.169.254/latest/meta-data/", "http://[::1]/x", "http://localhost/"):
        f = fetch(url, allow_private_addresses=False)
        assert f.reason == "refused_url" and f.attempts == 0, (url, f)
    assert _Server.hits == []


def test_other_schemes_and_redirects_to_them_are_refused(server):
    assert fetch("file:///etc/passwd").reason == "refused_url"
    assert fetch("ftp://example.org/x.jpg").reason == "refused_url"
    f = fetch(f"{server}/to-file")
    assert f.reason == "refused_url" and "file" in f.error and f.data is None


def test_a_trickling_server_holds_a_worker_no_longer_than_the_deadline(server):
    t0 = time.monotonic()
    f = fetch(f"{server}/trickle", deadline_s=1.0, retries=3)
    assert f.reason == "unreachable" and time.monotonic() - t0 < 2.5


def test_retry_after_is_honoured(server):
    t0 = time.monotonic()
    f = fetch(f"{server}/busy/x.jpg", backoff_s=0.0)
    assert f.data == _Server.photo and f.attempts == 2
    assert time.monotonic() - t0 >= 0.9  # waited what the server asked, not backoff_s


def test_spaces_and_non_ascii_are_quoted(server):
    f = fetch(f"{server}/a photo/café.jpg")
    assert f.data == _Server.photo
    assert _Server.hits[-1] == "/a%20photo/caf%C3%A9.jpg"


def test_signed_url_secrets_reach_no_output_and_no_log(server, tmp_path, caplog):
    lst = tmp_path / "unsplash.txt"
    secret = "X-Amz-Signature=SECRET0123"
    base = server.replace("http://", "http://user:PASSWORD9@")
    lst.write_text(f"{base}/ok.jpg?{secret}&token=TOKEN42\n{server}/to-file?token=TOKEN42\n")
    with caplog.at_level(logging.DEBUG):
        rows, _ = ingest([lst], tmp_path, allow_private_addresses=True)
    assert [r["drop_reason"] for r in rows] in ([None, "refused_url"], ["refused_url", None])
    assert any("token=TOKEN42" in h for h in _Server.hits)  # the query string was sent to the server
    written = b"".join(p.read_bytes() for p in (tmp_path / "out").iterdir())
    table_text = str(pq.read_table(tmp_path / "out" / "00000.parquet").drop_columns(["image"]).to_pylist())
    for leak in ("SECRET0123", "TOKEN42", "PASSWORD9", "Signature"):
        assert leak not in table_text and leak.encode() not in written and leak not in caplog.text, leak
    assert {r["locator"] for r in rows} == {f"{server}/ok.jpg", f"{server}/to-file"}


def test_a_body_over_the_byte_cap_is_too_large(server):
    f = fetch(f"{server}/a.jpg", max_bytes=100)
    assert f.reason == "too_large" and f.data is None
