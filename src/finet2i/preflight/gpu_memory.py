"""Preflight's check that each GPU stage's model fits the GPUs of the partition its jobs run in.

Each GPU rule's stage needs its model's weights and what it holds at the configured batch
(:mod:`finet2i.models.memory`, from the model's config or published sizes; nothing is loaded). The partition's
nodes name their GPU type in their GRES (``gpu:a100:4``); :data:`GPU_MEMORY_GIB` maps the usual type names to
their memory, each from a vendor or catalogue page. A node whose GRES has no type (``gpu:2``) or an unknown one
is a WARN: preflight cannot tell what fits. A model that does not fit the smallest GPU of its partition is a
NO-GO that names the stage, the model, the GPU type, both memories and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from finet2i.core import pipeline
from finet2i.preflight.report import GO, NOGO, WARN, Report

# Nominal memory per GRES type name, in GiB (NVIDIA's "GB" for these parts is the binary size). Sources:
# NVIDIA NIM supported-models page (docs.nvidia.com/nim/large-language-models/latest/supported-models.html: "H200
# SXM 141 GB", "H100 SXM 80 GB", "H100 NVL 94 GB", "A100 SXM 80 GB", "L40S PCIe 48 GB", "A10G PCIe 24 GB", "NVIDIA
# RTX 6000 Ada Generation 48 GB", "GeForce RTX 5090 32 GB", "GeForce RTX 4090 24 GB"); A100 40GB PCIe product brief
# PB-10137; A40 product brief PB-09976 ("48 GB GDDR6"); RTX A6000 spec ("48 GB GDDR6 with ECC"); V100 16/32 GB,
# RTX 3090, L4, T4: cloud and vendor catalogues; AMD ROCm gpu-arch-specs ("VRAM (GiB)": MI300X 192, MI250X/MI250
# 128 per package, MI210 64, MI100 32). An "a100" without its size is counted as the 40 GB part (the smaller).
GPU_MEMORY_GIB: dict[str, float] = {
    "a100": 40, "a100_40g": 40, "a100_80g": 80, "h100": 80, "h100_nvl": 94, "h200": 141, "gh200": 96,
    "l40s": 48, "l40": 48, "a40": 48, "rtx_a6000": 48, "a6000": 48, "rtx_6000_ada": 48, "v100": 16,
    "v100s": 32, "rtx3090": 24, "rtx4090": 24, "rtx5090": 32, "l4": 24, "t4": 16, "a10g": 24, "a10": 24,
    "mi250": 128, "mi250x": 128, "mi210": 64, "mi100": 32, "mi300x": 192,
}
CUDA_CONTEXT_GIB = 1.0  # what the driver and CUDA context take before the model: a card shows ~79 of its 80 GiB

# Stages whose model runs in vLLM, with the context their engine is started with (finet2i.stages.*).
VLLM_CONTEXT = {"pair_filter": 8192}
ADVICE = {
    "generate": "set generate.generators.{kind}.cpu_offload: true (each component then fits alone) or use a "
                "quantized variant (e.g. diffusers/FLUX.2-dev-bnb-4bit, ~20 GB), or a partition with larger GPUs",
}


def gpu_memory(gres_type: str) -> float | None:
    """A GRES type's memory in GiB: a size in the name (``a100_80g``, ``nvidia_h100_80gb_hbm3``), else the table."""
    name = gres_type.lower()
    m = re.search(r"(\d+)\s*g(?:i?b)?(?:_|-|$)", name)
    if m:
        return float(m.group(1))
    name = re.sub(r"^(nvidia|tesla|amd)[_-]", "", name)
    if name in GPU_MEMORY_GIB:
        return GPU_MEMORY_GIB[name]
    found = [k for k in GPU_MEMORY_GIB if k in name]
    return GPU_MEMORY_GIB[max(found, key=len)] if found else None


def _spec(config: Mapping[str, Any], key: str, workdir: Path) -> Any:
    from finet2i.models.spec import ModelSpec

    return ModelSpec.from_config(f"models.{key}", config["models"][key], base_dir=workdir)


def stage_need(stage: str, config: Mapping[str, Any], workdir: Path) -> Any:
    """What one job of ``stage`` holds on its GPU (a :class:`finet2i.models.memory.Need`), or None when no size
    is known for its model."""
    from finet2i.models import memory

    s = pipeline.stage(stage)
    if stage == "generate":
        return _generate_need(config, workdir)
    if stage in ("curated_score", "embed"):  # a small encoder (and head) at its batch
        parts: dict[str, float] = {}
        for key in s.models:
            w = memory.weights_of(_spec(config, key, workdir))
            if w is None:
                return None
            parts[key] = w.gib()
        return memory.Need(" + ".join(_spec(config, k, workdir).name for k in s.models),
                           sum(parts.values()) + 1.0, {**parts, "activations (estimate)": 1.0}, "")
    (key,) = s.models
    spec = _spec(config, key, workdir)
    w = memory.weights_of(spec)
    if w is None:
        return None
    return memory.vllm_need(w, spec.name, max_model_len=VLLM_CONTEXT.get(stage, 4096))


def _generate_need(config: Mapping[str, Any], workdir: Path) -> Any:
    """The largest of the generators that render (one loaded at a time), plus the aesthetic scorer."""
    from finet2i.models import memory
    from finet2i.models.backends.diffusers_gen import images_per_call
    from finet2i.stages.generate import fit_size, load_resolutions, sizes_for_subset

    gen = config["generate"]
    table = load_resolutions(Path(workdir) / gen["resolutions"])
    sizes = {fit_size(r.width, r.height, gen.get("max_side"))
             for subset in gen["subsets"] for r in sizes_for_subset(subset, table)}
    scorer = memory.weights_of(_spec(config, "aesthetic_encoder", workdir))
    worst = None
    for kind, g in gen["generators"].items():
        if float(g["weight"]) <= 0:
            continue
        spec = _spec(config, kind, workdir)
        w = memory.weights_of(spec)
        if w is None:
            return None
        batch = int(g.get("batch_size", 1))
        calls = [(images_per_call(batch, wd, ht) * wd * ht, images_per_call(batch, wd, ht), wd * ht)
                 for wd, ht in sizes]
        _, images, pixels = max(calls)
        need = memory.diffusion_need(w, f"{spec.name} ({kind})", cpu_offload=bool(g.get("cpu_offload")),
                                     megapixels=pixels / 1e6, images=images)
        if scorer is not None:
            need.parts["aesthetic scorer"] = scorer.gib()
            need.gib += scorer.gib()
        need.how = kind
        if worst is None or need.gib > worst.gib:
            worst = need
    return worst


def _check_gpu_memory(rules: Mapping[str, Any], requests: list[tuple[Any, Any]], cluster: Any,
                      default: str | None, config: Mapping[str, Any], workdir: Path, report: Report) -> None:
    """One row per GPU rule of a stage with a model: GO with the need and the GPU, a WARN when the partition's GPU
    type is unknown, a NO-GO when the model does not fit."""
    for name in rules:
        stage = name.removesuffix("_batch")
        if stage not in pipeline.BY_NAME or not pipeline.stage(stage).models:
            continue
        mine = [r for info, r in requests if info.name == name and r.gpus]
        if not mine:
            continue
        partition = cluster.partitions.get(mine[0].partition or default or "")
        if partition is None:
            continue  # the partition row already says it does not exist
        try:
            need = stage_need(stage, config, workdir)
        except (OSError, ValueError, KeyError) as e:
            report.add(WARN, "GPU memory", f"rule {name} (stage {stage}): cannot size its model: {e}")
            continue
        if need is None:
            report.add(WARN, "GPU memory", f"rule {name} (stage {stage}): no size known for its model (not on this "
                                           f"machine, not in finet2i.models.memory.KNOWN): fetch it first")
            continue
        gpu_nodes = [n for n in partition.nodes if n.gpus]
        if not gpu_nodes:
            continue  # the rule's own row says its partition has no GPUs
        types = sorted({t for n in gpu_nodes for t, _ in n.gpu_types})
        typeless = [n.name for n in gpu_nodes if not n.gpu_types]
        known = {t: gpu_memory(t) for t in types}
        unknown = [t for t, mem in known.items() if mem is None]
        if typeless or unknown or not types:
            what = (f"nodes {', '.join(typeless[:5])} declare GPUs without a type (GRES gpu:N)" if typeless
                    else f"GPU type(s) {', '.join(unknown)} not in preflight's table")
            report.add(WARN, "GPU memory", f"rule {name} (stage {stage}): {need.model} needs {need.text()}; partition "
                                           f"{partition.name}: {what}: preflight cannot check that it fits; give the "
                                           f"type in gres.conf (gpu:a100:4) or check the card's memory by hand")
            if not [t for t in types if known[t] is not None]:
                continue
        sized = {t: mem for t, mem in known.items() if mem is not None}
        smallest = min(sized, key=lambda t: sized[t])
        usable = sized[smallest] - CUDA_CONTEXT_GIB
        limit = usable * (0.85 if stage != "generate" and stage not in ("embed", "curated_score") else 1.0)
        where = f"partition {partition.name}'s {smallest} GPUs ({sized[smallest]:.0f} GiB each"
        if need.gib > limit:
            kind = need.how if stage == "generate" else ""
            advice = ADVICE.get(stage, "use a partition with larger GPUs or a quantized model").format(kind=kind)
            report.add(NOGO, "GPU memory", f"rule {name} (stage {stage}): model {need.model} needs {need.text()}; "
                                           f"{where}, {limit:.1f} usable) cannot hold it: {advice}")
        else:
            report.add(GO, "GPU memory", f"rule {name} (stage {stage}): {need.model} needs {need.text()}; "
                                         f"fits {where})")
