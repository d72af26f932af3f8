"""What the fine-tune trains on: the run's release (``results/dataset/``), its samples filtered, mixed and bucketed,
and the plan of every optimizer step as a pure function of the seed.

**Samples.** Every subset folder's per-tar parquet indexes (``train-NNNNNN.parquet``, one row per sample, written
by ``assemble``) give each sample's key, size (``image_resolution``) and where its JPEG lies in its tar. The
caption is the text its ``.txt`` member holds, which the index carries as the prompt or, when the image was
rendered from it, the enhanced prompt (``finet2i.stages.package`` writes the txt by the same rule). The dataset is
read, never written.

**Filter.** A caption longer than the text encoder's limit (CLIP's 77 tokens, both of them included) would be
cut, and the image would be trained against a prompt it does not show: such samples are dropped
(``prompt_too_long``) and counted, like every record the pipeline drops; ``samples.parquet`` lists every sample
with its verdict.

**Mixture.** ``finetune.mixture`` gives each subset a weight: its samples are drawn ``weight`` times per epoch (1:
each once, the paper's mixture; 0.5: a seeded half; 2: twice; 0: left out).

**Buckets.** Each image is trained at the bucket of its aspect ratio: the size of pixel area about
``resolution``^2 with sides multiples of ``bucket_step`` (``bucket_of``); the buckets are those the dataset's
sizes fall into. A batch holds one bucket.

**Plan.** Epoch ``e``'s order is a function of (seed, e): each bucket's samples are shuffled and cut into global
batches of ``batch_per_gpu x processes`` (the last one filled up with samples of the same bucket, drawn with the
seed and counted), the batches are shuffled, then grouped ``gradient_accumulation`` at a time into optimizer
steps. Each item also carries its crop seed. A job that resumes at step ``k`` recomputes the plan and skips the
first ``k`` steps: it sees exactly what an uninterrupted job would have seen.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finet2i.release import layout as release

log = logging.getLogger(__name__)

PROMPT_TOO_LONG = "prompt_too_long"
INDEX_COLUMNS = ("id", "prompt", "enhanced_prompt", "image_generated_with_enhanced_prompt", "image_resolution",
                 "jpg_offset", "jpg_size")


@dataclass(frozen=True, slots=True)
class Sample:
    subset: str  # the pipeline's subset code (pe_ar ... real)
    key: str
    tar: str  # path of its tar, relative to the dataset folder: <folder>/train-NNNNNN.tar
    jpg_offset: int
    jpg_size: int
    width: int
    height: int
    caption: str


@dataclass(frozen=True, slots=True)
class Item:
    """One image of a micro-batch: which sample, at which bucket (width, height), cropped with which seed."""

    sample: int  # index into the kept samples
    bucket: tuple[int, int]
    crop_seed: int


Step = list[list[list[Item]]]  # an optimizer step: micro-batches, each one list of items per process


def seed_of(*parts: Any) -> int:
    """A 63-bit seed from any parts (the run seed, an epoch, a step): stable across Python processes."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


def read_samples(dataset_dir: str | os.PathLike[str]) -> list[Sample]:
    """Every sample of every subset folder of a release, in folder and tar order."""
    import pyarrow.parquet as pq

    root = Path(dataset_dir)
    out: list[Sample] = []
    for subset, folder in release.FOLDERS.items():
        for index in sorted((root / folder).glob("train-*.parquet")):
            names = set(pq.read_schema(index).names)
            missing = sorted(set(INDEX_COLUMNS) - names)
            if missing:
                raise ValueError(f"{index}: the index lacks {missing}; rerun `assemble` (snakemake assemble) so "
                                 f"that it records where each image lies in its tar")
            t = pq.read_table(index, columns=list(INDEX_COLUMNS)).to_pylist()
            tar = f"{folder}/{index.with_suffix('.tar').name}"
            for r in t:
                enhanced = r["enhanced_prompt"] if r["image_generated_with_enhanced_prompt"] else None
                w, h = r["image_resolution"]
                out.append(Sample(subset, r["id"], tar, int(r["jpg_offset"]), int(r["jpg_size"]), int(w), int(h),
                                  str(enhanced or r["prompt"])))
    return out


def too_long(captions: Sequence[str], tokenizers: Sequence[Any]) -> list[bool]:
    """Whether each caption exceeds a tokenizer's limit (``model_max_length``, its special tokens included)."""
    flags = [False] * len(captions)
    for tok in tokenizers:
        limit = int(tok.model_max_length)
        ids = tok(list(captions), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        flags = [f or len(i) > limit for f, i in zip(flags, ids, strict=True)]
    return flags


def bucket_of(width: int, height: int, resolution: int, step: int) -> tuple[int, int]:
    """(width, height) of about ``resolution``^2 pixels at the image's aspect ratio, sides multiples of ``step``."""
    aspect = width / height
    w = max(step, round(math.sqrt(resolution * resolution * aspect) / step) * step)
    h = max(step, round(math.sqrt(resolution * resolution / aspect) / step) * step)
    return int(w), int(h)


def epoch_draw(subsets: Sequence[str], mixture: dict[str, float], seed: int, epoch: int) -> list[int]:
    """Indices (into ``subsets``, one entry per kept sample) of the samples epoch ``epoch`` draws: each subset's
    samples ``floor(w)`` times, plus a seeded ``w - floor(w)`` share of them (a subset the mixture does not name
    weighs 1)."""
    import numpy as np

    by_subset: dict[str, list[int]] = {}
    for i, s in enumerate(subsets):
        by_subset.setdefault(s, []).append(i)
    out: list[int] = []
    for subset in sorted(by_subset):
        idx = by_subset[subset]
        w = float(mixture.get(subset, 1.0))
        whole, frac = int(math.floor(w)), w - math.floor(w)
        out += idx * whole
        n = int(round(frac * len(idx)))
        if n:
            rng = np.random.default_rng(seed_of(seed, "mixture", epoch, subset))
            out += sorted(int(i) for i in rng.choice(idx, size=n, replace=False))
    return out


def epoch_steps(buckets: Sequence[tuple[int, int]], draw: Sequence[int], *, seed: int, epoch: int,
                batch_per_gpu: int, processes: int, accumulation: int) -> tuple[list[Step], int]:
    """Epoch ``epoch``'s optimizer steps over the drawn samples (``draw``: indices into ``buckets``), and how many
    items were added to fill the last batch of a bucket."""
    import numpy as np

    rng = np.random.default_rng(seed_of(seed, "epoch", epoch))
    per_bucket: dict[tuple[int, int], list[int]] = {}
    for i in draw:
        per_bucket.setdefault(tuple(buckets[i]), []).append(i)
    batch = batch_per_gpu * processes
    batches: list[list[int]] = []
    filled = 0
    for bucket in sorted(per_bucket):
        members = [per_bucket[bucket][j] for j in rng.permutation(len(per_bucket[bucket]))]
        short = -len(members) % batch
        if short:
            members += [members[int(j)] for j in rng.integers(0, len(members), short)]
            filled += short
        batches += [members[k:k + batch] for k in range(0, len(members), batch)]
    order = rng.permutation(len(batches))
    steps: list[Step] = []
    for s in range(0, len(order), accumulation):
        step: Step = []
        for b in order[s:s + accumulation]:
            members = batches[int(b)]
            items = [Item(i, tuple(buckets[i]), seed_of(seed, "crop", epoch, int(b), k))  # type: ignore[arg-type]
                     for k, i in enumerate(members)]
            step.append([items[p * batch_per_gpu:(p + 1) * batch_per_gpu] for p in range(processes)])
        steps.append(step)
    return steps, filled


@dataclass
class Plan:
    """Every optimizer step of the run, epoch after epoch, until ``total_steps``."""

    total_steps: int
    epoch_size: int  # samples one epoch draws
    steps_per_epoch: int
    make_epoch: Callable[[int], tuple[list[Step], int]]

    def steps(self, start: int = 0) -> Iterator[tuple[int, int, Step]]:
        """(global step, epoch, the step) from ``start`` on; the epochs before are recomputed, never stored."""
        done = 0
        epoch = 0
        while done < self.total_steps:
            steps, _ = self.make_epoch(epoch)
            for step in steps:
                if done >= self.total_steps:
                    return
                if done >= start:
                    yield done, epoch, step
                done += 1
            epoch += 1

    def filled(self) -> int:
        """Items repeated to fill a bucket's last batch, over the epochs the plan runs."""
        epochs = math.ceil(self.total_steps / max(self.steps_per_epoch, 1))
        return sum(self.make_epoch(e)[1] for e in range(epochs))


def make_plan(subsets: Sequence[str], buckets: Sequence[tuple[int, int]], *, mixture: dict[str, float], seed: int,
              batch_per_gpu: int, processes: int, accumulation: int, epochs: float,
              max_samples: int | None) -> Plan:
    """The run's plan: ``epochs`` passes over the mixture (or ``max_samples`` samples, whichever is fewer), in
    optimizer steps of ``batch_per_gpu x processes x accumulation`` images."""
    def make_epoch(epoch: int) -> tuple[list[Step], int]:
        return epoch_steps(buckets, epoch_draw(subsets, mixture, seed, epoch), seed=seed, epoch=epoch,
                           batch_per_gpu=batch_per_gpu, processes=processes, accumulation=accumulation)

    first, _ = make_epoch(0)
    epoch_size = len(epoch_draw(subsets, mixture, seed, 0))
    if epoch_size == 0:
        raise ValueError("finetune: no sample to train on (every subset is empty, filtered out, or weighs 0 in "
                         "finetune.mixture)")
    wanted = epochs * epoch_size if max_samples is None else min(max_samples, epochs * epoch_size)
    per_step = batch_per_gpu * processes * accumulation
    total = max(1, math.ceil(wanted / per_step))
    return Plan(total_steps=total, epoch_size=epoch_size, steps_per_epoch=len(first), make_epoch=make_epoch)


class ImageReader:
    """A sample's JPEG by one seek and one read in its tar, decoded, resized to cover its bucket and cropped."""

    def __init__(self, dataset_dir: str | os.PathLike[str]) -> None:
        self.root = Path(dataset_dir)

    def jpeg(self, s: Sample) -> bytes:
        with open(self.root / s.tar, "rb") as f:
            f.seek(s.jpg_offset)
            data = f.read(s.jpg_size)
        if len(data) != s.jpg_size:
            raise ValueError(f"{self.root / s.tar}: {s.key}.jpg is cut short ({len(data)} of {s.jpg_size} bytes)")
        return data

    def crop(self, s: Sample, bucket: tuple[int, int], crop_seed: int) -> tuple[Any, tuple[int, int]]:
        """The image (PIL, RGB) at ``bucket`` and the crop's top-left corner (top, left) in the resized image."""
        import io
        import random

        from PIL import Image

        with Image.open(io.BytesIO(self.jpeg(s))) as im:
            im = im.convert("RGB")
        bw, bh = bucket
        scale = max(bw / im.width, bh / im.height)
        size = (max(bw, round(im.width * scale)), max(bh, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS)
        rng = random.Random(crop_seed)
        top, left = rng.randint(0, im.height - bh), rng.randint(0, im.width - bw)
        return im.crop((left, top, left + bw, top + bh)), (top, left)
