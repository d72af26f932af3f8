"""LoRA fine-tuning of the tiny SD-XL on a small release: the adapter users load, the counts, and a job killed
with SIGKILL that resumes from its checkpoint to the very adapter an uninterrupted job gives (same seed, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from finet2i.finetune.train import ADAPTER_FILE, TrainJob, train

pytestmark = [pytest.mark.slow]

SETTINGS = {"resolution": 64, "bucket_step": 32, "batch_per_gpu": 2, "gradient_accumulation": 2, "epochs": 2,
            "learning_rate": 1e-3, "checkpoint_every": 2, "gradient_checkpointing": False}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The killed job runs in a subprocess with one thread; a resume is bitwise only at the same thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_job(dataset: Path, sdxl: Path, out: Path, **settings) -> TrainJob:
    return TrainJob(dataset_dir=str(dataset), adapter_dir=str(out / "adapter"), stats_path=str(out / "finetune.json"),
                    samples_path=str(out / "samples.parquet"), checkpoints_dir=str(out / "checkpoints"),
                    model={"key": "models.finetune_base", "path": str(sdxl)}, settings={**SETTINGS, **settings},
                    seed=7)


def adapter_tensors(job: TrainJob) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(job.adapter_dir) / ADAPTER_FILE))


@pytest.fixture(scope="module")
def uninterrupted(tiny_release, tiny_sdxl, tmp_path_factory):
    job = make_job(tiny_release, tiny_sdxl, tmp_path_factory.mktemp("full"))
    return job, train(job)


def test_the_adapter_loads_into_the_pipeline_and_changes_its_images(uninterrupted, tiny_sdxl):
    import numpy as np
    import torch
    from diffusers import StableDiffusionXLPipeline

    job, stats = uninterrupted
    assert stats["steps"] == 5 and stats["lora"]["tensors"] == 176 and len(stats["losses"]) == 5
    assert oct(os.stat(Path(job.adapter_dir) / ADAPTER_FILE).st_mode & 0o044) == "0o44"  # readable by the group
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl), local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)

    def render() -> np.ndarray:
        out = pipe(prompt=["a red fox by the sea", "a blue boat"], num_inference_steps=4, height=64, width=64,
                   generator=[torch.Generator().manual_seed(s) for s in (1, 2)], output_type="np")
        return (out.images * 255).round()

    base = render()
    pipe.load_lora_weights(job.adapter_dir)  # exactly as a user loads it
    tuned = render()
    assert np.abs(base - tuned).mean() > 0.1, "the adapter did not change the images"
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import get_peft_model_state_dict

    saved = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in adapter_tensors(job).items()})
    live = get_peft_model_state_dict(pipe.unet, adapter_name=pipe.get_active_adapters()[0])
    assert sorted(saved) == sorted(live) and all(torch.equal(saved[k], live[k]) for k in live)


def test_over_long_captions_are_dropped_and_listed(uninterrupted):
    job, stats = uninterrupted
    assert stats["records_in"] == 12 and stats["kept"] == 10 and stats["dropped"] == {"prompt_too_long": 2}
    assert {k: v["prompt_too_long"] for k, v in stats["subsets"].items()} == {"pe_ar": 1, "po_as": 1}
    rows = pq.read_table(job.samples_path).to_pylist()
    dropped = [r for r in rows if not r["kept"]]
    assert len(rows) == 12 and [r["drop_reason"] for r in dropped] == ["prompt_too_long"] * 2
    assert all(len(r["caption"].split()) > 70 and r["bucket"] is None for r in dropped)
    assert sum(stats["buckets"].values()) == 10 and set(stats["buckets"]) == {"64x64", "96x32", "32x96"}
    assert not Path(job.checkpoints_dir).exists()  # removed once the adapter is written


KILLER = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from finet2i.finetune.train import TrainJob, train

def die(step):
    if step == 3:  # after checkpoint-2, before checkpoint-4: a hard kill mid-epoch, mid-run
        os.kill(os.getpid(), signal.SIGKILL)

train(TrainJob(**json.loads(sys.argv[1])), on_step=die)
"""


def test_a_killed_job_resumes_from_its_checkpoint_to_the_same_adapter(uninterrupted, tiny_release, tiny_sdxl,
                                                                        tmp_path):
    import torch

    full, full_stats = uninterrupted
    job = make_job(tiny_release, tiny_sdxl, tmp_path / "killed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", KILLER, json.dumps(asdict(job))], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    left = sorted(p.name for p in Path(job.checkpoints_dir).iterdir())
    assert "checkpoint-2" in left and not Path(job.adapter_dir).exists()
    stats = train(job)
    assert stats["resumed_from_step"] == 2
    assert stats["losses"] == full_stats["losses"]
    a, b = adapter_tensors(full), adapter_tensors(job)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a), "the resumed adapter differs"


def test_a_checkpoint_of_other_settings_is_not_resumed(tiny_release, tiny_sdxl, tmp_path):
    class Killed(BaseException):
        pass

    def die(step: int) -> None:
        if step == 3:
            raise Killed

    job = make_job(tiny_release, tiny_sdxl, tmp_path / "a", epochs=1)
    with pytest.raises(Killed):
        train(job, on_step=die)
    assert (Path(job.checkpoints_dir) / "checkpoint-2").is_dir()
    changed = replace(job, settings={**job.settings, "learning_rate": 5e-4})
    assert train(changed)["resumed_from_step"] is None
    # a checkpoint interval is not a setting of the adapter: it resumes
    job2 = make_job(tiny_release, tiny_sdxl, tmp_path / "b", epochs=1)
    with pytest.raises(Killed):
        train(job2, on_step=die)
    assert train(replace(job2, settings={**job2.settings, "checkpoint_every": 5}))["resumed_from_step"] == 2


def test_two_processes_train_one_adapter_on_their_slices(tiny_release, tiny_sdxl, tmp_path):
    """The multi-GPU path (one process per device, DDP) with two CPU processes: every global batch split in two,
    gradients averaged, one adapter written by the main process."""
    from finet2i.finetune.launch import launch

    job = make_job(tiny_release, tiny_sdxl, tmp_path / "ddp", batch_per_gpu=1, epochs=1)
    stats = launch(job, processes=2)
    assert stats["processes"] == 2 and stats["images_per_step"] == 4 and stats["steps"] == 3
    assert len(adapter_tensors(job)) == 176 and not Path(job.checkpoints_dir).exists()
