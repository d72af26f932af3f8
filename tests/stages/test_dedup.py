"""Semantic dedup: exact against brute force, same verdicts for any grouping, resumable file-level jobs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from finet2i.core import shards
from finet2i.plumbing.embeddings import write_embeddings
from finet2i.stages.dedup import jobs as stage
from finet2i.stages.dedup.in_memory import dedup_vectors
from finet2i.stages.dedup.ranks import make_rank, rank_row, rank_shard
from finet2i.stages.dedup.reference import greedy_reference, residual_pairs
from finet2i.stages.dedup.settings import DedupSettings
from finet2i.stages.dedup.similarity import Matcher, exact_cosines
from finet2i.stages.dedup.sweep import _KEPT, KeptSet, _Block, _decide_in_rounds, _Evidence, _SweepCounts
from finet2i.stages.dedup.vectors import normalise

T = 0.8


def clustered(n: int, seed: int = 0, rank: int = 12, noise: float = 0.3) -> np.ndarray:
    """Vectors on a low-rank subspace: many pairs sit near the threshold and duplicates chain, the hard case
    for a grouped search (pairs straddle groups, survivors of a group are dropped across groups)."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, 384))
    x = rng.standard_normal((n, rank)) @ basis + rng.standard_normal((n, 384)) * noise
    return normalise(x).astype(np.float16)


@pytest.fixture(scope="module")
def hard() -> tuple[np.ndarray, np.ndarray]:
    x = clustered(3000)
    return x, greedy_reference(x, T)


@pytest.mark.parametrize("groups,partition", [(1, "kmeans"), (7, "kmeans"), (32, "kmeans"), (16, "hash")])
def test_exact_and_equal_to_brute_force_greedy(hard, groups, partition):
    x, ref = hard
    assert 0.2 < ref.mean() < 0.9  # the data really has many duplicates and many survivors
    res = dedup_vectors(
        x,
        DedupSettings(
            threshold=T,
            groups=groups,
            partition=partition,
            block_size=256,
            kmeans_sample=2000,
            max_neighbors=2,
        ),
    )
    assert residual_pairs(x, res.kept, T) == 0
    np.testing.assert_array_equal(res.kept, ref)
    if groups > 1:
        assert res.stats["dropped_across_groups"] > 0  # the cross pass had work to do
    dropped = np.flatnonzero(~res.kept)
    target = res.duplicate_of[dropped]
    assert (target >= 0).all() and (target < dropped).all() and res.kept[target].all()
    sims = exact_cosines(x[dropped], x[target])
    assert (sims > T).all()
    np.testing.assert_allclose(res.similarity[dropped], sims, atol=1e-6)
    assert np.isnan(res.similarity[res.kept]).all() and (res.duplicate_of[res.kept] == -1).all()


@pytest.mark.slow
def test_exact_at_scale_against_brute_force():
    """50k prompts (67 s on the shared 2-core machine; FINET2I_EXACT_N to change): clustered vectors with
    noisy near-copies, so pairs straddle groups, survivors are dropped across groups and many pairs sit
    near the threshold."""
    n = int(os.environ.get("FINET2I_EXACT_N", "50000"))
    rng = np.random.default_rng(21)
    base = clustered(n // 4, seed=21).astype(np.float32)
    noisy = np.repeat(base, 3, axis=0) + rng.uniform(0.02, 0.045, (3 * len(base), 1)) * rng.standard_normal(
        (3 * len(base), 384))
    x = normalise(np.concatenate([base, noisy]))[rng.permutation(4 * len(base))].astype(np.float16)
    ref = greedy_reference(x, T)
    res = dedup_vectors(x, DedupSettings(threshold=T, groups=32, kmeans_sample=8192, kmeans_iters=10,
                                         block_size=4096))
    np.testing.assert_array_equal(res.kept, ref)
    assert residual_pairs(x, res.kept, T) == 0
    assert res.stats["dropped_across_groups"] > 0


def test_resurrection_is_handled():
    """a ~ b (same group), b ~ c (other group, earlier): c drops b, so a must come back."""
    rng = np.random.default_rng(3)
    e = normalise(rng.standard_normal((3, 384)))
    c = e[0]
    b = normalise((c + 0.55 * e[1])[None])[0]
    a = normalise((b + 0.55 * e[2] + 0.5 * (b - c))[None])[0]
    v = np.stack([c, b, a]).astype(np.float16)
    sims = v.astype(np.float64) @ v.astype(np.float64).T
    assert sims[0, 1] > T and sims[1, 2] > T and sims[0, 2] < T
    ref = greedy_reference(v, T)
    assert ref.tolist() == [True, False, True]
    # hash partition on keys that put c apart from a and b
    for keys in (np.array(["x", "y", "y"]), np.array(["p", "q", "r"])):
        res = dedup_vectors(v, DedupSettings(threshold=T, groups=64, partition="hash"), keys=keys)
        assert res.kept.tolist() == [True, False, True]


def test_cross_pass_checks_what_dropped_a_stored_neighbour_first():
    """g (group x), then r, p, q (group y, in that order) on a circle: r drops p and q in their group; the
    cross pass drops r by g, so p and q lost their evidence. p is above the threshold with g (dropped by it
    without a product against the kept set), q is not (compared by vector, and comes back)."""
    e = np.linalg.qr(np.random.default_rng(5).standard_normal((384, 2)))[0].T  # two orthonormal directions
    deg = np.radians([0, 30, 20, 60])  # cosines: g.r 0.87, r.p 0.98, r.q 0.87, g.p 0.94, g.q 0.5, p.q 0.77
    v = normalise(np.cos(deg)[:, None] * e[0] + np.sin(deg)[:, None] * e[1]).astype(np.float16)
    assert greedy_reference(v, T).tolist() == [True, False, False, True]
    keys = np.array(["x", "y", "y", "y"])
    for block, inherited in ((1, 1), (256, 0)):  # in one block, g is not yet in the kept set of earlier blocks
        res = dedup_vectors(v, DedupSettings(threshold=T, groups=64, partition="hash", block_size=block),
                            keys=keys)
        assert res.group[0] != res.group[1]
        assert res.kept.tolist() == [True, False, False, True]
        assert res.duplicate_of.tolist() == [-1, 0, 0, -1]
        assert res.similarity[2] == pytest.approx(float(exact_cosines(v[2:3], v[0:1])[0]))
        assert res.stats["inherited"] == inherited and res.stats["resurrected"] == 1


def test_long_keep_drop_chain_is_decided_exactly():
    """A random walk whose neighbours are duplicates (cosine 0.86) but whose second neighbours are not
    (0.78): the greedy alternates keep, drop, keep... so a block needs one decision round per kept prompt."""
    rng = np.random.default_rng(7)
    walk = [normalise(rng.standard_normal((1, 384)))[0]]
    for _ in range(399):
        step = rng.standard_normal(384)
        step -= (step @ walk[-1]) * walk[-1]
        walk.append(normalise((walk[-1] + 0.6 * step / np.linalg.norm(step))[None])[0])
    x = np.array(walk).astype(np.float16)
    ref = greedy_reference(x, T)
    assert ref.tolist() == [i % 2 == 0 for i in range(400)]
    for groups, partition in ((1, "kmeans"), (3, "hash")):
        res = dedup_vectors(x, DedupSettings(threshold=T, groups=groups, partition=partition, block_size=512))
        np.testing.assert_array_equal(res.kept, ref)
        np.testing.assert_array_equal(res.duplicate_of[1::2], np.arange(0, 400, 2))  # the earlier neighbour
    assert res.stats["rounds"] > 100


def test_exact_duplicates_and_row_order_priority():
    x = clustered(50, seed=5)
    v = np.concatenate([x, x[::-1]])  # the second half repeats the first
    res = dedup_vectors(v, DedupSettings(threshold=T, groups=4, kmeans_sample=100))
    assert not res.kept[50:].any()
    np.testing.assert_array_equal(
        res.duplicate_of[50:][res.kept[:50][::-1]], np.arange(50)[::-1][res.kept[:50][::-1]]
    )


def test_lower_precision_candidates_stay_within_margin():
    x = clustered(600, seed=9)
    m = Matcher(T)
    q = m.to_device(x)
    approx = (q @ q.T).float().numpy()
    exact = x.astype(np.float64) @ x.astype(np.float64).T
    assert np.abs(approx - exact).max() < Matcher.MARGINS[m.precision]


@pytest.mark.parametrize("precision,threshold", [("bf16", T), ("fp32", T), ("bf16", 0.02)])
def test_candidates_include_every_pair_above_threshold(precision, threshold):
    """The tile scan reads the product as integers when threshold - margin > 0 (a float compare otherwise):
    either way no pair above the threshold may be missed, across tile and column-chunk borders."""
    x = clustered(700, seed=4)
    m = Matcher(threshold, precision=precision)
    m.col_chunk = 256  # several chunks, a ragged last tile
    assert (m._int_view is None) == (m.low <= 0)
    q = m.to_device(x)
    r, c = m.candidates(q, q, upper=True)
    exact = x.astype(np.float64) @ x.astype(np.float64).T
    ii, jj = np.nonzero(np.triu(exact > threshold, k=1))
    assert len(ii) > 100
    assert set(zip(ii.tolist(), jj.tolist(), strict=True)) <= set(zip(r.tolist(), c.tolist(), strict=True))
    assert (c > r).all()


def test_bad_vectors_are_named():
    with pytest.raises(ValueError, match="dimension 8"):
        dedup_vectors(np.ones((4, 8), np.float32) / np.sqrt(8), DedupSettings(groups=2), where="x.npy")
    v = clustered(10)
    v = v.astype(np.float32)
    v[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dedup_vectors(v, DedupSettings(groups=2))


def test_rank_round_trips_through_shard_and_row():
    rows = np.array([0, 1, 39_999, 2**32 - 1], np.uint32)
    for shard in (0, 7, 2**31 - 1):
        rank = make_rank(shard, rows)
        assert rank.dtype == np.int64
        assert (rank_shard(rank) == shard).all() and (rank_row(rank) == rows).all()
        assert rank_shard(rank).dtype == np.int64 and rank_row(rank).dtype == np.int64
    assert make_rank(1, np.array([0]))[0] > make_rank(0, np.array([2**32 - 1]))[0]  # shard first, then row
    # One row (a 0-d array): the first rank of a shard, which bounds a keep job's slice of the verdicts.
    assert make_rank(3, 0) == make_rank(3, np.array([0]))[0]
    assert int(rank_shard(make_rank(3, 0))) == 3 and int(rank_row(make_rank(3, 0))) == 0
    ranks = np.concatenate([make_rank(s, np.arange(5)) for s in range(4)])
    lo, hi = np.searchsorted(ranks, [make_rank(2, 0), make_rank(3, 0)])
    assert (hi - lo, set(rank_shard(ranks[lo:hi]).tolist())) == (5, {2})


def test_kept_set_grows_and_finds_its_members():
    m = Matcher(T, device="cpu", precision="fp32")
    x = clustered(2500, seed=5)
    ks = KeptSet(m, x.shape[1])
    for b0 in range(0, len(x), 700):  # 1,250 kept rows in all: past the first capacity (1,024)
        block = _Block.load(np.arange(b0, min(len(x), b0 + 700)), lambda p: x[p], m)
        ks.append_rows(block, np.arange(0, len(block), 2))
    assert len(ks) == 1250 and (ks.pos == np.arange(0, len(x), 2)).all()
    assert ks.host.numpy().tobytes() == x[ks.pos].tobytes()
    assert ks.slots(np.array([0, 1000, 2498])).tolist() == [0, 500, 1249]
    with pytest.raises(AssertionError, match="not in the kept set"):
        ks.slots(np.array([3]))
    r, c = ks.candidates(m.to_device(x[[0, 1000]]))
    assert {(0, 0), (1, 500)} <= set(zip(r.tolist(), c.tolist(), strict=True))  # each finds itself


def test_one_block_decided_in_rounds_is_the_greedy(hard):
    x, ref = hard
    m = Matcher(T, device="cpu", precision="fp32")
    block = _Block.load(np.arange(len(x)), lambda p: x[p], m)
    state = np.zeros(len(block), np.int8)
    ev, counts = _Evidence(), _SweepCounts()
    _decide_in_rounds(block, m, state, ev, counts)
    assert np.array_equal(state == _KEPT, ref)
    assert counts.rounds > 1 and counts.pair_products == len(x) * (len(x) - 1) // 2
    # Evidence: only dropped prompts own some, each pair joins an earlier kept prompt above the threshold,
    # and its cosine is the exact float64 one.
    own, nb, sim = ev.by_owner()
    assert set(own.tolist()) == set(np.flatnonzero(~ref).tolist())
    assert (nb < own).all() and ref[nb].all() and (sim > T).all()
    assert np.array_equal(sim, exact_cosines(x[own], x[nb]))


# ------------------------------------------------------------------------------------- file-level jobs


def make_shards(root: Path, vectors: np.ndarray, n_shards: int) -> list[str]:
    names = []
    for s, part in enumerate(np.array_split(np.arange(len(vectors)), n_shards)):
        name = f"{s:05d}"
        names.append(name)
        recs = [
            {
                "id": f"{name}-{i:06d}",
                "shard": name,
                "index": i,
                "prompt": f"prompt {name} {i}",
                "kept": True,
                "drop_reason": None,
            }
            for i in range(len(part))
        ]
        recs.append(
            {
                "id": f"{name}-999999",
                "shard": name,
                "index": 999999,
                "prompt": "short",
                "kept": False,
                "drop_reason": "too_short",
            }
        )  # dropped upstream: not embedded, not here
        shards.write_table(root / "prompts" / f"{name}.parquet", recs)
        write_embeddings(
            root / "embeddings" / f"{name}.npz",
            [r["id"] for r in recs[:-1]],
            vectors[part],
            model="test",
            fingerprint="x",
        )
    return names


def run_jobs(root: Path, names: list[str], settings: DedupSettings) -> Path:
    emb = [root / "embeddings" / f"{n}.npz" for n in names]
    out = root / "dedup"
    stage.run_dedup_centroids(
        emb, out / "centroids.npy", out / "similarity_histogram.json", settings=settings
    )
    idx = [out / "assign" / f"{n}.npz" for n in names]
    vec = [out / "assign" / f"{n}.npy" for n in names]
    for e, v, i in zip(emb, vec, idx, strict=True):
        stage.run_dedup_assign(e, out / "centroids.npy", v, i, settings=settings)
    groups = [out / "group" / f"{g:03d}.npz" for g in range(settings.groups)]
    for g, gp in enumerate(groups):
        stage.run_dedup_group(idx, vec, gp, group=g, settings=settings)
    stage.run_dedup_cross(
        groups,
        idx,
        vec,
        out / "verdicts.npy",
        out / "kept_ids.npy",
        out / "cross.stats.json",
        settings=settings,
    )
    for n in names:
        stage.run_dedup_keep(
            root / "prompts" / f"{n}.parquet",
            root / "embeddings" / f"{n}.npz",
            out / "assign" / f"{n}.npz",
            out / "verdicts.npy",
            out / "kept_ids.npy",
            out / "keep" / f"{n}.parquet",
            shard=n,
            settings=settings,
            stats_path=out / "keep" / f"{n}.stats.json",
        )
    return out


def keep_tables(out: Path, names: list[str]) -> list[dict]:
    rows = []
    for n in names:
        rows += shards.read_records(out / "keep" / f"{n}.parquet")
    return rows


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    x = clustered(1500, seed=11)
    results = {}
    for groups in (1, 6):
        root = tmp_path_factory.mktemp(f"g{groups}")
        names = make_shards(root, x, 3)
        settings = DedupSettings(
            threshold=T, groups=groups, kmeans_sample=600, block_size=128, max_neighbors=2
        )
        results[groups] = (root, names, run_jobs(root, names, settings), settings)
    return x, results


def test_jobs_match_brute_force_and_any_group_count(pipeline):
    x, results = pipeline
    ref = greedy_reference(x, T)
    verdicts = {}
    for groups, (_, names, out, _) in results.items():
        rows = keep_tables(out, names)
        assert len(rows) == len(x)  # the upstream-dropped row is not carried
        kept = np.array([r["kept"] for r in rows])
        np.testing.assert_array_equal(kept, ref)
        verdicts[groups] = [(r["id"], r["kept"]) for r in rows]
        by_id = {r["id"]: i for i, r in enumerate(rows)}
        for i, r in enumerate(rows):
            if r["kept"]:
                assert r["drop_reason"] is None and r["duplicate_of"] is None and r["similarity"] is None
            else:
                j = by_id[r["duplicate_of"]]
                assert r["drop_reason"] == "near_duplicate" and rows[j]["kept"] and j < i
                assert r["similarity"] == pytest.approx(
                    float(exact_cosines(x[i : i + 1], x[j : j + 1])[0]), abs=1e-5
                )
                assert r["similarity"] > T
            assert 0 <= r["dedup_group"] < groups
            assert r["prompt"].startswith("prompt ")  # upstream columns carried
        stats = [shards.StageStats.read(out / "keep" / f"{n}.stats.json") for n in names]
        assert all(s.stage == "dedup" for s in stats)
        assert sum(s.kept for s in stats) == ref.sum()
        assert sum(s.dropped.get("near_duplicate", 0) for s in stats) == (~ref).sum()
        hist = json.loads((out / "similarity_histogram.json").read_text())
        assert len(hist["bin_edges"]) == len(hist["counts"]) + 1 and hist["threshold"] == T
        assert sum(hist["counts"]) == hist["pairs"] == hist["sample_size"] * (hist["sample_size"] - 1) // 2
    assert verdicts[1] == verdicts[6]


def test_group_job_reads_its_slice_and_resumes_after_a_kill(pipeline, monkeypatch, tmp_path):
    _, results = pipeline
    root, names, out, settings = results[6]
    idx = [out / "assign" / f"{n}.npz" for n in names]
    vec = [out / "assign" / f"{n}.npy" for n in names]
    target = tmp_path / "003.npz"

    def killed(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(stage, "greedy_sweep", killed)
    with pytest.raises(KeyboardInterrupt):
        stage.run_dedup_group(idx, vec, target, group=3, settings=settings)
    assert not target.exists() and not list(tmp_path.iterdir())  # nothing half-written
    monkeypatch.undo()
    stage.run_dedup_group(idx, vec, target, group=3, settings=settings)
    fresh, done = stage.read_group(target), stage.read_group(out / "group" / "003.npz")
    for a, b in zip(fresh, done, strict=True):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            for f in ("rank", "kept_in_group", "nbr_ptr", "nbr_rank", "nbr_sim"):
                np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    # The group holds exactly the prompts the assign files put in group 3.
    expected = sum(int(np.diff(stage.read_offsets(i)[0])[3]) for i in idx)
    assert len(fresh[0].rank) == expected > 0


def test_cross_pass_is_exact_when_groups_disagree(pipeline):
    _, results = pipeline
    stats = json.loads((results[6][2] / "cross.stats.json").read_text())
    assert stats["dropped_across_groups"] > 0 and stats["kept"] == stats["prompts"] - (
        stats["dropped_in_groups"] + stats["dropped_across_groups"] - stats["resurrected"]
    )
