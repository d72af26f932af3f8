"""finet2i explore's parts that need no demo run: paths under RESULTS_DIR, the query string, reading an image
from a tar with and without the offsets in the index. The app itself, in a browser over the demo's output, is
tested in test_workflow_explore.py."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from finet2i.explore import media
from finet2i.explore.query import ExploreError, Query
from finet2i.stages.assemble import write_tar


def test_inside_refuses_every_way_out(tmp_path):
    root = tmp_path / "results"
    (root / "report").mkdir(parents=True)
    (root / "report" / "report.html").write_text("ok")
    (tmp_path / "secret.txt").write_text("no")
    (root / "report" / "link.txt").symlink_to(tmp_path / "secret.txt")
    assert media.inside(root, "report/report.html") == root / "report" / "report.html"
    assert media.inside(root, "/report/report.html") == root / "report" / "report.html"  # never absolute
    for bad in ("../secret.txt", "report/../../secret.txt", "report/link.txt", "report", "", "nope.txt",
                "report/report.html\x00.png", str(tmp_path / "secret.txt")):
        assert media.inside(root, bad) is None, bad


def test_query_from_the_url():
    q = Query.from_params({"subset": "pe_ar", "style": "Anime", "q": " Red  cat ", "min_score": "5.5",
                           "page": "2", "unknown": "x", "task": ""})
    assert q.facets == (("style", "Anime"), ("subset", "pe_ar")) and q.text == "Red  cat"
    assert q.min_score == 5.5 and q.max_score is None and q.page == 2
    assert q.params(page=None) == {"style": "Anime", "subset": "pe_ar", "q": "Red  cat", "min_score": "5.5"}
    for bad, message in (({"min_score": "high"}, "min_score='high' is not a number"),
                         ({"page": "two"}, "page='two' is not a page number"),
                         ({"order": "random"}, "order='random': expected one of")):
        with pytest.raises(ExploreError, match=message):
            Query.from_params(bad)


def _jpeg(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), color).save(buf, "JPEG")
    return buf.getvalue()


def test_images_by_offset_and_by_scanning_the_tar(tmp_path):
    folder = tmp_path / "results" / "dataset" / "curated"
    folder.mkdir(parents=True)
    rows = [{"key": f"k{i}", "jpg": _jpeg((40 * i, 0, 0)), "json": "{}", "txt": f"prompt {i}"} for i in range(3)]
    where = write_tar(folder / "train-000000.tar", rows)
    tars = media.TarImages(tmp_path / "results")
    for r, at in zip(rows, where, strict=True):
        assert tars.read("curated", "train-000000.tar", r["key"], at["jpg_offset"], at["jpg_size"]) == r["jpg"]
        assert tars.read("curated", "train-000000.tar", r["key"], None, None) == r["jpg"]  # index without offsets
    assert tars.read("curated", "train-000000.tar", "missing", None, None) is None
    assert tars.read("..", "curated/train-000000.tar", "k0", where[0]["jpg_offset"], where[0]["jpg_size"]) is None
    thumb = media.thumbnail(_jpeg((0, 200, 0)), side=4)
    assert Image.open(io.BytesIO(thumb)).size == (4, 2)


def test_cache_thumbnails_only_under_safe_names(tmp_path):
    cache = media.ThumbCache(tmp_path)
    made = []

    def make() -> bytes:
        made.append(1)
        return _jpeg((1, 2, 3))

    assert cache.get("curated", "k0", make) and cache.get("curated", "k0", make) and len(made) == 1
    assert Path(tmp_path / "thumbs" / "curated" / "k0.jpg").is_file()
    assert cache.get("..", "k0", make) is None and cache.get("curated", "../k0", make) is None
