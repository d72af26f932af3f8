"""finet2i preflight: the profile evaluated as Snakemake and the Slurm plugin do, the disk estimate, the model
cache, and deliberately wrong profiles checked against the real local Slurm cluster (tests/support/slurm.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.slurm import SlurmCluster
from support.workflow import DEMO_CONFIG, ROOT, demo_workdir, make_workdir, snakemake

from finet2i.preflight import GO, NOGO, WARN, Report, run_preflight
from finet2i.preflight.disk import FIGURES, estimate, human
from finet2i.preflight.plan import parse_rules
from finet2i.preflight.profile import Profile, ProfileError, evaluate
from finet2i.preflight.slurm import _gpus, parse_time_min

FINET2I = str(Path(sys.executable).parent / "finet2i")
SHIPPED = ROOT / "profiles" / "slurm" / "config.yaml"
PRODUCTION = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def write_profile(folder: Path, edit=None, account: str = "finet2i") -> Path:  # type: ignore[no-untyped-def]
    """The shipped Slurm profile with the test cluster's account, then `edit(profile)` applied."""
    profile = yaml.safe_load(SHIPPED.read_text())
    profile["default-resources"]["slurm_account"] = account
    if edit is not None:
        edit(profile)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def rows(report: Report, status: str, check: str | None = None) -> list[str]:
    return [c.detail for c in report.checks if c.status == status and (check is None or c.check == check)]


# --- the profile, evaluated ---------------------------------------------------------------------------------

def test_shipped_profile_memory_grows_per_attempt_and_is_capped() -> None:
    profile = Profile.load(ROOT / "profiles" / "slurm")
    rules = parse_rules(ROOT / "Snakefile", [ROOT / "config" / "config.yaml"], ROOT)
    generate = rules["generate"]
    asks = [profile.request("generate", generate.resources, generate.threads, a) for a in (1, 2, 3)]
    assert [r.mem_mb for r in asks] == [128000, 250000, 250000]  # rules/resources.yaml: x attempt, capped
    assert [(r.partition, r.gpus, r.cpus) for r in asks] == [("gpu", 1, 8)] * 3
    assert asks[0].mem_from == "rule generate (rules/resources.yaml)"
    specs = profile.request("specs", rules["specs"].resources, 1, 3)
    assert (specs.partition, specs.mem_mb, specs.runtime_min, specs.gpus) == ("cpu", 6000, 10, 0)
    assert profile.group_size("specs") == 16 and profile.group_size("generate") == 1
    assert profile.retries == 2


def test_placeholders_are_named() -> None:
    profile = Profile.load(ROOT / "profiles" / "slurm")
    assert profile.placeholders() == ["default-resources.slurm_account"]


def test_profile_cli_list_forms_threads_gres_and_durations(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "executor": "slurm", "retries": 1,
        "default-resources": ["slurm_account=lab", "mem_mb=1000 * attempt", "runtime='2h'"],
        "set-resources": ["guard:slurm_partition=a100", "guard:gres='gpu:a100:2'", "guard:mem_mb=4000 * threads"],
        "set-threads": {"guard": 3},
    }))
    profile = Profile.load(tmp_path)
    r = profile.request("guard", {"mem_mb": 32000}, 4, 2)
    assert (r.partition, r.account, r.gpus, r.cpus, r.mem_mb, r.runtime_min) == ("a100", "lab", 2, 3, 12000, 120)
    assert r.gpu_model == "a100" and not r.problems
    # A rule that declares gpu and a profile that adds a gpu gres: the plugin refuses the job (mutually exclusive).
    both = profile.request("guard", {"gpu": 1, "mem_mb": 32000}, 4, 2)
    assert any("mutually exclusive" in p for p in both.problems)
    other = profile.request("specs", {}, 1, 2)
    assert (other.mem_mb, other.partition) == (2000, None)
    assert evaluate("gpu", attempt=1, threads=1, where="x") == "gpu"


def test_profile_errors_name_the_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("set-resources:\n  guard: {mem_mb: '1000 / (attempt - 1)'}\n")
    profile = Profile.load(tmp_path)
    with pytest.raises(ProfileError, match=r"config.yaml: set-resources.guard.mem_mb: .* attempt 1"):
        profile.request("guard", {}, 1, 1)
    with pytest.raises(ProfileError, match="no profile here"):
        Profile.load(tmp_path / "nothing")


def test_slurm_value_formats() -> None:
    assert [parse_time_min(t) for t in ("UNLIMITED", "60", "1:00:00", "2-00:00:00", "30:00", "1:30:30")] == [
        None, 60, 60, 2880, 30, 91]
    assert [_gpus(g) for g in ("(null)", "gpu:2", "gpu:a100:4(S:0-1)", "gpu:a100:2,gpu:v100:1", "mps:100")] == [
        0, 2, 4, 3, 0]


# --- disk ---------------------------------------------------------------------------------------------------

def test_disk_estimate_of_the_production_config_comes_from_the_papers_figures() -> None:
    sizes = {s.stage: s for s in estimate(PRODUCTION, ROOT)}
    # The release is ~2 TB (abstract): the dataset folder holds it, and results/ the kept images once more
    # (pair_filter's images files; docs/disk.md): the package tables refer to them.
    assert 1.8e12 < sizes["dataset"].bytes < 2.1e12, human(sizes["dataset"].bytes)
    assert sizes["pair_filter"].bytes > 0.95 * sizes["dataset"].bytes
    assert sizes["package"].bytes < 0.02 * sizes["dataset"].bytes
    # 44.8M specs (1,120 x 40,000): the paper's yields give its ~20.6M rendered prompt-subset pairs; their tables
    # are temp(): only the shards in flight count (64 of 1,120 by default).
    assert sizes["generate"].records == pytest.approx(4 * 5_158_969, rel=1e-4)
    total = sum(s.bytes for s in sizes.values())
    assert total < 2.5 * sizes["dataset"].bytes, human(total)
    assert total - sizes["generate"].bytes < 2.2 * sizes["dataset"].bytes
    assert "64 of 1,120 shards in flight" in sizes["generate"].sources[-1]
    # Keeping the images of dropped pairs for cheap re-filtering keeps every generate table (~6.6 TB).
    kept = {s.stage: s for s in estimate({**PRODUCTION, "pair_filter": {**PRODUCTION["pair_filter"],
                                                                         "keep_dropped_images": True}}, ROOT)}
    assert kept["generate"].bytes > 6e12 and kept["generate"].bytes == max(s.bytes for s in kept.values())
    assert kept["pair_filter"].bytes < 0.1 * kept["dataset"].bytes
    assert sizes["embed"].bytes == 44_800_000 * 768
    assert all(s.sources for s in sizes.values())
    assert FIGURES["jpeg"].source.startswith("paper")
    assert "curated_ingest" not in sizes  # the shipped config has no curated sources


def test_disk_estimate_sizes_a_stage_inserted_into_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/architecture.md's worked example inserts a blocklist filter after guard: the estimate's stages are
    the pipeline's, so the new stage is sized (by the generic row, said so) and the stages after it keep theirs."""
    from finet2i.core import pipeline
    from finet2i.workflow.config import load_config

    config = load_config(ROOT / "config" / "config.yaml", base_dir=ROOT, check_models=False)
    before = {s.stage: s for s in estimate(config, ROOT)}
    at = [s.name for s in pipeline.STAGES].index("guard") + 1
    stages = (*pipeline.STAGES[:at], pipeline.Stage("blocklist", switch="blocklist.enabled"), *pipeline.STAGES[at:])
    monkeypatch.setattr(pipeline, "STAGES", stages)
    monkeypatch.setattr(pipeline, "BY_NAME", {s.name: s for s in stages})
    config["blocklist"] = {"enabled": True}
    after = estimate(config, ROOT)
    sizes = {s.stage: s for s in after}
    assert [s.stage for s in after] == [*before][:at] + ["blocklist"] + [*before][at:]
    blocklist = sizes.pop("blocklist")
    assert blocklist.records == sizes["attributes"].records == before["attributes"].records  # guard's kept rows
    assert blocklist.bytes > 0
    assert len(blocklist.sources) == 1 and blocklist.sources[0].startswith(
        "estimate: no size figure declared for stage blocklist; a generic row of"), blocklist.sources
    assert sizes == before  # attributes, enhance, ..., package, dataset: as without the blocklist
    assert sum(s.bytes for s in after) == sum(s.bytes for s in before.values()) + blocklist.bytes
    config["blocklist"] = {"enabled": False}  # switched off: not written, not sized
    assert [s.stage for s in estimate(config, ROOT)] == [*before]


def test_disk_estimate_measures_a_folder_source_and_counts_a_url_list(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(b"x" * (1000 * (i + 1)))
    (tmp_path / "urls.txt").write_text("https://a/1.jpg\n\nhttps://a/2.jpg\n")
    config = json.loads(json.dumps(PRODUCTION))
    config["curated"]["sources"] = ["photos", {"path": "urls.txt", "name": "pexels"}]
    sizes = {s.stage: s for s in estimate(config, tmp_path)}
    ingest = sizes["curated_ingest"]
    assert ingest.records == 5
    assert ingest.bytes == round(6000 + 2 * FIGURES["real_download"].bytes)
    assert any("measured (3 files)" in s for s in ingest.sources)


def test_disk_estimate_of_listed_sources_uses_their_manifest_table_or_caps(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "unsplash").mkdir()
    (tmp_path / "unsplash" / "photos.tsv000").write_text("photo_id\tphoto_url\n" + "a\tu\n" * 7)
    (tmp_path / "results" / "curated_list").mkdir(parents=True)
    pq.write_table(pa.table({"source_id": [str(i) for i in range(42)]}),
                   tmp_path / "results" / "curated_list" / "listed.parquet")
    config = json.loads(json.dumps(PRODUCTION))
    config["curated"]["sources"] = [
        {"type": "unsplash_lite", "path": "unsplash", "max_photos": 5},
        {"type": "pexels", "name": "listed", "queries": ["a"]},          # listed already: its manifest counts
        {"type": "pexels", "queries": ["a", "b"], "max_per_query": 30},
        {"type": "pixabay", "queries": ["a", "b", "c"]},                  # the API's 500 per query
        {"type": "pexels", "name": "unbounded", "queries": ["a"]},        # the paper's count, said so
    ]
    ingest = {s.stage: s for s in estimate(config, tmp_path)}["curated_ingest"]
    assert ingest.records == 5 + 42 + 60 + 1500 + 233_342
    how = " | ".join(ingest.sources)
    for words in ("rows of its photos table, capped", "its manifest", "max_per_query x queries",
                  "the API's 500 per query", "paper Table 3 (no max_photos in the config)"):
        assert words in how, (words, how)


# --- the whole check, without a cluster ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_wd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_workdir(tmp_path_factory.mktemp("preflight"))


def test_demo_config_without_profile_is_go(demo_wd: Path) -> None:
    report = run_preflight([DEMO_CONFIG], profile=None, workdir=demo_wd)
    assert report.ok, report.table()
    # The job counts (from the rules' wildcards and the config, no DAG) are Snakemake's own plan's.
    proc = snakemake(demo_wd, "-n", "--forceall", "--configfile", DEMO_CONFIG)
    table = proc.stdout[proc.stdout.rindex("Job stats:"):]
    planned = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    planned.pop("total"), planned.pop("all")
    assert {rule: n for rule, n in report.jobs.items() if n} == planned
    assert rows(report, GO, "network")


def test_config_error_is_a_no_go_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    config = yaml.safe_load((ROOT / DEMO_CONFIG).read_text())
    config["prompts"]["tempreature"] = 1.0
    bad.write_text(yaml.safe_dump(config))
    report = run_preflight([bad], profile=None, workdir=make_workdir(tmp_path / "wd"))
    assert not report.ok
    assert "prompts.tempreature" in rows(report, NOGO, "config")[0]


def test_url_list_source_on_a_compute_node_is_a_network_warning(demo_wd: Path, tmp_path: Path) -> None:
    (demo_wd / "urls.txt").write_text("https://example.org/a.jpg\n")
    config = yaml.safe_load((demo_wd / DEMO_CONFIG).read_text())
    config["curated"]["sources"] = ["resources/demo/real-images", "urls.txt"]  # no API source: no listing
    path = demo_wd / "config" / "net.yaml"
    path.write_text(yaml.safe_dump(config))
    report = run_preflight(["config/net.yaml"], profile=write_profile(tmp_path / "profile"), workdir=demo_wd)
    warning = rows(report, WARN, "network")
    assert warning and "curated_ingest" in warning[0] and "urls.txt" in warning[0], report.table()
    assert "--until curated_ingest" in warning[0] and len(warning) == 1
    local = write_profile(tmp_path / "local", lambda p: p.update(executor="local"))
    report = run_preflight(["config/net.yaml"], profile=local, workdir=demo_wd)
    assert not rows(report, WARN, "network") and rows(report, GO, "network"), report.table()


def test_production_config_with_a_fake_model_cache_says_what_is_missing_and_how(tmp_path: Path) -> None:
    """Two models in the cache (one pinned, one on a branch), the rest missing: each missing one is named with
    the command that gets it (gated ones with the license page and HF_TOKEN, the head with its license)."""
    cache = tmp_path / "hub"
    commit = "a" * 40  # both snapshots; the config pins the verifier to it and leaves the embedder at main
    for model_id in ("sentence-transformers/all-MiniLM-L6-v2", "Qwen/Qwen3-VL-8B-Instruct"):
        repo = cache / f"models--{model_id.replace('/', '--')}"
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["models"]["verifier"]["revision"] = commit
    wd = make_workdir(tmp_path / "wd")
    (wd / "config" / "pinned.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HOME", None)
    proc = subprocess.run([FINET2I, "preflight", "--configfile", "config/pinned.yaml",
                           "--profile", str(ROOT / "profiles" / "slurm"), "--json"], cwd=wd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    checks = report["checks"]
    nogo_models = [c["detail"] for c in checks if c["status"] == NOGO and c["check"] == "model"]
    missing = {d.split(":")[0] for d in nogo_models}
    assert missing == {"models.prompt_generator", "models.guard", "models.enhancer", "models.z_image",
                       "models.flux2", "models.aesthetic_encoder", "models.aesthetic_head", "models.judge"}
    for detail in nogo_models:
        assert "finet2i fetch-models" in detail, detail
    gated = {d.split(":")[0] for d in nogo_models if "is gated" in d}
    assert gated == {"models.prompt_generator", "models.guard", "models.flux2"}
    assert all("HF_TOKEN" in d and "https://huggingface.co/" in d for d in nogo_models if "is gated" in d)
    head = next(d for d in nogo_models if d.startswith("models.aesthetic_head"))
    assert "AGPL-3.0" in head and "--accept-license aesthetic_head" in head
    unpinned = [c["detail"] for c in checks if c["status"] == WARN and c["check"] == "model"]
    assert len(unpinned) == 1 and unpinned[0].startswith("models.embedder") and "--pin" in unpinned[0]
    assert any(c["status"] == GO and c["detail"].startswith("models.verifier") for c in checks)
    # The test's cache is under /tmp: on a cluster, compute nodes would not see it.
    cache_row = next(c for c in checks if c["check"] == "model cache")
    assert cache_row["status"] == WARN and "HF_HOME" in cache_row["detail"] and str(cache) in cache_row["detail"]
    summary = next(c["detail"] for c in checks if c["check"] == "models")
    assert summary.startswith("8 of 10 model(s) missing")
    profile = next(c["detail"] for c in checks if c["check"] == "profile")
    assert "default-resources.slurm_account" in profile and "CHANGE_ME" in profile
    assert report["jobs"]["generate"] == 4 * 1120 and sum(report["jobs"].values()) > 19_000
    disk = {d["stage"]: d for d in report["disk"]}
    assert disk["pair_filter"]["bytes"] > 1.8e12 and disk["generate"]["sources"]
    print(f"\npreflight of the production config ({sum(report['jobs'].values()):,} jobs): {report['seconds']} s")


# --- against the live cluster: deliberately wrong profiles --------------------------------------------------

def _set(rule: str, **values):  # type: ignore[no-untyped-def]
    def edit(profile: dict) -> None:
        profile["set-resources"].setdefault(rule, {}).update(values)
    return edit


WRONG = {
    # name: (profile edit, the NO-GO row's check, words that its detail must contain)
    "unknown partition": (_set("guard", slurm_partition="nosuch"), "partition", ["nosuch", "guard"]),
    "account without an association for the partition": (
        _set("guard", slurm_account="finet2i-cpuonly"), "account",
        ["finet2i-cpuonly", "gpu", "guard", "Invalid account or account/partition combination"]),
    "memory beyond every node at attempt 2": (
        _set("generate", mem_mb="600000 * attempt"), "rule generate",
        ["attempt 2", "1200000", "largest: ", "1000000 MB", "min(600000 * attempt, 1000000)"]),
    "GPUs asked in a partition without GRES": (
        _set("guard", slurm_partition="cpuonly"), "rule guard", ["1 GPU", "cpuonly", "no GPUs"]),
    "a CPU rule asking for a GPU": (_set("specs", gpu=1), "rule specs", ["CPU rule", "GPU"]),
    "runtime over the partition limit": (
        _set("generate", slurm_partition="short"), "rule generate", ["runtime 720 min", "short", "60 min"]),
    # Forms the plugin accepts and preflight once passed as GO (sbatch rejects both on the test cluster):
    "a typed GPU the nodes do not have": (
        _set("guard", gres="gpu:a100:1", gpu=0), "rule guard", ["type a100", "none typed"]),
    "memory per CPU beyond every node": (
        _set("guard", mem_mb_per_cpu=300000), "rule guard", ["mem_mb_per_cpu", "1200000", "1000000 MB"]),
}


@pytest.mark.slurm
@pytest.mark.parametrize("case", list(WRONG))
def test_wrong_profile_is_a_no_go_naming_rule_and_value(case: str, slurm_cluster: SlurmCluster, demo_wd: Path,
                                                         tmp_path: Path) -> None:
    edit, check, words = WRONG[case]
    profile = write_profile(tmp_path / "profile", edit, account=slurm_cluster.account)
    report = run_preflight([DEMO_CONFIG], profile=profile, workdir=demo_wd)
    assert not report.ok
    details = rows(report, NOGO, check)
    assert len(rows(report, NOGO)) == 1 and details, report.table()
    for word in words:
        assert word in details[0], (word, details[0])


@pytest.mark.slurm
def test_correct_profile_is_go_on_the_cluster(slurm_cluster: SlurmCluster, demo_wd: Path, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "profile", account=slurm_cluster.account)
    proc = subprocess.run([FINET2I, "preflight", "--profile", str(profile),
                           "--configfile", DEMO_CONFIG], cwd=demo_wd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "\nGO (" in proc.stdout
    for rule in ("generate", "guard", "specs", "report"):
        assert f"rule {rule}" in proc.stdout
    assert "attempts 1-3 fit" in proc.stdout
    # The test cluster's fake GPUs have no type (GRES gpu:2): what fits them cannot be told, a warning per stage.
    assert "declare GPUs without a type (GRES gpu:N)" in proc.stdout
    # The demo lists fake Pexels/Pixabay APIs: the listing is a localrule (GO), the download goes to a node.
    assert "rule curated_list asks the pexels and pixabay API(s)" in proc.stdout and "localrule" in proc.stdout
    assert "rule curated_ingest downloads the photos of" in proc.stdout
