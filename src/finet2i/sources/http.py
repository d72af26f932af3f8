"""A polite JSON client for the photo APIs (Pexels, Pixabay): one request at a time, paced, patient, secret-safe.

* **Pacing**: at most ``requests`` per ``seconds`` (the key's documented allowance), spaced evenly, so a long
  listing never bursts into a 429; and when an answer's ``X-RateLimit-Remaining`` says 0, it waits for
  ``X-RateLimit-Reset`` (seconds from now for Pixabay; a UNIX time for Pexels: a value above 10^9 is read as one).
* **Backoff**: 429 and 5xx (and a connection failure, a timeout, a body that is not JSON) are retried up to
  ``retries`` times, waiting what ``Retry-After`` says (seconds or an HTTP date), else ``X-RateLimit-Reset`` on a
  429, else ``backoff_s`` doubling, each wait capped by ``max_wait_s``. Then :class:`ApiError`: the job fails and
  a rerun continues where it stopped (the answers already received are stored, see :mod:`finet2i.sources.listing`).
* **A refused key** (401, 403) is an :class:`ApiError` at once, naming the environment variable, never the key.
* **Secrets**: the key travels in a header (Pexels) or a query parameter (Pixabay); every message that leaves
  this module (logs, errors) goes through :meth:`PoliteClient.scrub`, and a request is shown without its secret
  parameters. Redirects are not followed: an API that redirects would carry the ``Authorization`` header to
  another host (urllib keeps it), so a redirect is an error that names where it pointed.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from finet2i.plumbing.download import USER_AGENT, retry_after_s

log = logging.getLogger(__name__)

EPOCH_THRESHOLD = 1_000_000_000  # an X-RateLimit-Reset above this is a UNIX time, below it seconds from now


class ApiError(RuntimeError):
    """A listing that cannot go on: a refused key, or an answer that stayed wrong after every retry."""


@dataclass(frozen=True)
class RateLimit:
    requests: int  # the key's allowance ...
    seconds: float  # ... per this many seconds

    @property
    def interval_s(self) -> float:
        return self.seconds / max(1, self.requests)


@dataclass
class Answer:
    body: Any
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    attempts: int = 1


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None  # the 3xx surfaces as an HTTPError


class PoliteClient:
    def __init__(self, *, rate: RateLimit, key_env: str, secrets: tuple[str, ...] = (),
                 secret_params: tuple[str, ...] = (), headers: Mapping[str, str] | None = None,
                 timeout_s: float = 30.0, retries: int = 5, backoff_s: float = 2.0, max_wait_s: float = 3600.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.key_env = key_env
        self.secrets = tuple(s for s in secrets if s)
        self.secret_params = secret_params
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        self.timeout_s, self.retries, self.backoff_s, self.max_wait_s = timeout_s, retries, backoff_s, max_wait_s
        self.sleep, self.clock = sleep, clock
        self.requests_sent = 0
        self.waited_s = 0.0
        self._next_at = 0.0  # monotonic time before which no request may leave
        self._opener = urllib.request.build_opener(_NoRedirect())

    # -- secrets -------------------------------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "<redacted>").replace(urllib.parse.quote(s, safe=""), "<redacted>")
        return text

    def shown(self, url: str, params: Mapping[str, Any]) -> str:
        """The request as logs and errors may show it: without the secret parameters."""
        public = {k: v for k, v in params.items() if k not in self.secret_params}
        return self.scrub(f"{url}?{urllib.parse.urlencode(public)}" if public else url)

    # -- pacing --------------------------------------------------------------------------------------------
    def _wait(self, seconds: float, why: str) -> None:
        seconds = max(0.0, min(seconds, self.max_wait_s))
        if seconds > 0:
            if seconds >= 5:
                log.info("waiting %.0f s (%s)", seconds, why)
            self.waited_s += seconds
            self.sleep(seconds)

    def _pace(self) -> None:
        self._wait(self._next_at - self.clock(), "rate limit pacing")

    def _after(self, headers: Mapping[str, str]) -> None:
        self._next_at = self.clock() + self.rate.interval_s
        remaining = _number(headers.get("x-ratelimit-remaining"))
        if remaining is not None and remaining <= 0:
            reset = _reset_s(headers)
            if reset is not None:
                self._next_at = max(self._next_at, self.clock() + reset)

    # -- one GET -------------------------------------------------------------------------------------------
    def get_json(self, url: str, params: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> Answer:
        query = urllib.parse.urlencode(params)
        full = f"{url}?{query}" if query else url
        shown = self.shown(url, params)
        last = ""
        for attempt in range(self.retries + 1):
            self._pace()
            self.requests_sent += 1
            status, headers, raw, wait = 0, {}, b"", None
            try:
                req = urllib.request.Request(full, headers={**self.headers, **(extra or {})})
                with self._opener.open(req, timeout=self.timeout_s) as resp:
                    status, headers, raw = resp.status, _lower(resp.headers), resp.read()
            except urllib.error.HTTPError as e:
                status, headers = e.code, _lower(e.headers)
                try:
                    raw = e.read()
                except Exception:  # noqa: BLE001 - the body of an error is only shown
                    raw = b""
            except Exception as e:  # noqa: BLE001 - connection refused, reset, timeout: retried
                last = f"{type(e).__name__}: {e}"
                self._after({})
                self._wait(self.backoff_s * 2 ** attempt, f"{shown}: {self.scrub(last)}")
                continue
            self._after(headers)
            if status in (401, 403) or (status == 400 and b"key" in raw.lower()):
                raise ApiError(f"{shown}: HTTP {status}: the API refused the key in ${self.key_env}; check that "
                               f"the variable holds a valid key for this API (nothing was written)")
            if 300 <= status < 400:
                raise ApiError(f"{shown}: HTTP {status} redirect to {self.scrub(headers.get('location', '?'))}; "
                               f"not followed (it would carry the key to another host): fix api_url")
            if status == 429 or status >= 500:
                last = f"HTTP {status}"
                wait = _retry_after(headers)
                if wait is None and status == 429:
                    wait = _reset_s(headers)
                if wait is None:
                    wait = self.backoff_s * 2 ** attempt
                log.info("%s: %s (attempt %d), retrying in %.1f s", shown, last, attempt + 1, wait)
                self._wait(wait, last)
                continue
            if status >= 400:
                body = self.scrub(raw[:200].decode("utf-8", "replace"))
                raise ApiError(f"{shown}: HTTP {status}: {body!r}; the request is wrong, fix the source's "
                               f"settings (query, filters)")
            try:
                body = json.loads(raw)
            except ValueError:
                last = f"HTTP {status} with a body that is not JSON ({len(raw)} bytes)"
                log.info("%s: %s (attempt %d)", shown, last, attempt + 1)
                self._wait(self.backoff_s * 2 ** attempt, last)
                continue
            return Answer(body, status, headers, attempt + 1)
        raise ApiError(f"{shown}: no usable answer after {self.retries + 1} attempts ({self.scrub(last)}); "
                       f"rerun later: answers already received are kept and not asked again")


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in (headers.items() if headers else [])}


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _reset_s(headers: Mapping[str, str]) -> float | None:
    reset = _number(headers.get("x-ratelimit-reset"))
    if reset is None:
        return None
    return max(0.0, reset - time.time()) if reset > EPOCH_THRESHOLD else max(0.0, reset)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    return retry_after_s(headers.get("retry-after"))
