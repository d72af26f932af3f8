"""A ``<stage>_batch`` job (rules/batching.smk): the stage's own workflow script over the units of a batch, on
engines loaded once (finet2i.core.batching has the cache and its guarantees; docs/job-sizing.md).

A stage script that can batch has, beside its ``main(smk, **engines)``, a ``shared(run)`` that returns the
engines a batch shares, each lazy (nothing loads until a unit needs it) and with a ``close()``:

    def shared(run):
        return {"llm": lazy_chat(run.model("guard"))}

    def main(smk, llm=None):
        run = adapter(smk)
        run_guard(smk.input.table, smk.output.table, ..., llm=llm)

Unbatched, Snakemake runs ``main(snakemake)`` and the stage loads its own engine, as before. In a batch job,
:func:`run_batch_rule` loads the script as a module, calls ``shared`` once, and calls ``main`` once per unit
with a :class:`UnitJob` in place of ``snakemake``: the unit's inputs, its outputs at their cache paths, its
wildcards, and the batch rule's params (the per-shard rule's, plus the batch's layout).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

from finet2i.core import batching

log = logging.getLogger(__name__)

# Params of a batch rule that say which units it runs, not what their results depend on (left out of the key).
LAYOUT_PARAMS = ("units", "stage")


class Named(dict):
    """A dict that also reads as attributes: what a script sees of ``snakemake.input``/``output``/``params``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class UnitJob:
    """One unit of a batch, in the shape a workflow script reads ``snakemake`` in."""

    in_batch = True  # finet2i.workflow.adapter: the batch job has set up logging already

    def __init__(self, smk: Any, work: batching.UnitWork) -> None:
        self.input = Named(work.inputs)
        self.output = Named(work.cached_outputs)
        self.wildcards = Named(work.wildcards)
        self.params = Named({k: v for k, v in smk.params.items() if k not in LAYOUT_PARAMS})
        self.threads = getattr(smk, "threads", 1)
        self.log: list[str] = []
        self.scriptdir = getattr(smk, "scriptdir", None)


def load_script(path: str | Path) -> ModuleType:
    """A workflow script as a module (its ``if __name__ == "__main__"`` block does not run)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"finet2i_batched_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not a Python script")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("shared", "main"):
        if not callable(getattr(module, name, None)):
            raise TypeError(f"{path}: a batchable stage's script needs `{name}` (see finet2i.workflow.batch)")
    return module


def key_of(params: Any) -> dict[str, Any]:
    """What every unit's result depends on: the batch rule's params but its layout, without the run-only ones
    (``tuning``: a chunk size changes no result, finet2i.workflow.params.RunOnly)."""
    from finet2i.workflow.params import RunOnly

    return {k: v for k, v in params.items() if k not in LAYOUT_PARAMS and not isinstance(v, RunOnly)}


def units_of(smk: Any) -> list[batching.UnitWork]:
    stage = str(smk.params.stage)
    folder = Path("results") / stage / batching.CACHE_FOLDER
    return [batching.UnitWork(u["unit"], folder, u["input"], u["output"], u["wildcards"])
            for u in smk.params.units]


def run_batch_rule(smk: Any) -> dict[str, Any]:
    """The batch job: every unit of ``params.units`` through the stage script's ``main``, engines shared;
    writes ``output.manifest``."""
    from finet2i.core import shards
    from finet2i.workflow.adapter import adapter

    run = adapter(smk)  # logging into the batch job's log
    stage = str(smk.params.stage)
    script = load_script(Path(smk.scriptdir) / f"{stage}.py")
    engines = script.shared(run)

    def close() -> None:
        for engine in engines.values():
            engine.close()

    def run_one(work: batching.UnitWork) -> None:
        script.main(UnitJob(smk, work), **engines)

    manifest = batching.run_batch(units_of(smk), run_one, key=key_of(smk.params), close=close)
    log.info("%s batch: %d unit(s) computed, %d reused, %.1f s", stage, manifest["computed"], manifest["reused"],
             manifest["seconds"])
    shards.write_json(smk.output.manifest, manifest)
    return manifest
