"""The demo's real-image folder: photographs bundled with scikit-image, plus files the ingest must reject.

The good files cover what real platforms serve: plain JPEGs, a PNG under a ``.jpg`` name, a CMYK JPEG, a
16-bit greyscale PNG, an RGBA PNG and a palette GIF; each must come out of ingest as an RGB JPEG. The bad
files show the drop reasons in the demo's funnel: a truncated JPEG (``truncated``), a text file named
``.jpg`` (``not_an_image``), a JPEG with a broken scan (``corrupt``), a thumbnail (``too_small`` at the demo's
``min_side``) and the same photograph twice (``duplicate``).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# Bundled with scikit-image (no download): name -> what it shows.
# (skimage's "cat" is "chelsea" again, so it is left out.)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def _jpeg(im, **kw) -> bytes:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    im.save(out, "JPEG", quality=92, **kw)
    return out.getvalue()


def write_real_images(out_dir: Path) -> Path:
    """Write the demo's real-image folder (idempotent: files are rewritten with the same bytes)."""
    import numpy as np
    import skimage.data
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    for name in PHOTOS:
        files[f"{name}.jpg"] = _jpeg(Image.fromarray(getattr(skimage.data, name)()))

    coffee = Image.fromarray(skimage.data.coffee())
    png = io.BytesIO()
    coffee.save(png, "PNG")
    files["coffee_really_a_png.jpg"] = png.getvalue()  # PNG bytes behind a .jpg name: kept, re-encoded
    files["rocket_cmyk.jpg"] = _jpeg(Image.fromarray(skimage.data.rocket()).convert("CMYK"))
    camera16 = skimage.data.camera().astype(np.uint16) * 257  # 16-bit greyscale
    png16 = io.BytesIO()
    Image.fromarray(camera16).save(png16, "PNG")
    files["camera_16bit.png"] = png16.getvalue()
    logo = io.BytesIO()
    Image.fromarray(skimage.data.logo()).save(logo, "PNG")  # RGBA: flattened onto white
    files["logo_rgba.png"] = logo.getvalue()
    gif = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).convert("P", palette=Image.Palette.ADAPTIVE).save(gif, "GIF")
    files["chelsea_palette.gif"] = gif.getvalue()

    astronaut = files["astronaut.jpg"]
    files["astronaut_copy.jpg"] = astronaut  # duplicate
    files["broken_truncated.jpg"] = astronaut[: len(astronaut) // 2]  # truncated
    # A valid frame header (PIL reads the size) followed by garbage instead of tables and scan: no decoder
    # can make pixels of it.
    sof = astronaut.index(b"\xff\xc0")
    sof_len = int.from_bytes(astronaut[sof + 2:sof + 4], "big")
    files["broken_corrupt.jpg"] = astronaut[:2] + astronaut[sof:sof + 2 + sof_len] + bytes(range(256)) * 8 \
        + b"\xff\xd9"
    files["not_an_image.jpg"] = b"this is a note, not a photograph\n"
    files["thumbnail.jpg"] = _jpeg(Image.fromarray(skimage.data.astronaut()).resize((32, 32)))

    for name, data in sorted(files.items()):
        path = out_dir / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
    log.info("demo real images: %d files in %s", len(files), out_dir)
    return out_dir


def write_unsplash_lite(out_dir: Path, port: int) -> Path:
    """The demo's Unsplash Lite table: ``photos.tsv000`` in the dataset's documented columns, three photos whose
    ``photo_image_url`` is served by the demo's fake sources on ``127.0.0.1:<port>`` (finet2i.demo.fake_apis),
    and one row without an image URL (listed, then dropped as ``missing_fields``)."""
    from finet2i.sources.unsplash_lite import DOCUMENTED_COLUMNS

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = ("green trees covered with fog during daytime", "a body of water near a mountain under a blue sky",
             "a quiet city street in the rain")
    lines = ["\t".join(DOCUMENTED_COLUMNS)]
    for i in range(4):
        row = dict.fromkeys(DOCUMENTED_COLUMNS, "")
        pid = f"demo{3000 + i}"
        row.update(photo_id=pid, photo_url=f"https://unsplash.com/photos/{pid}", photo_width="480",
                   photo_height="360", photographer_username=f"demo_photographer_{i}",
                   photographer_first_name="Demo", photographer_last_name=f"Photographer {i}",
                   photo_image_url=f"http://127.0.0.1:{port}/img/{3000 + i}.jpg" if i < 3 else "",
                   ai_description=texts[i] if i < 3 else "", photo_description="")
        lines.append("\t".join(row[c] for c in DOCUMENTED_COLUMNS))
    path = out_dir / "photos.tsv000"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
