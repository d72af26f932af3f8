"""What the machine a job runs on can do, for the stages that pick a precision by it (embed, dedup).

A module of its own so that embed's code fingerprint (finet2i.core.codehash) does not include the dedup
algorithm: an edit of finet2i.stages.dedup's modules must not rerun the embeddings and everything after them.
"""

from __future__ import annotations


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX-512 BF16: bfloat16 products are ~3x float32 there; elsewhere they are emulated and slow."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
