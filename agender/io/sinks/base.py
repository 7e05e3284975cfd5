"""The sink contract and atomic-write helpers.

A sink receives every analysed frame with its faces, writes to a temporary file next to its
target, and only :meth:`Sink.close` moves the finished file into place (``os.replace``), so an
interrupted run never leaves a file that looks complete. :meth:`Sink.abort` discards.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from agender.errors import OutputError

if TYPE_CHECKING:
    from agender.faces import Faces
    from agender.io.sources import Frame


class Sink:
    """What the runner hands every analysed frame to, in frame order.

    Subclasses implement :meth:`write` and :meth:`close`; everything else has a no-op default,
    so the runner calls each hook on every sink instead of probing for it.

    Resume: a sink that can continue an interrupted output sets ``resumable = True`` and
    implements :meth:`checkpoint` (make the data so far durable, return a JSON-able state) and
    :meth:`begin` (given that state, continue from it; return False when it cannot). An input
    with any sink that is not resumable is redone from its first frame.
    """

    #: True when :meth:`begin` can continue from a :meth:`checkpoint` state.
    resumable: bool = False
    #: The output file, listed in the sidecar (``None``: writes no file; see :attr:`paths`).
    path: Path | None = None

    @property
    def paths(self) -> list[Path]:
        """Every file this sink writes (what the sidecar lists and a failed run deletes)."""
        return [] if self.path is None else [Path(self.path)]

    def begin(self, state: dict | None = None) -> bool:
        """Start the output, or continue it from ``state`` (a :meth:`checkpoint`). False: the
        state cannot be continued (the partial output is gone): the input starts over."""
        return state is None

    def write(self, frame: "Frame", faces: "Faces") -> None:
        """``frame.image`` is the full-resolution BGR frame; ``faces`` its analysed faces."""
        raise NotImplementedError

    def checkpoint(self) -> dict:
        """Make what was written durable and return the state :meth:`begin` resumes from."""
        return {}

    def close(self) -> None:
        """Finish and move the output into place atomically."""

    def abort(self) -> None:
        """Discard the temporary output (the run failed)."""

    def suspend(self) -> None:
        """The run was interrupted (Ctrl-C): keep the partial output for a resume."""

    def sidecar_fields(self) -> dict:
        """Extra fields for the input's sidecar record (e.g. the people summary)."""
        return {}


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an :class:`OSError` (disk full, read-only folder, …) raised while writing ``path``
    into an :class:`~agender.errors.OutputError` that names ``path`` and the reason."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(path, exc) from exc


def remove_quietly(path: str | Path) -> None:
    """Delete ``path`` if it is there; never raises (a read-only folder answers EROFS even for
    a file that is not there, and cleaning up after a failure must not fail in turn)."""
    try:
        Path(path).unlink()
    except OSError:
        pass


def atomic_write_bytes(path: str | Path, data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` (bytes, or an iterable of byte chunks so a large table need not sit in
    memory) to a temp file beside ``path``, fsync, rename: readers see all of it or nothing."""
    path = Path(path)
    with writing(path):
        _atomic_write_bytes(path, [data] if isinstance(data, (bytes, bytearray, memoryview)) else data)


def _atomic_write_bytes(path: Path, chunks: Iterable[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; outputs get the usual mode
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def write_table(path: str | Path, fmt: str, columns: Sequence[str], rows: Iterable[Sequence],
                records: Iterable[dict]) -> None:
    """A small summary table written whole and atomically: CSV (``columns`` + ``rows``) or
    JSON Lines (``records``), the way ``<name>.tracks.*`` and ``<name>.people.*`` are."""
    if fmt == "jsonl":
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
