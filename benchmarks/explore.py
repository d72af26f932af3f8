"""explore benchmark: the explorer's queries on a synthetic release index, beside a baseline.

    .venv/bin/python benchmarks/explore.py                     # 1,000,000 samples in 1,000 tars of 1,000
    .venv/bin/python benchmarks/explore.py --release           # the release: 6,314,117 samples, 20,635,616 pairs
    .venv/bin/python benchmarks/explore.py --samples 100000    # a quick look

Makes, in a temp folder, ``dataset/<folder>/train-NNNNNN.parquet`` indexes with the release's columns (the 15
keys, origin, provenance, member offsets), random facet values from the taxonomy, prompts of 12-30 and enhanced
prompts of 30-60 words drawn from a 5,000-word Zipf vocabulary (a search word is in ~8% of samples). To keep the
data cheap to make at the release's size, each sample's texts are drawn from a pool of 200,000 of each (every
text is still a random Zipf sentence; a page of the grid shows 48 different ones) and the columns are built as
arrays, not rows. The images are shared: every index points into one small real tar of JPEGs (each
``train-NNNNNN.tar`` is a symlink to it), so the disk holds ~the indexes only. Then, over HTTP to a real
``finet2i explore`` server
(``finet2i.explore.server``, the same code the command runs), the median of ``--repeat`` requests of:

* the grid, filtered and paginated: subset + style + a word of full-text search, page 3 (counts per facet,
  the page's rows, the HTML);
* a detail view: one sample's page (its row, its provenance from its index, the other subsets) and its image
  (read at its offset in the tar);
* a thumbnail, cached (the first request makes it).

* a page of the judge's dropped records (one subset and reason) over ``pair_filter`` tables of ``--judged``
  pairs (default: as many as samples; the release's funnel judged 20,635,616) in shard tables of the
  production's size (4,606 pairs per subset and shard), 60% dropped.

Baseline, for the same two questions without the explorer's table: a pyarrow dataset scan of every index per
request (filter, count, slice), and a detail read by a filtered scan plus ``tarfile`` finding the member by
name. Also printed: the one-off load of the indexes into the DuckDB table (first start), and a restart that
opens the cached table.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import random
import shutil
import statistics
import tarfile
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

FOLDERS = ["synthetic_enhanced_prompt_random_resolution", "synthetic_enhanced_prompt_square_resolution",
           "synthetic_original_prompt_random_resolution", "synthetic_original_prompt_square_resolution"]
WORDS = ("cat dog castle river portrait mountain neon city street market robot garden ocean forest desert bridge "
         "lantern violin dragon teapot bicycle window sunset storm glacier owl fox whale train library kitchen "
         "painting sculpture festival harbor lighthouse meadow canyon temple orchard balloon").split()


def vocabulary(size: int = 5000, seed: int = 3) -> tuple[list[str], list[float]]:
    """Words and Zipf weights (1 / (rank + 10)), like prompt text: a few very common words, a long tail. The
    search words (WORDS) sit at ranks 100-143, so each is in roughly one prompt pair in twelve."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "gra", "pel", "dor", "fen", "lu", "xo", "bri"]
    pseudo = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(size * 2)})
    rng.shuffle(pseudo)
    words = [w for w in pseudo if w not in WORDS][: size - len(WORDS)]
    words[100:100] = list(WORDS)
    return words, [1 / (rank + 10) for rank in range(len(words))]


VOCAB, WEIGHTS = vocabulary()
CUMULATIVE = list(itertools.accumulate(WEIGHTS))  # once: random.choices would sum 5,000 weights per call


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(VOCAB, cum_weights=CUMULATIVE, k=n))
STYLES = ["General & Photorealistic", "Anime", "3D & CGI", "Graphic & Digital", "Abstract & Artistic",
          "Vintage & Retro", "Futuristic & Sci-Fi", "Traditional/modern Art", "Cartoon & Illustration"]
CATEGORIES = {"People": ["Portrait", "Age", "Emotions"], "Nature": ["Landscape", "Animals", "Plants"],
              "Design": ["Logo", "Poster"], "Text rendering": ["Short text", "Long text"], "Rare": ["Rare cases"]}
TASKS = [None, ["Counting"], ["Colors"], ["Reasoning"], ["Colors", "Counting"], ["Spatial"]]
ASPECTS = ["1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16"]


def shared_tar(path: Path, n: int) -> list[tuple[int, int]]:
    """A real tar laid out like a release tar (``n`` samples: a small JPEG, a json, a txt each); returns each
    image's (offset, size)."""
    from PIL import Image

    where = []
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (512, 512), ((37 * i) % 256, (91 * i) % 256, (173 * i) % 256)).save(buf, "JPEG")
            for ext, data in (("jpg", buf.getvalue()), ("json", b"{}"), ("txt", b"a prompt")):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                if ext == "jpg":
                    where.append((tf.offset + len(info.tobuf(tf.format, tf.encoding, tf.errors)), len(data)))
                tf.addfile(info, io.BytesIO(data))
    return where


POOL = 200_000  # distinct texts of each kind that samples draw from (see the module docstring)


def text_pools(seed: int = 5) -> dict[str, Any]:
    """Pools of prompts (12-30 words), enhanced prompts (30-60) and judge answers (40), as arrow arrays."""
    import pyarrow as pa

    rng = random.Random(seed)
    return {"prompt": pa.array([text(rng, rng.randint(12, 30)) for _ in range(POOL)]),
            "enhanced": pa.array([text(rng, rng.randint(30, 60)) for _ in range(POOL)]),
            "answer": pa.array([text(rng, 40) for _ in range(POOL // 4)])}


def _pick(g: Any, values: list[Any], n: int, arrow_type: Any = None) -> Any:
    import pyarrow as pa

    return pa.array(values, arrow_type).take(pa.array(g.integers(0, len(values), n)))


def write_indexes(root: Path, samples: int, per_tar: int, pools: dict[str, Any], seed: int = 0
                  ) -> list[tuple[str, str]]:
    """The synthetic dataset, one index per tar built from arrays; returns a few (folder, key) to open."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from finet2i.release.tables import INDEX_SCHEMA

    g = np.random.default_rng(seed)
    images = root / "dataset" / FOLDERS[0] / "images.tar"
    images.parent.mkdir(parents=True)
    where = shared_tar(images, per_tar)
    offsets, sizes = (pa.array([w[k] for w in where], pa.int64()) for k in (0, 1))
    n_tars = -(-samples // per_tar)
    per_folder = -(-n_tars // len(FOLDERS))
    categories = [f"{c}: {s}" for c, subs in CATEGORIES.items() for s in subs]
    provenance = [json.dumps({"candidate_seeds": [1, 2, 3], "candidate_scores": [5.6, 6.1, round(5 + k / 100, 2)],
                              "seed": k, "guard_verdict": "safe"}) for k in range(100)]
    picks = []
    for t in range(n_tars):
        folder = FOLDERS[t // per_folder]
        subset = ["pe_ar", "pe_as", "po_ar", "po_as"][FOLDERS.index(folder)]
        d = root / "dataset" / folder
        d.mkdir(parents=True, exist_ok=True)
        name = f"train-{t % per_folder:06d}"
        os.symlink(images, d / f"{name}.tar")
        n = min(per_tar, samples - t * per_tar)
        raw = g.bytes(16 * n)
        keys = [str(uuid.UUID(bytes=raw[16 * i:16 * i + 16])) for i in range(n)]
        prompt = pools["prompt"].take(pa.array(g.integers(0, POOL, n)))
        enhanced = pools["enhanced"].take(pa.array(g.integers(0, POOL, n)))
        image = g.integers(0, len(where), n)
        cols = {
            "id": pa.array(keys), "prompt": prompt, "enhanced_prompt": enhanced,
            "length": pc.list_value_length(pc.split_pattern(prompt, " ")),
            "enhanced_length": pc.list_value_length(pc.split_pattern(enhanced, " ")),
            "prompt_generator": pa.array(["Llama-3.1-8B-Instruct"] * n),
            "enhancer": pa.array(["promptenhancer-7b"] * n), "style": _pick(g, STYLES, n),
            "prompt_category": _pick(g, categories, n), "task": _pick(g, TASKS, n, pa.list_(pa.string())),
            "image_aspect_ratio": _pick(g, ASPECTS, n), "image_resolution": pa.array([[512, 512]] * n),
            "image_generator": _pick(g, ["Z-Image-Turbo", "FLUX.2-dev"], n),
            "image_generated_with_enhanced_prompt": pa.array([subset.startswith("pe")] * n),
            "aesthetic_predictor_v_2_5_score": pa.array(g.uniform(5.5, 7.5, n)), "subset": pa.array([subset] * n),
            "record_id": pa.array([f"{subset}-{t:05d}-{i:06d}" for i in range(n)]),
            "prompt_id": pa.array([f"{t:05d}-{i:06d}" for i in range(n)]),
            "provenance": _pick(g, provenance, n), "tar": pa.array([f"{name}.tar"] * n),
            "jpg_offset": offsets.take(pa.array(image)), "jpg_size": sizes.take(pa.array(image)),
        }
        table = pa.table({f.name: cols[f.name].cast(f.type) if f.name in cols else pa.nulls(n, f.type)
                          for f in INDEX_SCHEMA}, schema=INDEX_SCHEMA)
        table = table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))
        if t % max(1, n_tars // 5) == 0:
            picks.append((folder, table.column("id")[n // 2].as_py()))
        pq.write_table(table, d / f"{name}.parquet")
    return picks


def write_judge_tables(root: Path, records: int, per_shard: int, pools: dict[str, Any], seed: int = 1) -> None:
    """``pair_filter/<subset>/<shard>.parquet``: ``records`` judged pairs in all, 60% dropped (judge_rejected,
    judge_unsafe, low_aesthetic), with the judge's reasoning and answer as evidence."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    g = np.random.default_rng(seed)
    subsets = ["pe_ar", "pe_as", "po_ar", "po_as"]
    shards = -(-records // (per_shard * len(subsets)))
    reasons = pa.array(["judge_rejected", "judge_unsafe", "low_aesthetic", None])
    for subset in subsets:
        (root / "pair_filter" / subset).mkdir(parents=True)
        for sh in range(shards):
            n = per_shard
            x = g.random(n)
            reason = reasons.take(pa.array(np.select([x < 0.5, x < 0.55, x < 0.6], [0, 1, 2], 3)))
            answer = pools["answer"].take(pa.array(g.integers(0, len(pools["answer"]), n)))
            ids = [f"{sh:05d}-{i:06d}" for i in range(n)]
            table = pa.table({
                "id": pa.array(ids), "sample_id": pa.array([f"{subset}-{i}" for i in ids]),
                "prompt": pools["prompt"].take(pa.array(g.integers(0, POOL, n))),
                "enhanced_prompt": pools["enhanced"].take(pa.array(g.integers(0, POOL, n))),
                "aesthetic_predictor_v_2_5_score": pa.array(g.uniform(4, 7.5, n)),
                "judge_reasoning": answer, "judge_violations": pa.array(["composition,blur"] * n),
                "judge_raw": pc.binary_join_element_wise('{"verdict": "reject", "reasoning": "', answer, '"}', ""),
                "kept": pc.is_null(reason), "drop_reason": reason})
            pq.write_table(table, root / "pair_filter" / subset / f"{sh:05d}.parquet")


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Median milliseconds of ``fn(i)`` for i in 1..repeat, after a warm-up call ``fn(0)``. Callers make each
    ``i`` a different request (another search word, another sample), so no answer comes from a cache."""
    fn(0)
    times = []
    for i in range(1, repeat + 1):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=600) as r:
        return r.read()


def baseline_query(files: list[Path], subset: str, style: str, word: str, page: int) -> list[dict]:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    d = ds.dataset([str(f) for f in files], format="parquet")
    text = pc.utf8_lower(pc.binary_join_element_wise(ds.field("prompt"), ds.field("enhanced_prompt"), " "))
    cond = (ds.field("subset") == subset) & (ds.field("style") == style) & pc.match_substring(text, word)
    t = d.to_table(columns=["id", "prompt", "subset", "style", "aesthetic_predictor_v_2_5_score"], filter=cond)
    counts = {c: t.column(c).value_counts() for c in ("subset", "style")}  # counts, as the grid shows them
    assert counts
    return t.slice(page * 48, 48).to_pylist()


def baseline_detail(files: list[Path], key: str) -> bytes:
    import pyarrow.dataset as ds

    d = ds.dataset([str(f) for f in files], format="parquet")
    row = d.to_table(filter=ds.field("id") == key, columns=["id", "prompt", "provenance", "jpg_offset",
                                                              "__filename"]).to_pylist()[0]
    with tarfile.open(Path(row["__filename"]).with_suffix(".tar")) as tf:  # finds the member by a header scan
        member = next(m for m in tf.getmembers() if m.offset_data == row["jpg_offset"])
        return tf.extractfile(member).read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--judged", type=int, default=None, help="judged pairs [default: as many as samples]")
    ap.add_argument("--judge-per-shard", type=int, default=4606, help="pairs per subset and shard table")
    ap.add_argument("--release", action="store_true",
                    help="the release's size: 6,314,117 samples, 20,635,616 judged pairs (the paper's funnel)")
    ap.add_argument("--per-tar", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--keep", type=Path, default=None, help="Build the data here and keep it (reused if present).")
    args = ap.parse_args()
    if args.release:
        args.samples, args.judged = 6_314_117, 20_635_616
    judged = args.judged or args.samples

    from finet2i.explore.server import App, make_server

    root = args.keep or Path(tempfile.mkdtemp(prefix="finet2i-explore-bench-"))
    try:
        t0 = time.monotonic()
        picks_file = root / "picks.json"
        if not picks_file.exists():
            pools = text_pools()
            picks = write_indexes(root / "results", args.samples, args.per_tar, pools)
            write_judge_tables(root / "results", judged, args.judge_per_shard, pools)
            picks_file.write_text(json.dumps(picks))
        picks = [tuple(p) for p in json.loads(picks_file.read_text())]
        files = sorted((root / "results" / "dataset").glob("*/train-*.parquet"))
        size = sum(f.stat().st_size for f in files) / 2**20
        judge_files = sorted((root / "results" / "pair_filter").glob("*/*.parquet"))
        judge_size = sum(f.stat().st_size for f in judge_files) / 2**20
        print(f"{args.samples:,} samples in {len(files):,} indexes ({size:,.0f} MiB of parquet), {judged:,} judged "
              f"pairs in {len(judge_files):,} tables ({judge_size:,.0f} MiB), ready in "
              f"{time.monotonic() - t0:.1f} s; median of {args.repeat} requests after a warm-up, ms")
        print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        cache = root / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        t0 = time.monotonic()
        app = App(root / "results", cache)
        load = time.monotonic() - t0
        t0 = time.monotonic()
        app = App(root / "results", cache)
        reopen = time.monotonic() - t0
        server = make_server(app, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"

        subset, style = "pe_as", "Anime"

        def grid(i: int) -> str:  # another search word each time: the facet counts are computed every time
            return f"{base}/?subset={subset}&style={urllib.parse.quote(style)}&q={WORDS[i % len(WORDS)]}&page=3"

        def detail(i: int) -> tuple[bytes, bytes]:
            folder, key = picks[i % len(picks)]
            return get(f"{base}/sample/{folder}/{key}"), get(f"{base}/image/{folder}/{key}")

        def thumb(i: int) -> bytes:
            folder, key = picks[i % len(picks)]
            return get(f"{base}/thumb/{folder}/{key}")

        def dropped(i: int) -> bytes:
            return get(f"{base}/dropped/pair_filter?subset=pe_as&reason=judge_rejected&page={5 + i}")

        for i in range(len(picks)):
            thumb(i)  # made here; the rows below time the cached ones
        t0 = time.perf_counter()
        get(f"{base}/")
        first_grid = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        dropped(0)
        dropped_cold = (time.perf_counter() - t0) * 1000
        baseline_repeat = max(1, args.repeat // 2)
        rows = [
            ("grid, no filter, page 1 (first request)", first_grid, None),
            ("grid, subset + style + search, page 4", timed(lambda i: get(grid(i)), args.repeat),
             timed(lambda i: baseline_query(files, subset, style, WORDS[i % len(WORDS)], 3), baseline_repeat)),
            ("detail view (page + full image)", timed(detail, args.repeat),
             timed(lambda i: baseline_detail(files, picks[i % len(picks)][1]), baseline_repeat)),
            ("thumbnail, cached", timed(thumb, args.repeat), None),
            ("dropped by the judge, one reason, a page", timed(dropped, args.repeat), None),
        ]
        server.shutdown()
        print(f"{'request':40} {'explore':>9} {'baseline':>9}")
        for label, ours, baseline in rows:
            b = f"{baseline:9.0f}" if baseline is not None else f"{'-':>9}"
            print(f"{label:40} {ours:9.1f} {b}")
        print(f"first start (indexes -> DuckDB table): {load:.1f} s; restart on the cached table: {reopen:.2f} s; "
              f"first dropped page of a stage (counts its drop reasons): {dropped_cold:.0f} ms")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    import urllib.parse  # noqa: F401  (urllib.parse.quote above)

    main()
