"""explore benchmark: the explorer's queries on a synthetic release index of 1M samples, beside a baseline.

    .venv/bin/python benchmarks/explore.py                     # 1,000,000 samples in 1,000 tars of 1,000
    .venv/bin/python benchmarks/explore.py --samples 100000    # a quick look

Makes, in a temp folder, ``dataset/<folder>/train-NNNNNN.parquet`` indexes with the release's columns (the 15
keys, origin, provenance, member offsets), random facet values from the taxonomy, prompts of 12-30 and enhanced
prompts of 30-60 words drawn from a 5,000-word Zipf vocabulary (a search word is in ~8% of samples);
the images are shared: every index points into one small real tar of JPEGs (each ``train-NNNNNN.tar`` is a
symlink to it), so the disk holds ~the indexes only. Then, over HTTP to a real ``finet2i explore`` server
(``finet2i.explore.server``, the same code the command runs), the median of ``--repeat`` requests of:

* the grid, filtered and paginated: subset + style + a word of full-text search, page 3 (counts per facet,
  the page's rows, the HTML);
* a detail view: one sample's page (its row, its provenance from its index, the other subsets) and its image
  (read at its offset in the tar);
* a thumbnail, cached (the first request makes it).

* a page of the judge's dropped records (one subset and reason) over ``pair_filter`` tables of as many
  judged pairs as samples, 60% dropped.

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


def write_indexes(root: Path, samples: int, per_tar: int, seed: int = 0) -> list[tuple[str, str]]:
    """The synthetic dataset; returns a few (folder, key) to open."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from finet2i.release.tables import INDEX_SCHEMA

    rng = random.Random(seed)
    images = root / "dataset" / FOLDERS[0] / "images.tar"
    images.parent.mkdir(parents=True)
    where = shared_tar(images, per_tar)
    n_tars = -(-samples // per_tar)
    per_folder = -(-n_tars // len(FOLDERS))
    picks = []
    for t in range(n_tars):
        folder = FOLDERS[t // per_folder]
        subset = {"enhanced_prompt_random": "pe_ar", "enhanced_prompt_square": "pe_as",
                  "original_prompt_random": "po_ar", "original_prompt_square": "po_as"}[
            "_".join(folder.split("_")[1:4])]
        d = root / "dataset" / folder
        d.mkdir(parents=True, exist_ok=True)
        name = f"train-{t % per_folder:06d}"
        os.symlink(images, d / f"{name}.tar")
        rows = []
        for i in range(min(per_tar, samples - t * per_tar)):
            cat = rng.choice(list(CATEGORIES))
            prompt = text(rng, rng.randint(12, 30))
            enhanced = text(rng, rng.randint(30, 60))
            off, size = where[rng.randrange(len(where))]
            key = str(uuid.UUID(int=rng.getrandbits(128)))
            rows.append({
                "id": key, "prompt": prompt, "enhanced_prompt": enhanced, "length": len(prompt.split()),
                "enhanced_length": len(enhanced.split()), "prompt_generator": "Llama-3.1-8B-Instruct",
                "enhancer": "promptenhancer-7b", "style": rng.choice(STYLES),
                "prompt_category": f"{cat}: {rng.choice(CATEGORIES[cat])}", "task": rng.choice(TASKS),
                "image_aspect_ratio": rng.choice(ASPECTS), "image_resolution": [512, 512],
                "image_generator": rng.choice(["Z-Image-Turbo", "FLUX.2-dev"]),
                "image_generated_with_enhanced_prompt": subset.startswith("pe"),
                "aesthetic_predictor_v_2_5_score": rng.uniform(5.5, 7.5), "subset": subset,
                "record_id": f"{subset}-{t:05d}-{i:06d}", "prompt_id": f"{t:05d}-{i:06d}", "source_id": None,
                "subcategory": None,
                "provenance": json.dumps({"candidate_seeds": [1, 2, 3], "candidate_scores": [5.6, 6.1, 5.9],
                                          "seed": 2, "guard_verdict": "safe", "judge_reasoning": enhanced}),
                "tar": f"{name}.tar", "jpg_offset": off, "jpg_size": size,
                "json_offset": None, "json_size": None, "txt_offset": None, "txt_size": None,
            })
        rows.sort(key=lambda r: r["id"])
        if t % max(1, n_tars // 5) == 0:
            picks.append((folder, rows[len(rows) // 2]["id"]))
        pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), d / f"{name}.parquet")
    return picks


def write_judge_tables(root: Path, records: int, per_shard: int, seed: int = 1) -> None:
    """``pair_filter/<subset>/<shard>.parquet``: ``records`` judged pairs in all, 60% dropped (judge_rejected,
    judge_unsafe, low_aesthetic), with the judge's reasoning and answer as evidence."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    subsets = ["pe_ar", "pe_as", "po_ar", "po_as"]
    shards = -(-records // (per_shard * len(subsets)))
    for subset in subsets:
        (root / "pair_filter" / subset).mkdir(parents=True)
        for sh in range(shards):
            rows = []
            for i in range(per_shard):
                x = rng.random()
                reason = "judge_rejected" if x < 0.5 else "judge_unsafe" if x < 0.55 else \
                    "low_aesthetic" if x < 0.6 else None
                answer = text(rng, 40)
                rows.append({"id": f"{sh:05d}-{i:06d}", "sample_id": f"{subset}-{sh:05d}-{i:06d}",
                             "prompt": text(rng, 20), "enhanced_prompt": text(rng, 50),
                             "aesthetic_predictor_v_2_5_score": rng.uniform(4, 7.5),
                             "judge_reasoning": answer, "judge_violations": "composition,blur",
                             "judge_raw": '{"verdict": "reject", "reasoning": "' + answer + '"}',
                             "kept": reason is None, "drop_reason": reason})
            pq.write_table(pa.Table.from_pylist(rows), root / "pair_filter" / subset / f"{sh:05d}.parquet")


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
    ap.add_argument("--per-tar", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--keep", type=Path, default=None, help="Build the data here and keep it (reused if present).")
    args = ap.parse_args()

    from finet2i.explore.server import App, make_server

    root = args.keep or Path(tempfile.mkdtemp(prefix="finet2i-explore-bench-"))
    try:
        t0 = time.monotonic()
        picks_file = root / "picks.json"
        if not picks_file.exists():
            picks = write_indexes(root / "results", args.samples, args.per_tar)
            write_judge_tables(root / "results", args.samples, args.per_tar)
            picks_file.write_text(json.dumps(picks))
        picks = [tuple(p) for p in json.loads(picks_file.read_text())]
        files = sorted((root / "results" / "dataset").glob("*/train-*.parquet"))
        size = sum(f.stat().st_size for f in files) / 2**20
        print(f"{args.samples:,} samples in {len(files):,} indexes ({size:,.0f} MiB of parquet), ready in "
              f"{time.monotonic() - t0:.1f} s; median of {args.repeat} requests after a warm-up, ms")
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
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    import urllib.parse  # noqa: F401  (urllib.parse.quote above)

    main()
