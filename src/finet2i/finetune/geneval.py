"""GenEval (Ghosh et al. 2023, github.com/djghosh13/geneval, MIT): object-focused alignment scored by a detector,
the paper's Table 4 metric (SD-XL 0.55 -> 0.61). It runs only where its detector is installed; otherwise the
evaluation says "not run" and what is missing, never a number.

What its ``evaluation/evaluate_images.py`` needs, checked here without importing any of it: mmdet 2.x (its
default ``--model-config`` is ``<mmdet>/../configs/mask2former/<detector>.py``, which a source install has; the
PyPI wheel ships it under ``mmdet/.mim/configs``, passed explicitly then), mmcv-full 1.x with its compiled ops,
``open_clip_torch`` and ``clip-benchmark``, the Mask2Former checkpoint ``<detector>.pth`` in
``evaluate.geneval.detector_dir``, a checkout of the repository (``evaluate.geneval.repo``: its prompts and
scripts), and CUDA (the script asserts it).

When everything is there, :func:`run` renders GenEval's 553 prompts (4 images each, its protocol) with the base
and with the adapter in its folder layout (``<index:05d>/metadata.jsonl`` + ``samples/<k:04d>.png``), runs its
evaluation and summary scripts, and reads the overall score. That path has not been run on this project's
machines (none had the detector); the status check and the layout are tested.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DETECTOR = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco"
IMAGES_PER_PROMPT = 4


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def status(repo: str | None, detector_dir: str | None, *, cuda: bool | None = None) -> dict[str, Any]:
    """``{"ready": bool, "missing": [what is missing, in words], "config": <detector config or None>}``."""
    missing: list[str] = []
    if not repo or not (Path(repo) / "evaluation" / "evaluate_images.py").is_file():
        missing.append("a GenEval checkout (evaluate.geneval.repo)")
    mmdet = _version("mmdet")
    if not (mmdet and mmdet.startswith("2.")):
        missing.append(f"mmdet 2.x (found {mmdet or 'none'})")
    spec = importlib.util.find_spec("mmcv")
    if not (_version("mmcv-full") or _version("mmcv")) or not (
            spec and spec.origin and any(Path(spec.origin).parent.glob("_ext*.so"))):
        missing.append("mmcv-full with compiled ops")
    for dist in ("open_clip_torch", "clip-benchmark"):
        if not _version(dist):
            missing.append(dist)
    config = None
    mm = importlib.util.find_spec("mmdet")
    if mm and mm.origin:
        root = Path(mm.origin).parent
        for cand in (root.parent / "configs", root / ".mim" / "configs"):
            if (cand / "mask2former" / f"{DETECTOR}.py").is_file():
                config = str(cand / "mask2former" / f"{DETECTOR}.py")
                break
    if mmdet and config is None:
        missing.append(f"the {DETECTOR}.py config")
    if not detector_dir or not (Path(detector_dir) / f"{DETECTOR}.pth").is_file():
        missing.append(f"the {DETECTOR}.pth checkpoint (evaluate.geneval.detector_dir)")
    if cuda is None:
        try:
            import torch

            cuda = bool(torch.cuda.is_available())
        except Exception:  # noqa: BLE001 - no torch, no CUDA
            cuda = False
    if not cuda:
        missing.append("a GPU (GenEval's script asserts CUDA)")
    return {"ready": not missing, "missing": missing, "config": config}


def not_run(st: dict[str, Any]) -> dict[str, Any]:
    return {"status": "not run", "reason": "not installed: " + "; ".join(st["missing"])}


def write_layout(folder: Path, metadata: list[dict[str, Any]], render: Callable[[str, list[int]], list[Any]],
                 seed: int) -> None:
    """GenEval's image folder: per prompt ``<index:05d>/metadata.jsonl`` and ``samples/<k:04d>.png`` (4 images)."""
    for i, meta in enumerate(metadata):
        d = folder / f"{i:05d}"
        (d / "samples").mkdir(parents=True, exist_ok=True)
        (d / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
        seeds = [seed + i * IMAGES_PER_PROMPT + k for k in range(IMAGES_PER_PROMPT)]
        for k, im in enumerate(render(meta["prompt"], seeds)):
            im.save(d / "samples" / f"{k:04d}.png")


OVERALL = re.compile(r"Overall score[^\d]*([\d.]+)", re.IGNORECASE)


def read_overall(summary: str) -> float | None:
    m = OVERALL.search(summary)
    return float(m.group(1)) if m else None


def run(repo: str, detector_dir: str, config: str | None, work: Path,
        renderers: dict[str, Callable[[str, list[int]], list[Any]]], seed: int) -> dict[str, Any]:
    """GenEval's overall score for each renderer ("base", "tuned"): render, evaluate, summarise."""
    prompts = [json.loads(line) for line in (Path(repo) / "prompts" / "evaluation_metadata.jsonl").read_text()
               .splitlines() if line.strip()]
    scores: dict[str, Any] = {}
    for name, render in renderers.items():
        images = work / name
        write_layout(images, prompts, render, seed)
        results = work / f"{name}_results.jsonl"
        cmd = [sys.executable, str(Path(repo) / "evaluation" / "evaluate_images.py"), str(images), "--outfile",
               str(results), "--model-path", detector_dir]
        if config:
            cmd += ["--model-config", config]
        subprocess.run(cmd, check=True)
        summary = subprocess.run([sys.executable, str(Path(repo) / "evaluation" / "summary_scores.py"),
                                  str(results)], check=True, capture_output=True, text=True).stdout
        scores[name] = read_overall(summary)
    return {"status": "run", "prompts": len(prompts), "images_per_prompt": IMAGES_PER_PROMPT, **scores,
            "difference": (scores["tuned"] - scores["base"]) if None not in scores.values() else None}
