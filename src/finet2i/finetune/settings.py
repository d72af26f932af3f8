"""The fine-tune's and the evaluation's settings, with the schema's defaults (config sections ``finetune`` and
``evaluate``; every default is written once, in the schema)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from finet2i.core.settings import FromSection, default

# Keys of the sections that set how a job runs, never what it writes: the rules pass them as `tuning` (changing
# them reruns nothing). A checkpoint's frequency, the JPEG decoders and activation recomputation change no bit
# of the adapter (tests/finetune: the resumed run equals the uninterrupted one).
FINETUNE_TUNING = ("checkpoint_every", "dataloader_workers", "gradient_checkpointing")


def _field(key: str) -> Any:
    value = default(key)
    if isinstance(value, dict):
        return field(default_factory=lambda: dict(value))
    return field(default=value)


def _nested(section: str, key: str) -> Any:
    return field(default=default(f"{section}.{key}"), metadata={"key": key})


@dataclass(frozen=True)
class FinetuneSettings(FromSection):
    mixture: dict[str, float] = _field("finetune.mixture")
    rank: int = default("finetune.rank")
    alpha: float | None = default("finetune.alpha")
    learning_rate: float = default("finetune.learning_rate")
    batch_per_gpu: int = default("finetune.batch_per_gpu")
    gradient_accumulation: int = default("finetune.gradient_accumulation")
    epochs: float = default("finetune.epochs")
    max_samples: int | None = default("finetune.max_samples")
    resolution: int = default("finetune.resolution")
    bucket_step: int = default("finetune.bucket_step")
    lr_scheduler: str = default("finetune.lr_scheduler")
    lr_warmup_steps: int = default("finetune.lr_warmup_steps")
    snr_gamma: float | None = default("finetune.snr_gamma")
    max_grad_norm: float = default("finetune.max_grad_norm")
    mixed_precision: str = default("finetune.mixed_precision")
    checkpoint_every: int = default("finetune.checkpoint_every")
    dataloader_workers: int = default("finetune.dataloader_workers")
    gradient_checkpointing: bool = default("finetune.gradient_checkpointing")

    def output_key(self) -> dict[str, Any]:
        """What the adapter depends on (a checkpoint made under other values is not resumed)."""
        return {k: v for k, v in self.__dict__.items() if k not in FINETUNE_TUNING}


def _judge(key: str) -> Any:
    return field(default=default(f"evaluate.judge.{key}"), metadata={"key": f"judge.{key}"})


def _geneval(key: str) -> Any:
    return field(default=default(f"evaluate.geneval.{key}"), metadata={"key": f"geneval.{key}"})


@dataclass(frozen=True)
class EvaluateSettings(FromSection):
    prompts: str | None = default("evaluate.prompts")
    max_prompts: int | None = default("evaluate.max_prompts")
    images_per_prompt: int = default("evaluate.images_per_prompt")
    steps: int = default("evaluate.steps")
    guidance: float = default("evaluate.guidance")
    resolution: int = default("evaluate.resolution")
    clip_score: bool = default("evaluate.clip_score")
    bootstrap_resamples: int = default("evaluate.bootstrap_resamples")
    judge_enabled: bool = _judge("enabled")
    judge_temperature: float = _judge("temperature")
    judge_max_tokens: int = _judge("max_tokens")
    judge_max_image_pixels: int = _judge("max_image_pixels")
    geneval_repo: str | None = _geneval("repo")
    geneval_detector_dir: str | None = _geneval("detector_dir")
    shown_pairs: int = default("evaluate.shown_pairs")
