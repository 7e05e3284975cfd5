"""Face detectors behind one tiny protocol and a registry by name.

A detector takes a BGR ``uint8`` image (already downscaled by the analyzer) and returns
:class:`~agender.faces.Faces` in that image's pixel coordinates. Mapping back to the
full-resolution frame is the analyzer's job, so every detector stays small.
"""
from __future__ import annotations

from agender.detectors.base import DETECTORS, Detector, create_detector, detector_names

__all__ = ["DETECTORS", "Detector", "create_detector", "detector_names"]
