"""What ``finet2i fetch-models`` does for each model a config names, so that every one of them can be obtained.

* Hub models (``{id, revision}``) go into the Hugging Face cache with ``snapshot_download``. Gated repositories
  (the Llama 3.1 and Llama Guard 3 ones) fail with a message naming the license page to accept and the token
  variable (``HF_TOKEN``, read by huggingface_hub itself); the token is never printed or written.
* Local files (``{path, url?, sha256?}``) that are missing are downloaded from their ``url``, or from the
  published location of a file finet2i knows (:data:`KNOWN_FILES`: the Aesthetic Predictor V2.5 head, AGPL-3.0,
  fetched only after the user accepts its license by a flag), into a temporary file beside the target that is
  checked (sha256 when configured, the loader's own validation) and then renamed: a failed or corrupt download
  never sits under the final name.
* A file is downloaded as the curated images are (:mod:`finet2i.plumbing.download`): http(s) only, every
  redirect checked, loopback, link-local and private addresses refused unless ``--allow-private-addresses``
  (a mirror on the local network), a total deadline (a trickling server is cut off), and a byte cap: the known
  file's expected size with a margin, else ``--max-bytes``, so an endless body never fills the disk.
* Every URL is printed as ``scheme://host/path``: a signed URL's query (its tokens) and any user-info never
  reach the terminal, a report or an error message.

Every failure is collected with what to do about it; the caller goes on with the other models and exits
non-zero at the end. torch and huggingface_hub are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finet2i.core.files import sha256_of
from finet2i.models.known import GATED_IDS, HUB_FILES, KNOWN_FILES, FileSource
from finet2i.plumbing.download import Refused, check_target, checked_opener, copy_capped, quote_url, scrub_secrets
from finet2i.plumbing.download import redact as shown_url

PRIVATE_FLAG = "--allow-private-addresses"  # lets fetch-models use a mirror on the local network
DEFAULT_MAX_BYTES = 64 << 30  # a file whose size finet2i does not know: 64 GiB at most (--max-bytes)
DEFAULT_DEADLINE_S = 6 * 3600.0  # one file, connection to last byte (--deadline)
SIZE_MARGIN = 1.5  # a known file may be this much larger than expected (plus 1 MiB), never more

TOKEN_VAR = "HF_TOKEN"
TOKEN_PAGE = "https://huggingface.co/settings/tokens"

# What a downloaded file must be before it is renamed into place, by FileSource.check (finet2i.models.known).
CHECKS: dict[str, Callable[[Path, int | None], None]] = {
    "aesthetic_head": lambda path, width: _check_head(path, width),
}


def _check_head(path: Path, width: int | None) -> None:
    from finet2i.models.backends.aesthetic import check_head_file

    check_head_file(path, width)


def file_check(source: FileSource) -> Callable[[Path], None] | None:
    """The check a download from ``source`` must pass (raises ValueError), or None."""
    if source.check is None:
        return None
    run = CHECKS[source.check]
    return lambda path: run(path, source.width)


class DownloadRejected(RuntimeError):
    """A download that failed or is not the file it should be; nothing was left under the target name."""


def size_cap(source: FileSource | None, max_bytes: int | None) -> int:
    """The most bytes a download may have: the known file's expected size with a margin, else ``max_bytes``."""
    if source is not None and source.expected_bytes:
        return int(source.expected_bytes * SIZE_MARGIN) + (1 << 20)
    return int(max_bytes or DEFAULT_MAX_BYTES)


def download_file(url: str, dest: str | os.PathLike[str], *, sha256: str | None = None,
                  check: Callable[[Path], None] | None = None, timeout: float = 60.0,
                  max_bytes: int = DEFAULT_MAX_BYTES, deadline_s: float = DEFAULT_DEADLINE_S,
                  allow_private: bool = False) -> str:
    """Download ``url`` to ``dest`` through a temporary file in dest's folder, verified (``sha256``, then
    ``check``) before an atomic rename; returns the file's sha256. Raises :class:`DownloadRejected` (the
    temporary file removed, ``dest`` untouched) when the target is refused (another scheme, a private address
    without ``allow_private``: checked again on every redirect), the transfer fails, passes ``deadline_s`` or
    ``max_bytes``, or the content is not right. Messages show the URL as ``scheme://host/path`` only."""
    dest = Path(dest)
    shown = shown_url(url)
    quoted = quote_url(url)
    try:
        check_target(quoted, allow_private, PRIVATE_FLAG)
    except Refused as e:
        raise DownloadRejected(f"{shown}: refused: {e}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    deadline = time.monotonic() + deadline_s
    try:
        h = hashlib.sha256()

        def write(block: bytes) -> None:
            out.write(block)
            h.update(block)

        try:
            opener = checked_opener(allow_private, PRIVATE_FLAG)
            target, headers = _without_userinfo(quoted)
            req = urllib.request.Request(target, headers=headers)
            with os.fdopen(fd, "wb") as out, opener.open(req, timeout=min(timeout, deadline_s)) as resp:
                length = resp.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > max_bytes:
                    raise DownloadRejected(f"{shown}: the server announces {int(length):,} bytes, more than the "
                                           f"{max_bytes:,} allowed for this file (--max-bytes)")
                size = copy_capped(resp, write, max_bytes, deadline)
                if size > max_bytes:
                    raise DownloadRejected(f"{shown}: more than {max_bytes:,} bytes; stopped (a known file's "
                                           f"expected size with a margin, else --max-bytes)")
                out.flush()
                os.fsync(out.fileno())
            if length is not None and length.isdigit() and int(length) != size:  # read(n) does not notice a cut
                raise OSError(f"connection closed after {size} of {length} bytes")
        except DownloadRejected:
            raise
        except urllib.error.URLError as e:
            if isinstance(e.reason, Refused):
                raise DownloadRejected(f"{shown}: redirect refused: {e.reason}") from None
            raise DownloadRejected(f"{shown}: download failed ({_scrubbed(e, url)})") from None
        except TimeoutError as e:
            raise DownloadRejected(f"{shown}: download failed: deadline of {deadline_s:g} s passed ({e})") from None
        except Refused as e:
            raise DownloadRejected(f"{shown}: redirect refused: {e}") from None
        except (OSError, http.client.HTTPException) as e:  # HTTPError, timeouts, cut off, disk full
            raise DownloadRejected(f"{shown}: download failed ({_scrubbed(e, url)})") from None
        digest = h.hexdigest()
        if sha256 and digest != sha256.lower():
            raise DownloadRejected(f"{shown}: sha256 {digest} does not match the configured {sha256}")
        if check is not None:
            try:
                check(tmp)
            except ValueError as e:
                raise DownloadRejected(f"{shown}: {e}".replace(str(tmp), "the downloaded file")) from e
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the weights from the other users of a cluster
        os.replace(tmp, dest)
        return digest
    finally:
        tmp.unlink(missing_ok=True)


def _without_userinfo(url: str) -> tuple[str, dict[str, str]]:
    """(the URL without user-info, headers): user-info travels as Basic auth, never as part of the host name."""
    import base64
    import urllib.parse

    headers = {"User-Agent": "finet2i-fetch-models"}
    parts = urllib.parse.urlsplit(url)
    if parts.username:
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return url, headers


def _scrubbed(e: BaseException, url: str) -> str:
    """An exception's text without the URL's secrets (query, user-info)."""
    return scrub_secrets(f"{type(e).__name__}: {e}", url)


def redact(text: str) -> str:
    """``text`` without the Hugging Face token, should a library message ever contain it."""
    token = os.environ.get(TOKEN_VAR)
    return text.replace(token, "***") if token and len(token) >= 4 else text


def license_page(model_id: str) -> str:
    return f"https://huggingface.co/{model_id}"


def gated_advice(model_id: str) -> str:
    """What to do to download a gated repository (or one this account may not read)."""
    from huggingface_hub import get_token

    has_token = bool(get_token())
    now = ("a token is set, but its account has no access yet (license not accepted, request still pending, or "
           "a fine-grained token without access to public gated repositories)" if has_token else
           f"no token is set ({TOKEN_VAR} is empty and there is no `hf auth login`)")
    return (f"{model_id} is gated: open its license page {license_page(model_id)} while logged in to Hugging "
            f"Face and accept the license (approval may take a while), then run fetch-models again with a read "
            f"token of that account in the environment variable {TOKEN_VAR} (create one at {TOKEN_PAGE}; or "
            f"log in once with `hf auth login`); now: {now}")


def is_access_error(e: BaseException) -> bool:
    """A gated repository, or a 401/403 answer: the account (or the missing token) may not read it."""
    from huggingface_hub.errors import GatedRepoError

    if isinstance(e, GatedRepoError):
        return True
    status = getattr(getattr(e, "response", None), "status_code", None)
    return status in (401, 403)


@dataclass
class FetchReport:
    """What a fetch did: the lines it printed, the commits it downloaded (for --pin), what is still missing."""

    lines: list[str] = field(default_factory=list)
    commits: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # "models.<key>: <what to do>"

    def say(self, line: str, echo: Callable[[str], None] | None) -> None:
        line = redact(line)
        self.lines.append(line)
        if echo is not None:
            echo(line)

    def lack(self, item: str) -> None:
        self.missing.append(redact(item))


def file_source(key: str, value: dict[str, Any]) -> FileSource | None:
    """The source of a ``{path: ...}`` model: its configured ``url`` (under the known file's license when the
    key is a known one), else the known published file, else None (nothing can fetch it)."""
    known = KNOWN_FILES.get(key)
    url = value.get("url")
    if url is None:
        return known
    if known is not None:
        same = url == known.url
        return FileSource(url=url, license=known.license, license_url=known.license_url, home=known.home,
                          check=known.check, width=known.width if same else None,
                          expected_bytes=known.expected_bytes if same else None)
    return FileSource(url=url, license="", license_url="", home="")


def license_notice(key: str, source: FileSource) -> str:
    return (f"models.{key}: {Path(source.url).name} is licensed {source.license} ({source.license_url}; "
            f"published at {source.home}). Using it binds you to that license; fetch-models downloads it only "
            f"with --accept-license {key}")


def human_size(n: float | None) -> str:
    """Bytes for a person: ``16.1 GB`` (powers of 1000, as the hub shows them)."""
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def folder_size(folder: Path) -> int:
    """Bytes of a folder's files, following the cache's snapshot symlinks to their blobs."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


@dataclass(frozen=True)
class HubStatus:
    cached: str  # what the cache holds, as a phrase
    gated: bool | None  # whether the hub says the repository is gated (None: not asked)
    size: str  # "16.1 GB", "16.1 GB in the cache", "size unknown offline"
    download: int | None  # bytes a fetch would download (None: unknown; 0: in the cache)


def _hub_status(model_id: str, revision: str | None, online: bool) -> HubStatus:
    """What the cache holds, and (online) the repository's size at that revision and whether it is gated."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(model_id, revision=revision, local_files_only=True))
        cached, here = f"in the cache ({folder.name})", folder_size(folder)
    except Exception:  # noqa: BLE001 - the hub raises several types for "not in cache"
        cached, here = "would download into the Hugging Face cache", None
    if not online:
        if here is not None:
            return HubStatus(cached, None, f"{human_size(here)} in the cache", 0)
        return HubStatus(cached, None, "size unknown offline", None)
    from huggingface_hub import HfApi

    info = HfApi().model_info(model_id, revision=revision, files_metadata=True, timeout=10)
    sizes = [getattr(f, "size", None) for f in (info.siblings or [])]
    total = sum(x for x in sizes if x) if sizes and all(x is not None for x in sizes) else None
    size = human_size(total) + ("" if here is None else " (in the cache)")
    return HubStatus(cached, bool(info.gated), size, 0 if here is not None else total)


def _url_size(url: str, online: bool, allow_private: bool = False) -> int | None:
    """Content-Length of a file to download (a HEAD request, through the downloads' checks: no private or
    loopback address unless allowed, every redirect checked); None offline, refused, or when the server does
    not say."""
    if not online:
        return None
    try:
        quoted = quote_url(url)
        check_target(quoted, allow_private, PRIVATE_FLAG)
        req = urllib.request.Request(quoted, method="HEAD")
        with checked_opener(allow_private, PRIVATE_FLAG).open(req, timeout=10) as resp:
            length = resp.headers.get("Content-Length")
    except (OSError, http.client.HTTPException, Refused, ValueError):
        return None
    return int(length) if length and length.isdigit() else None


def _has_access(model_id: str) -> bool | None:
    from huggingface_hub import auth_check

    try:
        auth_check(model_id)
    except Exception as e:  # noqa: BLE001
        return False if is_access_error(e) else None
    return True


def fetch_models(config: dict[str, Any], keys: Iterable[str], *, accepted: Iterable[str] = (),
                 dry_run: bool = False, online: bool = True,
                 echo: Callable[[str], None] | None = None, allow_private: bool = False,
                 max_bytes: int | None = None, deadline_s: float = DEFAULT_DEADLINE_S) -> FetchReport:
    """Fetch (or with ``dry_run`` list) the models under ``config["models"]`` named by ``keys``; one line
    each through ``echo``. ``accepted``: keys whose license the user accepted (``--accept-license``).
    ``allow_private``, ``max_bytes``, ``deadline_s``: how a file may be downloaded (:func:`download_file`).
    ``online``: whether the dry run may ask the hub which repositories are gated (it stops asking at the
    first failure)."""
    from huggingface_hub import constants, snapshot_download

    accepted = {a.removeprefix("models.") for a in accepted}
    report = FetchReport()
    to_download: list[int | None] = []  # dry run: bytes per model a fetch would download (None: unknown)
    if dry_run:
        report.say(f"Hugging Face cache: {constants.HF_HUB_CACHE} (set HF_HOME to move it: on a cluster, a "
                   f"filesystem the compute nodes mount)", echo)
    for key in keys:
        spec = config["models"][key]
        name = f"models.{key}"
        if "id" in spec:
            model_id, revision = spec["id"], spec.get("revision")
            if dry_run:
                try:
                    status = _hub_status(model_id, revision, online)
                except Exception as e:  # noqa: BLE001
                    if getattr(e, "response", None) is not None and not is_access_error(e):
                        report.say(f"{name}: {model_id}@{revision}: the hub does not know it "
                                   f"({e.__class__.__name__}); check the id", echo)
                        report.lack(f"{name}: {model_id} is not on the hub; check the id")
                        continue
                    online = False  # unreachable: stop asking, use the list
                    status = _hub_status(model_id, revision, False)
                gated = status.gated
                source = "the hub says" if gated is not None else "finet2i's list"
                if gated is None:
                    gated = model_id in GATED_IDS
                to_download.append(status.download)
                line = f"{name}: {model_id}@{revision}: {status.cached}; {status.size}"
                if gated:
                    access = _has_access(model_id) if online else None
                    line += (f"; gated ({source}): accept the license at {license_page(model_id)} while logged in "
                             f"and set {TOKEN_VAR}")
                    if access is not None:
                        line += "; your token has access" if access else "; no access with the current token yet"
                report.say(line, echo)
                continue
            try:
                only = HUB_FILES.get(model_id)  # the files the workflow loads, where a repo holds far more
                folder = Path(snapshot_download(model_id, revision=revision,
                                                **({"allow_patterns": list(only)} if only else {})))
            except Exception as e:  # noqa: BLE001 - collect, go on with the other models
                if is_access_error(e):
                    advice = gated_advice(model_id)
                    report.say(f"{name}: NOT FETCHED: {advice}", echo)
                    report.lack(f"{name}: {advice}")
                else:
                    why = f"{model_id}@{revision}: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    report.say(f"{name}: NOT FETCHED: {why}", echo)
                    report.lack(f"{name}: {why}; check the id and revision and that this node reaches the hub "
                                f"(HF_HUB_OFFLINE unset, HF_ENDPOINT, a proxy), then rerun fetch-models")
                continue
            report.commits[model_id] = folder.name  # the cache keeps each snapshot under its commit hash
            report.say(f"{name}: {model_id}@{revision} -> {folder.name}", echo)
            continue

        path = Path(spec["path"])
        wanted = spec.get("sha256")
        if path.exists():
            if wanted and path.is_file():
                digest = sha256_of(path)
                if digest != wanted.lower():
                    report.say(f"{name}: {path} has sha256 {digest}, not the configured {wanted}", echo)
                    report.lack(f"{name}: {path} is not the configured file (sha256 mismatch); remove it and rerun "
                                f"fetch-models, or correct {name}.sha256")
                    continue
            size = f", {human_size(folder_size(path) if path.is_dir() else path.stat().st_size)}" if dry_run else ""
            report.say(f"{name}: local {path} (present{size})", echo)
            continue
        source = file_source(key, spec)
        if source is None:
            report.say(f"{name}: local {path} is missing and nothing can fetch it", echo)
            report.lack(f"{name}: put the model at {path} (or set {name}.url to where it can be downloaded)")
            continue
        needs_consent = bool(source.license)
        if dry_run:
            length = _url_size(source.url, online, allow_private)
            to_download.append(length)
            line = f"{name}: would download {shown_url(source.url)} -> {path}"
            if needs_consent:
                line += (f" ({source.license}, {source.home}; "
                         + ("license accepted" if key in accepted else f"needs --accept-license {key}") + ")")
            line += f"; {human_size(length)}" if length is not None else \
                ("; size unknown" if online else "; size unknown offline")
            report.say(line, echo)
            continue
        if needs_consent and key not in accepted:
            report.say(license_notice(key, source), echo)
            report.say(f"{name}: NOT FETCHED: its license was not accepted", echo)
            report.lack(f"{name}: read the {source.license} license at {source.license_url}, then rerun with "
                        f"--accept-license {key} (or put the file at {path} yourself)")
            continue
        if needs_consent:
            report.say(f"{name}: license {source.license} ({source.license_url}) accepted by --accept-license", echo)
        try:
            digest = download_file(source.url, path, sha256=wanted, check=file_check(source),
                                   max_bytes=size_cap(source, max_bytes), deadline_s=deadline_s,
                                   allow_private=allow_private)
        except DownloadRejected as e:
            report.say(f"{name}: NOT FETCHED: {e}", echo)
            report.lack(f"{name}: {e}; rerun fetch-models, or download it yourself to {path}")
            continue
        pin = "" if wanted else f"; add `sha256: {digest}` to {name} to pin it"
        report.say(f"{name}: {shown_url(source.url)} -> {path} (sha256 {digest}{pin})", echo)
    if dry_run:
        known = sum(n for n in to_download if n)
        unknown = sum(n is None for n in to_download)
        parts = [human_size(known)] if known or not unknown else []
        if unknown:
            parts.append(f"{unknown} model(s) of unknown size" + ("" if online else " (offline: the hub gives sizes)"))
        report.say("to download: " + " and ".join(parts), echo)
    return report
