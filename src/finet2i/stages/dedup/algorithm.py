"""Exact semantic dedup (paper 3.1.2): 128 groups, then a cross-group pass; duplicates at cosine > threshold.

The keep rule (documented, deterministic, partition-free)
---------------------------------------------------------
Every prompt has a *rank*: its position in the run's global order (shard number, then row in the shard; in
the pipeline that is id order). Walking the prompts in rank order, a prompt is **kept** unless an already
kept, earlier prompt has cosine > threshold with it; then it is dropped with ``duplicate_of`` = the most
similar such kept prompt we found and ``similarity`` = that cosine. This is the greedy maximal independent
set of the duplicate graph in rank order, which is what the all-pairs baseline computes too. Why this rule:

* The kept set depends on the vectors and the order only, never on the number of groups, the partition or
  the block sizes: the grouped pipeline returns *exactly* the baseline's kept set.
* The earliest prompt survives, so appending new shards never flips a verdict made before.
* No kept pair has cosine > threshold (every kept prompt was compared with every earlier kept one), and
  every dropped prompt names a kept prompt above the threshold.

How the grouped pipeline gets the exact answer cheaply
------------------------------------------------------
1. Groups: spherical k-means centroids (faiss) trained on a sample; each vector goes to its most similar
   centroid, so most near-duplicates share a group (SemDeDup). ``partition: hash`` is the paper's plain split.
2. Within each group, the same greedy sweep in rank order. Its survivors ``A_g`` are a superset of the
   group's globally kept prompts, except for rare "resurrections" (below). For each prompt it drops it stores
   up to ``max_neighbors`` earlier survivors above the threshold (the evidence the cross pass reuses).
3. Cross-group pass: the greedy sweep over all prompts in rank order, where only the group survivors (and
   the prompts whose stored neighbours were all dropped, whose vectors are fetched on demand) are
   compared, in blocks, against the kept set so far. A prompt dropped in its group is dropped for good as
   soon as one of its stored neighbours is kept: that neighbour is earlier, kept and above the threshold.
   When all its stored neighbours were dropped, the kept prompts that dropped them are checked first (in
   dense clusters they nearly always drop it too); only if none is above the threshold is it compared.
   The pass is exact: every kept prompt was compared with every earlier kept prompt.

Similarities: products run in bfloat16 on CPUs with AVX-512/AMX, float16 on GPUs (the stored vectors are
float16, so GPU inputs are exact) or float32, and only select *candidates* above ``threshold - margin``,
where the margin bounds the rounding error of that precision; a candidate pair whose earlier prompt is kept
is then recomputed in float64 from the stored float16 vectors (exact in any summation order, see
``_exact_pairs``), and a block is decided in vectorised rounds (see ``_decide_in_rounds``); pairs between two
dropped prompts are never looked at. Decisions therefore never depend on the hardware or on blocking.

Memory plan at production scale (44.8M prompts = 1,120 shards x 40k, 384-d float16 = 768 B per prompt;
all vectors as float32 would be 69 GB, as float16 34 GB; no job holds them all):

* embed (per shard): the model (90 MB) and one shard (31 MB of vectors). Table: docs/dedup.md.
* dedup_centroids (1 job): streams the shards one at a time, keeps a ``kmeans_sample`` (1M x 384 fp32,
  1.5 GB) and trains 128 centroids on it: ~3 GB.
* dedup_assign (per shard): one shard, ~20 MB.
* dedup_group (per group): memory-maps its slice of each shard's group-sorted vectors; a group averages
  350k prompts (270 MB) and k-means groups are uneven (up to ~4x the mean), plus the kept-so-far copy of
  the same size: <= 3 GB.
* dedup_cross (1 job): per-prompt arrays (rank, in-group verdict, file location, stored neighbours, outputs:
  ~70 B x 44.8M = 3.2 GB), the kept set so far (~5.6M x 768 B = 4.3 GB on the host, and the same on the GPU
  or as bfloat16 on a CPU); vectors of the prompts it compares are read on demand from the memory-mapped
  assign files: ~12 GB RAM + ~4.5 GB GPU.
* dedup (per shard, the keep job): its slice of the memory-mapped verdicts and one shard: < 1 GB.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from finet2i.core.settings import default, from_section
from finet2i.plumbing.embeddings import DIM
from finet2i.plumbing.hardware import cpu_has_fast_bf16

log = logging.getLogger(__name__)

NO_DUP = -1


@dataclass(frozen=True)
class DedupSettings:
    threshold: float = default("dedup.threshold")
    groups: int = default("dedup.groups")
    partition: str = default("dedup.partition")  # kmeans | hash
    kmeans_sample: int = default("dedup.kmeans_sample")
    kmeans_iters: int = default("dedup.kmeans_iters")
    seed: int = 0  # the run's top-level `seed`, not a key of the dedup section
    max_neighbors: int = default("dedup.max_neighbors")  # stored earlier survivors per prompt dropped in-group
    block_size: int = default("dedup.block_size")  # prompts compared per product block
    device: str = default("dedup.device")  # auto | cpu | cuda
    precision: str = default("dedup.precision")  # auto | fp32 | bf16 | fp16 (candidates only; decisions float64)

    @classmethod
    def from_config(cls, section: Mapping[str, Any], seed: int = 0) -> DedupSettings:
        s = from_section(cls, {**section, "seed": seed})
        s.validate()
        return s

    def validate(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"dedup.threshold must be in (0, 1), got {self.threshold}")
        if self.groups < 1:
            raise ValueError(f"dedup.groups must be >= 1, got {self.groups}")
        if self.partition not in ("kmeans", "hash"):
            raise ValueError(f"dedup.partition must be 'kmeans' or 'hash', got {self.partition!r}")


# ----------------------------------------------------------------------------------------------- checks


def check_vectors(vectors: np.ndarray, where: str, dim: int = DIM) -> None:
    """Fail with a message that names the file when vectors cannot be deduplicated."""
    if vectors.ndim != 2:
        raise ValueError(f"{where}: embeddings must be a 2-D array (n, {dim}), got shape {vectors.shape}")
    if vectors.shape[1] != dim:
        raise ValueError(f"{where}: embeddings have dimension {vectors.shape[1]}, expected {dim} "
                         f"(all-MiniLM-L6-v2); re-embed with the configured model")
    # In slices: a float32 copy of 1M vectors alone is 1.5 GB, twice the float16 vectors. One conversion and
    # one dot product per row find both non-finite values (NaN or inf makes the squared norm non-finite) and
    # the norms: 0.9 s for 1M float16 vectors here, where isfinite on float16 plus a norm took 2.0 s.
    wide = np.float32 if vectors.dtype == np.float16 else np.float64  # float64: no overflow of large values
    step = 65536
    sq = np.concatenate([np.einsum("ij,ij->i", x, x) for x in
                         (vectors[i:i + step].astype(wide) for i in range(0, len(vectors), step))]
                        or [np.zeros(0, wide)])
    bad = ~np.isfinite(sq)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} embeddings contain NaN or inf (first at row "
                         f"{int(np.flatnonzero(bad)[0])}); re-embed those prompts")
    norms = np.sqrt(sq)
    if len(norms) and (np.abs(norms - 1.0) > 0.01).any():
        raise ValueError(f"{where}: embeddings are not L2-normalised "
                         f"(norms {norms.min():.3f}..{norms.max():.3f});"
                         f" normalise them (cosine = dot product here)")


def normalise(vectors: np.ndarray) -> np.ndarray:
    v = vectors.astype(np.float32)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return v / n


def make_rank(shard_no: int, rows: np.ndarray | int) -> np.ndarray:
    """Global order of a prompt: shard number, then row; fits 2^31 shards x 2^32 rows.

    ``rows`` may be one int (a 0-d array comes back): ``make_rank(s, 0)`` is the first rank of shard ``s``.
    The bit layout stays here and in ``rank_shard`` / ``rank_row``."""
    return np.asarray((np.int64(shard_no) << np.int64(32)) | np.asarray(rows).astype(np.int64))


def rank_shard(rank: np.ndarray) -> np.ndarray:
    """Shard number of each rank (int64), the inverse of ``make_rank``'s first argument."""
    return np.asarray(rank, dtype=np.int64) >> np.int64(32)


def rank_row(rank: np.ndarray) -> np.ndarray:
    """Row in its shard of each rank (int64), the inverse of ``make_rank``'s second argument."""
    return np.asarray(rank, dtype=np.int64) & np.int64(0xFFFFFFFF)


# -------------------------------------------------------------------------------------------- partition


def train_centroids(sample: np.ndarray, groups: int, *, seed: int = 0, iters: int = 20) -> np.ndarray:
    """Spherical k-means centroids (unit norm) of a sample of unit vectors, float32 (groups, dim)."""
    import faiss

    x = np.ascontiguousarray(normalise(sample))
    if len(x) < groups:
        raise ValueError(f"k-means needs at least {groups} sampled vectors for {groups} groups, "
                         f"got {len(x)}; "
                         f"lower dedup.groups or raise dedup.kmeans_sample")
    km = faiss.Kmeans(x.shape[1], groups, niter=iters, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(256, len(x) // groups + 1))
    km.train(x)
    return normalise(km.centroids)


def assign_groups(vectors: np.ndarray, *, groups: int, centroids: np.ndarray | None = None,
                  keys: np.ndarray | None = None) -> np.ndarray:
    """Group of each vector: most similar centroid (kmeans) or a stable hash of its key (hash partition)."""
    if centroids is None:
        if keys is None:
            raise ValueError("hash partition needs keys (ids)")
        return np.array([int.from_bytes(hashlib.blake2b(str(k).encode(), digest_size=8).digest(), "little")
                         % groups for k in keys], dtype=np.int32)
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    out = np.empty(len(vectors), dtype=np.int32)
    step = 65536
    for i in range(0, len(vectors), step):
        _, idx = index.search(np.ascontiguousarray(vectors[i:i + step], dtype=np.float32), 1)
        out[i:i + step] = idx[:, 0]
    return out


def similarity_histogram(vectors: np.ndarray, *, threshold: float, sample_size: int = 2000, seed: int = 0,
                         bins: int = 200) -> dict[str, Any]:
    """Cosine similarities of all pairs in a random subset (paper Fig. 3), as bin edges + counts."""
    rng = np.random.default_rng(seed)
    n = min(sample_size, len(vectors))
    idx = np.sort(rng.choice(len(vectors), size=n, replace=False)) if n else np.zeros(0, dtype=np.int64)
    v = vectors[idx].astype(np.float64)
    sims = (v @ v.T)[np.triu_indices(n, k=1)] if n > 1 else np.zeros(0)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    counts, _ = np.histogram(np.clip(sims, -1.0, 1.0), bins=edges)
    return {"bin_edges": [round(float(e), 6) for e in edges], "counts": counts.tolist(),
            "threshold": threshold, "sample_size": int(n), "pairs": int(len(sims)),
            "fraction_above_threshold": float((sims > threshold).mean()) if len(sims) else 0.0,
            "mean": float(sims.mean()) if len(sims) else None}


# ------------------------------------------------------------------------------------------ similarity


class Matcher:
    """Pairs above the threshold, exactly: low-precision products pick candidates, float64 decides."""

    # Bounds on |low-precision cosine - exact cosine| for unit fp16 vectors, 384-d, fp32 accumulation:
    # bf16 inputs and output round at 2^-8 each (<= 0.012 in all); the comparison constant rounds too.
    MARGINS = {"fp32": 1e-4, "fp16": 3e-3, "bf16": 0.025}

    def __init__(self, threshold: float, *, device: str = "auto", precision: str = "auto") -> None:
        import torch

        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if precision == "auto":
            precision = "fp16" if self.device.type == "cuda" else ("bf16" if cpu_has_fast_bf16() else "fp32")
        self.precision = precision
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self.threshold = float(threshold)
        self.low = self.threshold - self.MARGINS[precision]
        self._int_view = self._low_as_int()
        # Column chunk of one product: 4096 x 8192 bfloat16 (64 MB) stays near the cache-friendly sweet spot
        # measured on 2 cores; 32768 columns made the scans after the product memory-bound. A GPU takes
        # 4096 x 65536 (512 MB) per launch: fewer launches and host syncs (each chunk's nonzero waits).
        self.col_chunk = 65536 if self.device.type == "cuda" else 8192
        self.tile = 64
        # Threads for large products only; everything else runs on one. On a shared machine an OpenMP region
        # waits for its slowest thread: a 1,000 x 384 sum took 19 us on 1 thread and 7.9 ms on 2 while
        # another job held the second core, which made the many small steps of the sweep 6x slower.
        self.threads = torch.get_num_threads()
        self.wide_pairs = 1 << 22

    @contextmanager
    def single_threaded(self) -> Iterator[None]:
        with torch_threads(self.torch, 1):
            yield

    def _low_as_int(self) -> tuple[Any, int] | None:
        """(integer dtype, bit pattern) to scan a product block as integers, or None when ``low`` <= 0.

        Positive IEEE floats order like their bit patterns read as integers, and any negative float reads
        as a negative integer, so ``bits(s) > bits(low')`` finds every ``s > low`` when low > 0, with
        low' <= low the largest representable value not above ``low`` (a few extra candidates, checked in
        float64 anyway). Why: a max-reduction over int16 ran in 15 ms where bfloat16 took 33 ms on a
        4096 x 8192 block (the product itself: 165 ms).
        """
        torch = self.torch
        if self.low <= 0:
            return None
        itype = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}[self.dtype]
        bits = int(torch.tensor([self.low], dtype=self.dtype).view(itype).item())
        while float(torch.tensor([bits], dtype=itype).view(self.dtype).item()) > self.low:
            bits -= 1
        return itype, bits

    def to_device(self, vectors: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(vectors)).to(self.device, self.dtype)

    def candidates(self, q: Any, m: Any, *, upper: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Index pairs (i, j) with approximate q_i . m_j > threshold - margin (j > i only when ``upper``).

        Why tiles: an elementwise ``s > low`` over a bfloat16 block costs a third of the product itself on
        CPUs (it is not vectorised), while a max-reduction is cheap. So the block is reduced to the max of
        every 64-column tile (read as integers, see ``_low_as_int``), only the few tiles whose max clears
        ``low`` are gathered and compared.
        """
        torch = self.torch
        rows: list[Any] = []
        cols: list[Any] = []
        t = self.tile
        if self._int_view is not None:
            itype, low = self._int_view
        else:
            itype, low = None, self.low
        for c0 in range(0, m.shape[0], self.col_chunk):
            mc = m[c0:c0 + self.col_chunk]
            if upper and c0 >= q.shape[0]:
                break  # q is m's prefix here: columns past it cannot be > any row
            wide = self.threads if q.shape[0] * mc.shape[0] >= self.wide_pairs else 1
            with torch_threads(torch, wide):
                s = q @ mc.T
                if itype is not None:
                    s = s.view(itype)
                nc = s.shape[1]
                full = nc - nc % t
                tmax = s[:, :full].reshape(s.shape[0], full // t, t).amax(dim=2) if full else None
            if full:
                tr, tc = (tmax > low).nonzero(as_tuple=True)
                if tr.numel():
                    blk = s[:, :full].reshape(s.shape[0], full // t, t)[tr, tc]  # (k, t)
                    k, j = (blk > low).nonzero(as_tuple=True)
                    rows.append(tr[k])
                    cols.append(tc[k] * t + j + c0)
            if full < nc:
                r, c = (s[:, full:] > low).nonzero(as_tuple=True)
                rows.append(r)
                cols.append(c + full + c0)
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        r = torch.cat(rows).cpu().numpy()
        c = torch.cat(cols).cpu().numpy()
        if upper:
            keep = c > r
            r, c = r[keep], c[keep]
        return r, c


@contextmanager
def torch_threads(torch: Any, n: int) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads (setting it costs well under a microsecond)."""
    old = torch.get_num_threads()
    if n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def exact_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of stored (unit, float16) vectors, in float64: the value every decision uses."""
    return np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))


def csr_flat(ptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, flat index) of every entry of the CSR rows ``rows``; owner indexes ``rows``."""
    starts = ptr[rows]
    deg = ptr[rows + 1] - starts
    total = int(deg.sum())
    owner = np.repeat(np.arange(len(rows)), deg)
    flat = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(deg) - deg, deg) + np.repeat(starts, deg)
    return owner, flat


_UNDECIDED, _KEPT, _DROPPED = 0, 1, 2


def _exact_pairs(a: Any, ia: np.ndarray, b: Any, ib: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """float64 cosines of rows ``a[ia]`` and ``b[ib]`` (torch, float16 or float64), in chunks (bounded memory).

    Exact whatever the summation order: float16 values are multiples of 2^-24 below 1, so every product and
    partial sum of two unit float16 vectors is a multiple of 2^-48 below ~1, which float64 holds exactly.
    That is why a dense product and a gathered dot product give the same bits, and verdicts never depend on
    the blocking.
    """
    torch = __import__("torch")
    out = np.empty(len(ia), np.float64)
    ta, tb = torch.from_numpy(ia), torch.from_numpy(ib)
    for k in range(0, len(ia), chunk):
        x = a[ta[k:k + chunk]].double()
        y = b[tb[k:k + chunk]].double()
        out[k:k + chunk] = torch.einsum("ij,ij->i", x, y).numpy()
    return out


def _best_per_owner(owner: np.ndarray, nb: np.ndarray, sim: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per owner in range(n): the highest ``sim`` among its entries, then the earliest ``nb`` on ties
    (-inf and NO_DUP for owners without entries)."""
    best = np.full(n, -np.inf)
    best_nb = np.full(n, NO_DUP, np.int64)
    if len(owner):
        order = np.lexsort((nb, -sim, owner))
        first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
        best[owner[first]] = sim[first]
        best_nb[owner[first]] = nb[first]
    return best, best_nb


# ----------------------------------------------------------------------------------------------- sweep


@dataclass
class Neighbors:
    """CSR lists of stored earlier survivors (positions in the sweep's order) with their cosines."""

    ptr: np.ndarray  # int64 (n + 1,)
    idx: np.ndarray  # int64
    sim: np.ndarray  # float32

    @classmethod
    def empty(cls, n: int) -> Neighbors:
        return cls(np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


@dataclass
class SweepResult:
    kept: np.ndarray  # bool (n,)
    dup_of: np.ndarray  # int64 (n,): position of the kept prompt it duplicates, -1 when kept
    similarity: np.ndarray  # float32 (n,): cosine to dup_of, NaN when kept
    neighbors: Neighbors  # up to max_neighbors earlier kept prompts above the threshold, per dropped prompt
    compared: int = 0  # prompts that went through products
    fetched: int = 0  # prompts whose vectors had to be fetched because stored evidence ran out
    pair_products: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


def greedy_sweep(n: int, get_vectors: Callable[[np.ndarray], np.ndarray], matcher: Matcher, *,
                 live: np.ndarray | None = None, stored: Neighbors | None = None, block_size: int = 2048,
                 max_neighbors: int = 8, label: str = "sweep", dim: int = DIM) -> SweepResult:
    """Greedy dedup of ``n`` prompts already sorted by rank (see the module docstring for the rule).

    ``live`` marks prompts that must be compared by vector; the others are dropped by their ``stored``
    neighbours (earlier prompts above the threshold) as soon as one of those is kept, and are compared by
    vector (fetched with ``get_vectors(positions)``) only when none of them is kept.
    """
    with matcher.single_threaded():
        return _greedy_sweep(n, get_vectors, matcher, live=live, stored=stored, block_size=block_size,
                             max_neighbors=max_neighbors, label=label, dim=dim)


def _greedy_sweep(n: int, get_vectors: Callable[[np.ndarray], np.ndarray], matcher: Matcher, *,
                  live: np.ndarray | None, stored: Neighbors | None, block_size: int, max_neighbors: int,
                  label: str, dim: int) -> SweepResult:
    """Blocks of positions in order; each is settled from stored evidence where it can be, then compared
    with the kept set of earlier blocks, decided inside in rounds, and its kept prompts join the kept set."""
    t0 = time.monotonic()
    live = np.ones(n, bool) if live is None else live
    stored = stored if stored is not None else Neighbors.empty(n)
    kept = np.zeros(n, bool)
    dup_of = np.full(n, NO_DUP, np.int64)
    sim_out = np.full(n, np.nan, np.float32)
    nb_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (owner position, neighbour, cosine)
    kept_set = KeptSet(matcher, dim)
    counts = _SweepCounts()
    for b0 in range(0, n, block_size):
        b1 = min(n, b0 + block_size)
        pos = np.arange(b0, b1)
        # 1. Prompts that are not live: dropped by a stored neighbour kept in an earlier block.
        fetch = _drop_by_stored(pos[~live[b0:b1]], stored, kept, dup_of, sim_out)
        if len(fetch) and len(kept_set):
            # 1b. The rest had all their stored neighbours dropped (by kept prompts of other groups). In dense
            # clusters they are nearly always duplicates of what dropped those neighbours: check those kept
            # prompts in float64 before comparing the prompt with the whole kept set. On the 5M-prompt GPU
            # run this was 907k of the 2.4M prompts the cross pass compared by vector.
            got = _inherit(fetch, stored, dup_of, sim_out, get_vectors, kept_set, matcher.threshold)
            counts.inherited += int(got.sum())
            fetch = fetch[~got]
        counts.fetched += len(fetch)
        cmp_pos = np.sort(np.concatenate([pos[live[b0:b1]], fetch]))
        if len(cmp_pos) == 0:
            continue
        block = _Block.load(cmp_pos, get_vectors, matcher)
        counts.compared += len(block)
        ev = _Evidence()
        state = np.zeros(len(block), np.int8)  # _UNDECIDED, _KEPT or _DROPPED per prompt of the block
        # 2. Against the kept set of earlier blocks, 3. inside the block.
        _drop_by_kept_set(block, kept_set, matcher.threshold, state, ev, counts)
        _decide_in_rounds(block, matcher, state, ev, counts)
        # 4. Outcomes: verdicts and the evidence to store; the kept prompts join the kept set.
        new_kept = np.flatnonzero(state == _KEPT)
        kept[block.pos[new_kept]] = True
        part = _record_evidence(ev, block.pos, dup_of, sim_out, max_neighbors)
        if part is not None:
            nb_parts.append(part)
        if len(new_kept):
            kept_set.append_rows(block, new_kept)
    res = SweepResult(kept, dup_of, sim_out, _neighbors_csr(nb_parts, n), compared=counts.compared,
                      fetched=counts.fetched, pair_products=counts.pair_products)
    res.stats = {"prompts": n, "kept": int(kept.sum()), "compared": counts.compared, "fetched": counts.fetched,
                 "inherited": counts.inherited, "pair_products": counts.pair_products, "rounds": counts.rounds,
                 "seconds": round(time.monotonic() - t0, 3),
                 "precision": matcher.precision, "device": str(matcher.device)}
    log.info("%s: %d prompts, %d kept, %d compared by vector (%d fetched), %.2e pair products, %.1f s", label,
             n, res.stats["kept"], counts.compared, counts.fetched, counts.pair_products, res.stats["seconds"])
    return res


@dataclass
class _SweepCounts:
    compared: int = 0  # prompts that went through products
    fetched: int = 0  # not-live prompts compared by vector (their stored evidence ran out)
    inherited: int = 0  # not-live prompts dropped by what dropped their stored neighbours (step 1b)
    pair_products: int = 0
    rounds: int = 0  # rounds of _decide_in_rounds, over all blocks


@dataclass
class _Block:
    """The prompts of one block that are compared by vector: sweep positions (ascending) and their vectors as
    float16 on the host, on the matcher's device (candidate products) and as float64 (exact checks)."""

    pos: np.ndarray  # int64 (nq,)
    host: Any  # torch float16 (nq, dim)
    dev: Any  # torch, matcher's device and precision
    f64: Any  # torch float64

    @classmethod
    def load(cls, pos: np.ndarray, get_vectors: Callable[[np.ndarray], np.ndarray], matcher: Matcher) -> _Block:
        host = matcher.torch.from_numpy(np.ascontiguousarray(get_vectors(pos), dtype=np.float16))
        return cls(pos, host, matcher.to_device(host.numpy()), host.double())

    def __len__(self) -> int:
        return len(self.pos)


class KeptSet:
    """The prompts kept so far in a sweep, in the order they were kept (ascending position): their positions,
    a float16 host copy (exact float64 checks) and a device copy in the matcher's precision (candidate
    products). Storage grows by doubling, so appending costs amortised time proportional to what is added."""

    def __init__(self, matcher: Matcher, dim: int) -> None:
        self._matcher = matcher
        self._dim = dim
        self._n = 0
        self._pos = np.zeros(0, np.int64)
        self._host = matcher.torch.zeros((0, dim), dtype=matcher.torch.float16)
        self._dev = matcher.to_device(np.zeros((0, dim), np.float16))

    def __len__(self) -> int:
        return self._n

    @property
    def pos(self) -> np.ndarray:
        """Sweep positions of the kept prompts, ascending; a kept prompt's slot is its index here."""
        return self._pos[:self._n]

    @property
    def host(self) -> Any:
        """float16 vectors (torch, on the host), one row per slot."""
        return self._host[:self._n]

    def candidates(self, q_dev: Any) -> tuple[np.ndarray, np.ndarray]:
        """(row of ``q_dev``, slot) of the pairs whose low-precision cosine may be above the threshold."""
        return self._matcher.candidates(q_dev, self._dev[:self._n])

    def slots(self, positions: np.ndarray) -> np.ndarray:
        """Slot of each of ``positions``; AssertionError when one of them is not kept."""
        pos = self.pos
        slot = np.searchsorted(pos, positions)
        if (slot >= len(pos)).any() or (pos[np.minimum(slot, len(pos) - 1)] != positions).any():
            raise AssertionError("dedup sweep: a duplicate_of target is not in the kept set")
        return slot

    def append_rows(self, block: _Block, rows: np.ndarray) -> None:
        """Add the prompts ``block.pos[rows]``, which come after every prompt already kept."""
        need = self._n + len(rows)
        if need > len(self._host):
            self._grow(max(need, 2 * len(self._host), 1024))
        idx = self._matcher.torch.from_numpy(rows)
        self._host[self._n:need] = block.host[idx]
        self._pos[self._n:need] = block.pos[rows]
        self._dev[self._n:need] = block.dev[idx.to(block.dev.device)]
        self._n = need

    def _grow(self, cap: int) -> None:
        n = self._n
        host = self._matcher.torch.zeros((cap, self._dim), dtype=self._matcher.torch.float16)
        host[:n] = self._host[:n]
        pos = np.zeros(cap, np.int64)
        pos[:n] = self._pos[:n]
        dev = self._matcher.to_device(np.zeros((cap, self._dim), np.float16))
        dev[:n] = self._dev[:n]
        self._host, self._pos, self._dev = host, pos, dev


class _Evidence:
    """Pairs found while deciding one block: (prompt of the block, sweep position of an earlier kept prompt,
    float64 cosine > threshold)."""

    def __init__(self) -> None:
        self._own: list[np.ndarray] = []
        self._nb: list[np.ndarray] = []
        self._sim: list[np.ndarray] = []

    def add(self, own: np.ndarray, nb: np.ndarray, sim: np.ndarray) -> None:
        self._own.append(own)
        self._nb.append(nb)
        self._sim.append(sim)

    def by_owner(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(own, nb, sim) sorted by owner, then highest cosine, then earliest neighbour: the best comes first."""
        if not self._own:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
        own, nb, sim = np.concatenate(self._own), np.concatenate(self._nb), np.concatenate(self._sim)
        order = np.lexsort((nb, -sim, own))
        return own[order], nb[order], sim[order]


def _drop_by_stored(nl: np.ndarray, stored: Neighbors, kept: np.ndarray, dup_of: np.ndarray,
                    sim_out: np.ndarray) -> np.ndarray:
    """Drop the not-live prompts ``nl`` that have a stored neighbour already kept, with the most similar such
    neighbour as ``dup_of``; the others (to be fetched and compared), in the order of ``nl``."""
    if not len(nl):
        return np.zeros(0, np.int64)
    owner, flat = csr_flat(stored.ptr, nl)
    nb = stored.idx[flat]
    hit = kept[nb]  # kept[] is False for undecided prompts
    best, best_nb = _best_per_owner(owner[hit], nb[hit], stored.sim[flat][hit], len(nl))
    resolved = best > -np.inf
    dup_of[nl[resolved]] = best_nb[resolved]
    sim_out[nl[resolved]] = best[resolved]
    return nl[~resolved]


def _inherit(fetch: np.ndarray, stored: Neighbors, dup_of: np.ndarray, sim_out: np.ndarray,
             get_vectors: Callable[[np.ndarray], np.ndarray], kept_set: KeptSet, t: float) -> np.ndarray:
    """Drop the prompts ``fetch`` that are above ``t`` with a kept prompt that dropped one of their stored
    neighbours (``dup_of`` of a decided prompt is always kept and earlier); mask of those dropped.

    Same verdicts as comparing them with the whole kept set (a kept earlier prompt above the threshold is
    all the rule asks for); ``duplicate_of`` is the most similar of those kept prompts."""
    owner, flat = csr_flat(stored.ptr, fetch)
    heir = dup_of[stored.idx[flat]]
    ok = heir >= 0
    got = np.zeros(len(fetch), bool)
    if not ok.any():
        return got
    pairs = np.unique(np.stack([owner[ok], heir[ok]], axis=1), axis=0)
    slot = kept_set.slots(pairs[:, 1])
    who = np.unique(pairs[:, 0])
    torch = __import__("torch")
    p64 = torch.from_numpy(np.ascontiguousarray(get_vectors(fetch[who]), dtype=np.float16))
    s = _exact_pairs(p64, np.searchsorted(who, pairs[:, 0]), kept_set.host, slot)
    hit = s > t
    best, best_heir = _best_per_owner(pairs[hit, 0], pairs[hit, 1], s[hit], len(fetch))
    got = best > -np.inf
    dup_of[fetch[got]] = best_heir[got]
    sim_out[fetch[got]] = best[got]
    return got


def _drop_by_kept_set(block: _Block, kept_set: KeptSet, t: float, state: np.ndarray, ev: _Evidence,
                      counts: _SweepCounts) -> None:
    """Step 2: drop the prompts of the block above ``t`` with a prompt kept in an earlier block; every such
    pair found is evidence."""
    if not len(kept_set):
        return
    r, c = kept_set.candidates(block.dev)
    counts.pair_products += len(block) * len(kept_set)
    if len(r):
        s = _exact_pairs(block.f64, r, kept_set.host, c)
        sel = s > t
        ev.add(r[sel], kept_set.pos[c[sel]], s[sel])
        state[r[sel]] = _DROPPED


def _decide_in_rounds(block: _Block, matcher: Matcher, state: np.ndarray, ev: _Evidence,
                      counts: _SweepCounts) -> None:
    """Step 3: decide every undecided prompt of the block against the earlier prompts of the block.

    Decided in rounds instead of one prompt at a time: a prompt is kept as soon as none of its earlier
    candidates is undecided and no kept one is above the threshold (an earlier dropped prompt never matters);
    it is dropped as soon as a kept earlier one is above the threshold. Each round decides at least the
    earliest undecided prompt, so this is the same greedy in rank order; rounds track the longest keep/drop
    chain (a few), and only pairs whose earlier prompt is kept are ever checked in float64: in dense clusters
    nearly all pairs join two dropped prompts and are skipped.
    """
    t = matcher.threshold
    nq = len(block)
    r, c = matcher.candidates(block.dev, block.dev, upper=True)
    counts.pair_products += nq * (nq - 1) // 2
    while True:
        counts.rounds += 1
        pending = np.zeros(nq, bool)
        pending[c] = True  # every remaining pair's earlier prompt is undecided
        new = (state == _UNDECIDED) & ~pending
        if not new.any():
            break  # all decided: the earliest undecided prompt would have no pending pair
        state[new] = _KEPT
        sel = new[r]
        er, ec = r[sel], c[sel]
        if len(er):
            s = _exact_pairs(block.f64, er, block.f64, ec)
            hit = s > t
            ev.add(ec[hit], block.pos[er[hit]], s[hit])
            dropped = ec[hit]
            state[dropped[state[dropped] == _UNDECIDED]] = _DROPPED
            r, c = r[~sel], c[~sel]
        live_pair = state[r] == _UNDECIDED
        r, c = r[live_pair], c[live_pair]


def _record_evidence(ev: _Evidence, block_pos: np.ndarray, dup_of: np.ndarray, sim_out: np.ndarray,
                     max_neighbors: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Step 4: ``dup_of`` and ``similarity`` of each dropped prompt of the block from its best evidence
    (highest cosine, then earliest); returns the top ``max_neighbors`` pairs per prompt to store, as
    (owner position, neighbour position, float32 cosine) sorted by owner, or None when there are none."""
    own, nbp, sim = ev.by_owner()
    if not len(own):
        return None
    head = np.r_[True, own[1:] != own[:-1]]
    dup_of[block_pos[own[head]]] = nbp[head]
    sim_out[block_pos[own[head]]] = sim[head]
    if not max_neighbors:
        return None
    starts = np.flatnonzero(head)
    within = np.arange(len(own)) - np.repeat(starts, np.diff(np.r_[starts, len(own)]))
    top = within < max_neighbors
    return block_pos[own[top]], nbp[top], sim[top].astype(np.float32)


def _neighbors_csr(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int) -> Neighbors:
    """The stored evidence of all blocks as CSR over the ``n`` positions.

    Blocks run in rank order and each part is sorted by owner, so the parts concatenate into CSR order."""
    nb_own = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    nidx = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    nsim = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.float32)
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(nb_own, minlength=n), out=ptr[1:])
    return Neighbors(ptr, nidx, nsim)


# ------------------------------------------------------------------------------------ the two passes


def group_pass(vectors: np.ndarray, matcher: Matcher, settings: DedupSettings, *,
               label: str = "group") -> SweepResult:
    """Greedy dedup inside one group; ``vectors`` (float16, unit) are in rank order."""
    v = np.ascontiguousarray(vectors, dtype=np.float16)
    return greedy_sweep(len(v), lambda pos: v[pos], matcher, block_size=settings.block_size,
                        max_neighbors=settings.max_neighbors, label=label,
                        dim=v.shape[1] if v.ndim == 2 else DIM)


@dataclass
class CrossInput:
    """What the group jobs hand to the cross pass, concatenated over groups (any order)."""

    rank: np.ndarray  # int64 (n,)
    kept_in_group: np.ndarray  # bool (n,)
    nbr_ptr: np.ndarray  # int64 (n + 1,), CSR over the rows above
    nbr_rank: np.ndarray  # int64: rank of each stored earlier survivor
    nbr_sim: np.ndarray  # float32

    @classmethod
    def concat(cls, parts: list[CrossInput]) -> CrossInput:
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(1, np.int64), np.zeros(0, np.int64),
                       np.zeros(0, np.float32))
        ptrs = []
        base = 0
        for i, p in enumerate(parts):
            ptrs.append(p.nbr_ptr[(0 if i == 0 else 1):] + base)
            base += int(p.nbr_ptr[-1])
        return cls(np.concatenate([p.rank for p in parts]), np.concatenate([p.kept_in_group for p in parts]),
                   np.concatenate(ptrs), np.concatenate([p.nbr_rank for p in parts]),
                   np.concatenate([p.nbr_sim for p in parts]))


def cross_input(rank: np.ndarray, sweep: SweepResult) -> CrossInput:
    """A group's outcome in rank terms (positions inside the group do not mean anything outside it)."""
    return CrossInput(rank.astype(np.int64), sweep.kept.copy(), sweep.neighbors.ptr.copy(),
                      rank[sweep.neighbors.idx].astype(np.int64), sweep.neighbors.sim.copy())


@dataclass
class CrossResult:
    rank: np.ndarray  # int64 (n,), sorted
    source: np.ndarray  # int64 (n,): row of the concatenated CrossInput each sorted entry came from
    kept: np.ndarray  # bool
    dup_rank: np.ndarray  # int64, -1 when kept
    similarity: np.ndarray  # float32, NaN when kept
    stats: dict[str, Any]


def cross_pass(ci: CrossInput, get_vectors: Callable[[np.ndarray], np.ndarray], matcher: Matcher,
               settings: DedupSettings, *, dim: int = DIM) -> CrossResult:
    """The global greedy sweep; ``get_vectors(rows)`` returns float16 vectors of rows of ``ci``."""
    order = np.argsort(ci.rank, kind="stable")
    rank = ci.rank[order]
    if len(rank) > 1 and (np.diff(rank) == 0).any():
        dup = rank[1:][np.diff(rank) == 0][0]
        raise ValueError(f"dedup cross pass: rank {dup} (shard {int(rank_shard(dup))}, row {int(rank_row(dup))})"
                         f" appears in two groups; rebuild the dedup/assign and dedup/group outputs")
    n = len(rank)
    # Stored neighbours: reorder the CSR to sorted positions and turn ranks into positions.
    owner, flat = csr_flat(ci.nbr_ptr, order)
    deg = ci.nbr_ptr[order + 1] - ci.nbr_ptr[order]
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(deg, out=ptr[1:])
    nb_rank = ci.nbr_rank[flat]
    nb_pos = np.searchsorted(rank, nb_rank)
    if len(nb_pos) and ((nb_pos >= n) | (rank[np.minimum(nb_pos, n - 1)] != nb_rank)).any():
        raise ValueError("dedup cross pass: a stored neighbour is missing from the group outputs; "
                         "rerun the dedup_group jobs")
    stored = Neighbors(ptr, nb_pos.astype(np.int64), ci.nbr_sim[flat])
    res = greedy_sweep(n, lambda pos: get_vectors(order[pos]), matcher, live=ci.kept_in_group[order],
                       stored=stored, block_size=settings.block_size, max_neighbors=0, label="cross", dim=dim)
    dup_rank = np.where(res.dup_of >= 0, rank[np.maximum(res.dup_of, 0)], NO_DUP)
    stats = dict(res.stats)
    stats["group_survivors"] = int(ci.kept_in_group.sum())
    stats["dropped_in_groups"] = int(n - ci.kept_in_group.sum())
    stats["dropped_across_groups"] = int(ci.kept_in_group.sum() - res.kept[ci.kept_in_group[order]].sum())
    stats["resurrected"] = int((res.kept & ~ci.kept_in_group[order]).sum())
    return CrossResult(rank, order, res.kept, dup_rank, res.similarity, stats)


# ------------------------------------------------------------------------------- in memory (CLI, tests)


@dataclass
class DedupResult:
    """Verdicts aligned with the input rows (row order = keep priority)."""

    kept: np.ndarray  # bool (n,)
    duplicate_of: np.ndarray  # int64 (n,): input row of the kept prompt it duplicates, -1 when kept
    similarity: np.ndarray  # float32 (n,), NaN when kept
    group: np.ndarray  # int32 (n,)
    stats: dict[str, Any]


def partition(vectors16: np.ndarray, settings: DedupSettings, *, keys: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Group of every row (and the centroids when k-means is used)."""
    if settings.partition == "hash" or settings.groups == 1:
        keys = np.arange(len(vectors16)) if keys is None else keys
        return assign_groups(vectors16, groups=settings.groups, keys=keys), None
    rng = np.random.default_rng(settings.seed)
    k = min(len(vectors16), max(settings.kmeans_sample, settings.groups))
    sample = vectors16[np.sort(rng.choice(len(vectors16), size=k, replace=False))]
    groups = min(settings.groups, len(sample))
    centroids = train_centroids(sample, groups, seed=settings.seed, iters=settings.kmeans_iters)
    return assign_groups(vectors16, groups=settings.groups, centroids=centroids), centroids


def dedup_vectors(vectors: np.ndarray, settings: DedupSettings, *, keys: np.ndarray | None = None,
                  matcher: Matcher | None = None, where: str = "embeddings", dim: int = DIM) -> DedupResult:
    """The grouped pipeline in one process: partition, group passes, cross pass. Row order = rank."""
    t0 = time.monotonic()
    settings.validate()
    check_vectors(vectors, where, dim=dim)
    v16 = np.ascontiguousarray(vectors, dtype=np.float16)
    n, dim = v16.shape
    matcher = matcher or Matcher(settings.threshold, device=settings.device, precision=settings.precision)
    group, _ = partition(v16, settings, keys=keys) if n else (np.zeros(0, np.int32), None)
    t_part = time.monotonic() - t0
    parts = []
    for g in range(settings.groups):
        members = np.flatnonzero(group == g)
        if not len(members):
            continue
        sweep = greedy_sweep(len(members), lambda pos, m=members: v16[m[pos]], matcher,
                             block_size=settings.block_size, max_neighbors=settings.max_neighbors,
                             label=f"group {g:03d}", dim=dim)
        parts.append(cross_input(members.astype(np.int64), sweep))
    t_groups = time.monotonic() - t0 - t_part
    ci = CrossInput.concat(parts)
    cr = cross_pass(ci, lambda rows: v16[ci.rank[rows]], matcher, settings, dim=dim)
    # ranks are input rows here, and cr is sorted by rank, i.e. by row.
    stats = dict(cr.stats)
    stats.update({"seconds_partition": round(t_part, 3), "seconds_groups": round(t_groups, 3),
                  "seconds_total": round(time.monotonic() - t0, 3), "threshold": settings.threshold,
                  "groups": settings.groups, "partition": settings.partition})
    return DedupResult(cr.kept, cr.dup_rank, cr.similarity, group.astype(np.int32), stats)


def greedy_reference(vectors: np.ndarray, threshold: float, *, block: int = 4096) -> np.ndarray:
    """Brute-force greedy keep mask (float64 products of the float16 vectors): for tests and benchmarks."""
    v = np.asarray(vectors, dtype=np.float16).astype(np.float64)
    n = len(v)
    kept = np.zeros(n, bool)
    kept_idx: list[int] = []
    for b0 in range(0, n, block):
        q = v[b0:b0 + block]
        prev = (q @ v[kept_idx].T > threshold).any(axis=1) if kept_idx else np.zeros(len(q), bool)
        inner = q @ q.T > threshold
        for i in range(len(q)):
            if prev[i]:
                continue
            earlier = np.flatnonzero(inner[i, :i])
            if len(earlier) and kept[b0 + earlier].any():
                continue
            kept[b0 + i] = True
            kept_idx.append(b0 + i)
    return kept


def residual_pairs(vectors: np.ndarray, kept: np.ndarray, threshold: float, *, block: int = 4096) -> int:
    """Kept pairs with cosine > threshold, by brute force in float64 (must be 0)."""
    v = np.asarray(vectors, dtype=np.float16).astype(np.float64)[kept]
    total = 0
    for b0 in range(0, len(v), block):
        s = v[b0:b0 + block] @ v[b0:].T
        s[np.tril_indices(len(s), k=0, m=s.shape[1])] = -1.0
        total += int((s > threshold).sum())
    return total
