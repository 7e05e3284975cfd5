"""agender: face age & gender estimation for live monitors and video archives.

One pipeline (:class:`~agender.analyzer.Analyzer`), one result type
(:class:`~agender.faces.Faces`), two thin shells (``agender`` CLI, ``app.py`` GUI).
"""
from __future__ import annotations

__version__ = "0.1.0"

from agender.errors import AgenderError
from agender.faces import Estimates, Face, Faces

__all__ = ["Analyzer", "AgenderError", "Estimates", "Face", "Faces", "__version__"]


def __getattr__(name: str):
    # Lazy: importing the package must stay cheap (the CLI's --help, the GUI's splash).
    if name == "Analyzer":
        from agender.analyzer import Analyzer

        return Analyzer
    raise AttributeError(name)
