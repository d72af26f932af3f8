"""Several shards in one GPU job, with per-shard results that a rerun of the batch reuses (docs/job-sizing.md).

A GPU job pays its model load once: a job that runs one shard of ~5,000 prompts through an 8B model spends
about as long starting the engine as using it. A *batch job* runs a stage over the shards of its batch on one
engine, one shard after the other, and writes each shard's result into a per-shard cache beside the stage's
outputs (``results/<stage>/.batched/{shard}.parquet`` + stats + ``.fingerprint``), which Snakemake does not
declare and therefore never deletes before rerunning the job. A cached shard is reused when its fingerprint
matches: the digest of its input table's bytes, plus the rule's params (settings, model, code fingerprint).
So when one shard of a batch changes, the batch job reruns, reuses every other shard's result (without
loading the model when nothing is left to do: engines are lazy) and recomputes that shard alone; a batch job
killed after k shards redoes the rest only. :func:`publish` then puts each shard's cached result at the
stage's declared per-shard path (hard link, fresh mtime), byte for byte, so that Snakemake's checksums of the
unchanged shards match and nothing downstream of them reruns on the next invocation.

Wired for guard (rules/guard.smk: guard_batch + guard_publish, ``gpu_jobs`` in the config); the other GPU
stages follow the same pattern (docs/job-sizing.md, "What is built and what is not").
``finet2i.core.shards`` (pyarrow) is imported inside the functions that use it: rules/common.smk imports this
module while Snakemake parses the workflow.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finet2i.core import pipeline
from finet2i.core.files import sha256_of
from finet2i.core.settings import lookup

log = logging.getLogger(__name__)

CACHE_FOLDER = ".batched"
# Stages whose rules can run several shards per job (finet2i.core.pipeline: Stage.batchable).
BATCHABLE: tuple[str, ...] = tuple(s.name for s in pipeline.STAGES if s.batchable)


def shards_per_job(config: Mapping[str, Any], stage: str) -> int:
    """Shards one GPU job of ``stage`` processes: ``gpu_jobs.stages.<stage>``, else ``gpu_jobs.shards_per_job``,
    never more than the shard count; 1 for a stage that cannot batch."""
    if stage not in BATCHABLE:
        return 1
    n = lookup(config, "gpu_jobs.stages").get(stage, lookup(config, "gpu_jobs.shards_per_job"))
    return max(1, min(int(n), int(config["shards"]["count"])))


def is_batched(config: Mapping[str, Any], stage: str) -> bool:
    return shards_per_job(config, stage) > 1


def batches(shard_ids: Sequence[str], per_job: int) -> list[list[str]]:
    """Shards cut into consecutive batches of ``per_job`` (the last one may be smaller)."""
    if per_job < 1:
        raise ValueError(f"shards per job must be >= 1, got {per_job}")
    return [list(shard_ids[i:i + per_job]) for i in range(0, len(shard_ids), per_job)]


def batch_count(shards_total: int, per_job: int) -> int:
    """How many batch jobs a stage has: ``ceil(shards / per_job)`` (preflight's job count for ``{batch}``)."""
    return -(-int(shards_total) // max(1, int(per_job)))


@dataclass(frozen=True)
class ShardWork:
    """One shard of a batch: its input table and where its result is cached."""

    shard: str
    in_path: Path
    table: Path  # the cached result (results/<stage>/.batched/{shard}.parquet)

    @property
    def stats(self) -> Path:
        from finet2i.core import shards

        return shards.stats_path(self.table)

    @property
    def fingerprint_path(self) -> Path:
        return self.table.with_name(self.table.name + ".fingerprint")

    @classmethod
    def under(cls, stage_folder: str | os.PathLike[str], shard: str, in_path: str | os.PathLike[str]
              ) -> ShardWork:
        return cls(shard, Path(in_path), Path(stage_folder) / CACHE_FOLDER / f"{shard}.parquet")


def shard_fingerprint(work: ShardWork, key: Any) -> str:
    """What a shard's result depends on: its input table's bytes and ``key`` (the rule's params)."""
    from finet2i.core import shards

    return shards.fingerprint([sha256_of(work.in_path)], key)


def cached(work: ShardWork, fingerprint: str) -> bool:
    """Whether the shard's cached result is complete (stats written last) and made from the same inputs."""
    try:
        return (work.table.exists() and work.stats.exists()
                and work.fingerprint_path.read_text().strip() == fingerprint)
    except OSError:
        return False


def run_batch(work: Sequence[ShardWork], run_one: Callable[[ShardWork], Any], *, key: Any,
              close: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run ``run_one`` on every shard of the batch whose cached result does not match; return the manifest.

    ``run_one(work)`` writes ``work.table`` and ``work.stats`` (a stage's ``run_<stage>`` with a shared engine).
    ``close`` shuts the shared engine down at the end, also on failure (a lazy engine that never started costs
    nothing). The fingerprint is written after the stats, so a shard cut off mid-way is redone.
    """
    from finet2i.core import shards

    started = time.monotonic()
    manifest: dict[str, Any] = {"shards": {}, "reused": 0, "computed": 0}
    try:
        for w in work:
            fp = shard_fingerprint(w, key)
            reuse = cached(w, fp)
            if not reuse:
                w.fingerprint_path.unlink(missing_ok=True)
                run_one(w)
                with shards.atomic_path(w.fingerprint_path) as tmp:
                    tmp.write_text(fp + "\n")
            manifest["shards"][w.shard] = {"fingerprint": fp, "reused": reuse, "table": str(w.table),
                                           "stats": str(w.stats)}
            manifest["reused" if reuse else "computed"] += 1
            log.info("shard %s: %s", w.shard, "reused (inputs, params and code unchanged)" if reuse else "computed")
    finally:
        if close is not None:
            close()
    manifest["seconds"] = round(time.monotonic() - started, 3)
    return manifest


def publish(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Put a cached file at its declared path: a hard link (a copy across filesystems), with a fresh mtime so
    that Snakemake sees the output as newer than the batch job's manifest. The bytes are the cached ones."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.publish")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.utime(tmp)
    os.replace(tmp, dest)


def run_batch_job(smk: Any, stage: str, run_one: Callable[[ShardWork], Any],
                  close: Callable[[], None] | None = None) -> dict[str, Any]:
    """A ``<stage>_batch`` rule's job: its shards (``params.shards``, ``input.tables`` in the same order) through
    :func:`run_batch`, keyed by every other param (settings, model, code); writes ``output.manifest``."""
    from finet2i.core import shards

    folder = Path("results") / stage
    work = [ShardWork.under(folder, s, p) for s, p in zip(smk.params.shards, smk.input.tables, strict=True)]
    key = {k: v for k, v in smk.params.items() if k != "shards"}
    manifest = run_batch(work, run_one, key=key, close=close)
    log.info("%s batch: %d shard(s) computed, %d reused, %.1f s", stage, manifest["computed"], manifest["reused"],
             manifest["seconds"])
    shards.write_json(smk.output.manifest, manifest)
    return manifest


def publish_shard(manifest_path: str | os.PathLike[str], shard: str, table: str | os.PathLike[str],
                  stats: str | os.PathLike[str], log: str | os.PathLike[str] | None = None) -> None:
    """A ``<stage>_publish`` job: the shard's cached result, as its batch job's manifest names it, at the
    stage's per-shard paths (the stats last: they mark the shard complete)."""
    from finet2i.core import shards

    entry = shards.read_json(manifest_path)["shards"][shard]
    work = ShardWork(shard, Path(), Path(entry["table"]))
    if not cached(work, entry["fingerprint"]):
        raise RuntimeError(f"{work.table}: the cached result of shard {shard} is missing or was made from other "
                           f"inputs than {manifest_path} records; rerun the batch "
                           f"(snakemake --forcerun {Path(manifest_path).parent.parent.name}_batch)")
    publish(work.table, table)
    publish(work.stats, stats)
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_text(f"shard {shard}: {'reused' if entry['reused'] else 'computed'} by {manifest_path}, "
                             f"fingerprint {entry['fingerprint']}\n")
