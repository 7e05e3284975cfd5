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
    """A model file is missing, corrupt, or fails to load."""


class SourceError(AgenderError):
    """An input (file, URL, camera) cannot be opened or decoded."""


class FetchError(AgenderError):
    """A model download failed (offline, HTTP error, checksum mismatch)."""


class OutputError(AgenderError):
    """An output file cannot be written (disk full, read-only folder, no permission, …).

    ``str()`` names the file and the OS's reason: ``cannot write OUT/.clip.csv.partial: No
    space left on device``; the runner puts the input in front.
    """

    def __init__(self, path, exc: OSError | str):
        self.path = path
        self.errno = getattr(exc, "errno", None)
        reason = exc if isinstance(exc, str) else (exc.strerror or str(exc))
        super().__init__(f"cannot write {path}: {reason}")


class OutputBusy(AgenderError):
    """Another process holds the output lock of this input."""

    def __init__(self, path, pid: int | None):
        self.path, self.pid = path, pid
        who = f" (pid {pid})" if pid else ""
        super().__init__(f"output {path} is being written by another agender run{who}")
