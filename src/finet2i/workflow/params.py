"""What a rule passes its script: the settings that decide its outputs, and those that only set how a job runs.

A rule's params are Snakemake's rerun trigger: when one changes, the rule and what is downstream of it rerun. So a
rule passes its stage's settings as two params, and a script reads its settings from those, never from the config:

* ``settings``: :func:`output_settings`, the section without :data:`RUNTIME_ONLY_KEYS` (a dict: Snakemake records
  it, and a change reruns the rule);
* ``tuning``: :func:`runtime_settings`, only those keys, as a :class:`RunOnly`. Snakemake leaves a params value
  it cannot represent (not a builtin type) out of its rerun trigger, so a new ``chunk_size`` reruns nothing; the
  workflow's rerun tests check exactly that.

The script's adapter (:mod:`finet2i.workflow.adapter`) merges the two back into the section (:func:`merged`).
Standard library only: the Snakefile imports this while planning.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# Keys that set how a job runs, never what it writes: records between checkpoints, batch sizes, generate's list
# of subsets (every subset has jobs of its own) and assemble's memory budget. A checkpoint made with another chunk
# size is discarded (finet2i.core.runner).
RUNTIME_ONLY_KEYS = frozenset({"chunk_size", "batch_size", "subsets", "assemble_memory_mb"})


def section_of(config: Mapping[str, Any], section: str) -> Any:
    node: Any = config
    for part in section.split("."):
        node = node[part]
    return node


def output_settings(config: Mapping[str, Any], section: str, without: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config section (dotted: ``curated.caption``) without RUNTIME_ONLY_KEYS at any depth: what a rule's
    ``settings`` param carries. ``without``: keys of the section that this rule does not use (so that changing one
    does not rerun it)."""
    return {k: v for k, v in _without_runtime_keys(section_of(config, section)).items() if k not in without}


def _without_runtime_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_runtime_keys(v) for k, v in value.items() if k not in RUNTIME_ONLY_KEYS}
    return value


def _runtime_keys(value: Any) -> Any:
    """Only the RUNTIME_ONLY_KEYS of a nested section, keeping the nesting (None where there are none)."""
    if not isinstance(value, Mapping):
        return None
    out = {}
    for k, v in value.items():
        if k in RUNTIME_ONLY_KEYS:
            out[k] = v
        elif (inner := _runtime_keys(v)) is not None:
            out[k] = inner
    return out or None


class RunOnly(Mapping[str, Any]):
    """Settings that only set how a job runs. Not a dict on purpose: Snakemake's params trigger ignores values it
    cannot represent, so a rule may pass these without rerunning when they change."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values = dict(values or {})

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"RunOnly({self._values!r})"


def runtime_settings(config: Mapping[str, Any], section: str) -> RunOnly:
    """The RUNTIME_ONLY_KEYS of a config section, for a rule's ``tuning`` param."""
    return RunOnly(_runtime_keys(section_of(config, section)))


def report_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The report rule's ``settings``: the run's shape, its thresholds (shown on the figures), and which stage read
    which under this config (the funnel's conservation check follows the wiring the config chose)."""
    from finet2i.core import pipeline
    from finet2i.core.settings import lookup

    return {
        "demo": bool(config.get("demo")),
        "seed": lookup(config, "seed"),
        "subsets": list(lookup(config, "generate.subsets")),
        "shards": {"count": lookup(config, "shards.count"),
                   "specs_per_shard": lookup(config, "shards.specs_per_shard")},
        "aesthetic_threshold": {"synthetic": lookup(config, "pair_filter.aesthetic_threshold"),
                                "real": lookup(config, "curated.aesthetic_threshold")},
        "upstream": {s.name: getattr(pipeline.upstream(s.name, config), "name", None)
                     for s in pipeline.enabled_stages(config)},
        # with finetune.enabled: how many base / fine-tuned pairs "Does it help?" shows
        "shown_pairs": lookup(config, "evaluate.shown_pairs") if lookup(config, "finetune.enabled") else 0,
    }


def merged(settings: Mapping[str, Any], runtime: Mapping[str, Any] | None) -> dict[str, Any]:
    """``settings`` with ``runtime``'s keys put back at their depth: the section as the config has it."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in settings.items()}
    for k, v in (runtime or {}).items():
        out[k] = merged(out.get(k) or {}, v) if isinstance(v, Mapping) else v
    return out


def card_models(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dataset card's `models` param: per model the enabled stages load, what it wrote into the dataset and
    the terms that travel with its outputs (finet2i.models.known.OUTPUT_TERMS; a local model the project does not
    know is said to be unknown, a demo model to be one)."""
    from finet2i.core.pipeline import model_keys
    from finet2i.models.known import FILE_OUTPUT_TERMS, MODEL_ROLES, OUTPUT_TERMS

    out = []
    for key in model_keys(config, targets=False):  # what made the dataset, not what is trained on it afterwards
        spec = config["models"][key]
        model = spec.get("id") or spec.get("path")
        demo_model = bool(config.get("demo")) and "path" in spec
        terms = None if demo_model else \
            OUTPUT_TERMS.get(spec.get("id") or "") or FILE_OUTPUT_TERMS.get(key if "path" in spec else "")
        if terms is None:
            what = "a demo model built by finet2i (random weights): no license terms" if demo_model \
                else "not known to finet2i: read the model's own license"
            row = {"license": what, "url": None, "on_outputs": "unknown", "verified": False}
        else:
            row = {"license": terms.license, "url": terms.url, "on_outputs": terms.on_outputs,
                   "verified": terms.verified}
        out.append({"key": key, "model": str(model), "role": MODEL_ROLES.get(key, ""), **row})
    return out


def internal_subsets(config: Mapping[str, Any]) -> list[str]:
    """``["real_internal"]`` when some source's photos may not be redistributed (finet2i.sources.terms) and
    ``curated.non_redistributable`` is ``internal``: assemble puts them in results/dataset_internal/curated/.
    rules/common.smk plans that subset from it, preflight counts its job from it."""
    from finet2i.core.pipeline import enabled
    from finet2i.release.layout import INTERNAL
    from finet2i.sources.terms import rights_by_name

    curated = config.get("curated") or {}
    if not enabled("package_real", config) or curated.get("non_redistributable", "internal") != "internal":
        return []
    rights = rights_by_name(curated.get("sources") or [])
    return [INTERNAL] if any(not r["redistributable"] for r in rights.values()) else []
