"""results/ and logs/ on another filesystem (docs/storage.md): two symlinks in the workflow folder. The rules'
relative paths, the profile and .snakemake/ stay where they are; the outputs land on the other filesystem, and
preflight's disk row measures that filesystem, not the workflow folder's."""

from __future__ import annotations

from pathlib import Path

from support.workflow import DEMO_CONFIG, demo_workdir, snakemake

from finet2i.preflight import run_preflight
from finet2i.preflight.disk import free_bytes


def test_results_and_logs_on_another_filesystem_through_symlinks(tmp_path: Path) -> None:
    wd = demo_workdir(tmp_path / "checkout")
    big = tmp_path / "scratch" / "finet2i"  # stands for /scratch/$USER/finet2i (docs/storage.md)
    for name in ("results", "logs"):
        (big / name).mkdir(parents=True)
        (wd / name).symlink_to(big / name)
    snakemake(wd, "--profile", "profiles/local", "--configfile", DEMO_CONFIG, "--cores", "1",
              "results/specs/00000.parquet", "results/specs/00001.parquet")
    for shard in ("00000", "00001"):
        assert (big / "results" / "specs" / f"{shard}.parquet").is_file()
        assert (big / "logs" / "specs" / f"{shard}.log").is_file()
    assert (wd / "results").is_symlink() and (wd / "logs").is_symlink()  # nothing replaced the links
    assert (wd / ".snakemake").is_dir() and not (big / ".snakemake").exists()

    # Preflight follows the link: its disk row names the target and that filesystem's free space.
    report = run_preflight([DEMO_CONFIG], profile=None, workdir=wd)
    disk = next(c for c in report.checks if c.check == "disk")
    assert f"results -> {big / 'results'}" in disk.detail, disk.detail
    assert f"free on {free_bytes(big / 'results')[1]}" in disk.detail
    assert "already there" in disk.detail and not disk.detail.startswith("0 B")
