"""The two passes over the sweep: a group's pass (its survivors and their stored evidence, in rank terms:
``cross_input``) and the cross pass (one sweep over every group's outcome in rank order, where a prompt dropped
in its group is compared by vector only when its stored evidence runs out)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from finet2i.plumbing.embeddings import DIM
from finet2i.stages.dedup.ranks import NO_DUP, rank_row, rank_shard
from finet2i.stages.dedup.settings import DedupSettings
from finet2i.stages.dedup.similarity import Matcher
from finet2i.stages.dedup.sweep import Neighbors, SweepResult, csr_flat, greedy_sweep


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
