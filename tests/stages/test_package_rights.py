"""Per-sample rights (issue 23): every real sample carries its source's license and whether it may be
redistributed; photos that may not are assembled apart (results/dataset_internal/) or left out, as the config
says; each real subset's credits are gathered into its folder; the dataset card states per-source license,
attribution, restrictions and redistribution, and the terms on the outputs of every model that wrote part of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from support.release import picture

from finet2i.core import shards
from finet2i.release import layout as release
from finet2i.release.validate import validate_dataset
from finet2i.sources.terms import rights_by_name
from finet2i.stages.assemble import run_assemble
from finet2i.stages.dataset_card import render_card
from finet2i.stages.package import run_package_real
from finet2i.workflow.config import load_yaml, validate_config
from finet2i.workflow.params import card_models

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    {"type": "pexels", "queries": ["a"], "terms": {"permission": "written permission from Pexels, ref. 1",
                                                   "redistribute": True}},
    {"type": "unsplash_lite", "path": str(ROOT / "tests" / "fixtures" / "unsplash_lite"),
     "terms": {"permission": "TERMS.md 2.A, internal training only"}},  # redistribute: false by default
    str(ROOT / "tests" / "fixtures" / "unsplash_lite"),  # a plain folder of the user's (named unsplash_lite too?)
]


def validated_sources(**curated) -> dict:
    cfg = load_yaml(ROOT / "config" / "demo.yaml")
    # the plain folder gets a name of its own, so that it is not mistaken for the Lite source
    cfg["curated"].update(sources=[*SOURCES[:2], {"path": SOURCES[2], "name": "mine"}], **curated)
    return validate_config(cfg, base_dir=ROOT, check_models=False)


def write_curated(tmp_path: Path) -> tuple[Path, Path]:
    """An ingest table (bytes) and the last curated stage's table (captions) for 2 photos of each source."""
    rows, captions = [], []
    for i, (source, lic) in enumerate([("pexels", "Pexels License"), ("pexels", "Pexels License"),
                                       ("unsplash_lite", "Unsplash Dataset Terms (Lite)"),
                                       ("unsplash_lite", "Unsplash Dataset Terms (Lite)"),
                                       ("mine", None), ("mine", None)]):
        rid = f"real-00000-{i:06d}"
        base = {"id": rid, "source": source, "locator": f"https://example.org/{source}/{i}", "license": lic,
                "photographer": f"Photographer {i}", "page_url": f"https://example.org/{source}/{i}",
                "photographer_url": f"https://example.org/@{i}", "source_id": str(i)}
        rows.append(shards.mark({**base, "image": picture(i, size=(64, 48))}, None))
        captions.append(shards.mark({**base, "prompt": f"a photo number {i}", "enhanced_prompt": f"a long {i}",
                                     "prompt_generator": "cap", "enhancer": "cap",
                                     "aesthetic_predictor_v_2_5_score": 7.0}, None))
    ingest, table = tmp_path / "ingest.parquet", tmp_path / "caption.parquet"
    shards.write_table(ingest, rows)
    shards.write_table(table, captions)
    return ingest, table


def package(tmp_path: Path, mode: str) -> tuple[list[dict], Path]:
    cfg = validated_sources(non_redistributable=mode)
    ingest, table = write_curated(tmp_path)
    out = tmp_path / "package_real" / "00000.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    credits = tmp_path / "package_real" / "00000.credits.jsonl"
    run_package_real(table, ingest, out, cshard="00000", seed=1, settings={}, stats_path=tmp_path / "p.stats.json",
                     credits_path=credits, rights=rights_by_name(cfg["curated"]["sources"]),
                     non_redistributable=mode)
    return pq.read_table(out).to_pylist(), credits


def test_every_real_sample_keeps_its_license_and_redistribution_status_and_is_assembled_by_it(tmp_path):
    rows, credits = package(tmp_path, "internal")
    by_source = {(r["json"] and json.loads(r["json"])["image_generator"], r["license"], r["redistributable"])
                 for r in rows}
    assert by_source == {("pexels", "Pexels License", True), ("unsplash_lite", "Unsplash Dataset Terms (Lite)", False),
                         ("mine", None, True)}
    assert all(r["kept"] for r in rows)
    lines = [json.loads(x) for x in credits.read_text().splitlines()]
    assert {(c["source"], c["redistributable"]) for c in lines} == {("pexels", True), ("unsplash_lite", False),
                                                                    ("mine", True)}
    table = str(tmp_path / "package_real" / "00000.parquet")
    shared = run_assemble([table], tmp_path / release.dataset_dir("real"), tmp_path / "assemble/real.json",
                          subset="real", samples_per_tar=3, credits=[credits])
    internal = run_assemble([table], tmp_path / release.dataset_dir(release.INTERNAL),
                            tmp_path / "assemble/real_internal.json", subset=release.INTERNAL, samples_per_tar=3,
                            credits=[credits])
    assert shared["per_source"] == {"mine": 2, "pexels": 2} and internal["per_source"] == {"unsplash_lite": 2}
    shared_dir = tmp_path / "results" / "dataset" / "curated"
    internal_dir = tmp_path / "results" / "dataset_internal" / "curated"
    for folder, sources in ((shared_dir, {"mine", "pexels"}), (internal_dir, {"unsplash_lite"})):
        index = [r for t in sorted(folder.glob("train-*.parquet")) for r in pq.read_table(t).to_pylist()]
        assert {r["image_generator"] for r in index} == sources
        assert all(r["license"] is not None or r["image_generator"] == "mine" for r in index)
        gathered = [json.loads(x) for x in (folder / "credits.jsonl").read_text().splitlines()]
        assert sorted(c["key"] for c in gathered) == sorted(r["id"] for r in index)  # every sample, once
        report = validate_dataset(folder.parent)  # each root is a valid release layout of its own
        assert report.ok, report.summary()
    # Nothing of the non-redistributable source is anywhere under the shareable dataset.
    for p in shared_dir.rglob("*"):
        if p.suffix in (".jsonl", ".parquet"):
            assert b"unsplash_lite" not in p.read_bytes(), p


def test_omit_leaves_non_redistributable_photos_out_with_a_reason(tmp_path):
    rows, credits = package(tmp_path, "omit")
    dropped = [r for r in rows if not r["kept"]]
    assert len(dropped) == 2 and {r["drop_reason"] for r in dropped} == {"not_redistributable"}
    assert all(json.loads(x)["source"] != "unsplash_lite" for x in credits.read_text().splitlines())


@pytest.fixture
def card_inputs(tmp_path):
    cfg = validated_sources()
    rights = rights_by_name(cfg["curated"]["sources"])
    manifests = [{"subset": "real", "folder": "curated", "samples": 4, "samples_per_tar": 5,
                  "tars": [{"tar": "train-000000.tar", "tar_bytes": 10}], "per_source": {"pexels": 2, "mine": 2}}]
    internal = [{"subset": release.INTERNAL, "folder": "curated", "samples": 2, "per_source": {"unsplash_lite": 2}}]
    production = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    production["curated"]["sources"] = [SOURCES[2]]  # a real-photo branch: the captioner writes prompts too
    return manifests, internal, rights, card_models(production)


def test_the_dataset_card_states_each_sources_license_attribution_restrictions_and_redistribution(card_inputs):
    manifests, internal, rights, models = card_inputs
    card = render_card(manifests, {}, {"seed": 1}, rights, models, internal)
    section = card[card.index("## Real photos"):card.index("## Terms that travel")]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| `")}
    assert "Pexels License" in rows["`pexels`"] and "allowed" in rows["`pexels`"] and "| 2 |" in rows["`pexels`"]
    assert "Photo by <photographer> on Pexels" in rows["`pexels`"]
    assert "https://help.pexels.com/hc/en-us/articles/900005880463" in rows["`pexels`"]
    assert "NOT allowed" in rows["`unsplash_lite`"] and "Unsplash Dataset Terms (Lite)" in rows["`unsplash_lite`"]
    assert "not stated in the config" in rows["`mine`"]
    assert "written permission from Pexels, ref. 1" in section and "results/dataset_internal/curated/" in section
    assert "curated/credits.jsonl" in section


def test_the_dataset_card_states_the_terms_on_each_models_outputs_with_links(card_inputs):
    manifests, internal, rights, models = card_inputs
    card = render_card(manifests, {}, {"seed": 1}, rights, models, internal)
    section = card[card.index("## Terms that travel"):]
    flux = next(line for line in section.splitlines() if "FLUX.2-dev" in line)
    assert "FLUX [dev] Non-Commercial License v2.0" in flux and "competitive with a FLUX [dev] Model" in flux
    assert "https://github.com/black-forest-labs/flux2/blob/main/model_licenses/LICENSE-FLUX-DEV" in flux
    llama = next(line for line in section.splitlines() if "Llama-3.1-8B-Instruct" in line)
    assert "include \"Llama\" at the beginning of any such AI model name" in llama
    hunyuan = next(line for line in section.splitlines() if "PromptEnhancer-7B" in line)
    assert "to improve any other AI model" in hunyuan and "*unverified*" in hunyuan
    captioner = next(line for line in section.splitlines() if "Captioner-Relaxed" in line)
    assert "not found" in captioner
