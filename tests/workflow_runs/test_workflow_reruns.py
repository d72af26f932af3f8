"""Partial reruns and in-shard resume through Snakemake (issue 4, points 3-4).

The session's finished demo run (support.workflow.local_demo, shared with test_workflow and
test_slurm_workflow: every stage kind, CPU and vLLM and diffusion), then `snakemake -n` after each kind of
change must plan EXACTLY the jobs that the change can affect:

* a threshold or a model: that stage and everything downstream of it, in every shard; nothing upstream;
* a changed shard: its own chain, and the aggregations after it. Dedup reads every shard (centroids, groups,
  cross), so one `snakemake` run also replans every other shard from dedup on: Snakemake cannot know
  before running that the other shards' keep tables come out identical (the keep rule lets the earliest
  prompt survive, so a change in shard k never flips a verdict in an earlier shard). Running the dedup part
  first (`--until dedup`) lets Snakemake's input checksums see those identical tables, and the rest
  of the plan is then the changed shard's chain only; both are asserted;
* a touched file whose bytes did not change: nothing (Snakemake compares recorded input checksums);
* a changed workflow script: that stage and downstream (Snakemake's `code` trigger);
* a changed stage module in the package: that stage and downstream (a params fingerprint of the code the
  script imports, finet2i.core.codehash); a comment there: nothing;
* a runtime-only key (chunk_size) changed: nothing; a subset removed: no other subset is regenerated;
* no change: nothing.

The resume test kills Snakemake (SIGKILL to its process group) in the middle of a generate job and checks
that the rerun resumes from the chunk checkpoint and ends with the uninterrupted run's exact table.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from support.workflow import DEMO_CONFIG, ROOT, copy_workdir, demo_yaml, local_demo, planned_jobs, snakemake

from finet2i.core import pipeline

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

CONFIG = DEMO_CONFIG
DEMO = yaml.safe_load((ROOT / CONFIG).read_text())
SHARDS = tuple(f"{i:05d}" for i in range(DEMO["shards"]["count"]))
SUBSETS = tuple(DEMO["generate"]["subsets"])
SUBSET = "pe_as"  # the subset whose generate job the resume test kills
GROUPS = tuple(f"{g:03d}" for g in range(DEMO["dedup"]["groups"]))
# The per-shard chain in pipeline order (finet2i.core.pipeline), with dedup's per-shard assign job before its keep
# job; the curated branch is independent of every change made here.
SHARD_CHAIN = [s.name for s in pipeline.enabled_stages(DEMO) if s.branch == pipeline.SYNTHETIC]
SHARD_CHAIN.insert(SHARD_CHAIN.index("dedup"), "dedup_assign")
# Stages with one job per (subset, shard).
PER_SUBSET = {s.name for s in pipeline.STAGES if s.per_subset and not s.all_subsets_in_one_job}
# After any synthetic shard's chain: each synthetic subset is reassembled (it rewrites only changed tars), the
# report and the dataset card are rewritten.
FINAL = {"report", "all", "dataset_card"} | {f"assemble[subset={subset}]" for subset in SUBSETS}
DEDUP_AGGREGATES = {"dedup_centroids", "dedup_manifest", "dedup_cross"} | {
    f"dedup_group[group={g}]" for g in GROUPS}


def jobs(rule: str, shard: str) -> set[str]:
    if rule in PER_SUBSET:
        return {f"{rule}[shard={shard},subset={subset}]" for subset in SUBSETS}
    return {f"{rule}[shard={shard}]"}


def chain_from(first: str, shards: tuple[str, ...] = SHARDS, until: str | None = None) -> set[str]:
    """The per-shard jobs from `first` to `until` (inclusive; default: the end of the chain)."""
    rules = SHARD_CHAIN[SHARD_CHAIN.index(first):SHARD_CHAIN.index(until) + 1 if until else None]
    return {j for r in rules for s in shards for j in jobs(r, s)}


def write_changed_config(workdir: Path, config: dict) -> str:
    """config beside the demo's (never over it: the finished run is shared), as a --configfile path."""
    name = "config/changed.yaml"
    (workdir / name).write_text(yaml.safe_dump(config, sort_keys=False))
    return name


def plan(workdir: Path, config: str = CONFIG, env: dict[str, str] | None = None) -> dict[str, str]:
    return planned_jobs(workdir, "--profile", "profiles/local", "--configfile", config, env=env)


def assert_plan(planned: dict[str, str], expected: set[str]) -> None:
    extra = {j: planned[j] for j in sorted(set(planned) - expected)}
    missing = sorted(expected - set(planned))
    assert not extra and not missing, f"planned, not expected: {extra}\nexpected, not planned: {missing}"


def assert_reason(planned: dict[str, str], stage: str, reason: str) -> None:
    for shard in SHARDS:
        for j in jobs(stage, shard):
            assert reason in planned[j], (j, planned[j])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The session's finished demo run (support.workflow.local_demo), shared with test_workflow and
    test_slurm_workflow. Dry runs plan against it as it is; tests that change files work on a copy."""
    return local_demo(tmp_path_factory).wait()


@pytest.fixture
def work(finished, tmp_path) -> Path:
    return copy_workdir(finished, tmp_path / "wd")


def test_finished_run_covers_the_chain(finished):
    for shard in SHARDS:
        for subset in SUBSETS:
            assert (finished / f"results/package/{subset}/{shard}.parquet").exists()
    for subset in (*SUBSETS, "real"):
        assert (finished / f"results/assemble/{subset}.json").exists()
    assert (finished / "results/report/report.html").exists()
    assert (finished / "results/dataset/README.md").exists()


def test_no_change_plans_nothing(finished):
    assert_plan(plan(finished), set())


@pytest.mark.parametrize(("section", "key", "value", "stage"), [
    ("guard", "max_words", 20, "guard"),
    ("pair_filter", "aesthetic_threshold", 2.0, "pair_filter"),
])
def test_changed_threshold_reruns_the_stage_and_downstream(finished, section, key, value, stage):
    config = demo_yaml()
    assert config[section][key] != value
    config[section][key] = value
    planned = plan(finished, write_changed_config(finished, config))
    assert_plan(planned, chain_from(stage) | FINAL)
    assert_reason(planned, stage, "Params have changed")


def test_changed_model_reruns_the_stage_and_downstream(finished):
    """models.judge pointing at a copy of the same weights: a different model as far as the recipe knows."""
    copy = finished / "resources" / "judge-copy"
    if not copy.exists():
        shutil.copytree((finished / "resources/demo/models/qwen3-vl").resolve(), copy)
    config = demo_yaml()
    assert config["models"]["judge"] == config["models"]["verifier"]  # the same folder: only judge changes
    config["models"]["judge"] = {"path": "resources/judge-copy"}
    planned = plan(finished, write_changed_config(finished, config))
    assert_plan(planned, chain_from("pair_filter") | FINAL)
    assert_reason(planned, "pair_filter", "Params have changed")


def _rewrite_shard(path: Path, stage: str) -> None:
    """A real content change, still a valid table: one prompt reworded, or one spec less."""
    table = pq.read_table(path)
    if stage == "prompts":
        prompts = table.column("prompt").to_pylist()
        prompts[0] = prompts[0] + " beside a lighthouse at dawn"
        table = table.set_column(table.schema.get_field_index("prompt"), "prompt", pa.array(prompts))
    else:
        table = table.slice(0, table.num_rows - 1)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


@pytest.mark.parametrize("stage", ["specs", "prompts"])
def test_changed_shard_reruns_its_chain_and_the_aggregations(work, stage):
    """One `snakemake` run after shard 00001 changed. Shard 00000's specs, prompts and embeddings are kept;
    dedup reads every shard, so its aggregations rerun and, after them, every shard's dedup and
    whatever is downstream of it (Snakemake cannot tell before running that shard 00000's keep table will
    come out identical; see the two-step test)."""
    _rewrite_shard(work / f"results/{stage}/00001.parquet", stage)
    after = SHARD_CHAIN[SHARD_CHAIN.index(stage) + 1]
    expected = (chain_from(after, ("00001",)) | DEDUP_AGGREGATES | chain_from("dedup_assign", ("00000",))
                | FINAL)
    assert_plan(plan(work), expected)


def test_changed_shard_after_dedup_reruns_only_its_chain(work):
    """The cheap dedup part first (`--until dedup`), then the plan: shard 00000's keep table is
    rewritten with the same bytes (the earliest prompt survives, so a change in a later shard cannot flip
    its verdicts) and its recorded input checksum keeps its GPU stages from rerunning."""
    _rewrite_shard(work / "results/prompts/00001.parquet", "prompts")
    keep0 = (work / "results/dedup/00000.parquet").read_bytes()
    mtime0 = (work / "results/dedup/00000.parquet").stat().st_mtime_ns
    snakemake(work, "--profile", "profiles/local", "--configfile", CONFIG, "--cores", "2",
              "--until", "dedup", timeout=900)
    keep = work / "results/dedup/00000.parquet"
    assert keep.stat().st_mtime_ns != mtime0, "dedup 00000 did not run"
    assert keep.read_bytes() == keep0, "a change in shard 00001 changed shard 00000's dedup verdicts"
    assert_plan(plan(work), chain_from("guard", ("00001",)) | FINAL)


def test_touched_shard_with_same_bytes_plans_nothing(work):
    for stage in ("specs", "prompts"):
        os.utime(work / f"results/{stage}/00001.parquet")
    assert_plan(plan(work), set())


def test_changed_workflow_script_reruns_the_stage_and_downstream(work):
    script = work / "workflow_scripts" / "guard.py"
    script.write_text(script.read_text() + "\n# a change\n")
    planned = plan(work)
    assert_plan(planned, chain_from("guard") | FINAL)
    assert_reason(planned, "guard", "Code has changed")


def _shadow_package(tmp_path: Path, edit: str) -> dict[str, str]:
    """A copy of the package (schema included) with `edit` appended to stages/guard.py, first on the path."""
    shadow = tmp_path / "shadow"
    shutil.copytree(ROOT / "src" / "finet2i", shadow / "src" / "finet2i")
    module = shadow / "src" / "finet2i" / "stages" / "guard.py"
    module.write_text(module.read_text() + edit)
    return {"PYTHONPATH": f"{shadow / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_changed_stage_module_reruns_the_stage(work, tmp_path):
    """The logic lives in the package, not in the rule's script: params carry a fingerprint of the modules
    the script imports (finet2i.core.codehash)."""
    planned = plan(work, env=_shadow_package(tmp_path, "\nCHANGED_LOGIC = True\n"))
    # The curated branch's guard (captions) runs the same module, so it reruns too, with what follows it.
    curated_guard = {f"{rule}[cshard=00000]" for rule in ("curated_guard", "package_real")}
    # package_real's tables feed both real subsets: the shareable one and the demo's Unsplash Lite stand-in,
    # whose terms forbid redistribution (assembled apart, in results/dataset_internal/)
    curated_guard |= {"assemble[subset=real]", "assemble[subset=real_internal]"}
    assert_plan(planned, chain_from("guard") | curated_guard | FINAL)
    assert_reason(planned, "guard", "Params have changed")


def test_comment_in_stage_module_plans_nothing(finished, tmp_path):
    assert_plan(plan(finished, env=_shadow_package(tmp_path, "\n# a clarifying comment\n")), set())


def test_changed_chunk_size_plans_nothing(finished):
    """A chunk size only sets how often a job checkpoints; outputs do not depend on it (RUNTIME_ONLY_KEYS)."""
    config = demo_yaml()
    config["guard"]["chunk_size"] = 3
    assert_plan(plan(finished, write_changed_config(finished, config)), set())


def test_changed_subset_list_does_not_regenerate_other_subsets(finished):
    """generate's params leave `subsets` out: each subset has jobs of its own, whose images do not depend on
    which other subsets exist. (pair_filter is one job per shard over the listed subsets, so it reruns.)"""
    config = demo_yaml()
    config["generate"]["subsets"] = [s for s in SUBSETS if s != "po_as"]
    planned = plan(finished, write_changed_config(finished, config))
    regenerated = sorted(j for j in planned if j.startswith(("generate[", "guard[", "enhance[")))
    assert not regenerated, {j: planned[j] for j in regenerated}


def _processes_in(workdir: Path) -> list[int]:
    """Live processes whose working directory is workdir (Snakemake and the jobs it started)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "cwd")) == workdir:
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_killed_generate_job_resumes_from_its_checkpoint(finished, tmp_path):
    """SIGKILL to Snakemake's process group once a generate job has written its first chunk; the rerun
    resumes from the checkpoint, logs it, and ends with the uninterrupted run's exact table."""
    from finet2i.core import shards

    wd = copy_workdir(finished, tmp_path / "wd").resolve()
    kept = {s: len(shards.read_kept(wd / f"results/enhance/{s}.parquet")) for s in SHARDS}
    # the smaller shard that still has two chunks to kill between
    shard = min((s for s in SHARDS if kept[s] >= 2), key=kept.get, default=None)
    assert shard, f"need two chunks to kill between, enhanced shards hold {kept}"
    table = wd / f"results/generate/{SUBSET}/{shard}.parquet"
    stats = table.with_name(f"{shard}.stats.json")
    reference = pq.read_table(table)
    table.unlink()
    stats.unlink()
    chunks = table.with_name(table.name + ".chunks")
    target = str(table.relative_to(wd))
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/local", "--configfile", CONFIG,
           "--cores", "2", target]
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=wd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not (chunks / "chunk-000000.parquet").exists():
            assert proc.poll() is None, f"no chunk before snakemake ended:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, "no chunk after 600 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    time.sleep(1)
    left = _processes_in(wd)
    for pid in left:  # the job's own children, if any escaped the group: they would finish the job for us
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived the killed snakemake: {left}"
    done_before = len(list(chunks.glob("chunk-*.parquet")))
    assert not table.exists() and 1 <= done_before < kept[shard], (done_before, kept[shard])
    print(f"killed generate/{shard} after {done_before} of {kept[shard]} chunks")

    snakemake(wd, "--profile", "profiles/local", "--configfile", CONFIG, "--unlock")
    snakemake(wd, "--profile", "profiles/local", "--configfile", CONFIG, "--cores", "2", target,
              timeout=900)
    log = (wd / f"logs/generate/{SUBSET}/{shard}.log").read_text()
    assert "resumed from checkpoint" in log, log[-3000:]
    assert f"{done_before} of {kept[shard]} chunks were already done" in log, log[-3000:]
    assert not chunks.exists(), "the checkpoint outlived the finished table"
    resumed = pq.read_table(table)
    assert resumed.column_names == reference.column_names
    assert resumed.to_pylist() == reference.to_pylist()
