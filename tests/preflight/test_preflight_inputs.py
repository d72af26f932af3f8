"""preflight against a cluster whose tools print what nobody expected, and profiles in every form the Slurm plugin
accepts (issue 23). No cluster needed: scontrol, sacctmgr and sbatch are replaced by their outputs.

Any value preflight cannot read (memory with a stray unit, a malformed time, bytes that are not UTF-8) is a NO-GO
row naming the command, the field and the raw text, never a traceback; and every resource key the plugin turns
into an sbatch option is evaluated: a typed GPU (gres, gpu_model), mem_mb_per_cpu, constraint, qos (its limits as
sacctmgr shows them), and keys the plugin never reads (gpus).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from finet2i.preflight import slurm
from finet2i.preflight.cluster import _check_profile
from finet2i.preflight.report import GO, NOGO, Report

NODES = (b"NodeName=g1 Arch=x86_64 CPUTot=24 RealMemory=256000 Gres=gpu:a100:4(S:0-1) AvailableFeatures=a100,nvme "
         b"ActiveFeatures=a100,nvme State=IDLE Partitions=gpu\n"
         b"NodeName=c1 Arch=x86_64 CPUTot=32 RealMemory=128000 Gres=(null) AvailableFeatures=(null) State=IDLE "
         b"Partitions=cpu\n")
PARTITIONS = (b"PartitionName=cpu AllowAccounts=ALL Default=YES MaxTime=UNLIMITED MaxMemPerNode=UNLIMITED "
              b"State=UP\n"
              b"PartitionName=gpu AllowAccounts=ALL Default=NO MaxTime=2-00:00:00 MaxMemPerNode=UNLIMITED "
              b"MaxMemPerCPU=16000 State=UP\n")
ASSOC = b"lab|\n"
QOS = b"normal||\nshort|00:30:00|cpu=64,gres/gpu=4,mem=512G\n"


def fake_tools(monkeypatch, nodes: bytes = NODES, partitions: bytes = PARTITIONS, qos: bytes = QOS) -> None:
    outputs = {("scontrol", "node"): nodes, ("scontrol", "partition"): partitions}

    def run(cmd, capture_output=True, text=False, timeout=None, check=False, **kw):  # noqa: ARG001
        if cmd[0] == "sbatch":
            out, err = b"", b"sbatch: Job 1 to start at 2026-01-01T00:00:00 using 1 processors on nodes c1"
        elif cmd[0] == "sacctmgr":
            out, err = (qos if "qos" in cmd else ASSOC), b""
        else:
            out, err = outputs[(cmd[0], cmd[2])], b""
        if text:  # what subprocess does with text=True: a strict UTF-8 decode
            out, err = out.decode(), err.decode()
        return subprocess.CompletedProcess(cmd, 0, out, err)

    monkeypatch.setattr(slurm.subprocess, "run", run)
    monkeypatch.setattr(slurm.shutil, "which", lambda c: f"/usr/bin/{c}")


RULES = {
    "generate": SimpleNamespace(name="generate", local=False, threads=8,
                                resources={"gpu": 1, "mem_mb": 64000, "runtime": 60}),
    "specs": SimpleNamespace(name="specs", local=False, threads=1, resources={"mem_mb": 2000, "runtime": 10}),
}


def check(tmp_path: Path, generate: dict | None = None) -> Report:
    profile = {"executor": "slurm", "retries": 0,
               "default-resources": {"slurm_account": "lab", "slurm_partition": "cpu"},
               "set-resources": {"generate": {"slurm_partition": "gpu", **(generate or {})}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(profile))
    report = Report()
    _check_profile(tmp_path, RULES, {}, report)
    return report


def rows(report: Report, status: str, check_name: str | None = None) -> list[str]:
    return [c.detail for c in report.checks if c.status == status and (check_name is None or c.check == check_name)]


def test_a_readable_cluster_and_a_plain_profile_are_go(tmp_path, monkeypatch):
    fake_tools(monkeypatch)
    report = check(tmp_path)
    assert report.ok, report.table()
    assert rows(report, GO, "rule generate") and rows(report, GO, "rule specs")


UNREADABLE = {
    # name: (nodes, partitions, qos, command, field, raw text as shown)
    "memory with a stray unit": (NODES.replace(b"RealMemory=256000", b"RealMemory=256000MiBx"), PARTITIONS, QOS,
                                 "scontrol show node -o", "RealMemory", "256000MiBx"),
    "a malformed time": (NODES, PARTITIONS.replace(b"MaxTime=2-00:00:00", b"MaxTime=2-00:xx:00"), QOS,
                         "scontrol show partition -o", "MaxTime", "2-00:xx:00"),
    "bytes that are not UTF-8": (NODES.replace(b"CPUTot=24", b"CPUTot=2\xff4"), PARTITIONS, QOS,
                                 "scontrol show node -o", "CPUTot", "2\\xff4"),
    "a count that is no number": (NODES.replace(b"CPUTot=32", b"CPUTot=thirty-two"), PARTITIONS, QOS,
                                  "scontrol show node -o", "CPUTot", "thirty-two"),
    "a qos limit": (NODES, PARTITIONS, QOS.replace(b"00:30:00", b"half an hour"), "sacctmgr", "MaxWall",
                    "half an hour"),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_an_unreadable_cluster_value_is_a_no_go_row_naming_command_field_and_text(case, tmp_path, monkeypatch):
    nodes, partitions, qos, command, field, raw = UNREADABLE[case]
    fake_tools(monkeypatch, nodes, partitions, qos)
    report = check(tmp_path)  # never raises
    found = rows(report, NOGO, "cluster value")
    assert found and not report.ok, report.table()
    assert command in found[0] and f"{field}={raw!r}" in found[0], found[0]


def test_memory_with_a_unit_slurm_might_print_is_read(tmp_path, monkeypatch):
    fake_tools(monkeypatch, NODES.replace(b"RealMemory=256000", b"RealMemory=250G"))
    report = check(tmp_path)
    assert report.ok, report.table()


PROFILES = {
    # name: (generate's set-resources, words of its NO-GO row)
    "a GPU type the nodes do not have (gres)": ({"gres": "gpu:h100:1", "gpu": 0}, ["h100", "a100"]),
    "a GPU type the nodes do not have (gpu_model)": ({"gpu_model": "h100"}, ["h100", "a100"]),
    "memory per CPU beyond every node": ({"mem_mb_per_cpu": 40000}, ["MaxMemPerCPU", "40000"]),
    "memory per CPU that fits no node": ({"mem_mb_per_cpu": 15000, "cpus_per_task": 24},
                                         ["360000", "x 24 cpus", "mem_mb_per_cpu: 10666"]),
    "a constraint no node has": ({"constraint": "a100&ib"}, ["a100&ib", "nvme"]),
    "a qos whose MaxWall is shorter": ({"qos": "short"}, ["qos short", "MaxWall", "30 min"]),
    "a qos that does not exist": ({"qos": "premium"}, ["premium", "does not exist"]),
    "gpus, which the plugin never reads": ({"gpus": 2}, ["gpus", "never"]),
    "gpu and a gpu gres together": ({"gres": "gpu:a100:1"}, ["mutually exclusive"]),
}


@pytest.mark.parametrize("case", list(PROFILES))
def test_every_resource_key_the_plugin_reads_is_evaluated(case, tmp_path, monkeypatch):
    fake_tools(monkeypatch)
    generate, words = PROFILES[case]
    report = check(tmp_path, generate)
    found = rows(report, NOGO, "rule generate")
    assert found and not report.ok, report.table()
    for word in words:
        assert word in found[0], (word, found[0])
    assert rows(report, GO, "rule specs")  # the other rule is unaffected


def test_typed_gpus_constraints_and_qos_that_fit_are_go(tmp_path, monkeypatch):
    fake_tools(monkeypatch)
    report = check(tmp_path, {"gres": "gpu:a100:2", "gpu": 0, "constraint": "a100|h100", "qos": "short",
                              "runtime": 30, "mem_mb_per_cpu": 8000})
    assert report.ok, report.table()
    assert "(a100)" in rows(report, GO, "rule generate")[0]
