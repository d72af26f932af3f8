"""`finet2i fetch-models` downloads a file as the curated downloader fetches an image (issue 23): a signed URL's
query and user-info are never printed, a trickling server is cut off by a total deadline, an endless body by a
byte cap (the known file's expected size with a margin, else --max-bytes), and loopback or private addresses,
asked for or redirected to, are refused unless --allow-private-addresses (a mirror on the local network)."""

from __future__ import annotations

import http.server
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from finet2i.cli.main import main
from finet2i.models import fetch
from finet2i.models.known import AESTHETIC_HEAD, FileSource

pytestmark = pytest.mark.timeout(120)  # a download without a deadline would hang here
TOKEN = "SIGxSECRETx93b1"  # in the query string of a signed URL: never printed
PASSWORD = "pw-SECRET-77"


def _head_bytes() -> bytes:
    import torch

    shapes = [(1024, 1152), (1024,), (128, 1024), (128,), (64, 128), (64,), (16, 64), (16,), (1, 16), (1,)]
    names = [f"scoring_head.{i}.{w}" for i in (0, 2, 4, 6, 8) for w in ("weight", "bias")]
    buf = io.BytesIO()
    torch.save(OrderedDict((n, torch.zeros(s)) for n, s in zip(names, shapes, strict=True)), buf)
    return buf.getvalue()


@pytest.fixture
def server(monkeypatch) -> Iterator[SimpleNamespace]:
    head = _head_bytes()
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            path = self.path.split("?")[0]
            try:
                if path == "/head.pth":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(head)))
                    self.end_headers()
                    self.wfile.write(head)
                elif path == "/to-loopback":  # a redirect into the machine (the first hop "looks" public)
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/head.pth")
                    self.end_headers()
                elif path == "/trickle":
                    self.send_response(200)
                    self.end_headers()
                    end = time.monotonic() + 10  # a bound for the test itself
                    while time.monotonic() < end:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.1)
                elif path == "/endless":
                    self.send_response(200)
                    self.end_headers()
                    for _ in range(256):  # 64 MiB at most (a bound for the test itself)
                        self.wfile.write(b"\0" * (1 << 18))
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: object) -> None:
            pass

    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}", port=httpd.server_port, hits=hits)
    finally:
        httpd.shutdown()
        httpd.server_close()


def _config(dest: Path, url: str) -> dict:
    return {"models": {"aesthetic_head": {"path": str(dest), "url": url}}}


def test_a_signed_urls_query_and_user_info_are_never_printed(server, tmp_path):
    signed = server.url.replace("http://", f"http://user:{PASSWORD}@") + f"/head.pth?X-Amz-Signature={TOKEN}&t=1"
    missing = server.url.replace("http://", f"http://user:{PASSWORD}@") + f"/gone.pth?token={TOKEN}"
    for url, dest in ((signed, tmp_path / "a.pth"), (missing, tmp_path / "b.pth")):
        for dry_run in (True, False):
            out: list[str] = []
            report = fetch.fetch_models(_config(dest, url), ["aesthetic_head"], accepted=["aesthetic_head"],
                                        dry_run=dry_run, allow_private=True, echo=out.append)
            text = "\n".join(out + report.missing)
            assert TOKEN not in text and PASSWORD not in text, text
            assert f"127.0.0.1:{server.port}/" in text  # the URL is shown: scheme://host/path
    assert (tmp_path / "a.pth").read_bytes() == _head_bytes()  # fetched with its secrets all the same


def test_loopback_and_private_targets_are_refused_unless_allowed(server, tmp_path):
    dest = tmp_path / "head.pth"
    out: list[str] = []
    report = fetch.fetch_models(_config(dest, server.url + "/head.pth"), ["aesthetic_head"],
                                accepted=["aesthetic_head"], echo=out.append)
    assert report.missing and "--allow-private-addresses" in report.missing[0] and "127.0.0.1" in report.missing[0]
    assert server.hits == [] and not dest.exists()  # refused before any connection
    # the command's flag lets a local mirror serve it
    assert "--allow-private-addresses" in CliRunner().invoke(main, ["fetch-models", "--help"]).output
    report = fetch.fetch_models(_config(dest, server.url + "/head.pth"), ["aesthetic_head"],
                                accepted=["aesthetic_head"], allow_private=True)
    assert report.missing == [] and dest.read_bytes() == _head_bytes()


def test_a_redirect_to_a_loopback_address_is_refused_and_nothing_is_saved(server, tmp_path, monkeypatch):
    real = fetch.check_target if hasattr(fetch, "check_target") else None

    def first_hop_is_public(url, allow_private, *args):  # the first hop stands for a public mirror
        if "/to-loopback" not in url and real is not None:
            real(url, allow_private, *args)

    monkeypatch.setattr(fetch, "check_target", first_hop_is_public, raising=False)
    dest = tmp_path / "head.pth"
    with pytest.raises(fetch.DownloadRejected, match="redirect refused.*127.0.0.1"):
        fetch.download_file(server.url + "/to-loopback", dest)
    assert not dest.exists() and server.hits == ["/to-loopback"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_a_trickling_server_is_cut_off_by_the_total_deadline(server, tmp_path):
    dest = tmp_path / "x.pth"
    started = time.monotonic()
    with pytest.raises(fetch.DownloadRejected, match="deadline"):
        fetch.download_file(server.url + "/trickle", dest, allow_private=True, deadline_s=1.5, timeout=5)
    assert time.monotonic() - started < 5 and not dest.exists()


def test_an_endless_body_stops_at_the_cap_and_a_known_file_is_capped_near_its_expected_size(server, tmp_path,
                                                                                             monkeypatch):
    dest = tmp_path / "x.pth"
    with pytest.raises(fetch.DownloadRejected, match="more than 1,048,576 bytes"):
        fetch.download_file(server.url + "/endless", dest, allow_private=True, max_bytes=1 << 20)
    assert not dest.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    # The published head: 1,321,185 float32 parameters; its cap is that with a margin, far below --max-bytes.
    cap = fetch.size_cap(AESTHETIC_HEAD, None)
    assert 5_284_740 < cap < 16 << 20 and fetch.size_cap(None, 123) == 123
    # fetch-models applies the known file's cap: an endless "head" stops there.
    known = FileSource(url=server.url + "/endless", license="AGPL-3.0", license_url="x", home="x",
                       expected_bytes=1 << 20)
    monkeypatch.setitem(fetch.KNOWN_FILES, "aesthetic_head", known)
    report = fetch.fetch_models({"models": {"aesthetic_head": {"path": str(dest)}}}, ["aesthetic_head"],
                                accepted=["aesthetic_head"], allow_private=True)
    assert report.missing and "more than" in report.missing[0] and not dest.exists()
