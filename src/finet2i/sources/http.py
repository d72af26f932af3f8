"""A polite JSON client for the photo APIs (Pexels, Pixabay): one request at a time, paced, patient, bounded,
secret-safe.

* **Pacing**: at most ``requests`` per ``seconds`` (the key's documented allowance), spaced evenly, so a long
  listing never bursts into a 429; and when an answer's ``X-RateLimit-Remaining`` says 0, it waits for
  ``X-RateLimit-Reset`` (seconds from now for Pixabay; a UNIX time for Pexels: a value above 10^9 is read as one).
* **A quota used up is an error, not a sleep.** Pexels' ``X-Ratelimit-*`` headers count the *month* (Reset is
  the UNIX time of the monthly rollover; they are absent on a 429). A wait longer than ``max_wait_s`` (a reset
  days away, a ``Retry-After`` of hours) is never slept: the next request fails at once with
  :class:`QuotaExhausted`, saying what remains of the limit and when it resets. Answers received so far are kept.
* **Bounds**: each request has a total ``deadline_s`` (a server that trickles its body is cut off and retried)
  and a byte cap ``max_bytes`` (an answer over it fails the listing: no page of photos is that large).
* **Backoff**: 429 and 5xx (and a connection failure, a timeout, a body that is not JSON) are retried up to
  ``retries`` times, waiting what ``Retry-After`` says (seconds or an HTTP date), else ``X-RateLimit-Reset`` on a
  429, else ``backoff_s`` doubling. Then :class:`ApiError`: the job fails and a rerun continues where it stopped
  (the answers already received are stored, see :mod:`finet2i.sources.listing`).
* **A refused key** (401, 403) is an :class:`ApiError` at once, naming the environment variable, never the key.
* **Secrets**: the key travels in a header (Pexels) or a query parameter (Pixabay); every message that leaves
  this module (logs, errors) goes through :meth:`PoliteClient.scrub`, every answer body through
  :meth:`PoliteClient.scrub_body` before anyone stores or parses it (a server that echoes the key back in a
  ``next_page`` URL or a field must not get it written), and a request is shown without its secret parameters.
  Redirects are not followed: an API that redirects would carry the ``Authorization`` header to another host
  (urllib keeps it), so a redirect is an error that names where it pointed.
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from finet2i.plumbing.download import USER_AGENT, read_capped, retry_after_s

log = logging.getLogger(__name__)

EPOCH_THRESHOLD = 1_000_000_000  # an X-RateLimit-Reset above this is a UNIX time, below it seconds from now


class ApiError(RuntimeError):
    """A listing that cannot go on: a refused key, or an answer that stayed wrong after every retry."""


class QuotaExhausted(ApiError):
    """The key's allowance is used up until a reset further away than ``max_wait_s``: rerun after it."""


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
                 deadline_s: float = 120.0, max_bytes: int = 16 << 20,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], float] = time.time) -> None:
        self.rate = rate
        self.key_env = key_env
        self.secrets = tuple(s for s in secrets if s)
        self.secret_params = secret_params
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        self.timeout_s, self.retries, self.backoff_s, self.max_wait_s = timeout_s, retries, backoff_s, max_wait_s
        self.deadline_s, self.max_bytes = deadline_s, max_bytes
        self.sleep, self.clock, self.now = sleep, clock, now
        self.requests_sent = 0
        self.waited_s = 0.0
        self._next_at = 0.0  # monotonic time before which no request may leave
        self._exhausted: str | None = None  # why no request may leave at all (a quota used up)
        self._opener = urllib.request.build_opener(_NoRedirect())

    # -- secrets -------------------------------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "<redacted>").replace(urllib.parse.quote(s, safe=""), "<redacted>")
        return text

    def scrub_body(self, body: Any) -> Any:
        """An answer with the key removed from every string in it (keys of objects included)."""
        if not self.secrets:
            return body
        if isinstance(body, str):
            return self.scrub(body)
        if isinstance(body, list):
            return [self.scrub_body(v) for v in body]
        if isinstance(body, dict):
            return {self.scrub(str(k)): self.scrub_body(v) for k, v in body.items()}
        return body

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

    def _pace(self, shown: str) -> None:
        if self._exhausted:
            raise QuotaExhausted(f"{shown}: not sent: {self._exhausted}")
        self._wait(self._next_at - self.clock(), "rate limit pacing")

    def _too_long(self, seconds: float, why: str, headers: Mapping[str, str]) -> str | None:
        """The error for a wait longer than ``max_wait_s`` (what remains, when it resets), else None."""
        if seconds <= self.max_wait_s:
            return None
        limit, remaining = headers.get("x-ratelimit-limit"), headers.get("x-ratelimit-remaining")
        left = f"{remaining} of {limit} requests left" if limit else (f"{remaining} requests left" if remaining
                                                                     else "no count given")
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.now() + seconds))
        return (f"{why}: {left}; it resets at {when} (in {_duration(seconds)}), longer than max_wait_s "
                f"({self.max_wait_s:g} s), so the listing stops now instead of sleeping. Rerun after the reset "
                f"(answers received so far are stored and not asked again), or ask the site for a higher limit "
                f"and raise rate_limit")

    def _after(self, headers: Mapping[str, str]) -> None:
        self._next_at = self.clock() + self.rate.interval_s
        remaining = _number(headers.get("x-ratelimit-remaining"))
        if remaining is not None and remaining <= 0:
            reset = _reset_s(headers, self.now())
            if reset is not None:
                self._exhausted = self._too_long(reset, "the key's request quota is used up", headers)
                self._next_at = max(self._next_at, self.clock() + reset)

    # -- one GET -------------------------------------------------------------------------------------------
    def _send(self, full: str, extra: Mapping[str, str] | None) -> tuple[int, dict[str, str], bytes]:
        """One request within its deadline and byte cap: (status, headers, body). Raises on a connection failure,
        a timeout or the deadline (retried by the caller); an oversized body comes back whole-plus-one."""
        deadline = self.clock() + self.deadline_s
        req = urllib.request.Request(full, headers={**self.headers, **(extra or {})})
        try:
            with self._opener.open(req, timeout=min(self.timeout_s, self.deadline_s)) as resp:
                return resp.status, _lower(resp.headers), read_capped(resp, self.max_bytes, deadline)
        except urllib.error.HTTPError as e:
            try:
                raw = read_capped(e.fp, self.max_bytes, deadline) if e.fp is not None else b""
            except Exception:  # noqa: BLE001 - the body of an error is only shown
                raw = b""
            return e.code, _lower(e.headers), raw

    def get_json(self, url: str, params: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> Answer:
        query = urllib.parse.urlencode(params)
        full = f"{url}?{query}" if query else url
        shown = self.shown(url, params)
        last = ""
        for attempt in range(self.retries + 1):
            self._pace(shown)
            self.requests_sent += 1
            try:
                status, headers, raw = self._send(full, extra)
            except Exception as e:  # noqa: BLE001 - connection refused, reset, timeout, deadline: retried
                last = f"{type(e).__name__}: {e}"
                self._after({})
                self._wait(self.backoff_s * 2 ** attempt, f"{shown}: {self.scrub(last)}")
                continue
            self._after(headers)
            if len(raw) > self.max_bytes:
                raise ApiError(f"{shown}: HTTP {status}: the answer is over max_answer_bytes ({self.max_bytes:,} "
                               f"bytes) and was not read further; no page of photos is that large: check api_url")
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
                    wait = _reset_s(headers, self.now())
                if wait is None:
                    wait = self.backoff_s * 2 ** attempt
                too_long = self._too_long(wait, f"HTTP {status}: the API asks to wait", headers)
                if too_long:
                    raise QuotaExhausted(f"{shown}: {too_long}")
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
            return Answer(self.scrub_body(body), status, headers, attempt + 1)
        raise ApiError(f"{shown}: no usable answer after {self.retries + 1} attempts ({self.scrub(last)}); "
                       f"rerun later: answers already received are kept and not asked again")


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in (headers.items() if headers else [])}


def _number(value: str | None) -> float | None:
    """A header's number; None when absent or not a finite number (a header is the server's word, not ours)."""
    try:
        n = float(value) if value is not None else None
    except ValueError:
        return None
    return n if n is not None and math.isfinite(n) else None


def _reset_s(headers: Mapping[str, str], now: float) -> float | None:
    reset = _number(headers.get("x-ratelimit-reset"))
    if reset is None:
        return None
    return max(0.0, reset - now) if reset > EPOCH_THRESHOLD else max(0.0, reset)


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    return retry_after_s(headers.get("retry-after"))
