"""Fetching image bytes for the curated branch, img2dataset-style: local files, or URLs with a timeout, bounded
retries with exponential backoff, and a byte cap. Every failure is a :class:`Fetched` with a drop reason,
never an exception: one bad URL must not end a shard.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

UNREACHABLE = "unreachable"
TOO_LARGE = "too_large"

URL_SCHEMES = ("http://", "https://")
USER_AGENT = "finet2i-curated/0.1 (+https://github.com/; dataset research crawler)"


@dataclass
class Fetched:
    data: bytes | None
    attempts: int
    reason: str | None = None
    error: str | None = None


def _retryable(e: BaseException) -> bool:
    if isinstance(e, urllib.error.HTTPError):
        return e.code in (408, 425, 429) or e.code >= 500
    return isinstance(e, (urllib.error.URLError, TimeoutError, ConnectionError, OSError))


@dataclass(frozen=True)
class FetchSettings:
    timeout_s: float
    retries: int
    backoff_s: float  # first retry waits this long, then doubles
    max_bytes: int  # a download beyond this is not a photograph we want


def read_local(path: str, max_bytes: int) -> Fetched:
    """A local file's bytes, or why not (too large, unreadable)."""
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            return Fetched(None, 1, TOO_LARGE, f"file is {size} bytes > max_bytes {max_bytes}")
        return Fetched(Path(path).read_bytes(), 1)
    except OSError as e:
        return Fetched(None, 1, UNREACHABLE, f"{type(e).__name__}: {e}")


def fetch_url(url: str, settings: FetchSettings) -> Fetched:
    """Download a URL with a timeout and bounded retries (exponential backoff)."""
    attempts = 0
    last: BaseException | None = None
    for attempt in range(settings.retries + 1):
        attempts += 1
        try:
            req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(req, timeout=settings.timeout_s) as resp:
                data = resp.read(settings.max_bytes + 1)
            if len(data) > settings.max_bytes:
                return Fetched(None, attempts, TOO_LARGE, f"download over max_bytes {settings.max_bytes}")
            return Fetched(data, attempts)
        except Exception as e:  # every failure of one sample is counted, never fatal
            last = e
            if not _retryable(e) or attempt == settings.retries:
                break
            time.sleep(settings.backoff_s * (2 ** attempt))
    return Fetched(None, attempts, UNREACHABLE, f"{type(last).__name__}: {last}")


T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map`` over a thread pool, in input order, with at most ``2 * workers`` results in flight.

    ``Executor.map`` submits everything at once, so finished downloads would pile up in memory while the
    consumer decodes; here a window bounds that.
    """
    workers = max(1, workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        window: deque[Future[R]] = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
