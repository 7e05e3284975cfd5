"""OpenCV cascade detectors: Haar (ships inside opencv-python, zero download) and LBP.

Cheap and dependency-free, but frontal-only and blind to small faces; kept as the fallback
that always works.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from agender.errors import ModelError
from agender.faces import Faces

_HAAR_VARIANTS = {
    "default": "haarcascade_frontalface_default.xml",
    "alt": "haarcascade_frontalface_alt.xml",
    "alt2": "haarcascade_frontalface_alt2.xml",
}


class _CascadeDetector:
    name = "cascade"
    device_used = "CPU"

    def __init__(self, path: Path, *, min_face: int = 20, scale_factor: float = 1.1, min_neighbors: int = 5):
        self.path = Path(path)
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ModelError(f"cascade {path} could not be loaded (not an OpenCV cascade XML?)")
        self.min_face = int(min_face)
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    @property
    def model_files(self) -> list[Path]:
        return [self.path]

    def detect(self, image: np.ndarray) -> Faces:
        if image.size == 0:
            return Faces()
        if image.ndim == 3:
            gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
        else:
            gray = image
        gray = cv2.equalizeHist(gray)
        rects, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_face, self.min_face), outputRejectLevels=True,
        )
        if len(rects) == 0:
            return Faces()
        r = np.asarray(rects, np.float32).reshape(-1, 4)
        xyxy = np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], axis=1)
        # Cascade "level weights" are unbounded margins; squash them to 0..1 for a usable score.
        conf = 1.0 / (1.0 + np.exp(-np.asarray(weights, np.float32).reshape(-1)))
        return Faces(xyxy=xyxy, det_conf=conf)


class HaarDetector(_CascadeDetector):
    """``haar`` / ``haar:alt`` / ``haar:alt2``: the cascades bundled in ``cv2.data``."""

    name = "haar"

    def __init__(self, *, variant: str = "default", models=None, device: str = "cpu", conf: float | None = None,
                 min_face: int = 20):
        if variant not in _HAAR_VARIANTS:
            raise ModelError(f"unknown haar variant {variant!r}; choose one of {', '.join(_HAAR_VARIANTS)}")
        super().__init__(Path(cv2.data.haarcascades) / _HAAR_VARIANTS[variant], min_face=min_face)
        self.name = f"haar:{variant}" if variant != "default" else "haar"


class LbpDetector(_CascadeDetector):
    """``lbp``: OpenCV's improved LBP frontal-face cascade (fetched: not in opencv-python)."""

    name = "lbp"

    def __init__(self, *, models=None, device: str = "cpu", conf: float | None = None, min_face: int = 20,
                 variant: str = ""):
        from agender.models import ModelStore

        path = (models or ModelStore()).resolve("haar/lbpcascade_frontalface_improved.xml")
        super().__init__(path, min_face=min_face)
