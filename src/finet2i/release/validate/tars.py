"""Reading samples out of a release tar: one sample (its consecutive members sharing a key) at a time, as a
stream, so memory holds one sample's bytes. A member that cannot be a sample's, or a tar that cannot be read to
its end, is reported through the callback the stream is given; the checks of each sample are in
:mod:`finet2i.release.validate.samples`.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_MEMBER_BYTES = 256 * 1024 * 1024  # no release member is near this; a bigger one is a broken tar, not read


@dataclass
class _RawSample:
    """One sample as the tar holds it: consecutive members sharing a key."""

    key: str
    members: dict[str, bytes] = field(default_factory=dict)  # ext -> bytes
    order: list[str] = field(default_factory=list)  # exts in tar order, repeats included


Report = Callable[[str, str | None, str], None]  # (kind, key, detail) for the tar being read


class _SampleStream:
    """Iterate a tar's samples without reading it whole; a read error becomes a ``bad_tar`` problem and ends the
    stream (``failed`` then says the tar was not read to its end)."""

    def __init__(self, tar: Path, report: Report) -> None:
        self.tar = tar
        self.report = report
        self.failed = False
        self.complete = 0  # samples read whole
        self._it = self._samples()

    def __iter__(self) -> Iterator[_RawSample]:
        return self._it

    def close(self) -> None:
        self._it.close()

    def _samples(self) -> Iterator[_RawSample]:
        current: _RawSample | None = None
        try:
            with tarfile.open(self.tar, mode="r|") as tf:
                for info in tf:
                    parsed = self._member(info)
                    if parsed is None:
                        continue
                    key, ext = parsed
                    reader = tf.extractfile(info)
                    assert reader is not None  # a regular file, checked in _member
                    data = reader.read()
                    if current is not None and current.key != key:
                        self.complete += 1
                        yield current
                        current = None
                    if current is None:
                        current = _RawSample(key)
                    current.order.append(ext)
                    current.members.setdefault(ext, data)
        except (tarfile.TarError, OSError, EOFError) as e:
            # The sample being read is cut short: it is named here, not checked (its missing members would
            # only repeat this problem).
            self.failed = True
            self.report("bad_tar", current.key if current else None,
                        f"{self.tar.name} cannot be read past sample {self.complete}: {e}")
            return
        if current is not None:
            self.complete += 1
            yield current

    def _member(self, info: tarfile.TarInfo) -> tuple[str, str] | None:
        """(key, ext) of a member worth reading; a problem and None for one that is not."""
        name = info.name
        if not info.isfile():
            self.report("bad_member", None, f"member {name!r} is not a regular file")
            return None
        if info.size > MAX_MEMBER_BYTES:
            self.report("bad_member", None, f"member {name!r} is {info.size} bytes, not read")
            return None
        if "/" in name or "." not in name or name.startswith("."):
            self.report("bad_member", None, f"member {name!r} is not named <key>.<ext> at the tar's top level")
            return None
        key, ext = name.split(".", 1)  # as webdataset splits it: the key ends at the first dot
        return key, ext
