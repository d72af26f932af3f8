"""The weighted taxonomy reproduces the paper's published marginals, samples deterministically, and rejects
broken files with the offending key in the message."""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path

import pytest
import yaml

from finet2i.core import shards
from finet2i.recipe import paper
from finet2i.recipe.taxonomy import (
    TaxonomyError,
    load_taxonomy,
    parse_taxonomy,
    sample_specs,
    spec_marginals,
)
from finet2i.stages.specs import run_specs

ROOT = Path(__file__).resolve().parents[2]
TAXONOMY = ROOT / "config" / "taxonomy.yaml"


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy(TAXONOMY)


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(TAXONOMY.read_text())


@pytest.fixture(scope="module")
def specs_100k(taxonomy):
    started = time.monotonic()
    specs = sample_specs(taxonomy, "00000", 100_000, seed=20260201)
    return specs, time.monotonic() - started


def test_taxonomy_covers_the_papers_tables(taxonomy):
    cats = {c.key: {s.key for s in c.subcategories} for c in taxonomy.categories}
    expected: dict[str, set[str]] = {}
    for cat, sub in paper.SUBCATEGORY_TABLE:
        expected.setdefault(cat, set()).add(sub)
    assert cats == expected
    assert sum(len(v) for v in cats.values()) == 32
    assert {s.key for s in taxonomy.styles} == set(paper.STYLE_TABLE)
    assert {t.label for t in taxonomy.tasks} == set(paper.TASK_TABLE)
    assert len(taxonomy.templates) == 5
    assert all(t.instruction for t in taxonomy.templates)


@pytest.mark.parametrize("attribute", ["category", "subcategory", "style", "task"])
def test_sampled_specs_match_paper_marginals(specs_100k, attribute):
    specs, _ = specs_100k
    observed = spec_marginals(specs)[attribute]
    target = paper.marginals()[attribute]
    tv = paper.total_variation(observed, target)
    assert tv <= 0.02, f"{attribute}: total variation {tv:.4f} from the paper's distribution"


def test_not_specified_share_and_prompt_lengths(specs_100k):
    specs, _ = specs_100k
    share = sum(s["task"] == "Not Specified" for s in specs) / len(specs)
    assert abs(share - 0.615) < 0.01  # Fig. 4c: 61.5% of prompts ask for no specific task
    # Fig. 9: original prompts are mostly under 50 words; targets never ask for fewer than 5 (3.1.1).
    assert all(5 <= s["min_words"] <= s["max_words"] for s in specs)
    assert sum(s["max_words"] <= 50 for s in specs) / len(specs) > 0.5


def test_sampling_is_fast(specs_100k):
    _, seconds = specs_100k
    assert seconds < 5.0, f"100k specs took {seconds:.2f}s"


def test_spec_records(specs_100k, taxonomy):
    specs, _ = specs_100k
    s = specs[42]
    assert s["id"] == "00000-000042" and s["shard"] == "00000" and s["index"] == 42
    cat = taxonomy.category(s["category"])
    assert s["subcategory"] in {x.key for x in cat.subcategories}
    tmpl = {t.key: t.instruction for t in taxonomy.templates}
    assert all(x["template_instruction"] == tmpl[x["template"]] for x in specs[:1000])
    combos = [x for x in specs[:1000] if " + " in x["task"]]
    assert combos and all(x["task_instruction"].count("\n") == 1 for x in combos)
    assert all(x["task_instruction"] == "" for x in specs[:1000] if x["task"] == "Not Specified")
    seeds = [x["seed"] for x in specs]
    assert all(0 <= v < 2**31 for v in seeds) and len(set(seeds)) > 0.99 * len(seeds)


def test_sampling_is_deterministic_and_prefix_stable(taxonomy):
    a = sample_specs(taxonomy, "00007", 2000, seed=5)
    assert a == sample_specs(taxonomy, "00007", 2000, seed=5)
    # A larger shard appends records; the first ones do not move (resume / resize never reshuffles).
    assert sample_specs(taxonomy, "00007", 3000, seed=5)[:2000] == a
    # Shards and seeds are independent streams: adding shard 00008 cannot change shard 00007.
    other = sample_specs(taxonomy, "00008", 2000, seed=5)
    assert [x["category"] for x in other] != [x["category"] for x in a]
    assert [x["seed"] for x in sample_specs(taxonomy, "00007", 2000, seed=6)] != [x["seed"] for x in a]


def test_zero_weight_entries_are_never_sampled(raw):
    r = copy.deepcopy(raw)
    r["categories"]["Rare"]["weight"] = 0
    r["tasks"]["Not Specified"] = 0
    specs = sample_specs(parse_taxonomy(r), "00000", 5000, seed=1)
    assert not any(s["category"] == "Rare" for s in specs)
    assert not any(s["task"] == "Not Specified" for s in specs)


def _broken(raw, edit):
    r = copy.deepcopy(raw)
    edit(r)
    return r


@pytest.mark.parametrize("edit, key", [
    (lambda r: r["categories"]["People"].update(wieght=3), "categories.People: unknown field 'wieght'"),
    (lambda r: r.update(colours={}), "top level: unknown field 'colours'"),
    (lambda r: r["styles"].update({"Anime": {"weight": -1}}), "styles.Anime.weight: weight must be >= 0"),
    (lambda r: r["styles"]["Anime"].update(colour="x"), "styles.Anime: unknown field 'colour'"),
    (lambda r: r.update(styles={k: 0 for k in r["styles"]}), "styles: all weights are 0"),
    (lambda r: r["categories"]["Design"].update(subcategories={}), "categories.Design.subcategories"),
    (lambda r: r.update(templates={}), "templates: expected a non-empty mapping"),
    (lambda r: r["tasks"].update({"Colors + Shapes": 3}), "tasks.Colors + Shapes: task component 'Shapes'"),
    (lambda r: r["length_targets"]["short"].update(min_words=30),
     "length_targets.short: min_words (30) is larger than max_words (20)"),
    (lambda r: r["templates"]["word_list"].update(instruction=""), "templates.word_list.instruction"),
    (lambda r: r["tasks"].update({"Colors": "many"}), "tasks.Colors: weight must be a finite number"),
    (lambda r: r["categories"]["Rare"].pop("subcategories"),
     "categories.Rare: missing required field 'subcategories'"),
])
def test_bad_taxonomy_errors_name_the_key(raw, tmp_path, edit, key):
    path = tmp_path / "taxonomy.yaml"
    path.write_text(yaml.safe_dump(_broken(raw, edit), sort_keys=False))
    with pytest.raises(TaxonomyError, match=re.escape(key)) as e:
        load_taxonomy(path)
    assert str(path) in str(e.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TaxonomyError, match="taxonomy file not found"):
        load_taxonomy(tmp_path / "nope.yaml")


def test_run_specs_writes_table_and_stats(tmp_path):
    table = tmp_path / "specs" / "00001.parquet"
    stats = run_specs(TAXONOMY, table, shard="00001", n=50, seed=7)
    rows = shards.read_records(table)
    assert len(rows) == 50 and all(r["kept"] and r["drop_reason"] is None for r in rows)
    assert rows[0]["id"] == "00001-000000"
    saved = shards.StageStats.read(shards.stats_path(table))
    assert saved.stage == "specs" and saved.records_in == 50 and saved.kept == 50 and saved.dropped == {}
    assert stats.extra["taxonomy_sha256"] == saved.extra["taxonomy_sha256"]
    # Rerunning gives the same records: a resumed workflow never reshuffles a shard.
    run_specs(TAXONOMY, tmp_path / "again.parquet", shard="00001", n=50, seed=7)
    assert shards.read_records(tmp_path / "again.parquet") == rows
