"""finet2i explore under hostile numbers (issue 23): every number it reads from a request (page, score bounds) or
from an index row (a member's offset and size) is checked: a 400 page or a "broken index" page (422), never a 500
or a traceback, and an offset and size are served only when they are exactly the member they name."""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from finet2i.explore import media
from finet2i.explore.query import ExploreError, Query
from finet2i.stages.assemble import write_tar

KEYS = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(3)]
NUMBERS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "-1e999", "1e308", "1_000", " 7 ", "0x10", "", "+3",
                     "99999999999999999999999", "5000000000000000000", "9223372036854775807", "-0", "2.5", "１２"]),
    st.text(max_size=12),
)


def _jpeg(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), color).save(buf, "JPEG")
    return buf.getvalue()


def make_results(root: Path, index_edit=None) -> tuple[Path, list[dict]]:  # type: ignore[no-untyped-def]
    """A results folder with one release tar of 3 samples and its index (``index_edit`` changes the rows)."""
    folder = root / "results" / "dataset" / "curated"
    folder.mkdir(parents=True)
    rows = [{"key": k, "jpg": _jpeg((60 * i, 0, 0)), "json": json.dumps({"id": k}), "txt": f"a photo {i}"}
            for i, k in enumerate(KEYS)]
    where = write_tar(folder / "train-000000.tar", rows)
    index = [{"id": r["key"], "prompt": r["txt"], "subset": "real", "image_generator": "pexels",
              "aesthetic_predictor_v_2_5_score": 7.0, "tar": "train-000000.tar", **at}
             for r, at in zip(rows, where, strict=True)]
    if index_edit:
        index = index_edit(index)
    pq.write_table(pa.Table.from_pylist(index), folder / "train-000000.parquet")
    stage = root / "results" / "curated_ingest"  # a stage table with dropped records (the dropped view)
    stage.mkdir()
    pq.write_table(pa.Table.from_pylist([{"id": f"real-00000-{i:06d}", "source": "pexels", "locator": f"x/{i}",
                                          "kept": i == 0, "drop_reason": None if i == 0 else "too_small"}
                                         for i in range(5)]), stage / "00000.parquet")
    return root / "results", where


# --- numbers from a request ----------------------------------------------------------------------------------

@given(page=NUMBERS, low=NUMBERS, high=NUMBERS)
@settings(max_examples=300, deadline=None)
def test_a_query_string_number_is_a_bounded_finite_number_or_a_400(page, low, high):
    try:
        q = Query.from_params({"page": page, "min_score": low, "max_score": high})
    except ExploreError:
        return
    assert 0 <= q.page <= 1_000_000
    for v in (q.min_score, q.max_score):
        assert v is None or (abs(v) <= 1e9 and v == v)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, list[dict]]]:
    from finet2i.explore.server import App, make_server

    root = tmp_path_factory.mktemp("explore")
    results, where = make_results(root)
    server = make_server(App(results, cache_dir=root / "cache"), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", where
    server.shutdown()
    server.server_close()


def status_of(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@given(page=NUMBERS, low=NUMBERS, high=NUMBERS)
@example(page="5000000000000000000", low="", high="")  # the one that reached DuckDB's OFFSET as an INT128
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_grid_and_the_dropped_view_answer_any_number_with_a_page_never_a_500(served, page, low, high):
    base, _ = served
    query = urllib.parse.urlencode({"page": page, "min_score": low, "max_score": high})
    for path in (f"/?{query}", f"/dropped/curated_ingest?{urllib.parse.urlencode({'page': page})}"):
        status, body = status_of(base + path)
        assert status in (200, 400, 404), (path, status, body[:300])
        assert b"Traceback" not in body


# --- numbers from an index row --------------------------------------------------------------------------------

OFFSETS = st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(min_value=-600, max_value=9000))


@given(offset=OFFSETS, size=OFFSETS, which=st.integers(min_value=0, max_value=2))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_an_offset_and_size_are_served_only_when_they_are_exactly_the_member_they_name(tmp_path_factory, offset,
                                                                                          size, which):
    root = tmp_path_factory.mktemp("tar")
    results, where = make_results(root)
    tars = media.TarImages(results)
    truth = (where[which]["jpg_offset"], where[which]["jpg_size"])
    try:
        data = tars.read("curated", "train-000000.tar", KEYS[which], offset, size)
    except ExploreError as e:
        assert "train-000000.parquet" in str(e) and (offset, size) != truth
        return
    assert (offset, size) == truth and data is not None and data[:2] == b"\xff\xd8"


@pytest.mark.parametrize("case", ["negative", "past_the_end", "absurd", "the_header", "a_neighbour", "text"])
def test_a_broken_index_row_is_a_broken_index_page_not_a_500_and_no_bytes(tmp_path, case):
    from finet2i.explore.server import App, make_server

    def edit(index: list[dict]) -> list[dict]:
        r = index[1]
        if case == "negative":
            r["jpg_offset"] = -4096
        elif case == "past_the_end":
            r["jpg_offset"] += 10**6
        elif case == "absurd":
            r["jpg_size"] = 2**62  # the old reader allocated this before reading
        elif case == "the_header":
            r["jpg_offset"], r["jpg_size"] = r["jpg_offset"] - 512, 512  # the tar header, served as a JPEG
        elif case == "a_neighbour":
            r["jpg_offset"], r["jpg_size"] = index[0]["jpg_offset"], index[0]["jpg_size"]
        else:  # the column is text: no row of this index is trusted
            for other in index:
                other["jpg_size"] = str(other["jpg_size"])
            r["jpg_size"] = "many"
        return index

    results, _ = make_results(tmp_path, edit)
    server = make_server(App(results, cache_dir=tmp_path / "cache"), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for route in ("image", "thumb"):
            status, body = status_of(f"{base}/{route}/curated/{KEYS[1]}")
            assert status in (400, 422), (case, route, status, body[:200])
            assert b"Broken index" in body or b"not" in body
            assert b"Traceback" not in body and not body.startswith(b"\xff\xd8")
        expected = 422 if case == "text" else 200  # the other rows still serve (unless the column is text)
        assert status_of(f"{base}/image/curated/{KEYS[0]}")[0] == expected
    finally:
        server.shutdown()
        server.server_close()
