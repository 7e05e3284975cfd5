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
