"""The greedy sweep, which both passes run: prompts sorted by rank, in blocks; a prompt is kept unless an
earlier kept prompt has cosine > threshold with it (the rule and why it is exact: the package docstring).

Each block is settled from stored evidence where it can be, compared with the kept set of earlier blocks
(``KeptSet``), decided inside in vectorised rounds, and its kept prompts join the kept set; the evidence of
each dropped prompt is stored as CSR lists (``Neighbors``) for the cross pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from finet2i.plumbing.embeddings import DIM
from finet2i.stages.dedup.ranks import NO_DUP
from finet2i.stages.dedup.similarity import Matcher, _exact_pairs

log = logging.getLogger(__name__)

_UNDECIDED, _KEPT, _DROPPED = 0, 1, 2


def csr_flat(ptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, flat index) of every entry of the CSR rows ``rows``; owner indexes ``rows``."""
    starts = ptr[rows]
    deg = ptr[rows + 1] - starts
    total = int(deg.sum())
    owner = np.repeat(np.arange(len(rows)), deg)
    flat = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(deg) - deg, deg) + np.repeat(starts, deg)
    return owner, flat


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
