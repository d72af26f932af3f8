"""Image generation (paper 3.1.5, Table 8): four synthetic subsets, best of 1-3 candidates by aesthetic score.

Subsets cross the prompt variant with the resolution setting: ``pe_*`` render the enhanced prompt, ``po_*``
the original one; ``*_ar`` (random resolution and aspect ratio) draw from every entry of Table 8, squares
included (the released random-resolution subset holds 2048x2048 images), ``*_as`` from its square entries
only (``config/resolutions.yaml``). Table 8 gives no weights, so the draw is uniform over the entries of the
subset's list (26 for AR, 6 for AS today), not over aspect ratios or groups. For each prompt the generator
(by ``generate.generators.<kind>.weight``), the size, the candidate count (in ``[candidates.min,
candidates.max]``) and every candidate's seed are drawn from (config seed, prompt id, subset) alone, so a
record renders the same whatever shard size, chunk or rerun it lands in. All candidates are scored with
Aesthetic Predictor V2.5 and the best one is kept as a JPEG.

One job handles one (subset, shard). Records are processed grouped by generator (each pipeline loads once per
job and is freed before the next), then by rendered size, in checkpointed chunks; the output keeps the input
order. Within a chunk, the prompts of one (generator, size) bucket are rendered together, every candidate of
every prompt in the same pipeline calls (``generate.generators.<kind>.batch_size`` images per call up to 1 MP),
and scored in one call: a chunk mixing sizes would otherwise force one image per call. A bucket whose batched
render fails is rendered again prompt by prompt, so a prompt whose generation fails is dropped as
``generation_failed`` with the error beside it, alone; the job goes on.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from finet2i.core import runner, shards
from finet2i.core.settings import default, from_section
from finet2i.core.shards import Record, StageStats
from finet2i.models.spec import ModelSpec

log = logging.getLogger(__name__)

STAGE = "generate"
GENERATION_FAILED = "generation_failed"
SCORE = "aesthetic_predictor_v_2_5_score"
MISSING_PROMPT = "missing_prompt"
# Both Z-Image and FLUX.2 need sides divisible by 16 (8x VAE downsampling, then 2x2 latent packing);
# every Table 8 size already is.
SIZE_MULTIPLE = 16
SUBSET_PROMPT_COLUMN = {"pe": "enhanced_prompt", "po": "prompt"}
# AR draws from all of Table 8 (squares included, as in the release), AS from the squares only.
SUBSET_TABLES = {"as": ("square",), "ar": ("square", "landscape", "portrait")}


@dataclass(frozen=True)
class Resolution:
    aspect_ratio: str  # Table 8's label, e.g. "4:3"
    width: int
    height: int


@dataclass(frozen=True)
class GeneratorSettings:
    weight: float
    steps: int = default("generate.generators.z_image.steps")
    guidance: float = default("generate.generators.z_image.guidance")
    cpu_offload: bool = default("generate.generators.z_image.cpu_offload")
    batch_size: int = default("generate.generators.z_image.batch_size")


@dataclass(frozen=True)
class GenerateSettings:
    resolutions: str
    generators: dict[str, GeneratorSettings]
    candidates_min: int = field(default=default("generate.candidates.min"), metadata={"key": "candidates.min"})
    candidates_max: int = field(default=default("generate.candidates.max"), metadata={"key": "candidates.max"})
    max_side: int | None = default("generate.max_side")
    chunk_size: int = default("generate.chunk_size")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> GenerateSettings:
        gens = {kind: from_section(GeneratorSettings, g) for kind, g in dict(section["generators"]).items()}
        s = replace(from_section(cls, {**section, "generators": {}}), generators=gens)
        if not 1 <= s.candidates_min <= s.candidates_max:
            raise ValueError(
                f"generate.candidates: need 1 <= min <= max, got min={s.candidates_min} "
                f"max={s.candidates_max}"
            )
        if not any(g.weight > 0 for g in gens.values()):
            raise ValueError("generate.generators: at least one generator needs a weight > 0")
        return s


@dataclass(frozen=True)
class Plan:
    """What will be rendered for one record: decided before any model loads."""

    kind: str
    resolution: Resolution
    width: int  # as rendered (after generate.max_side)
    height: int
    seeds: tuple[int, ...]


def load_resolutions(path: str | os.PathLike[str]) -> dict[str, list[Resolution]]:
    """``config/resolutions.yaml`` -> {"square"|"landscape"|"portrait": [Resolution, ...]}."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    table: dict[str, list[Resolution]] = {}
    for group in ("square", "landscape", "portrait"):
        entries = (data or {}).get(group)
        if not entries:
            raise ValueError(
                f"{path}: missing or empty list {group!r} (Table 8 sizes as "
                "{aspect_ratio: 'W:H', size: [width, height]})"
            )
        table[group] = [
            Resolution(str(e["aspect_ratio"]), int(e["size"][0]), int(e["size"][1])) for e in entries
        ]
    return table


def parse_subset(subset: str) -> tuple[str, str]:
    """``"pe_ar"`` -> (``"pe"``, ``"ar"``)."""
    prompt_kind, _, size_kind = subset.partition("_")
    if prompt_kind not in SUBSET_PROMPT_COLUMN or size_kind not in SUBSET_TABLES:
        raise ValueError(f"unknown subset {subset!r}: expected pe_ar, pe_as, po_ar or po_as")
    return prompt_kind, size_kind


def sizes_for_subset(subset: str, table: Mapping[str, Sequence[Resolution]]) -> list[Resolution]:
    _, size_kind = parse_subset(subset)
    return [r for group in SUBSET_TABLES[size_kind] for r in table[group]]


def fit_size(width: int, height: int, max_side: int | None, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """Scale (width, height) down so the longer side is at most ``max_side``, keeping the aspect ratio as well
    as multiples of ``multiple`` allow; sizes are never scaled up."""
    scale = 1.0 if not max_side or max(width, height) <= max_side else max_side / max(width, height)

    def snap(v: float) -> int:
        return max(multiple, int(round(v / multiple)) * multiple)

    return snap(width * scale), snap(height * scale)


def _rng(*parts: Any) -> random.Random:
    """A generator seeded by the parts' text alone (not Python's salted hash): the same on every machine."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def plan_record(
    record: Mapping[str, Any],
    subset: str,
    seed: int,
    settings: GenerateSettings,
    sizes: Sequence[Resolution],
    kinds: Sequence[str],
) -> Plan:
    """Generator, size, candidate count and candidate seeds of one prompt, from (seed, prompt id, subset)."""
    rid = record["id"]
    weights = [settings.generators[k].weight for k in kinds]
    kind = _rng(seed, rid, subset, "generator").choices(list(kinds), weights=weights, k=1)[0]
    res = _rng(seed, rid, subset, "size").choice(list(sizes))
    n = _rng(seed, rid, subset, "candidates").randint(settings.candidates_min, settings.candidates_max)
    seeds = tuple(_rng(seed, rid, subset, "candidate", k).getrandbits(32) for k in range(n))
    width, height = fit_size(res.width, res.height, settings.max_side)
    return Plan(kind=kind, resolution=res, width=width, height=height, seeds=seeds)


def jpeg_bytes(image: Any, quality: int) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def _base_columns(record: Record, subset: str, prompt_kind: str, plan: Plan) -> Record:
    r = dict(record)
    if "seed" in r:
        r["spec_seed"] = r.pop("seed")  # the spec's sampling seed; `seed` now names the kept image's seed
    r.update(
        {
            "sample_id": f"{subset}-{record['id']}",
            "subset": subset,
            "prompt_used": record.get(SUBSET_PROMPT_COLUMN[prompt_kind]),
            "image_generated_with_enhanced_prompt": prompt_kind == "pe",
            "image_generator": None,
            "image_resolution": None,
            "image_aspect_ratio": plan.resolution.aspect_ratio,
            "seed": None,
            "candidate_seeds": list(plan.seeds),
            "candidate_scores": None,
            "aesthetic_predictor_v_2_5_score": None,
            "image": None,
            "generation_error": None,
        }
    )
    return r


def _render_scored(prompts_and_seeds: Sequence[tuple[str, Sequence[int]]], width: int, height: int,
                   generator: Any, scorer: Any) -> list[tuple[list[Any], list[float]]]:
    """Every candidate of every prompt (one size) in one ``generate`` and one ``score`` call; per prompt, its
    images and scores. Raises on any failure."""
    prompts = [p for p, seeds in prompts_and_seeds for _ in seeds]
    images = list(generator.generate(prompts, width=width, height=height,
                                     seeds=[int(x) for _, ss in prompts_and_seeds for x in ss]))
    scores = [float(x) for x in scorer.score(images)]
    if len(images) != len(prompts) or len(scores) != len(images) or not all(math.isfinite(x) for x in scores):
        raise ValueError(f"{len(images)} images and aesthetic scores {scores} for {len(prompts)} prompts")
    out, at = [], 0
    for _, ss in prompts_and_seeds:
        out.append((images[at:at + len(ss)], scores[at:at + len(ss)]))
        at += len(ss)
    return out


def render_record(
    record: Record, plan: Plan, subset: str, generator: Any, scorer: Any, jpeg_quality: int
) -> Record:
    """Render every candidate of one prompt, score them and keep the best; never raises."""
    return render_bucket([record], [plan], subset, generator, scorer, jpeg_quality)[0]


def render_bucket(
    records: Sequence[Record], plans: Sequence[Plan], subset: str, generator: Any, scorer: Any, jpeg_quality: int
) -> list[Record]:
    """Render the prompts of one (generator, size) bucket together, all their candidates in the same pipeline
    calls, scored in one call, and keep each prompt's best; never raises. When a batch of several fails (one bad
    prompt, out of memory), each prompt is rendered again on its own, so only the one that fails is dropped."""
    if len({(p.width, p.height) for p in plans}) != 1:
        raise ValueError(f"render_bucket: one size per bucket, got {sorted({(p.width, p.height) for p in plans})}")
    prompt_kind, _ = parse_subset(subset)
    out = [_base_columns(rec, subset, prompt_kind, plan) for rec, plan in zip(records, plans, strict=True)]
    todo = []
    for r in out:
        if r["prompt_used"] and str(r["prompt_used"]).strip():
            todo.append(r)
        else:
            r["generation_error"] = f"{SUBSET_PROMPT_COLUMN[prompt_kind]} is empty"
            shards.mark(r, MISSING_PROMPT)
    plan_of = {id(r): p for r, p in zip(out, plans, strict=True)}
    try:
        rendered = _render_scored([(r["prompt_used"], plan_of[id(r)].seeds) for r in todo], plans[0].width,
                                  plans[0].height, generator, scorer) if todo else []
        for r, (images, scores) in zip(todo, rendered, strict=True):
            plan = plan_of[id(r)]
            best = max(range(len(scores)), key=lambda i: scores[i])  # first of equal maxima
            image = images[best]
            r.update({"image_generator": generator.model_name, "image_resolution": f"{image.width}x{image.height}",
                      "seed": plan.seeds[best], "candidate_scores": scores,
                      "aesthetic_predictor_v_2_5_score": scores[best], "image": jpeg_bytes(image, jpeg_quality)})
            shards.mark(r, None)
    except Exception as e:  # one prompt's failure (OOM, NaN latents, a bad size) must not end the shard
        if len(todo) > 1:
            log.warning("%s: a batch of %d prompts at %dx%d failed (%s: %s); rendering them one by one", subset,
                        len(todo), plans[0].width, plans[0].height, type(e).__name__, e)
            again = {r["id"]: render_record(r, p, subset, generator, scorer, jpeg_quality)
                     for r, p in zip(records, plans, strict=True)}
            return [again[r["id"]] for r in records]
        log.warning("%s: generation failed for %s: %s: %s", subset, todo[0].get("id"), type(e).__name__, e)
        todo[0]["image_generator"] = getattr(generator, "model_name", None)
        todo[0]["generation_error"] = f"{type(e).__name__}: {e}"
        shards.mark(todo[0], GENERATION_FAILED)
        return out
    return out


class GeneratorPool:
    """One generator per kind, loaded lazily; at most one self-loaded pipeline is held at a time. A batch job
    (finet2i.workflow.batch) shares one pool across its shards: the pipeline loaded last stays loaded."""

    def __init__(
        self, settings: GenerateSettings, models: Mapping[str, ModelSpec], given: Mapping[str, Any] | None
    ) -> None:
        self.settings = settings
        self.models = models
        self.given = dict(given or {})
        self.loaded: dict[str, Any] = {}

    def get(self, kind: str) -> Any:
        if kind in self.given:
            return self.given[kind]
        if kind not in self.loaded:
            self.close()
            from finet2i.models.backends.diffusers_gen import load_generator

            g = self.settings.generators[kind]
            self.loaded[kind] = load_generator(
                kind, self.models[kind], steps=g.steps, guidance=g.guidance, cpu_offload=g.cpu_offload,
                batch_size=g.batch_size,
            )
        return self.loaded[kind]

    def close(self) -> None:
        for gen in self.loaded.values():
            gen.close()
        self.loaded.clear()


class _LazyScorer:
    def __init__(self, encoder: ModelSpec | None, head: ModelSpec | None, given: Any) -> None:
        self.encoder, self.head, self.scorer = encoder, head, given

    def load(self) -> None:
        if self.scorer is None:
            from finet2i.models.backends.aesthetic import load_aesthetic_scorer

            if self.encoder is None or self.head is None:
                raise ValueError("generate: no aesthetic scorer given and no models.aesthetic_encoder/head")
            self.scorer = load_aesthetic_scorer(self.encoder, self.head)

    def score(self, images: list[Any]) -> list[float]:
        self.load()
        return self.scorer.score(images)


def run_generate(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    shard: str,
    subset: str,
    settings: Mapping[str, Any],
    models: Mapping[str, ModelSpec],
    aesthetic_encoder: ModelSpec | None,
    aesthetic_head: ModelSpec | None,
    seed: int,
    jpeg_quality: int,
    stats_path: str | os.PathLike[str] | None = None,
    generators: Mapping[str, Any] | None = None,
    scorer: Any = None,
    pool: GeneratorPool | None = None,
) -> StageStats:
    """Render one (subset, shard): ``results/enhanced/{shard}.parquet`` -> ``results/images/{subset}/``.

    ``models``: generator kind ("z_image", "flux2") -> ModelSpec, for every kind with a weight > 0.
    ``generators`` / ``scorer``: already built backends (tests); by default they load when first needed.
    ``pool``: a :class:`GeneratorPool` shared by the shards of a batch job (closed by its owner, not here).
    """
    s = GenerateSettings.from_config(settings)
    prompt_kind, _ = parse_subset(subset)
    sizes = sizes_for_subset(subset, load_resolutions(s.resolutions))
    kinds = [k for k, g in s.generators.items() if g.weight > 0]
    available = dict(generators or {})
    missing = [k for k in kinds if k not in available and k not in models]
    if missing:
        raise ValueError(
            f"generate: no model for generator(s) {missing}; set models.{missing[0]} in the config "
            f"or give generate.generators.{missing[0]}.weight: 0"
        )

    records = runner.read_input(in_path)
    plans = {r["id"]: plan_record(r, subset, seed, s, sizes, kinds) for r in records}

    def bucket(r: Record) -> tuple[int, int, int]:
        p = plans[r["id"]]
        return kinds.index(p.kind), p.width, p.height

    def by_bucket(rows: list[Record]) -> list[Record]:
        # Grouped by generator so each pipeline loads once, then by size so that a chunk holds few sizes and
        # each size's images batch together; stable: input order within a bucket.
        return sorted(rows, key=bucket)

    own_pool = pool is None
    pool = GeneratorPool(s, models, generators) if pool is None else pool
    lazy_scorer = _LazyScorer(aesthetic_encoder, aesthetic_head, scorer)

    def render_chunk(chunk: list[Record]) -> list[Record]:
        lazy_scorer.load()  # like a generator, a scorer that does not load fails the job, not each prompt
        buckets: dict[tuple[int, int, int], list[Record]] = {}
        for rec in chunk:
            buckets.setdefault(bucket(rec), []).append(rec)
        out = []
        for rows in buckets.values():
            # Outside render_bucket's guard: a model that does not load is a configuration error, not one
            # bad prompt, and must fail the job.
            gen = pool.get(plans[rows[0]["id"]].kind)
            out += render_bucket(rows, [plans[r["id"]] for r in rows], subset, gen, lazy_scorer, jpeg_quality)
        return out

    def summarize(out: list[Record]) -> dict[str, Any]:
        kept_scores = [r[SCORE] for r in out if r.get(shards.KEPT)]
        return {"images_by_generator": dict(Counter(r["image_generator"] for r in out if r.get(shards.KEPT))),
                "mean_aesthetic": round(sum(kept_scores) / len(kept_scores), 4) if kept_scores else None}

    model_labels = {k: (available[k].model_name if k in available else models[k].label) for k in kinds}
    stage = runner.ChunkedStage(
        STAGE, render_chunk, s.chunk_size, order=by_bucket, close=pool.close if own_pool else None, summarize=summarize,
        key=(subset, settings, seed, jpeg_quality, model_labels, [vars(r) for r in sizes],
             aesthetic_encoder.label if aesthetic_encoder else None, aesthetic_head.label if aesthetic_head else None),
        model=lambda out: ", ".join(sorted({r["image_generator"] for r in out if r.get("image_generator")})) or None)
    return runner.run_chunked(stage, in_path, out_path, shard=shard, stats_path=stats_path, records=records,
                              subset=subset, prompt_column=SUBSET_PROMPT_COLUMN[prompt_kind],
                              candidates=sum(len(p.seeds) for p in plans.values()))
