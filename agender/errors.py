"""Errors the user sees as one line.

Every failure a user can cause (a bad file, a missing model, a dead camera) is raised as an
:class:`AgenderError` whose ``str()`` is a complete one-line message naming the thing and the
problem. The shells print that line (CLI) or show it in a dialog (GUI); they never print a
traceback for an ``AgenderError``.
"""
from __future__ import annotations


class AgenderError(Exception):
    """Base class: ``str(err)`` is the one line shown to the user."""


class ModelError(AgenderError):
    """A model file is missing, corrupt, or fails to load.

    ``missing`` is True when the file is simply not on the search path (not fetched yet), as
    opposed to found but unusable (corrupt, empty, refused by the runtime): ``--detector auto``
    passes over the first quietly and warns about the second.
    """

    def __init__(self, message: str = "", *, missing: bool = False):
        super().__init__(message)
        self.missing = missing


class SourceError(AgenderError):
    """An input (file, URL, camera) cannot be opened or decoded."""


class FetchError(AgenderError):
    """A model download failed (offline, HTTP error, checksum mismatch)."""


class OutputError(AgenderError, OSError):
    """An output file cannot be written (disk full, read-only folder, no permission, …).

    ``str()`` names the file and the OS's reason: ``cannot write OUT/.clip.csv.partial: No
    space left on device``; the runner puts the input in front. Also an :class:`OSError`
    (``errno``, ``strerror``, ``filename`` = the file), so ``except OSError`` still catches it.
    """

    def __init__(self, path, exc: OSError | str):
        reason = exc if isinstance(exc, str) else (exc.strerror or str(exc))
        OSError.__init__(self, getattr(exc, "errno", None), reason, str(path))
        self.path = path
        self.message = f"cannot write {path}: {reason}"

    def __str__(self) -> str:
        return self.message


class OutputBusy(AgenderError):
    """Another process holds the output lock of this input."""

    def __init__(self, path, pid: int | None):
        self.path, self.pid = path, pid
        who = f" (pid {pid})" if pid else ""
        super().__init__(f"output {path} is being written by another agender run{who}")


def one_line(exc: BaseException, *, last: bool = False, limit: int | None = None, named: bool = True) -> str:
    """An exception as one line for a message: its first line (``last``: its last, where the
    reason of a cv2/h5py error stands), cut to ``limit`` characters, after its type name
    (``named``); only the type name when it says nothing."""
    lines = str(exc).strip().splitlines()
    text = (lines[-1] if last else lines[0])[:limit] if lines else ""
    if not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}" if named else text
