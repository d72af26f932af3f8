"""The local Slurm cluster works for Snakemake's slurm executor: GPU rules land in partition `gpu` with one
GPU (and CUDA_VISIBLE_DEVICES set), CPU rules in `cpu`, and the profile keys our slurm profile relies on
(retries, memory scaled by attempt, set-resources, group-components) do what we think, checked with sacct.

A throwaway Snakefile in tmp_path: this tests the cluster and the plugin, not the finet2i workflow.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from support.slurm import (
    SlurmCluster,
    run_snakemake_slurm,
    run_uuid,
    sacct_jobs,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# Each job writes where it ran and which GPUs Slurm gave it.
REPORT = ('echo "CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}}" > {output}; '
          'echo "SLURM_JOB_PARTITION=$SLURM_JOB_PARTITION" >> {output}')

CHAIN = f"""
rule all:
    input: "gpu.txt"

rule cpu_step:
    output: "cpu.txt"
    shell: '{REPORT}'

rule gpu_step:
    input: "cpu.txt"
    output: "gpu.txt"
    resources: gpu=1
    shell: '{REPORT}'
"""


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def by_rule(jobs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for job in jobs:
        out.setdefault(job["rule"], []).append(job)
    return out


def test_gpu_rule_runs_in_gpu_partition_with_one_gpu(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(CHAIN)
    since = datetime.now()
    t0 = time.monotonic()
    proc = run_snakemake_slurm(
        tmp_path, "--executor", "slurm", "--jobs", "4",
        "--default-resources", f"slurm_account={slurm_cluster.account}",
        f"slurm_partition={slurm_cluster.cpu_partition}", "mem_mb=300", "runtime=10",
        "--set-resources", f"gpu_step:slurm_partition={slurm_cluster.gpu_partition}",
        # The plugin waits this long before its first sacct poll (default 40 s): the only latency knob.
        "--slurm-init-seconds-before-status-checks", "2",
        timeout=300)
    chain_seconds = time.monotonic() - t0
    print(f"\n2-job chain on the local cluster: {chain_seconds:.1f} s "
          f"(slurm-up.sh this session: {slurm_cluster.up_seconds:.1f} s)")
    uuid = run_uuid(proc.stdout + proc.stderr)
    assert uuid, "no 'SLURM run ID' in Snakemake's output: was the slurm executor used?"

    # Inside the jobs: Slurm handed the GPU job a (fake) device, the CPU job none.
    gpu_env, cpu_env = read_env(tmp_path / "gpu.txt"), read_env(tmp_path / "cpu.txt")
    assert gpu_env["SLURM_JOB_PARTITION"] == slurm_cluster.gpu_partition
    assert gpu_env["CUDA_VISIBLE_DEVICES"] not in ("", "unset"), gpu_env
    assert cpu_env["SLURM_JOB_PARTITION"] == slurm_cluster.cpu_partition
    assert cpu_env["CUDA_VISIBLE_DEVICES"] == "unset", cpu_env

    # In accounting: the job name is the run's uuid, the comment names the rule.
    jobs = by_rule(sacct_jobs(since, name=uuid))
    assert sorted(jobs) == ["cpu_step", "gpu_step"], jobs
    (gpu_job,), (cpu_job,) = jobs["gpu_step"], jobs["cpu_step"]
    assert (gpu_job["Partition"], gpu_job["gpus"], gpu_job["state"]) == ("gpu", 1, "COMPLETED"), gpu_job
    assert (cpu_job["Partition"], cpu_job["gpus"], cpu_job["state"]) == ("cpu", 0, "COMPLETED"), cpu_job
    assert {gpu_job["Account"], cpu_job["Account"]} == {slurm_cluster.account}
    assert cpu_job["mem_mb"] == 300


PROFILE_SNAKEFILE = """
rule all:
    input: "gpu.txt", "flaky.txt", expand("small/{i}.txt", i=range(3))

rule gpu_step:
    output: "gpu.txt"
    resources: gpu=1
    shell: 'echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES" > {output}'

# Fails on its first attempt, succeeds on the second: proves `retries` and `mem_mb: N * attempt`.
rule flaky:
    output: "flaky.txt"
    shell: "if [ ! -e attempt1.done ]; then touch attempt1.done; exit 3; fi; echo ok > {output}"

# Seconds-long jobs: grouped so that three of them are one Slurm job.
rule small:
    output: "small/{i}.txt"
    group: "smalls"
    shell: "echo {wildcards.i} > {output}"
"""

PROFILE = """
executor: slurm
jobs: 10
retries: 1
latency-wait: 5
rerun-incomplete: true
default-resources:
  slurm_account: "finet2i"
  slurm_partition: "cpu"
  mem_mb: 400 * attempt
  runtime: 10
set-resources:
  gpu_step:
    slurm_partition: "gpu"
    runtime: 5
group-components:
  smalls: 3
slurm-init-seconds-before-status-checks: 2
"""


def test_profile_keys_retries_memory_by_attempt_and_groups(slurm_cluster: SlurmCluster,
                                                          tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(PROFILE_SNAKEFILE)
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(PROFILE)
    since = datetime.now()
    proc = run_snakemake_slurm(tmp_path, "--profile", "profile", timeout=300)
    jobs = sacct_jobs(since, name=run_uuid(proc.stdout + proc.stderr))

    gpu = [j for j in jobs if j["rule"] == "gpu_step"]
    assert [(j["Partition"], j["gpus"], j["state"]) for j in gpu] == [("gpu", 1, "COMPLETED")], jobs
    assert gpu[0]["ReqMem"] == "400M"

    # retries: 1 -> a second submission; `400 * attempt` is evaluated per attempt.
    flaky = sorted((j for j in jobs if j["rule"] == "flaky"), key=lambda j: int(j["JobIDRaw"]))
    assert [(j["state"], j["mem_mb"]) for j in flaky] == [("FAILED", 400), ("COMPLETED", 800)], flaky
    assert (tmp_path / "flaky.txt").read_text() == "ok\n"

    # group-components: the three `small` jobs are ONE Slurm job; the plugin's comment for a group job is
    # rule_<group id>_<its rule names>, and the group's resources are summed (3 x 400 MB, 3 CPUs).
    grouped = [j for j in jobs if j["Comment"].startswith("rule_smalls")]
    assert len(grouped) == 1, jobs
    assert grouped[0]["Comment"] == "rule_smalls_small" and grouped[0]["mem_mb"] == 1200, grouped
    assert sorted(p.name for p in (tmp_path / "small").iterdir()) == ["0.txt", "1.txt", "2.txt"]
    assert len(jobs) == 4, jobs
