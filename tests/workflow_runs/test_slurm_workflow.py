"""The demo workflow through `snakemake --profile profiles/slurm` on the real local Slurm cluster.

- The README's first-run block, word for word: it builds the environment (a stand-in over this .venv), makes
  its copy of the recipe (here the demo's), fetches and pins, fills in the profile, runs preflight with the GPU
  probe (a faked H100 answer: no GPU here) and the run; every GPU job's log says it ran that environment's
  python.
- Placement: every job of a rule that declares `gpu=1` ran in partition `gpu` with one GPU, every other job
  in `cpu` (checked with sacct), and the dataset equals a local-executor run's byte for byte (ids, prompts,
  JPEGs, metadata in every tar; the tiny VLMs' free-text reasons only for presence, see MODEL_PROSE).
- Resume: a GPU job scancel'ed mid-shard is retried and resumes from its chunk checkpoint; Snakemake killed by
  SIGINT and by SIGKILL is cleaned up and rerun; a job that fails once succeeds on its retry with more memory.
  Each ends with tars identical to the uninterrupted run's.

The profile runs as committed; the test copy changes only the cluster's names (account, partitions) and the
status-poll delay. Resume tests start from a copy of the uninterrupted Slurm run with one subset-shard's tail
(generate -> pair_filter -> package) deleted, so each proves its point in 1-3 jobs instead of the 47-job
DAG.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from support.gpu import fake_cuda_env
from support.slurm import (
    SlurmCluster,
    cancel_jobs,
    run_snakemake_slurm,
    run_uuid,
    sacct_jobs,
)
from support.workflow import DEMO_CONFIG, ROOT, demo_workdir, local_demo, make_workdir

from finet2i.core import pipeline

# What each rule's job needs, stated once (rules/resources.yaml); a batched stage's <stage>_batch takes its stage's.
NEEDS = yaml.safe_load((ROOT / "rules" / "resources.yaml").read_text())
GPU_RULES = {r for r, need in NEEDS["rules"].items() if need.get("gpu")}
GPU_RULES |= {f"{s.name}_batch" for s in pipeline.STAGES if s.batchable}
# The memory caps of rules/resources.yaml (largest node per partition, which the user sets).
PROFILE_CAP_MB = NEEDS["max_mem_mb"]
DEMO = yaml.safe_load((ROOT / DEMO_CONFIG).read_text())
POLL_SECONDS = 2  # the only plugin setting a test may change: status-poll delay after a submission


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------

def write_test_profile(wd: Path, cluster: SlurmCluster) -> str:
    """profiles/slurm with the cluster's names filled in and a short poll delay; nothing else changes."""
    profile = yaml.safe_load((wd / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["slurm_account"] = cluster.account
    partitions = {"cpu": cluster.cpu_partition, "gpu": cluster.gpu_partition}
    defaults = profile["default-resources"]
    defaults["slurm_partition"] = partitions[defaults["slurm_partition"]]
    for res in profile["set-resources"].values():
        if "slurm_partition" in res:
            res["slurm_partition"] = partitions[res["slurm_partition"]]
    profile["slurm-init-seconds-before-status-checks"] = POLL_SECONDS
    (wd / "profiles" / "slurm-test").mkdir(exist_ok=True)
    (wd / "profiles" / "slurm-test" / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return "profiles/slurm-test"


def slurm_args(profile: str, configfile: str = DEMO_CONFIG) -> list[str]:
    # --workflow-profile none: belt and braces: Snakemake would layer a profiles/default (a LOCAL profile: cores: all,
    # resources: gpu=1) over the Slurm profile; see test_slurm_profile_is_not_overridden_by_the_local_profile.
    return ["--profile", profile, "--workflow-profile", "none", "--configfile", configfile]


# Free-text explanations from the tiny random-weight VLMs: greedy decoding over near-tied logits, where any
# difference in the CPU kernels' arithmetic changes the text. Seen once in session 3: one record's
# attribute_reason differed between the local and the Slurm demo, every verdict, prompt and image byte equal;
# rerun alone, the local job gave the Slurm text. They are compared for presence, not content.
MODEL_PROSE = ("attribute_reason", "judge_reasoning")


def json_digest(data: bytes) -> str:
    """sha256 of a sample's metadata with MODEL_PROSE fields reduced to whether they are present."""
    meta = json.loads(data)
    for key in MODEL_PROSE:
        if key in meta:
            meta[key] = meta[key] is not None
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def dataset_digest(results: Path, only: list[str] | None = None) -> dict[str, dict[str, dict[str, str]]]:
    """{subset/train-NNNNN.tar: {sample id: {"txt": prompt, "jpg": sha256, "json": sha256}}} (json: see
    json_digest)."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for tar in sorted((results / "dataset").glob("*/train-*.tar")):
        rel = tar.relative_to(results / "dataset").as_posix()
        if only is not None and rel not in only:
            continue
        samples: dict[str, dict[str, str]] = {}
        with tarfile.open(tar) as tf:
            for member in tf.getmembers():
                key, ext = member.name.split(".", 1)
                data = tf.extractfile(member).read()
                samples.setdefault(key, {})[ext] = (data.decode() if ext == "txt" else json_digest(data)
                                                    if ext == "json" else hashlib.sha256(data).hexdigest())
        out[rel] = samples
    return out


def digest_diff(a: dict, b: dict) -> str:
    """A readable account of how two dataset digests differ (empty when equal)."""
    lines = []
    for tar in sorted(set(a) | set(b)):
        if tar not in a or tar not in b:
            lines.append(f"{tar}: only in {'first' if tar in a else 'second'}")
            continue
        sa, sb = a[tar], b[tar]
        if set(sa) != set(sb):
            lines.append(f"{tar}: ids only in first {sorted(set(sa) - set(sb))}, only in second "
                         f"{sorted(set(sb) - set(sa))}")
        for key in sorted(set(sa) & set(sb)):
            for ext in sorted(set(sa[key]) | set(sb[key])):
                if sa[key].get(ext) != sb[key].get(ext):
                    lines.append(f"{tar}:{key}.{ext} differs: {sa[key].get(ext)!r:.80} vs "
                                 f"{sb[key].get(ext)!r:.80}")
    return "\n".join(lines)


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout[stdout.rindex("Job stats:"):]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    counts.pop("total", None)
    return counts


def squeue(uuid: str) -> list[dict[str, str]]:
    """Jobs of one run still known to slurmctld: id, state, comment (= rule_<rule>_wildcards_...)."""
    proc = subprocess.run(["squeue", "--name", uuid, "--states=all", "--noheader", "--format=%i|%T|%k"],
                          capture_output=True, text=True, timeout=30)
    jobs = []
    for line in proc.stdout.splitlines():
        job_id, state, comment = line.split("|", 2)
        jobs.append({"id": job_id, "state": state, "comment": comment})
    return jobs


def wait_for(what: str, predicate: Callable[[], object], timeout: float, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log else ""
            raise AssertionError(f"Snakemake exited ({proc.returncode}) before {what}:\n{tail}")
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_snakemake(wd: Path, args: list[str], log: Path,
                    env: dict[str, str] | None = None) -> subprocess.Popen:
    """Snakemake in the background, output to `log` (so the run uuid can be read while it runs).

    SIGINT is reset to its default in the child: a suite started in the background (`pytest ... &` from a
    script) inherits SIGINT ignored, and a Python started that way never raises KeyboardInterrupt, so the
    Ctrl-C test would watch Snakemake run to the end (seen once, session 3)."""
    out = log.open("w")
    return subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=wd, stdout=out,
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def log_uuid(log: Path) -> str | None:
    return run_uuid(log.read_text()) if log.exists() else None


def running_job(uuid: str, rule: str) -> dict[str, str] | None:
    return next((j for j in squeue(uuid)
                 if j["state"] == "RUNNING" and j["comment"].startswith(f"rule_{rule}_")), None)


def chunk_files(output: Path) -> list[Path]:
    return sorted(output.with_name(output.name + ".chunks").glob("chunk-*.parquet"))


# ----------------------------------------------------------------------------------------------------------
# The uninterrupted runs (module-scoped: one local and one Slurm run of the whole demo, shared by all tests)
# ----------------------------------------------------------------------------------------------------------

@dataclass
class DemoRun:
    workdir: Path
    digest: dict
    counts: dict[str, int]
    seconds: float
    uuid: str | None = None
    since: datetime | None = None
    env: Path | None = None  # the environment the README's first run built and ran from


@pytest.fixture(scope="module")
def demo_runs(slurm_cluster: SlurmCluster, tmp_path_factory) -> dict[str, DemoRun]:
    """The demo once with the local executor (profiles/local, as `finet2i demo` runs it) and once on Slurm,
    the latter by following the README's first-run section word for word (run_readme_first_run).

    The local run is the session's shared one (support.workflow.local_demo): if no earlier test started it,
    it runs in the background while the Slurm run waits on the queue and its polls.
    """
    local = local_demo(tmp_path_factory)  # the session's shared run; started here if no test started it
    slurm_wd = demo_workdir(tmp_path_factory.mktemp("slurm"))
    since = datetime.now()
    t0 = time.monotonic()
    env_dir = tmp_path_factory.mktemp("env") / "finet2i"
    out = run_readme_first_run(slurm_wd, slurm_cluster, tmp_path_factory.mktemp("hf_home"), env_dir,
                               tmp_path_factory.mktemp("fake-gpu"))
    slurm_seconds = time.monotonic() - t0
    local_wd = local.wait()
    runs = {
        "local": DemoRun(local_wd, dataset_digest(local_wd / "results"), job_counts(local.log.read_text()),
                         local.seconds or 0.0),
        "slurm": DemoRun(slurm_wd, dataset_digest(slurm_wd / "results"), job_counts(out), slurm_seconds,
                         run_uuid(out), since, env_dir),
    }
    print(f"\ndemo: Slurm {slurm_seconds:.0f} s")
    return runs


README_VALUES = ("RECIPE", "CONFIG", "ACCOUNT", "CPU_PARTITION", "GPU_PARTITION", "ENV", "export HF_HOME",
                 "export HF_TOKEN")
# The copy of the recipe that the README's first run makes and runs (CONFIG=...): the demo config, copied.
README_CONFIG = "my-demo.yaml"


def readme_first_run() -> str:
    """The README's first-run block (between its first-run markers), as a user would paste it."""
    text = (ROOT / "README.md").read_text()
    start, end = text.index("<!-- first-run:start -->"), text.index("<!-- first-run:end -->")
    block = text[start:end].split("```bash\n", 1)[1].rsplit("```", 1)[0]
    return block


def run_readme_first_run(wd: Path, cluster: SlurmCluster, hf_home: Path, env_dir: Path, fake_gpu: Path) -> str:
    """Follow the README's first run in `wd` on the local cluster: the block runs as written, in bash with
    -e (a NO-GO from preflight stops it), after its values are given this cluster's (the README says which
    lines are yours): the demo config as the recipe, a scratch environment, model cache and token.

    Three things differ from a GPU cluster, each outside the block: the profile's status-poll delay
    (POLL_SECONDS, the only plugin setting a test may change), or each of the demo's ~15 levels would wait 40 s;
    the environment is a stand-in (FINET2I_ENV_BASE: scripts/setup-gpu-env.sh layers ENV over this .venv and
    its CPU builds in a second, instead of installing the 10 GB GPU lock); and the --probe-gpu job answers with
    a faked H100 (support.gpu), since the test node has no GPU (its real answer, NO-GO, is
    tests/preflight/test_gpu_probe.py's). Returns everything the block printed."""
    block = readme_first_run()
    values = {"RECIPE": DEMO_CONFIG, "CONFIG": README_CONFIG, "ACCOUNT": cluster.account,
              "CPU_PARTITION": cluster.cpu_partition, "GPU_PARTITION": cluster.gpu_partition, "ENV": str(env_dir),
              "export HF_HOME": str(hf_home), "export HF_TOKEN": ""}
    lines = block.splitlines()
    for name in README_VALUES:
        found = [i for i, line in enumerate(lines) if line.startswith(f"{name}=")]
        assert len(found) == 1, f"README first run: expected one line `{name}=...`, found {len(found)}"
        lines[found[0]] = f"{name}={values[name]}"
    profile = wd / "profiles" / "slurm" / "config.yaml"
    text = profile.read_text()
    assert "slurm-init-seconds-before-status-checks: 40" in text
    profile.write_text(text.replace("slurm-init-seconds-before-status-checks: 40",
                                    f"slurm-init-seconds-before-status-checks: {POLL_SECONDS}"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "FINET2I_ENV_BASE": str(Path(sys.executable).parent.parent), **fake_cuda_env(fake_gpu)}
    started = datetime.now()
    try:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(lines)], cwd=wd, env=env,
                              capture_output=True, text=True, timeout=2400)
    except subprocess.TimeoutExpired as exc:
        out = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                      for x in (exc.stdout, exc.stderr))
        if uuid := run_uuid(out):
            cancel_jobs(uuid)
        raise AssertionError(f"the README's first run did not finish in 2400 s (since {started}):\n"
                             f"{out[-4000:]}") from exc
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"the README's first run failed ({proc.returncode}):\n{out[-8000:]}"
    assert re.search(r"^GO \(", proc.stdout, re.M), f"preflight did not say GO:\n{out[-8000:]}"
    assert re.search(r"^GO +gpu probe +partition gpu .*NVIDIA H100", proc.stdout, re.M), out[-8000:]
    assert "models.aesthetic_head: local" in proc.stdout, out[-4000:]
    assert "CHANGE_ME" not in profile.read_text()
    assert (wd / README_CONFIG).read_text() == (wd / DEMO_CONFIG).read_text()  # the copy, pinned: nothing to pin
    return out


def gpu_job_environments(wd: Path) -> dict[str, str]:
    """{log of each GPU job: the interpreter its first lines say it ran} (finet2i.workflow.adapter)."""
    out = {}
    for rule in GPU_RULES:
        for log in sorted((wd / "logs" / rule).rglob("*.log")):
            m = re.search(r"environment: python (\S+) \(prefix", log.read_text(errors="replace"))
            out[str(log.relative_to(wd))] = m.group(1) if m else ""
    return out


def resume_copy(ref: DemoRun, dest: Path, subset: str, shard: str) -> tuple[Path, str]:
    """A copy of the finished Slurm run with one subset-shard's generate -> pair_filter -> package outputs
    removed; returns (workdir, target: that shard's finished-sample table)."""
    shutil.copytree(ref.workdir, dest, symlinks=True)
    shutil.rmtree(dest / ".snakemake" / "slurm_logs", ignore_errors=True)
    for pattern in (f"results/generate/{subset}/{shard}.*", f"results/pair_filter/{subset}/{shard}.*",
                    f"results/package/{subset}/{shard}.*"):
        for path in dest.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return dest, f"results/package/{subset}/{shard}.parquet"


def assert_planned(wd: Path, args: list[str], target: str, expected: dict[str, int]) -> None:
    proc = run_snakemake_slurm(wd, target, *args, "-n", timeout=300)
    assert job_counts(proc.stdout) == expected, proc.stdout[-3000:]


def biggest_shard(ref: DemoRun) -> tuple[str, str]:
    """The (subset, shard) with the most finished samples: the longest generate job, the easiest to catch."""
    tables = sorted((ref.workdir / "results" / "package").glob("*/*.parquet"))
    best = max(tables, key=lambda t: sum(pq.read_table(t, columns=["kept"]).column("kept").to_pylist()))
    return best.parent.name, best.stem


ACTIVE = ("RUNNING", "PENDING", "COMPLETING")


def active_jobs(uuid: str) -> list[dict[str, str]]:
    return [j for j in squeue(uuid) if j["state"] in ACTIVE]


def resumed_from(wd: Path, subset: str, shard: str) -> re.Match[str] | None:
    """The generate log's 'resumed from checkpoint: k of n chunks' line (groups: k, n)."""
    text = (wd / f"logs/generate/{subset}/{shard}.log").read_text()
    return re.search(r"resumed from checkpoint: (\d+) of (\d+) chunks were already done", text)


def package_digest(wd: Path, target: str) -> dict[str, dict[str, str]]:
    """{key: {"txt": prompt, "jpg": sha256, "json": sha256 (json_digest)}} of a finished-sample table."""
    from finet2i.stages.package import sample_jpgs

    rows = sample_jpgs(pq.read_table(wd / target).to_pylist(), wd / target)  # the jpg from where a sample refers
    return {r["key"]: {"txt": r["txt"], "jpg": hashlib.sha256(r["jpg"]).hexdigest(),
                       "json": json_digest(r["json"].encode())} for r in rows if r["kept"]}


def assert_same_tar(ref: DemoRun, wd: Path, target: str) -> None:
    """The resumed run's finished samples equal the uninterrupted run's: same keys, prompts, image bytes, json."""
    a, b = package_digest(ref.workdir, target), package_digest(wd, target)
    assert a and not digest_diff({target: a}, {target: b}), digest_diff({target: a}, {target: b})


# ----------------------------------------------------------------------------------------------------------
# Fast checks of the profile (no cluster)
# ----------------------------------------------------------------------------------------------------------

def test_profile_matches_rules() -> None:
    """Needs are stated once: every submitted rule reads rules/resources.yaml (threads_of / resources_of) and no
    rule file or profile repeats a number of it; every rule with a GPU goes to the GPU partition and nothing else
    does; no gres anywhere (the plugin would ask for the GPU twice)."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    texts = {p.name: p.read_text() for p in (ROOT / "rules").glob("*.smk")}
    rules = {m.group(1): name for name, text in texts.items() for m in re.finditer(r"^rule (\w+):", text, re.M)}
    local = {"all", "guard_publish", "curated_list"} & set(rules)
    for rule, name in rules.items():
        body = texts[name].split(f"rule {rule}:", 1)[1].split("\nrule ", 1)[0]
        assert not re.search(r"^\s+(mem_mb|runtime|gpu)=", body, re.M), f"rules/{name}: {rule} states a need itself"
        if rule in NEEDS["rules"]:
            assert "resources_of(" in body and "threads_of(" in body, f"rule {rule} does not read its needs"
        else:  # the profile's defaults (1 core, 2 GB): a local rule, or a light CPU one
            assert rule in local or "gpu" not in body, rule
    assert set(NEEDS["rules"]) <= set(rules), set(NEEDS["rules"]) - set(rules)
    set_res = profile["set-resources"]
    routed = {r for r, res in set_res.items() if res.get("slurm_partition") == "gpu"}
    assert routed == GPU_RULES
    assert all(set(res) == {"slurm_partition"} for res in set_res.values()), "the profile only routes"
    assert "gres" not in yaml.safe_dump(profile) + yaml.safe_dump(NEEDS)
    assert profile["default-resources"]["slurm_partition"] == "cpu"
    for key in ("retries", "rerun-incomplete", "latency-wait", "group-components", "groups"):
        assert profile.get(key), key
    assert profile["slurm-status-command"] == "squeue"


# The local profile is profiles/local, not profiles/default: Snakemake loads profiles/default as the
# *workflow-specific* profile after --profile profiles/slurm, and its `cores: all` / `resources: [gpu=1]` then
# capped every Slurm job's threads and let one GPU job run at a time on the whole cluster.
def test_slurm_profile_is_not_overridden_by_the_local_profile(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "wf")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--configfile",
                           "config/demo.yaml", "-n", "--quiet", "all", "--default-resources",
                           "slurm_account=finet2i", "--", "results/specs/00000.parquet"],
                          cwd=wd, capture_output=True, text=True, timeout=300)
    assert "workflow specific profile" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-2000:]


# ----------------------------------------------------------------------------------------------------------
# On the cluster
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.vllm
def test_demo_on_slurm_places_jobs_and_matches_local(demo_runs: dict[str, DemoRun]) -> None:
    local, slurm = demo_runs["local"], demo_runs["slurm"]
    assert slurm.uuid, "no 'SLURM run ID' in Snakemake's output: was the slurm executor used?"
    jobs = sacct_jobs(slurm.since, name=slurm.uuid)
    assert jobs and all(j["state"] == "COMPLETED" for j in jobs), [(j["Comment"], j["State"]) for j in jobs]
    gpu_jobs = [j for j in jobs if j["rule"] in GPU_RULES]
    other = [j for j in jobs if j["rule"] not in GPU_RULES]
    bad_gpu = [(j["Comment"], j["Partition"], j["AllocTRES"]) for j in gpu_jobs
               if (j["Partition"], j["gpus"]) != ("gpu", 1)]
    bad_cpu = [(j["Comment"], j["Partition"], j["AllocTRES"]) for j in other
               if (j["Partition"], j["gpus"]) != ("cpu", 0)]
    assert not bad_gpu, f"GPU jobs not in partition gpu with one GPU: {bad_gpu}"
    assert not bad_cpu, f"CPU jobs not in partition cpu without GPU: {bad_cpu}"
    # Every GPU job of the DAG ran on Slurm, one Slurm job each (the local run's job counts are the DAG's).
    gpu_counts = {r: sum(j["rule"] == r for j in gpu_jobs) for r in GPU_RULES}
    assert gpu_counts == {r: local.counts.get(r, 0) for r in GPU_RULES}, (gpu_counts, local.counts)
    # ... every one the demo config enables (curated_enhance runs only with curated.long_prompt: enhancer)
    demo_gpu = {r for r in GPU_RULES if not r.endswith("_batch")} - {"dedup_group", "dedup_cross"}
    assert all(gpu_counts[r] for r in demo_gpu if r in pipeline.BY_NAME and pipeline.enabled(r, DEMO)), gpu_counts
    # ... and no target after the dataset (finetune, evaluate) that the demo config leaves off
    assert not any(gpu_counts.get(t.name) for t in pipeline.TARGETS if t not in pipeline.enabled_targets(DEMO))
    assert not any(gpu_counts[r] for r in GPU_RULES if r.endswith("_batch")), "the demo runs one shard per job"
    assert all(gpu_counts[r] for r in ("dedup_group", "dedup_cross")), gpu_counts
    # Grouping: the per-shard CPU jobs ran as fewer Slurm jobs than Snakemake jobs.
    grouped = [j for j in other if j["Comment"].startswith("rule_small_")]
    assert grouped, [j["Comment"] for j in other]
    cpu_rules = set(local.counts) - GPU_RULES - {"all", "dedup_manifest", "curated_list"}  # localrules
    assert len(other) < sum(local.counts[r] for r in cpu_rules), (len(other), local.counts)
    # Same dataset as the local executor's, byte for byte (model prose: see MODEL_PROSE).
    assert sum(len(samples) for samples in local.digest.values()) > 0, "the local run packaged nothing"
    diff = digest_diff(local.digest, slurm.digest)
    assert not diff, "Slurm and local datasets differ:\n" + diff
    print(f"\nSlurm jobs: {len(jobs)} ({len(gpu_jobs)} GPU) for {sum(local.counts.values())} Snakemake jobs")


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.vllm
def test_readme_run_jobs_ran_in_the_environment_it_built(demo_runs: dict[str, DemoRun]) -> None:
    """The README's first run builds ENV and runs Snakemake from it: every GPU job's log says it ran ENV's
    python (the plugin starts jobs with Snakemake's own interpreter), and the LLM jobs name vLLM's platform."""
    slurm = demo_runs["slurm"]
    assert slurm.env is not None and (slurm.env / "bin" / "python").exists()
    pythons = gpu_job_environments(slurm.workdir)
    assert pythons and set(pythons.values()) == {str(slurm.env / "bin" / "python")}, pythons
    llm_logs = [log for rule in ("prompts", "guard", "enhance")
                for log in (slurm.workdir / "logs" / rule).rglob("*.log")]
    assert llm_logs and all("vLLM platform: CpuPlatform (device cpu)" in log.read_text() for log in llm_logs)
    print(f"\n{len(pythons)} GPU job logs, each ran {slurm.env}/bin/python")


SLOW_GENERATE_HOOK = '''\
# Test-only (tests/workflow_runs/test_slurm_workflow.py): each image-generation call of a `generate` job first sleeps
# $FINET2I_TEST_SLOW_GENERATE seconds, so that the test can stop the job between two checkpointed chunks (the
# demo's tiny models render a shard in about a second). Loaded through PYTHONPATH; inert unless the variable
# is set. It changes no output: the images are the same, only later.
import os, sys
_delay = os.environ.get("FINET2I_TEST_SLOW_GENERATE")
if _delay and sys.argv and os.path.basename(sys.argv[0]).endswith(".generate.py"):
    import time
    from finet2i.models.backends import diffusers_gen as _dg
    _generate = _dg.DiffusersGenerator.generate
    def _slow(self, *args, **kwargs):
        time.sleep(float(_delay))
        return _generate(self, *args, **kwargs)
    _dg.DiffusersGenerator.generate = _slow
'''


def slow_generate_env(tmp_path: Path, seconds: float = 1.5) -> dict[str, str]:
    """The environment that makes this test's generate jobs take >= `seconds` per image call."""
    hooks = tmp_path / "slow-hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SLOW_GENERATE_HOOK)
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH", "")) if p),
            "FINET2I_TEST_SLOW_GENERATE": str(seconds)}


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.vllm
def test_scancel_gpu_job_is_retried_and_resumes_from_checkpoint(demo_runs, slurm_cluster, tmp_path) -> None:
    ref = demo_runs["slurm"]
    subset, shard = biggest_shard(ref)
    wd, target = resume_copy(ref, tmp_path / "wd", subset, shard)
    args = slurm_args(write_test_profile(wd, slurm_cluster))
    assert_planned(wd, args, target, {"generate": 1, "pair_filter": 1, "package": 1})
    image_table = wd / f"results/generate/{subset}/{shard}.parquet"

    log = tmp_path / "snakemake.log"
    since = datetime.now()
    proc = start_snakemake(wd, [target, *args], log, env=slow_generate_env(tmp_path))
    try:
        uuid = wait_for("the run uuid", lambda: log_uuid(log), 120, proc, log)
        job = wait_for("generate to finish its first chunk", lambda: chunk_files(image_table)
                       and running_job(uuid, "generate"), 600, proc, log)
        done_at_kill = len(chunk_files(image_table))
        subprocess.run(["scancel", job["id"]], check=True, timeout=30)
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            cancel_jobs(log_uuid(log))
    assert proc.returncode == 0, log.read_text()[-6000:]

    generate = sorted((j for j in sacct_jobs(since, name=uuid) if j["rule"] == "generate"),
                      key=lambda j: int(j["JobIDRaw"]))
    assert [(j["state"], j["Partition"], j["gpus"]) for j in generate] == [
        ("CANCELLED", "gpu", 1), ("COMPLETED", "gpu", 1)], generate
    assert generate[1]["mem_mb"] == min(2 * generate[0]["mem_mb"], PROFILE_CAP_MB["gpu"]), \
        "retry did not get attempt-scaled, capped memory"
    assert generate[1]["mem_mb"] > generate[0]["mem_mb"]
    m = resumed_from(wd, subset, shard)
    assert m and int(m.group(1)) >= done_at_kill >= 1, (wd / f"logs/generate/{subset}/{shard}.log").read_text()[-3000:]
    assert int(m.group(1)) < int(m.group(2)), "the job was cancelled after its last chunk: nothing to resume"
    assert not image_table.with_name(image_table.name + ".chunks").exists()
    assert_same_tar(ref, wd, target)
    print(f"\nscancel'ed generate {job['id']} after {done_at_kill} chunks; retry: {m.group(0)}")


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.vllm
def test_sigint_and_sigkill_to_snakemake_then_cleanup_and_rerun(demo_runs, slurm_cluster, tmp_path) -> None:
    ref = demo_runs["slurm"]
    subset, shard = biggest_shard(ref)
    wd, target = resume_copy(ref, tmp_path / "wd", subset, shard)
    args = slurm_args(write_test_profile(wd, slurm_cluster))
    image_table = wd / f"results/generate/{subset}/{shard}.parquet"

    # 1. Ctrl-C while generate runs: Snakemake cancels its own Slurm jobs and releases its lock.
    log1 = tmp_path / "run1.log"
    slow = slow_generate_env(tmp_path)
    proc = start_snakemake(wd, [target, *args], log1, env=slow)
    uuid1 = wait_for("run 1's uuid", lambda: log_uuid(log1), 120, proc, log1)
    wait_for("generate's first chunk", lambda: chunk_files(image_table) and running_job(uuid1, "generate"),
             600, proc, log1)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode != 0
    wait_for("run 1's jobs to be cancelled by Snakemake", lambda: not active_jobs(uuid1), 60)
    chunks_after_sigint = len(chunk_files(image_table))

    # 2. SIGKILL: nothing cleans up; the job keeps running on the cluster and the lock stays.
    log2 = tmp_path / "run2.log"
    proc = start_snakemake(wd, [target, *args], log2, env=slow)
    uuid2 = wait_for("run 2's uuid", lambda: log_uuid(log2), 120, proc, log2)
    wait_for("generate to make progress in run 2",
             lambda: len(chunk_files(image_table)) > chunks_after_sigint and running_job(uuid2, "generate"),
             600, proc, log2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert running_job(uuid2, "generate"), "after SIGKILL the Slurm job should still be running"
    assert list((wd / ".snakemake" / "locks").iterdir()), "a SIGKILLed Snakemake leaves its lock behind"
    # The cleanup a user does (README): cancel the killed run's jobs, unlock, rerun.
    cancel_jobs(uuid2)
    wait_for("run 2's jobs to end", lambda: not active_jobs(uuid2), 60)
    chunks_at_kill = len(chunk_files(image_table))
    run_snakemake_slurm(wd, *args, "--unlock", timeout=300)

    # 3. The rerun finishes the job from its checkpoint and the tar equals the uninterrupted run's.
    final = run_snakemake_slurm(wd, target, *args, timeout=900)
    m = resumed_from(wd, subset, shard)
    log = (wd / f"logs/generate/{subset}/{shard}.log").read_text()
    assert m and int(m.group(1)) >= chunks_at_kill, (chunks_at_kill, log[-3000:], final.stdout[-2000:])
    assert_same_tar(ref, wd, target)
    print(f"\nSIGINT after {chunks_after_sigint} chunks, SIGKILL after {chunks_at_kill}; rerun: {m.group(0)}")


FAIL_ONCE_HOOK = '''\
# Test-only (tests/workflow_runs/test_slurm_workflow.py): the first `package` job to start exits 3, later ones run.
# Loaded by every Python process of the test's jobs through PYTHONPATH; inert unless the env var is set.
import os, sys
_spec = os.environ.get("FINET2I_TEST_FAIL_ONCE")
if _spec and sys.argv and os.path.basename(sys.argv[0]).endswith("." + _spec.split(":", 1)[0] + ".py"):
    _marker = _spec.split(":", 1)[1]
    if not os.path.exists(_marker):
        open(_marker, "w").write(sys.argv[0])
        sys.stderr.write("FINET2I_TEST_FAIL_ONCE: failing this first attempt on purpose\\n")
        sys.exit(3)
'''


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.vllm
def test_job_failing_once_succeeds_on_retry(demo_runs, slurm_cluster, tmp_path) -> None:
    ref = demo_runs["slurm"]
    subset, shard = biggest_shard(ref)
    wd, target = resume_copy(ref, tmp_path / "wd", subset, shard)
    # Only the packaging is redone: restore generate's and pair_filter's outputs from the reference.
    for stage in ("generate", "pair_filter"):
        for path in (ref.workdir / "results" / stage / subset).glob(f"{shard}.*"):
            shutil.copy2(path, wd / "results" / stage / subset / path.name)
    args = slurm_args(write_test_profile(wd, slurm_cluster))
    assert_planned(wd, args, target, {"package": 1})
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(FAIL_ONCE_HOOK)
    marker = tmp_path / "package-failed-once"
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH", "")) if p),
           "FINET2I_TEST_FAIL_ONCE": f"package:{marker}"}

    since = datetime.now()
    proc = run_snakemake_slurm(wd, target, *args, env=env, timeout=600)
    assert marker.exists(), "the first attempt did not run the failing hook"
    jobs = sorted(sacct_jobs(since, name=run_uuid(proc.stdout + proc.stderr)),
                  key=lambda j: int(j["JobIDRaw"]))
    assert [(j["state"], j["Partition"]) for j in jobs] == [("FAILED", "cpu"), ("COMPLETED", "cpu")], jobs
    assert [j["mem_mb"] for j in jobs] == [8000, 16000], "memory is not scaled by attempt"
    assert_same_tar(ref, wd, target)
