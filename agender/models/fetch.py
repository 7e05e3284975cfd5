"""Download manifest files into a models directory, safely.

Why it is built this way:

* **Atomic.** Bytes go to ``<file>.part`` in the destination directory and are renamed onto the
  final name only after the sha256 matched, so a crash, a Ctrl-C or a bad mirror never leaves a
  half-written or wrong file where :class:`~agender.models.store.ModelStore` would find it.
* **Resumable.** An interrupted download keeps its ``.part``; the next run asks for the rest
  with an HTTP ``Range`` request. A server that ignores ``Range`` (answers 200) simply gets
  the whole file again.
* **One-line failures.** Offline, refused, timed out, HTTP status, truncated, checksum: each is
  a :class:`~agender.errors.FetchError` whose message names the file, the URL and the reason.
* **Mirrors.** ``AGENDER_MODELS_URL`` (or ``base_url=``) replaces each entry's upstream URL with
  ``<base>/<file>``: the manifest-relative path, so a mirror is just a copy of a models dir
  (``http://``, ``https://`` or ``file://``).

Only the standard library (``urllib``) is used for HTTP; ``tqdm`` draws progress on a terminal.
"""
from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable

from agender import __version__
from agender.errors import FetchError, one_line
from agender.models.store import ModelEntry, hash_file, user_models_dir

MODELS_URL_ENV = "AGENDER_MODELS_URL"
TIMEOUT_ENV = "AGENDER_FETCH_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
_CHUNK = 1 << 16


@dataclass(frozen=True)
class FetchResult:
    """What happened to one manifest file."""

    entry: ModelEntry
    path: Path
    sha256: str
    size: int
    verified: bool  # False only when the manifest has no sha256 (upstream publishes none)
    skipped: bool = False  # a verified copy was already in the destination
    resumed_from: int = 0  # bytes kept from an earlier partial download


def models_url(base_url: str | None = None) -> str | None:
    """The mirror base URL in effect: the argument, else ``$AGENDER_MODELS_URL``, else none."""
    return base_url or os.environ.get(MODELS_URL_ENV) or None


def default_timeout() -> float:
    """Socket timeout (connect and each read): ``$AGENDER_FETCH_TIMEOUT`` or 30 s."""
    env = os.environ.get(TIMEOUT_ENV)
    if env:
        try:
            return max(0.01, float(env))
        except ValueError:
            raise FetchError(f"{TIMEOUT_ENV}={env!r} is not a number of seconds") from None
    return DEFAULT_TIMEOUT_S


def url_for(entry: ModelEntry, base_url: str | None = None) -> str:
    """Where to download ``entry`` from: ``<mirror>/<file>`` when a mirror is set, else upstream."""
    base = models_url(base_url)
    if base:
        return base.rstrip("/") + "/" + urllib.parse.quote(entry.file)
    if not entry.url:
        raise FetchError(f"{entry.file} has no download URL in the manifest; set {MODELS_URL_ENV}")
    return entry.url


def part_path(final: Path) -> Path:
    """The in-progress name beside ``final`` (same directory, so the rename is atomic)."""
    return final.with_name(final.name + ".part")


file_sha256 = hash_file  # a file being fetched is hashed afresh, never from the memo


def fetch_entry(
    entry: ModelEntry,
    dest: Path | str | None = None,
    *,
    base_url: str | None = None,
    timeout: float | None = None,
    force: bool = False,
    progress: bool | None = None,
) -> FetchResult:
    """Download one manifest file to ``dest/entry.file`` (default: the user models dir).

    A verified copy already at the destination is kept (``skipped=True``) unless ``force``.
    ``progress=None`` shows a bar only when stderr is a terminal.
    Raises :class:`FetchError` (one line) on any failure; the final name is never half-written.
    """
    dest_dir = Path(dest).expanduser() if dest is not None else user_models_dir()
    final = dest_dir / entry.file
    if final.is_file() and not force:
        got = file_sha256(final)
        if not entry.sha256 or got == entry.sha256:
            return FetchResult(entry, final, got, final.stat().st_size, bool(entry.sha256), skipped=True)
    url = url_for(entry, base_url)
    timeout = default_timeout() if timeout is None else timeout
    part = part_path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot fetch {entry.file}: cannot create {final.parent}: {exc.strerror or exc}") from None
    resumed_from = _download(entry, url, part, timeout=timeout, progress=progress)
    got = file_sha256(part)
    if entry.sha256 and got != entry.sha256:
        part.unlink(missing_ok=True)
        raise FetchError(
            f"cannot fetch {entry.file}: checksum mismatch, sha256 {got} != expected {entry.sha256} "
            f"(from {url}); download deleted"
        )
    size = part.stat().st_size
    os.replace(part, final)
    return FetchResult(entry, final, got, size, bool(entry.sha256), resumed_from=resumed_from)


def fetch_all(
    entries: Iterable[ModelEntry],
    dest: Path | str | None = None,
    *,
    on_result: Callable[[FetchResult], None] | None = None,
    on_error: Callable[[FetchError], None] | None = None,
    **kwargs,
) -> tuple[list[FetchResult], list[FetchError]]:
    """Fetch several files; a failure of one does not stop the others, except when the server
    cannot be reached at all (offline / refused), where the rest would fail the same way."""
    results: list[FetchResult] = []
    errors: list[FetchError] = []
    todo = list(entries)
    for i, entry in enumerate(todo):
        try:
            res = fetch_entry(entry, dest, **kwargs)
        except FetchError as exc:
            rest = len(todo) - i - 1
            if getattr(exc, "unreachable", False) and rest:
                exc = _with_unreachable(FetchError(f"{exc} ({rest} more file{'s' * (rest > 1)} not attempted)"))
            errors.append(exc)
            if on_error:
                on_error(exc)
            if getattr(exc, "unreachable", False):
                break
            continue
        results.append(res)
        if on_result:
            on_result(res)
    return results, errors


# --------------------------------------------------------------------------- internals


class _WriteError(Exception):
    """Writing the ``.part`` failed: told apart from network errors, which are OSErrors too."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _with_unreachable(exc: FetchError) -> FetchError:
    exc.unreachable = True  # type: ignore[attr-defined]
    return exc


def _open(url: str, offset: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": f"agender/{__version__}"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(req, timeout=timeout)


def _describe(exc: BaseException, url: str, timeout: float) -> tuple[str, bool]:
    """(reason, unreachable) for a urllib/socket failure."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".rstrip(), False
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout:g}s (no answer from the server)", False
    if isinstance(reason, ConnectionRefusedError):
        host = urllib.parse.urlsplit(url).netloc
        return f"connection refused by {host} (server down, or offline?)", True
    if isinstance(reason, socket.gaierror):
        host = urllib.parse.urlsplit(url).hostname
        return f"cannot resolve host {host} (offline?)", True
    if isinstance(reason, OSError):
        if reason.errno in (101, 113, 10051, 10065):  # network / host unreachable
            return f"network unreachable (offline?): {reason.strerror}", True
        return f"{reason.strerror or reason}", False
    return one_line(reason, named=False), False


def _download(entry: ModelEntry, url: str, part: Path, *, timeout: float, progress: bool | None) -> int:
    """Stream ``url`` into ``part`` (resuming it when possible); returns bytes kept from before."""
    offset = part.stat().st_size if part.is_file() else 0

    def fail(reason: str, unreachable: bool = False) -> FetchError:
        err = FetchError(f"cannot fetch {entry.file} from {url}: {reason}")
        return _with_unreachable(err) if unreachable else err

    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # our .part is stale or already whole: start over
            part.unlink(missing_ok=True)
            return _download(entry, url, part, timeout=timeout, progress=progress)
        raise fail(*_describe(exc, url, timeout)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise fail(*_describe(exc, url, timeout)) from None
    except ValueError as exc:  # malformed URL, e.g. a mirror without a scheme
        raise fail(f"{exc} (a models URL starts with http://, https:// or file://)") from None

    with resp:
        status = getattr(resp, "status", None) or 200
        start = _range_start(resp.headers.get("Content-Range")) if status == 206 else 0
        if status == 206 and start != offset:
            if not offset:  # a partial answer we did not ask for
                raise fail(f"server sent a partial response ({resp.headers.get('Content-Range')})")
            resp.close()
            part.unlink(missing_ok=True)
            return _download(entry, url, part, timeout=timeout, progress=progress)
        kept = offset if status == 206 else 0
        length = resp.headers.get("Content-Length")
        total = kept + int(length) if length and length.isdigit() else None
        try:
            out = open(part, "ab" if kept else "wb")
        except OSError as exc:
            raise FetchError(f"cannot fetch {entry.file}: cannot write {part}: {exc.strerror}") from None
        try:
            with out:
                written = _copy(resp, out, kept, total, entry.file, progress)
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as exc:
                    raise _WriteError(exc.strerror or str(exc)) from exc
        except _WriteError as exc:  # our side: disk full, permissions
            raise FetchError(f"cannot fetch {entry.file}: cannot write {part}: {exc.reason}") from None
        except (TimeoutError, socket.timeout):
            raise fail(f"timed out after {timeout:g}s mid-download; run again to resume") from None
        except OSError as exc:
            raise fail(f"{exc.strerror or exc}; run again to resume") from None
        except Exception as exc:  # http.client.IncompleteRead and friends
            raise fail(f"download interrupted ({type(exc).__name__}); run again to resume") from None
    if total is not None and written < total:
        raise fail(f"connection closed after {written} of {total} bytes; run again to resume")
    return kept


def _copy(resp, out: IO[bytes], kept: int, total: int | None, label: str, progress: bool | None) -> int:
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    written = kept
    with tqdm(
        total=total, initial=kept, unit="B", unit_scale=True, unit_divisor=1024,
        desc=label, file=sys.stderr, disable=not show, leave=False,
    ) as bar:
        while True:
            chunk = resp.read(_CHUNK)
            if not chunk:
                break
            try:
                out.write(chunk)
            except OSError as exc:
                raise _WriteError(exc.strerror or str(exc)) from exc
            written += len(chunk)
            bar.update(len(chunk))
    return written


def _range_start(content_range: str | None) -> int | None:
    """``"bytes 100-199/200"`` → 100."""
    if not content_range:
        return None
    try:
        unit, _, rng = content_range.strip().partition(" ")
        return int(rng.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None
