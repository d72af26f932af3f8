"""finetune benchmark: SD-XL LoRA training throughput of finet2i's fine-tune beside the compute floor, and what one
epoch over a release of N samples would take at that rate.

    .venv/bin/python benchmarks/finetune.py                                   # the tiny SD-XL, 64 px, on the CPU
    .venv/bin/python benchmarks/finetune.py --model <SD-XL folder or snapshot> --resolution 1024 --batch 8 \\
        --steps 30 --samples 6000000                                          # on a GPU node: the paper's setting

A synthetic release (random smooth JPEGs at the resolution, short captions; `package` + `assemble`, so the
fine-tune reads tars exactly as it does a run's) in a temp folder, then:

* baseline, the compute floor: the same UNet + LoRA, VAE and text encoders, one optimizer step after another on
  a batch already in memory (no tar reads, no decoding, no plan, no checkpoints);
* finet2i: `finet2i.finetune.train.train` on the release (reads, decodes, crops, plans, checkpoints every 10).

Each in a child process. Printed: seconds per optimizer step (after the first two, which warm up), images per
second, and the hours one epoch over `--samples` images would take at that rate on this device (derived from
the measurement, one device, no data-loading stall assumed beyond what was measured).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = r"""
import json, sys, time, torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from peft import LoraConfig
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
from finet2i.finetune.train import encode_prompt
model, res, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cuda = torch.cuda.is_available()
dev, dt = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
part = lambda cls, sub, **k: cls.from_pretrained(model, subfolder=sub, local_files_only=True, **k)
tok1, tok2 = part(CLIPTokenizer, "tokenizer"), part(CLIPTokenizer, "tokenizer_2")
te1 = part(CLIPTextModel, "text_encoder", dtype=dt).to(dev)
te2 = part(CLIPTextModelWithProjection, "text_encoder_2", dtype=dt).to(dev)
vae = part(AutoencoderKL, "vae", torch_dtype=dt).to(dev)
unet = part(UNet2DConditionModel, "unet", torch_dtype=dt).to(dev)
sched = part(DDPMScheduler, "scheduler")
for m in (vae, te1, te2, unet): m.requires_grad_(False)
unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                            target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
params = [p for p in unet.parameters() if p.requires_grad]
for p in params: p.data = p.data.float()
if cuda: unet.enable_gradient_checkpointing()
opt = torch.optim.AdamW(params, lr=1e-4)
x = torch.rand(batch, 3, res, res, device=dev, dtype=dt) * 2 - 1
ids = [t(["a photograph of a red fox in the snow"] * batch, padding="max_length", max_length=77, truncation=True,
         return_tensors="pt").input_ids.to(dev) for t in (tok1, tok2)]
tids = torch.tensor([[res, res, 0, 0, res, res]] * batch, device=dev, dtype=dt)
times = []
for step in range(steps):
    t0 = time.perf_counter()
    with torch.no_grad():
        lat = vae.encode(x).latent_dist.sample() * vae.config.scaling_factor
        emb, pooled = encode_prompt(te1, te2, *ids)
    noise = torch.randn_like(lat)
    ts = torch.randint(0, 1000, (batch,), device=dev)
    with torch.autocast(dev, dtype=dt, enabled=cuda):
        pred = unet(sched.add_noise(lat, noise, ts), ts, emb,
                    added_cond_kwargs={"time_ids": tids, "text_embeds": pooled}).sample
    F.mse_loss(pred.float(), noise.float()).backward()
    opt.step(); opt.zero_grad()
    if cuda: torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
print(json.dumps({"step_s": times, "device": torch.cuda.get_device_name() if cuda else "CPU"}))
"""

FINET2I = r"""
import json, sys, time, torch
from finet2i.finetune.train import TrainJob, train
root, model, res, batch, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
times, last = [], [time.perf_counter()]
def tick(step):
    now = time.perf_counter(); times.append(now - last[0]); last[0] = now
job = TrainJob(dataset_dir=f"{root}/dataset", adapter_dir=f"{root}/ft/adapter",
               stats_path=f"{root}/ft/finetune.json",
               samples_path=f"{root}/ft/samples.parquet", checkpoints_dir=f"{root}/ft/checkpoints",
               model={"key": "models.finetune_base", "path": model}, seed=0,
               settings={"resolution": res, "bucket_step": 32 if res < 256 else 64, "batch_per_gpu": batch,
                         "max_samples": batch * steps, "checkpoint_every": 10, "dataloader_workers": 4,
                         "gradient_checkpointing": torch.cuda.is_available()})  # as the baseline: on a GPU only
stats = train(job, on_step=tick)
print(json.dumps({"step_s": times, "setup_s": stats["seconds"]["setup"]}))
"""


def synthetic_release(root: Path, n: int, res: int) -> None:
    import io
    import zlib

    import numpy as np
    from PIL import Image

    from finet2i.core import shards
    from finet2i.release import layout
    from finet2i.stages import assemble, package

    rows, images = [], {}
    for i in range(n):
        pid = f"00000-{i:06d}"
        coarse = (np.random.default_rng(zlib.crc32(pid.encode())).random((4, 4, 3)) * 255).astype("uint8")
        buf = io.BytesIO()
        Image.fromarray(coarse).resize((res, res), Image.BICUBIC).save(buf, "JPEG", quality=90)
        rows.append({"id": pid, "sample_id": f"po_as-{pid}", "prompt": f"a red fox number {i} in the snow",
                     "image_generated_with_enhanced_prompt": False, "image_generator": "synthetic",
                     "aesthetic_predictor_v_2_5_score": 6.0, "width": res, "height": res})
        images[f"po_as-{pid}"] = buf.getvalue()
    table = root / "package" / "po_as" / "00000.parquet"
    package.package_rows(rows, images, subset="po_as", shard="00000", seed=0, out_path=table,
                         stats_path=shards.stats_path(table), settings={})
    assemble.run_assemble([table], root / "dataset" / layout.folder_of("po_as"), root / "assemble.json",
                          subset="po_as", samples_per_tar=1000)


def child(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="an SD-XL diffusers folder (default: the tiny demo SD-XL, built in a temp folder)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--samples", type=int, default=6_000_000, help="release size for the epoch estimate")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model
        if model is None:
            from finet2i.demo.sdxl import build_sdxl

            model = str(build_sdxl(root / "models", seed=0))
        synthetic_release(root, args.batch * args.steps, args.resolution)
        sizes = (str(args.resolution), str(args.batch), str(args.steps))
        rows: list[tuple[str, dict]] = [("baseline: compute floor", child(BASELINE, model, *sizes)),
                                        ("finet2i finetune", child(FINET2I, str(root), model, *sizes))]
    print(f"SD-XL LoRA ({model}), {args.resolution} px, batch {args.batch}, {args.steps} steps, on "
          f"{rows[0][1]['device']} (median of the steps after the second)")
    print(f"{'':26} {'s/step':>8} {'images/s':>9} {'hours per epoch of ' + format(args.samples, ','):>30}")
    for name, r in rows:
        steady = sorted(r["step_s"][2:] or r["step_s"])
        s = steady[len(steady) // 2]
        ips = args.batch / s
        print(f"{name:26} {s:8.3f} {ips:9.2f} {args.samples / ips / 3600:30,.1f}")
    print(f"(finet2i setup before the first step: {rows[1][1].get('setup_s')} s; {time.strftime('%F %T')})")


if __name__ == "__main__":
    main()
