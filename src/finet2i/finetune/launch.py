"""Where the fine-tune runs: in this process (a CPU or one GPU), or one process per GPU of the Slurm job.

Several GPUs of one node: ``accelerate launch --multi_gpu --num_processes N -m finet2i.finetune.train JOB.json``
(DDP; each process trains its slice of every global batch). Several CPU processes, to try that path on a machine
without GPUs: ``torchrun --standalone --nproc_per_node N`` with ``ACCELERATE_USE_CPU=1`` (accelerate launch would
want mpirun for CPUs; torchrun is what it runs for GPUs anyway).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from finet2i.core import shards
from finet2i.finetune.settings import FinetuneSettings
from finet2i.finetune.train import TrainJob, mixed_precision, train

log = logging.getLogger(__name__)


def gpus() -> int:
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # a broken CUDA install: train on what accelerate finds
        return 0


def launch(job: TrainJob, *, processes: int | None = None) -> dict[str, Any]:
    """Train in this process (a CPU or one GPU), or start one process per GPU with ``accelerate launch`` (all
    GPUs of the Slurm job, one node) and wait for them. Returns the stats."""
    cuda = gpus()
    n = cuda if processes is None else processes
    if n <= 1:
        return train(job)
    spec = Path(job.checkpoints_dir).with_name("finetune-job.json")
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(asdict(job)))
    env = dict(os.environ)
    if cuda:
        precision = mixed_precision(FinetuneSettings.from_config(job.settings).mixed_precision, True)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
               "--num_machines", "1", "--mixed_precision", precision, "--dynamo_backend", "no",
               "-m", "finet2i.finetune.train", str(spec)]
    else:
        # several CPU processes (DDP over gloo): the same code path, on a machine without GPUs
        env["ACCELERATE_USE_CPU"] = "1"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
               "-m", "finet2i.finetune.train", str(spec)]
    log.info("finetune: %s", " ".join(cmd))
    subprocess.run(cmd, check=True, env=env)
    return shards.read_json(job.stats_path)
