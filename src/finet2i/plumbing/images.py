"""Image bytes: validating and normalising what arrives, reading one chunk's worth by id, decoding for a model.

Shard tables that hold images keep them as JPEG bytes in an ``image`` column. No stage reads a whole column of
them at once (a shard's images do not fit in memory): the runner reads rows without it, and a stage fetches
the bytes of one chunk with :func:`image_bytes`.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Why an image is rejected, as written to ``drop_reason``.
NOT_AN_IMAGE = "not_an_image"
CORRUPT = "corrupt"
TRUNCATED = "truncated"
TOO_LARGE = "too_large"
TOO_SMALL = "too_small"
UNSUPPORTED_FORMAT = "unsupported_format"

# The formats photographs arrive in; Pillow is asked for these only. EPS, PS and PDF would run Ghostscript.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG covers MPO (camera multi-picture)
_DOCUMENT_MAGIC = (b"%!PS", b"%PDF", b"\xc5\xd0\xd3\xc6")  # PostScript, PDF, binary EPS


def image_bytes(path: str | os.PathLike[str], key: str, values: Sequence[str]) -> dict[str, bytes | None]:
    """``image`` bytes of the rows of ``path`` whose ``key`` column is in ``values``, read with a filter.

    Ids are written in increasing order, so parquet's row-group statistics skip most of the file."""
    import pyarrow.parquet as pq

    if not values:
        return {}
    t = pq.read_table(path, columns=[key, "image"], filters=[(key, "in", sorted(set(values)))])
    return dict(zip(t.column(key).to_pylist(), t.column("image").to_pylist(), strict=True))


IMAGE_ROW_GROUP = 16  # rows per row group of an images file: a reader by key prunes to a few MB


def copy_images(src: str | os.PathLike[str], dest: str | os.PathLike[str], key: str, values: Sequence[str]) -> int:
    """Write ``key`` and ``image`` of the rows of ``src`` whose ``key`` is in ``values`` to ``dest`` (atomically, in
    ``src``'s order, small row groups), reading ``src`` one row group at a time; returns the rows written. An
    images file that :func:`image_bytes` reads like the table it was cut from."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from finet2i.core.shards import atomic_path

    wanted = pa.array(sorted(set(values)), pa.string())
    source = pq.ParquetFile(src)
    schema = pa.schema([source.schema_arrow.field(key), source.schema_arrow.field("image")])
    written = 0
    with atomic_path(dest) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as out:
        for batch in source.iter_batches(batch_size=IMAGE_ROW_GROUP, columns=[key, "image"]):
            rows = pa.Table.from_batches([batch]).filter(pc.is_in(batch.column(0), value_set=wanted))
            if rows.num_rows:
                out.write_table(rows.cast(schema), row_group_size=IMAGE_ROW_GROUP)
                written += rows.num_rows
    return written


# A row that refers to its image instead of holding it (package's finished samples, docs/disk.md): the bytes are
# the ``image`` of the row of ``image_table`` (a path relative to the folder of the table that holds the row, so
# that a moved results folder keeps its references) whose ``image_key_column`` is ``image_key``.
REFERENCE_COLUMNS = ("image_table", "image_key_column", "image_key")


def reference_to(images_table: str | os.PathLike[str], from_table: str | os.PathLike[str]) -> str:
    """``images_table`` as a row of ``from_table`` refers to it (relative to ``from_table``'s folder)."""
    return os.path.relpath(os.path.abspath(images_table), os.path.dirname(os.path.abspath(from_table)))


def resolve_images(rows: Sequence[dict[str, Any]], table: str | os.PathLike[str], column: str = "jpg") -> None:
    """Fill ``row[column]`` of the rows of ``table`` that refer to their image (``REFERENCE_COLUMNS``), reading each
    referred table once, by key. A referred image that is missing, or not ``jpg_size`` bytes when the row records
    it, fails with the table and key: the table changed after the row was written."""
    base = os.path.dirname(os.path.abspath(table))
    wanted: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get(column) is None and r.get("image_table"):
            where = os.path.normpath(os.path.join(base, r["image_table"]))
            wanted.setdefault((where, r["image_key_column"]), []).append(r)
    for (table, key), refs in wanted.items():
        found = image_bytes(table, key, [r["image_key"] for r in refs])
        for r in refs:
            data = found.get(r["image_key"])
            size = r.get("jpg_size")
            if data is None or (size is not None and len(data) != size):
                raise RuntimeError(f"{table}: the image of {key} {r['image_key']} is "
                                   f"{'missing' if data is None else f'{len(data)} bytes, not {size}'}; the table "
                                   f"changed after its samples were packaged: rerun package for it")
            r[column] = data


def load_image(data: bytes, max_pixels: int | None = None) -> Any:
    """JPEG/PNG bytes -> RGB PIL image, downscaled (aspect kept) to at most ``max_pixels`` when given."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        scale = (max_pixels / (w * h)) ** 0.5
        im = im.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.BICUBIC)
    return im


class Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Normalised:
    jpeg: bytes
    width: int
    height: int
    source_format: str
    source_mode: str


# Magic numbers of formats PIL reads: bytes that start like an image but fail to open are "corrupt",
# anything else is "not_an_image".
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def sniff_image(data: bytes) -> bool:
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _to_rgb(im: Any) -> Any:
    """RGB for every mode a photograph arrives in; transparency is flattened onto white."""
    import numpy as np
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: PIL's convert("L") clips at 255 instead of scaling the range down.
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 or im.mode.startswith("I;16") else 255.0
        arr = np.clip(arr * (255.0 / peak), 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        peak = arr.max(initial=0) or 1.0
        arr = np.clip(arr * (255.0 / (peak if peak > 255 else 255.0)), 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    if im.mode == "CMYK" and im.info.get("icc_profile"):
        try:  # print-profile CMYK converts far better through its ICC profile than through PIL's formula
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception as e:  # a broken profile is common; the plain conversion is still usable
            log.debug("CMYK ICC conversion failed (%s); using PIL's conversion", e)
    return im.convert("RGB") if im.mode != "RGB" else im


def normalise_image(data: bytes, *, max_pixels: int, min_side: int, jpeg_quality: int) -> Normalised:
    """Validate one file's bytes and re-encode them as an RGB JPEG; raises :class:`Rejected` with the reason.

    The header's size is checked before any pixel is decoded, so a 20000x20000 header costs microseconds.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise Rejected(NOT_AN_IMAGE, "empty file")
    Image.init()  # registers every plugin, so that each of ALLOWED_FORMATS can be asked for by name
    try:
        with warnings.catch_warnings():
            # PIL warns between its own bomb limit and twice that; our max_pixels check decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # lazy: reads the header only; only photograph formats are tried (never EPS/PS/PDF: Ghostscript)
            im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as e:
        raise Rejected(TOO_LARGE, str(e)) from e
    except UnidentifiedImageError as e:
        if data.startswith(_DOCUMENT_MAGIC):
            raise Rejected(UNSUPPORTED_FORMAT, f"a PostScript/PDF document, not one of {ALLOWED_FORMATS}") from e
        raise Rejected(CORRUPT if sniff_image(data) else NOT_AN_IMAGE, "PIL cannot identify the bytes") from e
    except Exception as e:  # a malformed header can raise nearly anything from a plugin
        raise Rejected(CORRUPT, f"{type(e).__name__}: {e}") from e
    fmt = str(im.format or "unknown")
    w, h = im.size
    if w * h > max_pixels:
        raise Rejected(TOO_LARGE, f"{w}x{h} = {w * h} pixels > max_pixels {max_pixels}")
    if min(w, h) < min_side:
        raise Rejected(TOO_SMALL, f"{w}x{h}: short side < min_side {min_side}")
    mode = im.mode
    try:
        im.load()
    except OSError as e:
        raise Rejected(TRUNCATED if "truncated" in str(e).lower() else CORRUPT, f"{fmt}: {e}") from e
    except Exception as e:
        raise Rejected(CORRUPT, f"{fmt}: {type(e).__name__}: {e}") from e
    try:
        im = ImageOps.exif_transpose(im)  # camera orientation, so captions describe an upright picture
    except Exception as e:  # a broken EXIF block must not lose a good photograph
        log.debug("EXIF orientation ignored: %s", e)
    rgb = _to_rgb(im)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=jpeg_quality)
    return Normalised(out.getvalue(), rgb.width, rgb.height, fmt, mode)
