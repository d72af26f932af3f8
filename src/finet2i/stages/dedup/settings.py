"""The dedup stage's settings: the ``dedup`` config section (defaults from the schema) and the run's seed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from finet2i.core.settings import default, from_section


@dataclass(frozen=True)
class DedupSettings:
    threshold: float = default("dedup.threshold")
    groups: int = default("dedup.groups")
    partition: str = default("dedup.partition")  # kmeans | hash
    kmeans_sample: int = default("dedup.kmeans_sample")
    kmeans_iters: int = default("dedup.kmeans_iters")
    seed: int = 0  # the run's top-level `seed`, not a key of the dedup section
    max_neighbors: int = default("dedup.max_neighbors")  # stored earlier survivors per prompt dropped in-group
    block_size: int = default("dedup.block_size")  # prompts compared per product block
    device: str = default("dedup.device")  # auto | cpu | cuda
    precision: str = default("dedup.precision")  # auto | fp32 | bf16 | fp16 (candidates only; decisions float64)

    @classmethod
    def from_config(cls, section: Mapping[str, Any], seed: int = 0) -> DedupSettings:
        s = from_section(cls, {**section, "seed": seed})
        s.validate()
        return s

    def validate(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"dedup.threshold must be in (0, 1), got {self.threshold}")
        if self.groups < 1:
            raise ValueError(f"dedup.groups must be >= 1, got {self.groups}")
        if self.partition not in ("kmeans", "hash"):
            raise ValueError(f"dedup.partition must be 'kmeans' or 'hash', got {self.partition!r}")
