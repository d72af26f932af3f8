"""The human-preference pages over a small evaluation written by hand (no model): what a vote must carry to be
written, what is refused (and then nothing is written), escaping, and blind image URLs. The keyboard session in
chromium, with a server restart, runs on the demo's real evaluation (tests/workflow_runs/test_workflow_finetune.py).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import re
import threading
from pathlib import Path
from urllib.parse import urlencode

import pytest
from PIL import Image

from finet2i.core import shards
from finet2i.finetune import votes

HOSTILE = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(out, "PNG")
    return out.getvalue()


def write_evaluation(results: Path, n: int = 3) -> list[dict]:
    ev = results / "evaluate"
    rows = []
    for i in range(n):
        pid = f"p{i:05d}-s0"
        row = {"pair_id": pid, "prompt": f"prompt {i} {HOSTILE}", "category": "c", "seed": i, "tuned_left": True}
        for side, color in (("base", (200, 0, 0)), ("tuned", (0, 0, 200))):
            path = ev / "images" / side / f"{pid}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png(color))
            row[f"{side}_image"] = f"images/{side}/{pid}.png"
            row[f"{side}_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        rows.append(row)
    shards.write_table(ev / "pairs.parquet", rows)
    shards.write_json(ev / "metrics.json", {"demo": True, "evaluation_id": votes.evaluation_id(rows), "judge": {}})
    return rows


@pytest.fixture()
def app(tmp_path):
    from finet2i.explore.server import App, make_server

    results = tmp_path / "results"
    write_evaluation(results)
    app = App(results, tmp_path / "cache")
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"app": app, "port": server.server_address[1], "votes": results / votes.VOTES}
    server.shutdown()
    server.server_close()


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None,
            host: str | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host or f"127.0.0.1:{port}")
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    if method == "POST":
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body if method == "POST" else None)
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def good_form(app, **changes) -> dict:
    q = app["app"].preference.next_question("alice")
    return {"token": app["app"].preference.token, "rater": "alice", "pair": q["pair"], "criterion": q["criterion"],
            "key": "1", **changes}


def test_a_vote_is_written_and_the_next_question_follows(app):
    status, headers, _ = request(app["port"], "POST", "/vote", urlencode(good_form(app)).encode(),
                                 {**FORM, "Origin": f"http://127.0.0.1:{app['port']}", "Sec-Fetch-Site": "same-origin"})
    assert status == 303 and headers["Location"] == "/vote?rater=alice"
    (line,) = app["votes"].read_text().splitlines()
    assert json.loads(line)["rater"] == "alice"
    status, _, body = request(app["port"], "GET", "/vote?rater=alice")
    assert status == 200 and b"question 2 of 6" in body
    # the browser's own form post, under the pages' no-referrer policy: Origin null, Sec-Fetch-Site same-origin
    q = app["app"].preference.next_question("alice")
    status, _, _ = request(app["port"], "POST", "/vote",
                           urlencode(good_form(app, pair=q["pair"], criterion=q["criterion"])).encode(),
                           {**FORM, "Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert status == 303 and len(app["votes"].read_text().splitlines()) == 2


@pytest.mark.parametrize(("change", "headers", "message"), [
    ({"token": "forged"}, {}, b"out of date"),
    ({"token": ""}, {}, b"out of date"),
    ({}, {"Origin": "http://evil.example"}, b"came from"),
    ({}, {"Origin": "null"}, b"came from"),  # a sandboxed frame elsewhere
    ({}, {"Sec-Fetch-Site": "cross-site"}, b"another site"),
    ({"rater": HOSTILE}, {}, b"rater name"),
    ({"rater": "a" * 41}, {}, b"rater name"),
    ({"pair": "../../secret"}, {}, b"no such pair"),
    ({"criterion": "<b>"}, {}, b"criterion"),
    ({"key": "7"}, {}, b"1 (left)"),
    ({"key": "", "choice": HOSTILE}, {}, b"1 (left)"),
])
def test_a_forged_or_hostile_vote_is_refused_and_nothing_is_written(app, change, headers, message):
    status, _, body = request(app["port"], "POST", "/vote", urlencode(good_form(app, **change)).encode(),
                              {**FORM, **headers})
    assert status == 400 and message in body
    assert b"<script>" not in body
    assert not app["votes"].exists()


def test_bodies_hosts_and_routes_that_are_refused(app):
    body = urlencode(good_form(app)).encode()
    assert request(app["port"], "POST", "/vote", body, {"Content-Type": "text/plain"})[0] == 400
    assert request(app["port"], "POST", "/vote", b"x" * 5000, FORM)[0] == 400
    assert request(app["port"], "POST", "/vote", body, FORM, host="evil.example")[0] == 403  # DNS rebinding
    assert request(app["port"], "POST", "/", body, FORM)[0] == 404
    many = "&".join(f"f{i}=1" for i in range(40)).encode()
    assert request(app["port"], "POST", "/vote", many, FORM)[0] == 400
    assert not app["votes"].exists()


def test_the_vote_page_is_blind_and_shows_the_prompt_as_text(app):
    status, headers, body = request(app["port"], "GET", "/vote?rater=alice")
    page = body.decode()
    assert status == 200 and "script-src" not in headers["Content-Security-Policy"]
    assert "&lt;script&gt;window.__xss" in page and "<script>" not in page
    srcs = re.findall(r'<img id="(?:left|right)" src="([^"]+)"', page)
    assert len(srcs) == 2 and not any("base" in s or "tuned" in s for s in srcs)  # the URLs do not tell
    assert 'accesskey="1"' in page and 'accesskey="2"' in page and 'accesskey="="' in page
    left, right = (request(app["port"], "GET", s.replace("&amp;", "&"))[2] for s in srcs)
    pair = re.search(r'name="pair" value="([^"]+)"', page).group(1)
    tuned_left = votes.tuned_left(app["app"].preference.evaluation, "alice", pair)
    blue = png((0, 0, 200))
    assert (left == blue) == tuned_left and (right == blue) != tuned_left
    for bad in ("/vote/image/..%2f..%2fsecret/left?rater=alice", "/vote/image/p00000-s0/middle?rater=alice",
                "/vote/image/p00000-s0/left?rater=%3Cscript%3E"):
        assert request(app["port"], "GET", bad)[0] in (400, 404)
    status, _, body = request(app["port"], "GET", "/vote?rater=%3Cscript%3Ealert(1)%3C/script%3E")
    assert status == 400 and b"<script>alert" not in body


def test_the_summary_before_any_vote_and_a_run_without_evaluation(app, tmp_path):
    status, _, body = request(app["port"], "GET", "/votes")
    assert status == 200 and b"no votes yet" in body and b"0 votes by 0 rater(s) on 3 pairs" in body
    from finet2i.explore.server import App

    (tmp_path / "bare").mkdir()
    bare = App(tmp_path / "bare", tmp_path / "cache2")
    assert bare.preference is None and bare.urls.votes is None
