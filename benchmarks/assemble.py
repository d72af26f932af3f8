"""assemble benchmark: cutting finished samples into the release's tars, full and incremental, beside a baseline.

    .venv/bin/python benchmarks/assemble.py                       # 40 shards x 1,000 samples of 20 kB
    .venv/bin/python benchmarks/assemble.py --shards 100 --per-shard 2000 --sample-kb 50

Synthetic finished-sample tables (what `package` writes: key, digest, JPEG-sized random bytes, json, txt, the
index columns) in a temp folder, then, each in a child process (wall time, peak RSS):

* baseline: one tar per pipeline shard, straight from its table (the layout before the release layout:
  `train-<shard>.tar`, no global order, no repacking);
* assemble, cold: every tar written;
* assemble, nothing changed: the rerun a resumed workflow does;
* assemble, one sample changed (same key): one tar rewritten;
* assemble, one sample dropped: its tar and every later one rewritten.

The row that matters for users is the incremental ones against the cold one: what a partial rerun costs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

CHILD = r"""
import json, sys, time, resource, tarfile, io
import pyarrow.parquet as pq
mode, root, spt, mem = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from pathlib import Path
tables = sorted(str(p) for p in Path(root, "package").glob("*.parquet"))
t0 = time.monotonic()
if mode == "baseline":
    out = Path(root, "baseline"); out.mkdir(exist_ok=True)
    for t in tables:
        rows = pq.read_table(t, columns=["key", "jpg", "json", "txt"]).to_pylist()
        with tarfile.open(out / (Path(t).stem + ".tar"), "w") as tf:
            for r in rows:
                for ext, data in (("jpg", r["jpg"]), ("json", r["json"].encode()), ("txt", r["txt"].encode())):
                    ti = tarfile.TarInfo(f"{r['key']}.{ext}"); ti.size = len(data); tf.addfile(ti, io.BytesIO(data))
    result = {"tars_rewritten": len(tables)}
else:
    from finet2i.stages.assemble import run_assemble
    m = run_assemble(tables, Path(root, "dataset"), Path(root, "manifest.json"), subset="pe_ar",
                     samples_per_tar=spt, memory_mb=mem)
    result = {"tars_rewritten": m["tars_rewritten"], "tars": len(m["tars"])}
result["seconds"] = time.monotonic() - t0
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def write_tables(root: Path, shards: int, per_shard: int, sample_kb: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from finet2i.release.tables import ORIGIN_FIELDS, RELEASE_FIELDS
    from finet2i.stages.package import ROW_GROUP, STAGING_SCHEMA

    (root / "package").mkdir(parents=True)
    rng = os.urandom
    for s in range(shards):
        rows = []
        for i in range(per_shard):
            key = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{s}-{i}"))
            jpg = b"\xff\xd8" + rng(sample_kb * 1024)
            meta = {"id": key, "prompt": f"a prompt {s} {i}"}
            text = json.dumps(meta)
            rows.append({"id": f"pe_ar-{s:05d}-{i:06d}", "kept": True, "drop_reason": None, "key": key,
                         "jpg": jpg, "json": text, "txt": meta["prompt"],
                         "digest": hashlib.sha256(jpg + text.encode()).hexdigest(), "nonnull": 3,
                         **{f.name: None for f in RELEASE_FIELDS if f.name != "id"},
                         **{f.name: None for f in ORIGIN_FIELDS}})
        rows.sort(key=lambda r: r["key"])
        pq.write_table(pa.Table.from_pylist(rows, schema=STAGING_SCHEMA), root / "package" / f"{s:05d}.parquet",
                       row_group_size=ROW_GROUP)


def edit_one(root: Path, drop: bool) -> None:
    """Shard 0's middle sample: its json changes (same key), or it is marked dropped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from finet2i.stages.package import ROW_GROUP

    path = root / "package" / "00000.parquet"
    rows = pq.read_table(path).to_pylist()
    r = rows[len(rows) // 2]
    if drop:
        r.update(kept=False, drop_reason="benchmark")
    else:
        r["json"] = r["json"].replace("a prompt", "another prompt")
        r["digest"] = hashlib.sha256(r["jpg"] + r["json"].encode()).hexdigest()
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path, row_group_size=ROW_GROUP)


def child(mode: str, root: Path, spt: int, mem: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(root), str(spt), str(mem)], check=True,
                          capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=40)
    ap.add_argument("--per-shard", type=int, default=1000)
    ap.add_argument("--sample-kb", type=int, default=20)
    ap.add_argument("--samples-per-tar", type=int, default=1000)
    ap.add_argument("--memory-mb", type=int, default=512)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="finet2i-assemble-bench-"))
    try:
        t0 = time.monotonic()
        write_tables(root, args.shards, args.per_shard, args.sample_kb)
        n = args.shards * args.per_shard
        gb = n * args.sample_kb / 1024 / 1024
        print(f"{n:,} samples ({gb:.2f} GB of image bytes) in {args.shards} tables, written in "
              f"{time.monotonic() - t0:.1f} s; samples_per_tar={args.samples_per_tar}, "
              f"assemble_memory_mb={args.memory_mb}")
        runs = [("baseline: one tar per shard", "baseline", None)]
        runs += [("assemble, cold", "assemble", None), ("assemble, nothing changed", "assemble", None),
                 ("assemble, one sample changed", "assemble", "change"),
                 ("assemble, one sample dropped", "assemble", "drop")]
        print(f"{'run':34} {'seconds':>8} {'MB/s':>7} {'peak RSS MB':>12} {'tars rewritten':>15}")
        for label, mode, edit in runs:
            if edit:
                edit_one(root, drop=edit == "drop")
            r = child(mode, root, args.samples_per_tar, args.memory_mb)
            rewritten = f"{r['tars_rewritten']}" + (f" of {r['tars']}" if "tars" in r else "")
            print(f"{label:34} {r['seconds']:8.2f} {gb * 1024 / r['seconds']:7.0f} {r['peak_rss_mb']:12.0f} "
                  f"{rewritten:>15}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
