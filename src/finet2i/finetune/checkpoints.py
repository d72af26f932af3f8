"""The fine-tune's checkpoints: what ``accelerator.save_state`` writes besides the adapter (the step counter), the
adapter as diffusers' LoRA inside them (save and load hooks), their validity, and writing one so that a kill
during the save leaves nothing that cannot load (``checkpoint-N.partial``, renamed when complete)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from finet2i.core import shards

log = logging.getLogger(__name__)

FINGERPRINT = "fingerprint.json"
KEEP_CHECKPOINTS = 2


class TrainState:
    """The step counter and the loss history, checkpointed with the adapter (``register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.global_step = 0
        self.losses: list[float] = []
        self.train_seconds = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"global_step": self.global_step, "losses": list(self.losses), "train_seconds": self.train_seconds}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.global_step = int(sd["global_step"])
        self.losses = [float(x) for x in sd["losses"]]
        self.train_seconds = float(sd.get("train_seconds", 0.0))


def register_lora_hooks(accelerator: Any, main: bool) -> None:
    """``save_state`` writes the UNet's LoRA as diffusers LoRA (not the whole UNet); ``load_state`` reads it back
    into the peft adapter, refusing keys the UNet does not have."""
    from diffusers import StableDiffusionXLPipeline
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from diffusers.utils import convert_state_dict_to_diffusers, convert_unet_state_dict_to_peft
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    def save_hook(models: list[Any], weights: list[Any], output_dir: str) -> None:
        if main:
            for model in models:
                sd = convert_state_dict_to_diffusers(get_peft_model_state_dict(accelerator.unwrap_model(model)))
                StableDiffusionXLPipeline.save_lora_weights(output_dir, unet_lora_layers=sd)
                if weights:
                    weights.pop()  # accelerate would otherwise save the whole UNet as well

    def load_hook(models: list[Any], input_dir: str) -> None:
        model = models.pop()
        lora, _ = StableDiffusionLoraLoaderMixin.lora_state_dict(input_dir)
        unet_sd = convert_unet_state_dict_to_peft(
            {k.removeprefix("unet."): v for k, v in lora.items() if k.startswith("unet.")})
        res = set_peft_model_state_dict(accelerator.unwrap_model(model), unet_sd, adapter_name="default")
        if getattr(res, "unexpected_keys", None):
            raise RuntimeError(f"{input_dir}: LoRA keys the UNet does not have: {res.unexpected_keys[:5]}")

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def prepare(folder: Path, fingerprint: str) -> None:
    """Keep ``folder``'s checkpoints only if they were made for ``fingerprint`` (settings, data, model, process
    count); stamp it (main process only)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / FINGERPRINT
    if stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") != fingerprint:
        log.info("finetune: checkpoints in %s were made for other settings or data: starting afresh", folder)
        shutil.rmtree(folder)
        folder.mkdir(parents=True)
    shards.write_json(stamp, {"fingerprint": fingerprint})


def latest(folder: Path) -> Path | None:
    """The newest complete checkpoint (``checkpoint-N``; a ``.partial`` one was cut by a kill and is ignored)."""
    found = [p for p in folder.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit() and p.is_dir()]
    return max(found, key=lambda p: int(p.name.split("-", 1)[1]), default=None)


def save(accelerator: Any, folder: Path, step: int, main: bool) -> None:
    """``save_state`` into ``checkpoint-<step>.partial``, renamed when complete; the oldest beyond
    :data:`KEEP_CHECKPOINTS` removed."""
    tmp, dst = folder / f"checkpoint-{step}.partial", folder / f"checkpoint-{step}"
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if main:
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)
        done = sorted((p for p in folder.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit()),
                      key=lambda p: int(p.name.split("-", 1)[1]))
        for old in done[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("finetune: checkpoint %s", dst)
    accelerator.wait_for_everyone()


