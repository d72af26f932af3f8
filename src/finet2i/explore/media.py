"""Bytes the explorer serves: images read by seeking into the release tars, thumbnails made on demand and
cached, images of dropped records from the stage tables, and files under RESULTS_DIR.

Every path a request names goes through :func:`inside`: it is resolved (symlinks, ``..``) and refused unless
it stays under the results folder, so ``/files/../../etc/passwd`` or a symlink out of the folder gets a 404.
"""

from __future__ import annotations

import logging
import os
import tarfile
import threading
from pathlib import Path
from typing import Any

from finet2i.explore.query import BrokenIndex, safe_id

log = logging.getLogger(__name__)

THUMB_SIDE = 256


def inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` resolved, if it is a file under ``root``; else None."""
    if "\x00" in relative:
        return None
    try:
        path = (root / relative.lstrip("/")).resolve()
    except (OSError, RuntimeError):
        return None
    if path != root and root not in path.parents:
        return None
    return path if path.is_file() else None


MAX_MEMBER_BYTES = 1 << 30  # no release image is this large; an index row that says so is broken
BLOCK = tarfile.BLOCKSIZE  # 512: a member's header block sits right before its data


def member_at(f: Any, file_size: int, name: str, offset: Any, size: Any) -> str | None:
    """Why an index row's ``(offset, size)`` for member ``name`` does not point at exactly that member's data in
    the open tar ``f`` (None when it does): both whole numbers, the size at most :data:`MAX_MEMBER_BYTES`, the
    data inside the file, and the header block right before it naming ``name`` with that size."""
    if isinstance(offset, bool) or isinstance(size, bool) or not isinstance(offset, int) or \
            not isinstance(size, int):
        return f"offset {offset!r} and size {size!r} are not whole numbers"
    if offset < BLOCK or size < 0 or size > MAX_MEMBER_BYTES or offset + size > file_size:
        return (f"offset {offset:,} and size {size:,} do not lie inside the tar ({file_size:,} bytes) after a "
                f"member header")
    f.seek(offset - BLOCK)
    header = f.read(BLOCK)
    try:
        info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    except tarfile.TarError:
        return f"no tar header before offset {offset:,}"
    if info.name != name or info.size != size or not info.isfile():
        return (f"the header before offset {offset:,} is for {info.name!r} ({info.size:,} bytes), not {name!r} "
                f"({size:,} bytes)")
    return None


class TarImages:
    """A release sample's image by (folder, tar, offset, size): one seek and one read, after checking that the
    index row's offset and size are exactly the member's (:func:`member_at`: else :class:`BrokenIndex`, never a
    header's or a neighbour's bytes served as an image). Indexes written before assemble recorded offsets (or a
    downloaded release's) fall back to a scan of the tar's headers, once per tar, remembered."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._members: dict[Path, dict[str, tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def _tar(self, folder: str, tar: str) -> Path | None:
        return inside(self.root, f"dataset/{folder}/{tar}")

    def read(self, folder: str, tar: str, key: str, offset: int | None, size: int | None) -> bytes | None:
        path = self._tar(folder, tar)
        if path is None:
            return None
        if offset is None or size is None:
            where = self._scan(path).get(f"{key}.jpg")
            if where is None:
                return None
            offset, size = where
        with open(path, "rb") as f:
            why = member_at(f, os.fstat(f.fileno()).st_size, f"{key}.jpg", offset, size)
            if why is not None:
                raise BrokenIndex(f"dataset/{folder}/{tar.replace('.tar', '.parquet')}: the row of {key}: {why}; "
                                  f"the index does not match its tar: rerun assemble for this subset (or "
                                  f"delete the index: the explorer then reads the tar's own headers), then "
                                  f"restart the explorer")
            f.seek(offset)
            data = f.read(size)
        return data if len(data) == size else None

    def _scan(self, path: Path) -> dict[str, tuple[int, int]]:
        with self._lock:
            if path not in self._members:
                try:
                    with tarfile.open(path) as tf:
                        self._members[path] = {m.name: (m.offset_data, m.size) for m in tf.getmembers()
                                               if m.isfile()}
                except (OSError, tarfile.TarError) as e:
                    raise BrokenIndex(f"{path.parent.name}/{path.name} cannot be read as a tar ({e}); check it "
                                      f"with `finet2i validate`") from None
            return self._members[path]


def thumbnail(data: bytes, side: int = THUMB_SIDE) -> bytes:
    """A JPEG at most ``side`` pixels on its longer side (the report's, at the explorer's size)."""
    from finet2i.reporting.thumbnails import thumbnail as make

    return make(data, side)


class ThumbCache:
    """Thumbnails on disk under ``cache/thumbs/<folder>/<key>.jpg``, made the first time they are asked for."""

    def __init__(self, cache: Path) -> None:
        self.dir = cache / "thumbs"

    def get(self, folder: str, key: str, make: callable) -> bytes | None:  # type: ignore[valid-type]
        if not (safe_id(folder) and safe_id(key)):
            return None
        path = self.dir / folder / f"{key}.jpg"
        if path.is_file():
            return path.read_bytes()
        data = make()
        if data is None:
            return None
        thumb = thumbnail(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(thumb)
        os.replace(tmp, path)
        return thumb


def record_image(table: Path, record_id: str) -> bytes | None:
    """The ``image`` bytes of one record of a stage table (generate, curated_ingest)."""
    from finet2i.plumbing.images import image_bytes

    return image_bytes(table, "id", [record_id]).get(record_id)
