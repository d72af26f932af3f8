"""Several shards in one GPU job, with per-shard results that a rerun of the batch reuses (docs/job-sizing.md).

A GPU job pays its model load once: a job that runs one shard of ~5,000 prompts through an 8B model spends
about as long starting the engine as using it. A stage that opts in (``Stage.batchable`` in
:mod:`finet2i.core.pipeline`) gets, from one loop in ``rules/batching.smk``, a *batch rule* ``<stage>_batch``
and a *publish rule* ``<stage>_publish``, derived from its per-shard rule; ``gpu_jobs`` in the config says how
many shards one batch job runs.

A *unit* is what one job of the per-shard rule makes: one shard (``00003``), or one subset of one shard
(``pe_ar/00003``, generate). The batch job runs the stage's own script over the units of its batch on one set
of engines, one unit after the other, and writes each unit's outputs into a per-unit cache beside the stage's
outputs: the declared path ``results/<stage>/<rest>`` becomes ``results/<stage>/.batched/<rest>``, plus
``results/<stage>/.batched/<unit>.fingerprint``. Snakemake does not declare the cache and therefore never
deletes it before rerunning the job. A cached unit is reused when its fingerprint matches: the digest of its
input files' bytes, plus the rule's params (settings, model, code). So when one shard of a batch changes, the
batch job reruns, reuses every other unit (without loading a model when nothing is left to do: engines are
lazy) and recomputes that unit alone; a batch job killed after k units redoes the rest only.
:func:`publish_unit` then puts each unit's cached outputs at the stage's declared paths (hard link, fresh
mtime), byte for byte, so that Snakemake's checksums of the unchanged shards match and nothing downstream of
them reruns on the next invocation. A stage whose outputs are ``temp()`` (generate, when the config does not keep
the images of dropped pairs) is published by moving the cached files: the cache then holds no second reference
to bytes that Snakemake deletes once they are consumed (docs/disk.md).

Standard library only at import time: rules/common.smk imports this module while Snakemake parses the workflow.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finet2i.core import pipeline
from finet2i.core.files import sha256_of
from finet2i.core.settings import lookup

log = logging.getLogger(__name__)

CACHE_FOLDER = ".batched"
# Stages whose rules can run several shards per job (finet2i.core.pipeline: Stage.batchable).
BATCHABLE: tuple[str, ...] = tuple(s.name for s in pipeline.STAGES if s.batchable)


def shard_count(config: Mapping[str, Any], stage: str) -> int:
    """Shards of the stage's branch: ``shards.count``, or ``curated.shards`` for the curated stages."""
    if pipeline.stage(stage).branch == pipeline.CURATED:
        return int(lookup(config, "curated.shards"))
    return int(config["shards"]["count"])


def shards_per_job(config: Mapping[str, Any], stage: str) -> int:
    """Shards one GPU job of ``stage`` processes: ``gpu_jobs.stages.<stage>``, else ``gpu_jobs.shards_per_job``,
    never more than the stage's shard count; 1 for a stage that cannot batch."""
    if stage not in BATCHABLE:
        return 1
    n = lookup(config, "gpu_jobs.stages").get(stage, lookup(config, "gpu_jobs.shards_per_job"))
    return max(1, min(int(n), shard_count(config, stage)))


def is_batched(config: Mapping[str, Any], stage: str) -> bool:
    return shards_per_job(config, stage) > 1


def batches(shard_ids: Sequence[str], per_job: int) -> list[list[str]]:
    """Shards cut into consecutive batches of ``per_job`` (the last one may be smaller)."""
    if per_job < 1:
        raise ValueError(f"shards per job must be >= 1, got {per_job}")
    return [list(shard_ids[i:i + per_job]) for i in range(0, len(shard_ids), per_job)]


def batch_count(shards_total: int, per_job: int) -> int:
    """How many batch jobs a stage has (per subset for generate): ``ceil(shards / per_job)``."""
    return -(-int(shards_total) // max(1, int(per_job)))


def cache_folder(path: str | os.PathLike[str]) -> Path:
    """The cache of the batched stage that ``path`` (``results/<stage>/...``) belongs to:
    ``results/<stage>/.batched``, where its units' outputs and fingerprints wait."""
    parts = Path(path).parts
    if len(parts) < 3 or parts[0] != "results":
        raise ValueError(f"{path}: a batched stage's outputs live under results/<stage>/")
    return Path(parts[0], parts[1], CACHE_FOLDER)


def cache_path(declared: str | os.PathLike[str]) -> Path:
    """Where a unit's declared output waits in the cache: ``results/<stage>/<rest>`` ->
    ``results/<stage>/.batched/<rest>``."""
    return cache_folder(declared).joinpath(*Path(declared).parts[2:])


def _flat(files: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for value in files.values():
        out += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return out


@dataclass(frozen=True)
class UnitWork:
    """One unit of a batch: the files it reads, its declared outputs and where they are cached."""

    unit: str  # "00003", or "pe_ar/00003" for a stage with one job per (subset, shard)
    folder: Path  # results/<stage>/.batched
    inputs: Mapping[str, Any]  # name -> path or list of paths, as the per-shard rule names them
    outputs: Mapping[str, Any]  # name -> declared path or list of them
    wildcards: Mapping[str, str] = field(default_factory=dict)

    @property
    def input_files(self) -> list[str]:
        return _flat(self.inputs)

    @property
    def declared(self) -> list[str]:
        """The declared outputs, stats JSONs last (a stats file marks its table complete)."""
        files = _flat(self.outputs)
        return [f for f in files if not f.endswith(".stats.json")] + [f for f in files if f.endswith(".stats.json")]

    @property
    def cached_outputs(self) -> dict[str, Any]:
        """The outputs as the stage's script writes them in a batch job: each at its cache path."""
        return {name: [str(cache_path(v)) for v in value] if isinstance(value, (list, tuple))
                else str(cache_path(value)) for name, value in self.outputs.items()}

    @property
    def fingerprint_path(self) -> Path:
        return self.folder / f"{self.unit}.fingerprint"


def unit_fingerprint(work: UnitWork, key: Any) -> str:
    """What a unit's result depends on: its input files' bytes and ``key`` (the rule's params)."""
    from finet2i.core import shards

    return shards.fingerprint([f"{f}\t{sha256_of(f)}" for f in sorted(set(work.input_files))], key)


def cached(work: UnitWork, fingerprint: str) -> bool:
    """Whether the unit's cached outputs are all there and were made from the same inputs and params."""
    try:
        return (all(cache_path(f).exists() for f in work.declared)
                and work.fingerprint_path.read_text().strip() == fingerprint)
    except OSError:
        return False


def run_batch(work: Sequence[UnitWork], run_one: Callable[[UnitWork], Any], *, key: Any,
              close: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run ``run_one`` on every unit of the batch whose cached result does not match; return the manifest.

    ``run_one(work)`` writes the unit's cached outputs (the stage's per-shard function with shared engines).
    ``close`` shuts the shared engines down at the end, also on failure (a lazy engine that never started costs
    nothing). The fingerprint is written after every output, so a unit cut off mid-way is redone.
    """
    from finet2i.core import shards

    started = time.monotonic()
    manifest: dict[str, Any] = {"units": {}, "reused": 0, "computed": 0}
    try:
        for w in work:
            fp = unit_fingerprint(w, key)
            reuse = cached(w, fp)
            if not reuse:
                w.fingerprint_path.unlink(missing_ok=True)
                for f in w.declared:
                    cache_path(f).parent.mkdir(parents=True, exist_ok=True)
                run_one(w)
                missing = [str(cache_path(f)) for f in w.declared if not cache_path(f).exists()]
                if missing:
                    raise RuntimeError(f"unit {w.unit}: the stage wrote no {', '.join(missing)}")
                with shards.atomic_path(w.fingerprint_path) as tmp:
                    tmp.write_text(fp + "\n")
            manifest["units"][w.unit] = {"fingerprint": fp, "reused": reuse,
                                         "outputs": {f: str(cache_path(f)) for f in w.declared}}
            manifest["reused" if reuse else "computed"] += 1
            log.info("unit %s: %s", w.unit, "reused (inputs, params and code unchanged)" if reuse else "computed")
    finally:
        if close is not None:
            close()
    manifest["seconds"] = round(time.monotonic() - started, 3)
    return manifest


def publish(src: str | os.PathLike[str], dest: str | os.PathLike[str], *, move: bool = False) -> None:
    """Put a cached file at its declared path: a hard link (a copy across filesystems), or the file itself with
    ``move``; with a fresh mtime so that Snakemake sees the output as newer than the batch job's manifest. The
    bytes are the cached ones."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.publish")
    tmp.unlink(missing_ok=True)
    if move:
        shutil.move(src, tmp)
    else:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    os.utime(tmp)
    os.replace(tmp, dest)


def publish_unit(manifest_path: str | os.PathLike[str], unit: str, declared: Sequence[str | os.PathLike[str]],
                 *, move: bool = False, log_path: str | os.PathLike[str] | None = None) -> None:
    """A ``<stage>_publish`` job: the unit's cached outputs, as its batch job's manifest names them, at their
    declared paths (stats JSONs last: they mark a table complete). ``move``: the outputs are ``temp()``."""
    from finet2i.core import shards

    entry = shards.read_json(manifest_path)["units"][unit]
    outputs = entry["outputs"]
    unknown = sorted(str(d) for d in declared if str(d) not in outputs)
    folder = cache_folder(manifest_path)  # not beside the manifest: a per-subset stage's sits one folder deeper
    fp_file = folder / f"{unit}.fingerprint"
    try:
        recorded = fp_file.read_text().strip()
    except OSError:
        recorded = None
    missing = [outputs[str(d)] for d in declared if str(d) in outputs and not Path(outputs[str(d)]).exists()]
    if unknown or missing or recorded != entry["fingerprint"]:
        stage = Path(manifest_path).parts[1]
        raise RuntimeError(f"{manifest_path}: the cached result of {unit} is missing or was made from other inputs "
                           f"({', '.join(unknown or missing) or fp_file}); rerun its batch "
                           f"(snakemake --forcerun {stage}_batch)")
    order = [d for d in map(str, declared) if not d.endswith(".stats.json")] + \
        [d for d in map(str, declared) if d.endswith(".stats.json")]
    for dest in order:
        publish(outputs[dest], dest, move=move)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(f"{unit}: {'reused' if entry['reused'] else 'computed'} by {manifest_path}, "
                                  f"fingerprint {entry['fingerprint']}{', moved' if move else ''}\n")
