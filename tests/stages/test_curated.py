"""The curated real-image branch: ingest over a local HTTP server and folders, validation, shards, scoring."""

from __future__ import annotations

import http.server
import io
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import skimage.data
from PIL import Image

from finet2i.core import shards
from finet2i.models.spec import ModelSpec
from finet2i.plumbing import images
from finet2i.stages import curated_ingest, curated_score

SETTINGS = {"aesthetic_threshold": 3.0, "max_pixels": 40_000_000, "min_side": 48, "timeout_s": 2.0,
            "retries": 1, "backoff_s": 0.01, "chunk_size": 2,
            "allow_private_addresses": True}  # the tests' server is on 127.0.0.1


def jpeg(arr: np.ndarray | Image.Image, **kw) -> bytes:
    im = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90, **kw)
    return out.getvalue()


def png(im: Image.Image) -> bytes:
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no pixel data: nothing may decode it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def small(name: str, size: tuple[int, int] = (96, 72)) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)()).resize(size)


ASTRONAUT = small("astronaut", (96, 96))
COFFEE = small("coffee")
ROCKET = small("rocket")


def good_and_bad_files() -> dict[str, bytes]:
    astronaut = jpeg(ASTRONAUT)
    sof = astronaut.index(b"\xff\xc0")
    sof_len = int.from_bytes(astronaut[sof + 2:sof + 4], "big")
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 32, 64))  # left half fully transparent
    camera16 = Image.fromarray(skimage.data.camera()[::8, ::8].astype(np.uint16) * 257)
    return {
        "astronaut.jpg": astronaut,
        "coffee_png.jpg": png(COFFEE),  # a PNG behind a .jpg name
        "rocket_cmyk.jpg": jpeg(ROCKET.convert("CMYK")),
        "rgba.png": png(rgba),
        "camera16.png": png(camera16),
        "truncated.jpg": astronaut[: len(astronaut) // 2],
        "corrupt.jpg": astronaut[:2] + astronaut[sof:sof + 2 + sof_len] + bytes(range(256)) * 4 + b"\xff\xd9",
        "huge_header.png": png_header(20000, 20000),
        "big_header.png": png_header(8000, 8000),  # over max_pixels, under PIL's own bomb limit
        "tiny.jpg": jpeg(ASTRONAUT.resize((16, 16))),
        "notes.jpg": b"not an image at all\n",
    }


class _Handler(http.server.SimpleHTTPRequestHandler):
    flaky_failures: dict[str, int] = {}

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/flaky/"):
            left = self.flaky_failures.get(self.path, 0)
            if left > 0:
                self.flaky_failures[self.path] = left - 1
                self.send_error(503, "try again")
                return
            self.path = self.path.replace("/flaky/", "/", 1)
        if self.path.startswith("/slow/"):
            time.sleep(1.5)
            self.path = self.path.replace("/slow/", "/", 1)
        super().do_GET()


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    for name, data in good_and_bad_files().items():
        (root / name).write_bytes(data)

    def handler(*a, **kw):
        return _Handler(*a, directory=str(root), **kw)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def by_locator(path: Path) -> dict[str, dict]:
    return {r["locator"].rsplit("/", 1)[-1]: r for r in shards.read_records(path)}


def test_url_ingest_validates_and_normalises(server, tmp_path):
    base, _ = server
    _Handler.flaky_failures = {"/flaky/astronaut.jpg": 1}
    lst = tmp_path / "pexels.txt"
    lines = ["# a comment line", ""] + [f"{base}/{n}" for n in good_and_bad_files()] + [
        f"{base}/missing.jpg", f"http://127.0.0.1:{closed_port()}/gone.jpg", f"{base}/flaky/astronaut.jpg"]
    lst.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ingest" / "00000.parquet"
    stats = curated_ingest.run_curated_ingest([str(lst)], out, cshard="00000", n_shards=1, settings=SETTINGS,
                                       stats_path=shards.stats_path(out), workers=4)
    rows = shards.read_records(out)
    got = {r["locator"].removeprefix(base + "/"): r for r in rows}
    reasons = {k: r["drop_reason"] for k, r in got.items()}
    assert reasons["truncated.jpg"] == "truncated"
    assert reasons["corrupt.jpg"] == "corrupt"
    assert reasons["huge_header.png"] == "too_large"
    assert reasons["big_header.png"] == "too_large" and "max_pixels" in got["big_header.png"]["error"]
    assert reasons["tiny.jpg"] == "too_small"
    assert reasons["notes.jpg"] == "not_an_image"
    assert reasons["missing.jpg"] == "unreachable"  # 404: not retried
    assert got["missing.jpg"]["attempts"] == 1
    gone = next(k for k in got if k.endswith("gone.jpg"))
    assert reasons[gone] == "unreachable" and got[gone]["attempts"] == 2  # refused, retried once
    for name in ("astronaut.jpg", "coffee_png.jpg", "rocket_cmyk.jpg", "rgba.png", "camera16.png"):
        assert reasons[name] is None, (name, got[name]["error"])
    # The flaky URL succeeded on its second try and holds the same pixels as astronaut.jpg: a duplicate.
    flaky = got["flaky/astronaut.jpg"]
    assert flaky["attempts"] == 2 and flaky["drop_reason"] == "duplicate"
    assert flaky["duplicate_of"] == got["astronaut.jpg"]["id"] and flaky["image"] is None
    # Ids follow the shard's key order, and every input line has exactly one row.
    assert [r["id"] for r in rows] == [f"real-00000-{i:06d}" for i in range(len(rows))]
    assert len(rows) == len(lines) - 2 == stats.records_in
    assert stats.kept == 5 and stats.dropped["unreachable"] == 2
    assert all(r["source"] == "pexels" for r in rows)
    assert shards.StageStats.read(shards.stats_path(out)).kept == 5


def test_normalised_images_are_rgb_jpegs_with_the_right_pixels(server, tmp_path):
    _, root = server
    out = tmp_path / "00000.parquet"
    curated_ingest.run_curated_ingest([str(root)], out, cshard="00000", n_shards=1, settings=SETTINGS,
                               stats_path=tmp_path / "00000.stats.json")
    got = by_locator(out)

    def decoded(name: str) -> np.ndarray:
        im = Image.open(io.BytesIO(got[name]["image"]))
        assert im.format == "JPEG" and im.mode == "RGB"
        assert (im.width, im.height) == (got[name]["width"], got[name]["height"])
        return np.asarray(im, dtype=np.float64)

    assert got["coffee_png.jpg"]["source_format"] == "PNG"  # the bytes decide, not the name
    assert np.abs(decoded("coffee_png.jpg") - np.asarray(COFFEE, dtype=np.float64)).mean() < 4
    assert got["rocket_cmyk.jpg"]["source_mode"] == "CMYK"
    assert np.abs(decoded("rocket_cmyk.jpg") - np.asarray(ROCKET, dtype=np.float64)).mean() < 8
    rgba = decoded("rgba.png")
    assert rgba[:, :28].min() > 245  # transparent half on white
    assert rgba[:, 36:, 0].mean() > 240 and rgba[:, 36:, 1].mean() < 15  # opaque half stays red
    camera = skimage.data.camera()[::8, ::8].astype(np.float64)
    cam = decoded("camera16.png")[..., 0]
    assert got["camera16.png"]["source_mode"].startswith("I")
    assert np.abs(cam - camera).mean() < 4  # scaled from 16 bits, not clipped at 255
    assert got["truncated.jpg"]["image"] is None and got["truncated.jpg"]["kept"] is False


def test_huge_header_is_rejected_without_decoding():
    tracemalloc.start()
    try:
        with pytest.raises(images.Rejected) as e:
            images.normalise_image(png_header(20000, 20000), max_pixels=10**12, min_side=1, jpeg_quality=95)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert e.value.reason == "too_large"
    assert peak < 20_000_000  # decoding 20000x20000 RGB would need 1.2 GB


def test_fetch_timeout_is_unreachable(server):
    base, _ = server
    settings = curated_ingest.IngestSettings.from_config({**SETTINGS, "timeout_s": 0.3, "retries": 0})
    t0 = time.monotonic()
    f = curated_ingest.fetch(curated_ingest.SourceItem("x", f"{base}/slow/astronaut.jpg"), settings)
    assert f.reason == "unreachable" and f.data is None and "timed out" in (f.error or "").lower()
    assert time.monotonic() - t0 < 1.4


def test_shards_are_stable_disjoint_and_complete(tmp_path):
    folder = tmp_path / "unsplash_lite"
    (folder / "sub").mkdir(parents=True)
    for i in range(12):
        (folder / ("sub" if i % 2 else "") / f"img{i:02d}.jpg").write_bytes(
            jpeg(np.full((48, 64, 3), 20 * i, np.uint8)))
    (folder / ".hidden.jpg").write_bytes(b"x")  # hidden files are not images of the source
    n = 3
    seen: dict[str, str] = {}
    for k in range(n):
        cs = f"{k:05d}"
        out = tmp_path / "a" / f"{cs}.parquet"
        curated_ingest.run_curated_ingest([str(folder)], out, cshard=cs, n_shards=n, settings=SETTINGS,
                                   stats_path=shards.stats_path(out))
        again = tmp_path / "b" / f"{cs}.parquet"
        curated_ingest.run_curated_ingest([str(folder)], again, cshard=cs, n_shards=n, settings=SETTINGS,
                                   stats_path=shards.stats_path(again))
        assert pq.read_table(out).equals(pq.read_table(again))  # a rerun reproduces the shard exactly
        for r in shards.read_records(out):
            assert r["locator"] not in seen
            seen[r["locator"]] = r["id"]
            assert r["id"].startswith(f"real-{cs}-")
    assert sorted(seen) == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("img*.jpg"))


def test_empty_shard_writes_empty_tables_and_loads_no_model(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg(ASTRONAUT))
    n = 4
    home = curated_ingest.shard_of("src/a.jpg", n)
    empty = f"{(home + 1) % n:05d}"
    out = tmp_path / "ingest" / f"{empty}.parquet"
    stats = curated_ingest.run_curated_ingest([str(folder)], out, cshard=empty, n_shards=n, settings=SETTINGS,
                                       stats_path=shards.stats_path(out))
    assert stats.records_in == 0 and pq.read_table(out).num_rows == 0
    assert pq.read_table(out).schema.equals(curated_ingest.INGEST_SCHEMA)
    scored = tmp_path / "score" / f"{empty}.parquet"
    nowhere = ModelSpec(key="models.aesthetic_head", path=str(tmp_path / "no-such-model"))
    st = curated_score.run_curated_score(out, scored, cshard=empty, settings=SETTINGS, encoder=nowhere,
                                   head=nowhere, stats_path=shards.stats_path(scored))
    assert st.records_in == 0 and pq.read_table(scored).num_rows == 0


def test_missing_source_names_the_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="curated.sources"):
        curated_ingest.items_for_shard([str(tmp_path / "nope")], "00000", 1)


class ContrastScorer:
    """A real (if crude) aesthetic proxy from pixels: RMS contrast of luminance mapped to 1..10."""

    model_name = "test/rms-contrast"

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.images = 0
        self.fail_after = fail_after

    def score(self, images: list) -> list[float]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("job killed")
        self.calls += 1
        self.images += len(images)
        return [1.0 + 9.0 * min(1.0, float(np.asarray(im.convert("L"), np.float64).std()) / 64.0)
                for im in images]


def test_score_keeps_above_threshold_and_resumes_from_chunks(tmp_path):
    folder = tmp_path / "pixabay"
    folder.mkdir()
    (folder / "astronaut.jpg").write_bytes(jpeg(ASTRONAUT))
    (folder / "coffee.jpg").write_bytes(jpeg(COFFEE))
    (folder / "rocket.jpg").write_bytes(jpeg(ROCKET))
    (folder / "flat_grey.jpg").write_bytes(jpeg(np.full((64, 64, 3), 128, np.uint8)))
    (folder / "soft_gradient.jpg").write_bytes(
        jpeg(np.tile(np.linspace(110, 146, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))))
    (folder / "broken.jpg").write_bytes(b"nope")
    ingest = tmp_path / "ingest" / "00000.parquet"
    curated_ingest.run_curated_ingest([str(folder)], ingest, cshard="00000", n_shards=1, settings=SETTINGS,
                               stats_path=shards.stats_path(ingest))
    out = tmp_path / "score" / "00000.parquet"
    spec = ModelSpec(key="models.aesthetic_encoder", path=str(tmp_path))
    # First run dies after one chunk (chunk_size 2): the finished chunk must survive.
    with pytest.raises(RuntimeError, match="job killed"):
        curated_score.run_curated_score(ingest, out, cshard="00000", settings=SETTINGS, encoder=spec, head=spec,
                                  stats_path=shards.stats_path(out), scorer=ContrastScorer(fail_after=1))
    assert not out.exists()
    scorer = ContrastScorer()
    stats = curated_score.run_curated_score(ingest, out, cshard="00000", settings=SETTINGS, encoder=spec, head=spec,
                                      stats_path=shards.stats_path(out), scorer=scorer)
    assert scorer.images == 3  # 5 kept images, 2 already scored before the "kill"
    rows = {r["locator"]: r for r in shards.read_records(out)}
    assert set(rows) == {"astronaut.jpg", "coffee.jpg", "rocket.jpg", "flat_grey.jpg", "soft_gradient.jpg"}
    assert "image" not in pq.read_schema(out).names  # verdicts only: the bytes stay in the ingest table
    jpegs = images.image_bytes(ingest, "id", [r["id"] for r in rows.values()])
    for r in rows.values():
        expect = ContrastScorer().score([Image.open(io.BytesIO(jpegs[r["id"]]))])[0]
        assert r["aesthetic_predictor_v_2_5_score"] == pytest.approx(expect)
        assert r["kept"] == (expect >= SETTINGS["aesthetic_threshold"])
    assert rows["flat_grey.jpg"]["drop_reason"] == "low_aesthetic"
    assert rows["soft_gradient.jpg"]["drop_reason"] == "low_aesthetic"
    assert rows["astronaut.jpg"]["kept"]
    assert stats.model == "test/rms-contrast" and stats.dropped == {"low_aesthetic": 2}
    assert stats.extra["resumed_chunks"] == 1
    assert not (out.parent / (out.name + ".chunks")).exists()  # checkpoint cleaned after success


def test_score_loads_the_real_aesthetic_predictor_from_model_specs(tmp_path):
    """The production path: scorer=None loads SigLIP + the V2.5 head from the specs (tiny, random-weight)."""
    from finet2i.demo.aesthetic import build_aesthetic
    from finet2i.models.backends.aesthetic import load_aesthetic_scorer

    enc_dir, head_file = build_aesthetic(tmp_path / "models", seed=0)
    encoder = ModelSpec(key="models.aesthetic_encoder", path=str(enc_dir))
    head = ModelSpec(key="models.aesthetic_head", path=str(head_file))
    folder = tmp_path / "unsplash_lite"
    folder.mkdir()
    for name in ("astronaut", "coffee", "rocket", "chelsea"):
        (folder / f"{name}.jpg").write_bytes(jpeg(small(name)))
    ingest = tmp_path / "ingest" / "00000.parquet"
    curated_ingest.run_curated_ingest([str(folder)], ingest, cshard="00000", n_shards=1, settings=SETTINGS,
                               stats_path=shards.stats_path(ingest))
    out = tmp_path / "score" / "00000.parquet"
    rows_in = shards.read_kept(ingest)
    reference = load_aesthetic_scorer(encoder, head).score(
        [Image.open(io.BytesIO(r["image"])).convert("RGB") for r in rows_in])
    ranked = sorted(reference)
    threshold = (ranked[1] + ranked[2]) / 2  # keep exactly the two best
    stats = curated_score.run_curated_score(ingest, out, cshard="00000",
                                      settings={**SETTINGS, "aesthetic_threshold": threshold},
                                      encoder=encoder, head=head, stats_path=shards.stats_path(out))
    rows = shards.read_records(out)
    assert [r["aesthetic_predictor_v_2_5_score"] for r in rows] == pytest.approx(reference, abs=1e-4)
    assert stats.kept == 2 and stats.dropped == {"low_aesthetic": 2}
    assert stats.model and stats.extra["threshold"] == threshold


def test_a_named_source_is_what_the_dataset_records(tmp_path):
    """{path, name}: the release's image_generator for real images is the platform (pexels), not a folder."""
    folder = tmp_path / "downloads-2026-03"
    folder.mkdir()
    photo = Image.fromarray(skimage.data.coffee()).resize((80, 60))
    photo.save(folder / "1234.jpg", "JPEG")
    out = tmp_path / "ingest.parquet"
    curated_ingest.run_curated_ingest([{"path": str(folder), "name": "pexels"}], out, cshard="00000", n_shards=1,
                                      settings={"min_side": 32}, stats_path=shards.stats_path(out))
    rows = pq.read_table(out).to_pylist()
    assert [(r["source"], r["locator"], r["kept"]) for r in rows] == [("pexels", "1234.jpg", True)]
    unnamed = curated_ingest.items_for_shard([str(folder)], "00000", 1)
    assert [it.source for it in unnamed] == ["downloads-2026-03"]
