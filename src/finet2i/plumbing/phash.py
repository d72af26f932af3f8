"""A 64-bit perceptual hash of a photo (DCT pHash), for near-duplicates that are not byte-identical.

The same photograph posted to Pexels and Pixabay comes back re-encoded, resized and sometimes recompressed:
its sha256 differs, its pHash does not (or by a few bits). The hash: the image as 32x32 greyscale, its 2-D
DCT-II, the 8x8 lowest frequencies, one bit per coefficient above their median (the DC term excluded from the
median). Two photos are the same when the Hamming distance of their hashes is at most
``curated.near_duplicates.max_distance``.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np

SIZE, LOW = 32, 8


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    n = np.arange(SIZE)
    m = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * SIZE))
    m[0] /= np.sqrt(2)
    return m * np.sqrt(2 / SIZE)


def phash(data: bytes) -> str:
    """The hash of an encoded image, as 16 hex digits."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.draft("L", (SIZE * 4, SIZE * 4))  # JPEG: decode at a reduced scale, cheap for a 24 MP photo
        grey = np.asarray(im.convert("L").resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.float64)
    d = _dct_matrix()
    low = (d @ grey @ d.T)[:LOW, :LOW].ravel()
    bits = low > np.median(low[1:])
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()
