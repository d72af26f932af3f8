"""Stage ``curated_score`` (paper 3.2): Aesthetic Predictor V2.5 on the ingested real photographs.

Adds ``aesthetic_predictor_v_2_5_score`` to every kept ``curated_ingest`` row and drops ``low_aesthetic`` below
``curated.aesthetic_threshold`` (the paper keeps >= 6.5). The table holds verdicts, not bytes: the images stay
in the ingest table, read one chunk at a time by id (here, and by the captioner and the packager).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from finet2i.core import runner, shards
from finet2i.core.settings import FromSection, default
from finet2i.models.spec import ModelSpec
from finet2i.plumbing.images import image_bytes, load_image

log = logging.getLogger(__name__)

STAGE = "curated_score"
SCORE_COLUMN = "aesthetic_predictor_v_2_5_score"
LOW_AESTHETIC = "low_aesthetic"
SCORE_INVALID = "score_invalid"


@dataclass(frozen=True)
class ScoreSettings(FromSection):
    aesthetic_threshold: float = default("curated.aesthetic_threshold")
    chunk_size: int = default("curated.chunk_size")


def score_chunk(records: list[shards.Record], images: Mapping[str, bytes | None], scorer: Any,
                threshold: float) -> list[shards.Record]:
    """Score one chunk's images (bytes by id) and mark each record against the threshold."""
    pil = [load_image(images[r["id"]]) for r in records]
    scores = list(scorer.score(pil)) if pil else []
    if len(scores) != len(pil):
        raise RuntimeError(f"the aesthetic scorer scored {len(scores)} of {len(pil)} images")
    out = []
    for r, score in zip(records, scores, strict=True):
        r = {**r, SCORE_COLUMN: float(score)}
        if not math.isfinite(r[SCORE_COLUMN]):
            reason: str | None = SCORE_INVALID  # NaN from a broken scorer: no verdict, fail closed
        else:
            reason = None if r[SCORE_COLUMN] >= threshold else LOW_AESTHETIC
        out.append(shards.mark(r, reason))
    return out


class _LazyScorer:
    """Loads the scorer on the first chunk: an empty or fully checkpointed shard never loads a model."""

    def __init__(self, encoder: ModelSpec, head: ModelSpec, given: Any) -> None:
        self.encoder, self.head, self.scorer = encoder, head, given

    def score(self, images: list[Any]) -> list[float]:
        if self.scorer is None:
            from finet2i.models.backends.aesthetic import load_aesthetic_scorer

            self.scorer = load_aesthetic_scorer(self.encoder, self.head)
        return self.scorer.score(images)


def _summary(out: list[shards.Record]) -> dict[str, Any]:
    values = sorted(r[SCORE_COLUMN] for r in out if math.isfinite(r[SCORE_COLUMN]))
    return {"score_min": values[0] if values else None, "score_max": values[-1] if values else None,
            "score_median": values[len(values) // 2] if values else None}


def run_curated_score(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, cshard: str,
                      settings: Mapping[str, Any], encoder: ModelSpec, head: ModelSpec,
                      stats_path: str | os.PathLike[str], scorer: Any = None,
                      images_path: str | os.PathLike[str] | None = None) -> shards.StageStats:
    """Score the kept rows of the upstream table -> ``results/curated_score/{cshard}``; the bytes come from
    ``images_path`` (the ingest table; default: the input table itself)."""
    s = ScoreSettings.from_config(settings)
    lazy = _LazyScorer(encoder, head, scorer)

    def process(chunk: list[shards.Record]) -> list[shards.Record]:
        return score_chunk(chunk, image_bytes(images_path or in_path, "id", [r["id"] for r in chunk]), lazy,
                           s.aesthetic_threshold)

    stage = runner.ChunkedStage(
        STAGE, process, s.chunk_size, key=(s.aesthetic_threshold, encoder.label, head.label),
        model=lambda _: getattr(lazy.scorer, "model_name", None) or f"{encoder.label}+{head.label}",
        summarize=_summary)
    return runner.run_chunked(stage, in_path, out_path, shard=cshard, stats_path=stats_path,
                              threshold=s.aesthetic_threshold)
