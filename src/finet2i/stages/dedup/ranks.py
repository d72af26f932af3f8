"""A prompt's rank, the global order the keep rule walks (shard number, then row in the shard), and its bit
layout; ``NO_DUP``, the ``duplicate_of`` (a position or a rank) of a prompt that is kept."""

from __future__ import annotations

import numpy as np

NO_DUP = -1


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
