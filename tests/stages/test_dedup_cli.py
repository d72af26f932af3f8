"""`finet2i dedup IN OUT`: every input id gets a verdict; bad inputs get errors that say what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from finet2i.cli.dedup import dedup_command
from finet2i.core import shards
from finet2i.stages.dedup.reference import greedy_reference
from finet2i.stages.dedup.vectors import normalise


def vectors(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((10, 384))
    return normalise(rng.standard_normal((n, 10)) @ basis + 0.3 * rng.standard_normal((n, 384)))


def invoke(*args: str):
    return CliRunner().invoke(dedup_command, list(args))


def test_npz_embeddings_to_parquet(tmp_path):
    v = vectors()
    ids = [f"p{i}" for i in range(len(v))]
    np.savez(tmp_path / "in.npz", ids=np.array(ids), vectors=v.astype(np.float16))
    r = invoke(str(tmp_path / "in.npz"), str(tmp_path / "out.parquet"), "--groups", "8")
    assert r.exit_code == 0, r.output
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [x["id"] for x in rows] == ids
    ref = greedy_reference(v.astype(np.float16), 0.8)
    assert [x["kept"] for x in rows] == ref.tolist()
    by_id = {x["id"]: x for x in rows}
    for x in rows:
        if not x["kept"]:
            assert by_id[x["duplicate_of"]]["kept"] and x["similarity"] > 0.8
    assert f"{int(ref.sum())} kept" in r.output


def test_jsonl_with_embedding_column_and_threshold(tmp_path):
    v = vectors(200, seed=1)
    with (tmp_path / "in.jsonl").open("w") as f:
        for i, row in enumerate(v):
            f.write(json.dumps({"id": i, "embedding": row.tolist()}) + "\n")
    r = invoke(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), "--threshold", "0.9", "--groups", "3")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 200 and set(rows[0]) >= {"id", "kept", "duplicate_of", "similarity"}
    assert [x["kept"] for x in rows] == greedy_reference(v.astype(np.float16), 0.9).tolist()


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing_id", "missing column 'id'"),
        ("missing_prompt", "missing column 'prompt'"),
        ("empty", "no rows"),
        ("empty_npy", "no embeddings"),
        ("nan", "NaN"),
        ("dim", "expected (n, 384)"),
        ("repeated_id", "repeated values"),
        ("not_found", "not found"),
    ],
)
def test_bad_inputs(tmp_path, case, message):
    v = vectors(20)
    path = tmp_path / "in.parquet"
    if case == "missing_id":
        shards.write_table(path, [{"prompt": "a cat"}])
    elif case == "missing_prompt":
        shards.write_table(path, [{"id": "a", "text": "a cat"}])
    elif case == "empty":
        path = tmp_path / "in.jsonl"
        path.write_text("")
    elif case == "empty_npy":
        path = tmp_path / "in.npy"
        np.save(path, np.zeros((0, 384), np.float32))
    elif case == "nan":
        v[4, 3] = np.nan
        path = tmp_path / "in.npz"
        np.savez(path, ids=np.arange(20).astype(str), vectors=v)
    elif case == "dim":
        path = tmp_path / "in.npy"
        np.save(path, v[:, :128])
    elif case == "repeated_id":
        shards.write_table(path, [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])
    elif case == "not_found":
        path = tmp_path / "nope.parquet"
    r = invoke(str(path), str(tmp_path / "out.parquet"))
    assert r.exit_code != 0
    assert message in r.output and str(path) in r.output
    assert not (tmp_path / "out.parquet").exists()


def test_prompts_are_embedded_with_the_real_model(tmp_path):
    from finet2i.demo.minilm import install_minilm

    model = install_minilm(tmp_path / "all-MiniLM-L6-v2")
    prompts = [
        "A red bicycle leaning against a brick wall.",
        "a red bicycle leaning against a brick wall",
        "An astronaut riding a horse on the moon, oil painting.",
        "A bowl of ramen on a wooden table.",
    ]
    shards.write_table(tmp_path / "in.parquet", [{"id": f"x{i}", "prompt": p} for i, p in enumerate(prompts)])
    r = invoke(
        str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"), "--model", str(model), "--groups", "2"
    )
    assert r.exit_code == 0, r.output
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [x["kept"] for x in rows] == [True, False, True, True]
    assert rows[1]["duplicate_of"] == "x0" and rows[1]["similarity"] > 0.95
