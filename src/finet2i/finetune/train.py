"""LoRA fine-tuning of an SD-XL-family pipeline on the run's release (paper section 5: "For SD-XL, we fine-tune
with LoRA adapters", batch 8 per GPU, learning rate 1e-4, about one epoch over the five subsets).

Built the way diffusers' ``examples/text_to_image/train_text_to_image_lora_sdxl.py`` is, on the same libraries:
the VAE, both CLIP text encoders and the UNet frozen; a peft ``LoraConfig`` (rank, alpha, Gaussian init) on the
UNet's attention projections ``to_q``/``to_k``/``to_v``/``to_out.0`` added with ``unet.add_adapter``;
``cast_training_params`` keeps the LoRA weights in fp32 under bf16/fp16; ``DDPMScheduler`` from the pipeline's
scheduler config; latents times the VAE's scaling factor; the epsilon (or v) target; optional min-SNR weighting
(``compute_snr``); SD-XL's micro-conditioning (original size, crop top-left, target size) and the pooled second
text embedding; AdamW, ``diffusers.optimization.get_scheduler``, gradient clipping; ``accelerate`` for devices,
mixed precision, several GPUs (DDP) and ``save_state``/``load_state`` with hooks that write the adapter in
diffusers' LoRA format. The adapter is saved with ``StableDiffusionXLPipeline.save_lora_weights``: users load it
with ``pipe.load_lora_weights(folder)``.

Where it differs from the example, so that a killed job resumes to the very adapter an uninterrupted one gives
(``tests/finetune/test_finetune.py`` kills one with SIGKILL and compares bitwise):

* the plan of every step is a function of the seed (:mod:`finet2i.finetune.data`): a resumed job recomputes it and
  skips the steps done (the example restarts its epoch from the first batch);
* every random draw of a step (VAE sample, noise, timesteps) comes from a generator seeded with (seed, step,
  micro-batch, process), and each image's crop from its own seed: the global RNG state does not matter;
* the step counter is checkpointed with the adapter, optimizer and LR scheduler (``register_for_checkpointing``);
* a checkpoint is written to ``checkpoint-N.partial`` and renamed, so a kill during the save leaves no
  checkpoint that cannot load; one made for other settings, data, model or process count is not resumed.

Bitwise identity needs the same thread count (CPU) or GPU type and kernels; on a cluster a requeued job gets both.
Several GPUs: the rule's script starts one process per GPU through ``accelerate launch`` inside the one Slurm job
(:mod:`finet2i.finetune.launch`); each process trains its slice of every global batch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finet2i.core import shards
from finet2i.finetune import checkpoints, data
from finet2i.finetune.settings import FinetuneSettings
from finet2i.models.backends.sdxl import ADAPTER_FILE, readable
from finet2i.models.spec import ModelSpec

log = logging.getLogger(__name__)

STAGE = "finetune"
LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")


@dataclass
class TrainJob:
    """Everything one training process needs; JSON, so that ``accelerate launch`` can hand it to each process."""

    dataset_dir: str
    adapter_dir: str
    stats_path: str
    samples_path: str
    checkpoints_dir: str
    model: dict[str, Any]  # ModelSpec fields
    settings: dict[str, Any]
    seed: int
    demo: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> ModelSpec:
        return ModelSpec(**self.model)


def encode_prompt(te1: Any, te2: Any, ids1: Any, ids2: Any) -> tuple[Any, Any]:
    """SD-XL's conditioning, as ``StableDiffusionXLPipeline.encode_prompt``: both encoders' penultimate hidden
    states side by side, and the second encoder's pooled projection."""
    import torch

    embeds, pooled = [], None
    for te, ids in ((te1, ids1), (te2, ids2)):
        out = te(ids, output_hidden_states=True, return_dict=False)
        pooled = out[0]
        embeds.append(out[-1][-2])
    return torch.cat(embeds, dim=-1), pooled.view(pooled.shape[0], -1)


def mixed_precision(setting: str, cuda: bool) -> str:
    if setting == "auto":
        return "bf16" if cuda else "no"
    return setting


class ImageBatches:
    """A torch Dataset over one process's items, in plan order: each decoded, cropped and tokenized."""

    def __init__(self, samples: list[data.Sample], items: list[data.Item], reader: data.ImageReader,
                 tokenizers: tuple[Any, Any]) -> None:
        self.samples, self.items, self.reader, self.tokenizers = samples, items, reader, tokenizers

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import numpy as np
        import torch

        item = self.items[i]
        s = self.samples[item.sample]
        image, (top, left) = self.reader.crop(s, item.bucket, item.crop_seed)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous()
        ids = [t(s.caption, padding="max_length", max_length=t.model_max_length, truncation=True,
                 return_tensors="pt").input_ids[0] for t in self.tokenizers]
        bw, bh = item.bucket
        # SD-XL micro-conditioning: (original height, width, crop top, left, target height, width)
        time_ids = torch.tensor([s.height, s.width, top, left, bh, bw], dtype=torch.float32)
        return {"pixels": x, "ids1": ids[0], "ids2": ids[1], "time_ids": time_ids}


def _fingerprint(job: TrainJob, settings: FinetuneSettings, samples: list[data.Sample], processes: int) -> str:
    listing = [(s.subset, s.key, s.tar, s.jpg_offset, s.jpg_size, s.caption) for s in samples]
    return shards.fingerprint([json.dumps(listing)], settings.output_key(), job.spec().label, job.seed, processes)


def _write_samples_table(path: str, samples: list[data.Sample], flags: list[bool],
                         buckets: list[tuple[int, int] | None]) -> None:
    rows = [{"subset": s.subset, "id": s.key, "tar": s.tar, "width": s.width, "height": s.height,
             "caption": s.caption, "bucket": f"{b[0]}x{b[1]}" if b else None,
             shards.KEPT: not f, shards.DROP_REASON: data.PROMPT_TOO_LONG if f else None}
            for s, f, b in zip(samples, flags, buckets, strict=True)]
    shards.write_table(path, rows)


def train(job: TrainJob, *, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train (or resume) the adapter of ``job``; every process of a launch runs this. Returns the stats."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params, compute_snr
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    t0 = time.monotonic()
    s = FinetuneSettings.from_config(job.settings)
    cuda = torch.cuda.is_available()
    precision = mixed_precision(s.mixed_precision, cuda)
    ckpt_dir = Path(job.checkpoints_dir)
    accelerator = Accelerator(mixed_precision=precision, cpu=not cuda,
                              project_config=ProjectConfiguration(project_dir=str(ckpt_dir)))
    processes, rank = accelerator.num_processes, accelerator.process_index
    main = accelerator.is_main_process

    spec = job.spec()
    path = spec.local_path()

    def part(cls: Any, sub: str, **kwargs: Any) -> Any:
        return cls.from_pretrained(path, subfolder=sub, local_files_only=True, **kwargs)

    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    tok1, tok2 = part(CLIPTokenizer, "tokenizer"), part(CLIPTokenizer, "tokenizer_2")
    te1 = part(CLIPTextModel, "text_encoder", dtype=weight_dtype)
    te2 = part(CLIPTextModelWithProjection, "text_encoder_2", dtype=weight_dtype)
    unet = part(UNet2DConditionModel, "unet", torch_dtype=weight_dtype)
    vae = part(AutoencoderKL, "vae")
    # SD-XL's VAE overflows in fp16 (its config says force_upcast); bf16 has the range.
    vae_dtype = torch.float32 if precision == "fp16" and vae.config.get("force_upcast") else weight_dtype
    vae = vae.to(dtype=vae_dtype) if vae_dtype != torch.float32 else vae
    noise_scheduler = part(DDPMScheduler, "scheduler")
    for module in (vae, te1, te2, unet):
        module.requires_grad_(False)
        module.to(accelerator.device)

    # The data: every sample, the over-long captions dropped and counted, buckets, the plan.
    samples = data.read_samples(job.dataset_dir)
    flags = data.too_long([x.caption for x in samples], (tok1, tok2))
    kept = [x for x, f in zip(samples, flags, strict=True) if not f]
    buckets = [data.bucket_of(x.width, x.height, s.resolution, s.bucket_step) for x in kept]
    if main:
        it = iter(buckets)
        _write_samples_table(job.samples_path, samples, flags, [None if f else next(it) for f in flags])
    mixture = {k: float(v) for k, v in s.mixture.items()}
    plan = data.make_plan([x.subset for x in kept], buckets, mixture=mixture, seed=job.seed,
                          batch_per_gpu=s.batch_per_gpu, processes=processes, accumulation=s.gradient_accumulation,
                          epochs=float(s.epochs), max_samples=s.max_samples)

    torch.manual_seed(data.seed_of(job.seed, "lora-init"))  # Gaussian init of the LoRA A matrices
    unet.add_adapter(LoraConfig(r=s.rank, lora_alpha=s.alpha or s.rank, init_lora_weights="gaussian",
                                target_modules=list(LORA_TARGETS)))
    if precision != "no":
        cast_training_params(unet, dtype=torch.float32)
    if s.gradient_checkpointing:
        unet.enable_gradient_checkpointing()

    checkpoints.register_lora_hooks(accelerator, main)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.learning_rate, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    lr_scheduler = get_scheduler(s.lr_scheduler, optimizer=optimizer, num_warmup_steps=s.lr_warmup_steps * processes,
                                 num_training_steps=plan.total_steps * processes)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    state = checkpoints.TrainState()
    accelerator.register_for_checkpointing(state)

    # Resume from the newest checkpoint made for the same settings, data, model and process count.
    if main:
        checkpoints.prepare(ckpt_dir, _fingerprint(job, s, samples, processes))
    accelerator.wait_for_everyone()
    resumed_from = None
    ckpt = checkpoints.latest(ckpt_dir)
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        resumed_from = state.global_step
        log.info("finetune: resumed from checkpoint %s (step %d of %d)", ckpt, state.global_step, plan.total_steps)

    # This process's items of every step still to do, in order; the loader reads them a micro-batch at a time.
    items: list[data.Item] = []
    batches: list[list[int]] = []
    per_step: list[int] = []
    for _, _, planned in plan.steps(state.global_step):
        per_step.append(len(planned))
        for micro in planned:
            batches.append(list(range(len(items), len(items) + len(micro[rank]))))
            items += micro[rank]
    loader = torch.utils.data.DataLoader(
        ImageBatches(kept, items, data.ImageReader(job.dataset_dir), (tok1, tok2)), batch_sampler=batches,
        num_workers=s.dataloader_workers if cuda else 0, pin_memory=cuda)
    log.info("finetune: %d samples (%d dropped: prompt over %d tokens), %d buckets, %d steps of %d images x %d "
             "processes x %d accumulation, from step %d", len(kept), sum(flags), int(tok1.model_max_length),
             len(set(buckets)), plan.total_steps, s.batch_per_gpu, processes, s.gradient_accumulation,
             state.global_step)
    t_setup = time.monotonic() - t0

    unet.train()
    batches_iter = iter(loader)
    t_loop = t_run = time.monotonic()
    step_start = state.global_step
    report_every = max(1, plan.total_steps // 50)
    for n_micro in per_step:
        step = state.global_step
        total = None
        for micro in range(n_micro):
            batch = next(batches_iter)
            gen = torch.Generator(device=accelerator.device).manual_seed(
                data.seed_of(job.seed, "noise", step, micro, rank))
            pixels = batch["pixels"].to(accelerator.device, dtype=vae_dtype)
            with torch.no_grad():
                latents = vae.encode(pixels).latent_dist.sample(generator=gen) * vae.config.scaling_factor
                latents = latents.to(weight_dtype)
                embeds, pooled = encode_prompt(te1, te2, batch["ids1"].to(accelerator.device),
                                               batch["ids2"].to(accelerator.device))
            noise = torch.randn(latents.shape, generator=gen, device=latents.device, dtype=latents.dtype)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                      generator=gen, device=latents.device).long()
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            cond = {"time_ids": batch["time_ids"].to(accelerator.device, dtype=weight_dtype), "text_embeds": pooled}
            sync = micro == n_micro - 1
            # DDP: gradients are averaged over the GPUs once per optimizer step, not once per micro-batch.
            ctx = accelerator.no_sync(unet) if not sync and processes > 1 else _nothing()
            with ctx:  # the prepared UNet's forward runs under the mixed-precision autocast already
                pred = unet(noisy, timesteps, embeds, added_cond_kwargs=cond, return_dict=False)[0]
                if noise_scheduler.config.prediction_type == "v_prediction":
                    target = noise_scheduler.get_velocity(latents, noise, timesteps)
                else:
                    target = noise
                if s.snr_gamma:
                    snr = compute_snr(noise_scheduler, timesteps)
                    w = torch.stack([snr, s.snr_gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
                    w = w / (snr + 1) if noise_scheduler.config.prediction_type == "v_prediction" else w / snr
                    loss = F.mse_loss(pred.float(), target.float(), reduction="none")
                    loss = (loss.mean(dim=list(range(1, loss.ndim))) * w).mean()
                else:
                    loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
                accelerator.backward(loss / n_micro)
            total = loss.detach() / n_micro if total is None else total + loss.detach() / n_micro
        accelerator.clip_grad_norm_(params, s.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        state.losses.append(float(accelerator.gather(total.reshape(1)).mean()))
        if state.global_step % report_every == 0 or state.global_step == plan.total_steps:
            log.info("finetune: step %d/%d loss %.5f lr %.3g", state.global_step, plan.total_steps,
                     state.losses[-1], lr_scheduler.get_last_lr()[0])
        if state.global_step % s.checkpoint_every == 0 and state.global_step < plan.total_steps:
            state.train_seconds += time.monotonic() - t_loop
            t_loop = time.monotonic()
            checkpoints.save(accelerator, ckpt_dir, state.global_step, main)
        if on_step is not None:
            on_step(state.global_step)
    state.train_seconds += time.monotonic() - t_loop
    this_run = time.monotonic() - t_run

    accelerator.wait_for_everyone()
    stats: dict[str, Any] = {}
    if main:
        lora = convert_state_dict_to_diffusers(get_peft_model_state_dict(accelerator.unwrap_model(unet)))
        adapter = Path(job.adapter_dir)
        tmp = adapter.with_name(adapter.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        StableDiffusionXLPipeline.save_lora_weights(str(tmp), unet_lora_layers=lora, weight_name=ADAPTER_FILE)
        readable(tmp)
        shutil.rmtree(adapter, ignore_errors=True)
        os.replace(tmp, adapter)
        stats = _stats(job, s, spec, samples, flags, kept, buckets, plan, state, lora, processes, precision,
                       resumed_from, step_start, cuda,
                       {"setup": t_setup, "this_run": this_run, "total": time.monotonic() - t0})
        shards.write_json(job.stats_path, stats)  # last: the completion marker
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        log.info("finetune: adapter %s (%d tensors) after %d steps in %.1f s", adapter / ADAPTER_FILE, len(lora),
                 state.global_step, stats["seconds"]["total"])
    accelerator.end_training()
    return stats


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _stats(job: TrainJob, s: FinetuneSettings, spec: ModelSpec, samples: list[data.Sample], flags: list[bool],
           kept: list[data.Sample], buckets: list[tuple[int, int]], plan: data.Plan, state: checkpoints.TrainState,
           lora: dict[str, Any], processes: int, precision: str, resumed_from: int | None, step_start: int,
           cuda: bool, seconds: dict[str, float]) -> dict[str, Any]:
    from collections import Counter

    by_subset = Counter(x.subset for x in samples)
    dropped = Counter(x.subset for x, f in zip(samples, flags, strict=True) if f)
    trainable = sum(int(v.numel()) for v in lora.values())
    return {
        "stage": STAGE, "demo": job.demo, "model": spec.label, "adapter": ADAPTER_FILE,
        "records_in": len(samples), "kept": len(kept), "dropped": {data.PROMPT_TOO_LONG: sum(flags)} if any(flags)
        else {},
        "subsets": {k: {"samples": by_subset[k], "prompt_too_long": dropped[k],
                        "weight": float(s.mixture.get(k, 1.0))} for k in sorted(by_subset)},
        "buckets": {f"{w}x{h}": n for (w, h), n in sorted(Counter(buckets).items())},
        "epoch_size": plan.epoch_size, "steps": plan.total_steps, "steps_per_epoch": plan.steps_per_epoch,
        "images_per_step": s.batch_per_gpu * processes * s.gradient_accumulation,
        "images_filled": plan.filled(), "processes": processes, "device": "cuda" if cuda else "cpu",
        "mixed_precision": precision, "resumed_from_step": resumed_from,
        "lora": {"rank": s.rank, "alpha": s.alpha or s.rank, "targets": list(LORA_TARGETS), "tensors": len(lora),
                 "parameters": trainable},
        "losses": state.losses, "settings": s.output_key(), "seed": job.seed,
        "seconds": {"setup": round(seconds["setup"], 2), "train": round(state.train_seconds, 2),
                    "total": round(seconds["total"], 2),
                    "per_step": round(seconds["this_run"] / max(state.global_step - step_start, 1), 4)},
    }


def main(argv: list[str]) -> None:
    """``python -m finet2i.finetune.train JOB.json``: one process of an ``accelerate launch``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train(TrainJob(**json.loads(Path(argv[0]).read_text())))


if __name__ == "__main__":
    main(sys.argv[1:])
