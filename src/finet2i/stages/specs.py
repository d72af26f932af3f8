"""Stage ``specs`` (paper 3.1.1): sample one shard of controlled prompt specs from the weighted taxonomy.

No model and no upstream table: the shard is a pure function of (taxonomy, seed, shard, n), so it is cheap to
rerun and a resumed workflow produces byte-identical records. Every spec is kept; filtering starts downstream.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import pyarrow as pa

from finet2i.core import shards
from finet2i.recipe.taxonomy import load_taxonomy, sample_specs

log = logging.getLogger(__name__)

STAGE = "specs"

SPEC_SCHEMA = pa.schema([
    ("id", pa.string()), ("shard", pa.string()), ("index", pa.int64()),
    ("category", pa.string()), ("subcategory", pa.string()), ("style", pa.string()),
    ("task", pa.string()), ("task_instruction", pa.string()),
    ("template", pa.string()), ("template_instruction", pa.string()),
    ("length_target", pa.string()), ("min_words", pa.int64()), ("max_words", pa.int64()),
    ("seed", pa.int64()),
    (shards.KEPT, pa.bool_()), (shards.DROP_REASON, pa.string()),
])


def run_specs(taxonomy_path: str | os.PathLike[str], table_path: str | os.PathLike[str], *, shard: str,
              n: int, seed: int, stats_path: str | os.PathLike[str] | None = None) -> shards.StageStats:
    """Sample ``n`` specs for ``shard`` and write ``results/specs/{shard}.parquet`` + its stats JSON."""
    started = time.monotonic()
    taxonomy = load_taxonomy(taxonomy_path)
    records = [shards.mark(r, None) for r in sample_specs(taxonomy, shard, n, seed)]
    digest = hashlib.sha256(Path(taxonomy_path).read_bytes()).hexdigest()[:16]
    log.info("specs/%s: %d specs from %s (sha256 %s)", shard, len(records), taxonomy_path, digest)
    return shards.write_stage_output(table_path, records, stage=STAGE, shard=shard, started=started,
                                     stats_file=stats_path, schema=SPEC_SCHEMA, taxonomy=str(taxonomy_path),
                                     taxonomy_sha256=digest, seed=seed)
