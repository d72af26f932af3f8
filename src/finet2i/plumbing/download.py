"""Fetching image bytes for the curated branch: local files, or URLs that cannot be turned against the machine.

Every failure is a :class:`Fetched` with a drop reason, never an exception: one bad URL must not end a shard.

URLs, img2dataset-style, and stricter:
* http and https only, checked again on every redirect (at most :data:`MAX_REDIRECTS`);
* the host's addresses are resolved first: loopback, link-local (cloud metadata endpoints), private, reserved
  and multicast addresses are refused unless ``allow_private_addresses`` (the tests' local server needs it);
* a byte cap and a total deadline per URL, retries included: a server that trickles one byte at a time holds a
  worker for ``deadline_s`` at most (reads take what has arrived, :meth:`http.client.HTTPResponse.read1`);
* bounded retries with exponential backoff that honour ``Retry-After`` (capped by :data:`MAX_BACKOFF_S` and
  the deadline);
* spaces and non-ASCII characters are quoted; a URL's user-info, query and fragment (signed URLs carry their
  tokens there) never reach a table, a log line or an error message: :func:`redact`.
Local files: regular files only (``/dev/zero`` or a FIFO named in a list is not read), within the byte cap.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import ipaddress
import itertools
import math
import os
import socket
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from finet2i.plumbing.images import TOO_LARGE  # one reason for an oversized download, file or image header

UNREACHABLE = "unreachable"
REFUSED_URL = "refused_url"
NOT_A_FILE = "not_a_regular_file"

URL_SCHEMES = ("http://", "https://")
USER_AGENT = "finet2i-curated/0.1 (+https://github.com/; dataset research crawler)"
MAX_REDIRECTS = 5
MAX_BACKOFF_S = 60.0
READ_SIZE = 1 << 16


@dataclass
class Fetched:
    data: bytes | None
    attempts: int
    reason: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class FetchSettings:
    timeout_s: float  # each connect and read
    retries: int
    backoff_s: float  # first retry waits this long, then doubles (or what Retry-After says)
    max_bytes: int  # a download beyond this is not a photograph we want
    deadline_s: float = 120.0  # everything one URL may take, retries and waits included
    allow_private_addresses: bool = False


class Refused(Exception):
    """A URL that is not fetched: another scheme, or an address inside the machine's networks."""


def redact(url: str) -> str:
    """``scheme://host[:port]/path``: what may be recorded or logged of a URL (no user-info, query, fragment)."""
    try:
        p = urllib.parse.urlsplit(url)
        host = p.hostname or ""
        port = f":{p.port}" if p.port else ""
    except ValueError:
        return "<unparseable url>"
    return urllib.parse.urlunsplit((p.scheme, host + port, p.path, "", ""))


def scrub_secrets(text: str, url: str) -> str:
    """``text`` (an error message) with every secret part of ``url`` removed."""
    p = urllib.parse.urlsplit(url)
    for secret in (url, quote_url(url), p.query, p.fragment, p.password or "", p.username or ""):
        if secret:
            text = text.replace(secret, redact(url) if secret.startswith(("http", "HTTP")) else "<redacted>")
    return text


def quote_url(url: str) -> str:
    """Percent-encode what a URL may not hold raw (spaces, non-ASCII); the host becomes IDNA."""
    p = urllib.parse.urlsplit(url.strip())
    host = p.hostname or ""
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        pass  # refused later as unresolvable
    netloc = host + (f":{p.port}" if p.port else "")
    if p.username:
        password = f":{urllib.parse.quote(p.password)}" if p.password else ""
        netloc = f"{urllib.parse.quote(p.username)}{password}@{netloc}"
    safe = "/%:@!$&'()*+,;=-._~"
    return urllib.parse.urlunsplit((p.scheme, netloc, urllib.parse.quote(p.path, safe=safe),
                                    urllib.parse.quote(p.query, safe=safe + "?"), ""))


PRIVATE_FLAG = "curated.allow_private_addresses"  # what lets the curated downloads reach a local server


def check_target(url: str, allow_private: bool, flag: str = PRIVATE_FLAG) -> None:
    """Raise :class:`Refused` unless ``url`` is http(s) on a host whose every address is a public one (``flag``:
    the setting that allows private ones, named in the message)."""
    p = urllib.parse.urlsplit(url)
    if p.scheme not in ("http", "https"):
        raise Refused(f"scheme {p.scheme or '(none)'}: only http and https are fetched")
    if not p.hostname:
        raise Refused("no host")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(p.hostname, p.port or (443 if p.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise Refused(f"host does not resolve ({type(e).__name__})") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise Refused(f"{p.hostname} resolves to {ip}, inside the machine's networks "
                          f"(set {flag} to fetch from it)")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def __init__(self, allow_private: bool, flag: str = PRIVATE_FLAG) -> None:
        self.allow_private = allow_private
        self.flag = flag

    def http_error_302(self, req: Any, fp: Any, code: int, msg: str, headers: Any) -> Any:
        # Checked before urllib looks at it: a redirect to file://, ftp:// or 169.254.169.254 stops here.
        location = headers.get("location") or headers.get("uri")
        if location:
            check_target(urllib.parse.urljoin(req.full_url, location), self.allow_private, self.flag)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def checked_opener(allow_private: bool, flag: str = PRIVATE_FLAG) -> urllib.request.OpenerDirector:
    """An opener for http(s) only (no file://, ftp:// or data: handlers to redirect into) whose every redirect
    is checked by :func:`check_target`: the curated downloads' and fetch-models'."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
                    _CheckedRedirects(allow_private, flag)):
        opener.add_handler(handler)
    return opener



def copy_capped(resp: Any, write: Callable[[bytes], Any], max_bytes: int, deadline: float) -> int:
    """Pass the body to ``write`` as it arrives, until EOF, more than ``max_bytes`` (returns the size read so far,
    over the cap: the caller sees it), or the deadline (``time.monotonic()``; TimeoutError): a server that
    trickles or never ends holds a reader no longer. The one capped reader: image downloads here, the photo APIs'
    answers (finet2i.sources.http) and fetch-models' files (finet2i.models.fetch)."""
    size = 0
    read = getattr(resp, "read1", None) or resp.read
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("deadline_s passed while reading the body")
        chunk = read(READ_SIZE)
        if not chunk:
            return size
        write(chunk)
        size += len(chunk)
        if size > max_bytes:
            return size


def read_capped(resp: Any, max_bytes: int, deadline: float) -> bytes:
    """The body in memory, by :func:`copy_capped` (more than ``max_bytes`` of it when the cap was passed)."""
    parts: list[bytes] = []
    copy_capped(resp, parts.append, max_bytes, deadline)
    return b"".join(parts)


def _retryable(e: BaseException) -> bool:
    if isinstance(e, urllib.error.HTTPError):
        return e.code in (408, 425, 429) or e.code >= 500
    return isinstance(e, (urllib.error.URLError, TimeoutError, ConnectionError, OSError))


def retry_after_s(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header value asks to wait (seconds, or an HTTP date), None when it says nothing
    readable. The one parser of that header (image downloads here, the photo sites' APIs in finet2i.sources)."""
    if not value:
        return None
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _retry_after(e: BaseException) -> float | None:
    """Seconds the server asked to wait, if it did."""
    return retry_after_s(e.headers.get("Retry-After")) if isinstance(e, urllib.error.HTTPError) and e.headers \
        else None


def fetch_url(url: str, settings: FetchSettings) -> Fetched:
    """Download one URL within its deadline and byte cap; refused targets are never connected to."""
    deadline = time.monotonic() + settings.deadline_s
    quoted = quote_url(url)
    try:
        check_target(quoted, settings.allow_private_addresses)
    except Refused as e:
        return Fetched(None, 0, REFUSED_URL, scrub_secrets(str(e), url))
    opener = checked_opener(settings.allow_private_addresses)
    headers = {"User-Agent": USER_AGENT}
    parts = urllib.parse.urlsplit(quoted)
    if parts.username:  # user-info goes into a header: urllib would take it for part of the host name
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        quoted = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    attempts = 0
    last: BaseException | None = None
    for attempt in range(settings.retries + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        attempts += 1
        try:
            req = urllib.request.Request(quoted, headers=headers)
            with opener.open(req, timeout=min(settings.timeout_s, remaining)) as resp:
                data = read_capped(resp, settings.max_bytes, deadline)
            if len(data) > settings.max_bytes:
                return Fetched(None, attempts, TOO_LARGE, f"download over max_bytes {settings.max_bytes}")
            return Fetched(data, attempts)
        except Refused as e:  # a redirect to a refused target
            return Fetched(None, attempts, REFUSED_URL, scrub_secrets(f"redirect refused: {e}", url))
        except Exception as e:  # every failure of one sample is counted, never fatal
            last = e
            if isinstance(e, urllib.error.URLError) and isinstance(e.reason, Refused):
                return Fetched(None, attempts, REFUSED_URL, scrub_secrets(f"redirect refused: {e.reason}", url))
            if not _retryable(e) or attempt == settings.retries:
                break
            wait = _retry_after(e)
            wait = settings.backoff_s * (2 ** attempt) if wait is None else wait
            time.sleep(max(0.0, min(wait, MAX_BACKOFF_S, deadline - time.monotonic())))
    error = f"{type(last).__name__}: {last}" if last is not None else f"deadline_s {settings.deadline_s} passed"
    return Fetched(None, attempts, UNREACHABLE, scrub_secrets(error, url))


def read_local(path: str, max_bytes: int) -> Fetched:
    """A local regular file's bytes, or why not (too large, unreadable, a device or FIFO)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return Fetched(None, 1, NOT_A_FILE, "not a regular file (a device, FIFO or socket is never read)")
        if st.st_size > max_bytes:
            return Fetched(None, 1, TOO_LARGE, f"file is {st.st_size} bytes > max_bytes {max_bytes}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # a file that grew since the stat is still capped
        if len(data) > max_bytes:
            return Fetched(None, 1, TOO_LARGE, f"file is over max_bytes {max_bytes}")
        return Fetched(data, 1)
    except OSError as e:
        return Fetched(None, 1, UNREACHABLE, f"{type(e).__name__}: {e.strerror or e}")


T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map`` over a thread pool, results in input order, at most ``4 * workers`` items in flight or waiting.

    Items are fetched as workers free up, so one slow URL at the head stops only the yielding (for at most its
    deadline), not the fetching of the ones behind it; the bound keeps finished downloads from piling up.
    """
    workers = max(1, workers)
    window = 4 * workers
    it = iter(items)
    pending: dict[int, Future[R]] = {}
    submitted = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        for done in itertools.count():
            while len(pending) < window:
                try:
                    item = next(it)
                except StopIteration:
                    break
                pending[submitted] = pool.submit(fn, item)
                submitted += 1
            if done not in pending:
                return
            yield pending.pop(done).result()


class FetchCache:
    """Downloaded bodies of one shard, kept until its table is written (then :meth:`remove`): a killed job's
    rerun reads them instead of fetching again. One file per item key (its sha256): 4 bytes of attempts, then
    the body, written atomically."""

    def __init__(self, table: str | os.PathLike[str]) -> None:
        self.dir = Path(f"{table}.fetched")
        self.hits = 0

    def fetch(self, key: str, get: Callable[[], Fetched]) -> Fetched:
        from finet2i.core.shards import atomic_path

        p = self.dir / hashlib.sha256(key.encode("utf-8", "backslashreplace")).hexdigest()
        try:
            raw = p.read_bytes()
            self.hits += 1
            return Fetched(raw[4:], int.from_bytes(raw[:4], "big"))
        except OSError:
            pass
        got = get()
        if got.data is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(p) as tmp:
                tmp.write_bytes(got.attempts.to_bytes(4, "big") + got.data)
        return got

    def remove(self) -> None:
        if self.dir.exists():
            for f in self.dir.iterdir():
                f.unlink()
            self.dir.rmdir()
