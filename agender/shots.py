"""Frame-difference signals on a small thumbnail: shot cuts and near-duplicate frames.

Both work on a 64-pixel-wide copy of the frame, so they cost well under a millisecond per
frame and are blind to sensor noise and compression artefacts.

* :class:`ShotCutDetector` says when the picture changes to another shot, so the tracker
  can drop its tracks (a face in the new shot is another person even when its box overlaps
  the old one). A cut needs **both** a colour change (Bhattacharyya distance between HSV
  histograms ≥ ``hist_threshold``) and a pixel change (mean absolute difference of the gray
  thumbnails ≥ ``mad_threshold`` gray levels): a pan or a person walking past the camera
  changes the pixels but keeps the colours, a lighting flicker changes the histogram a little
  but not the pixels. The defaults were set on ``tv_scene_720p.mp4``: its 38 cuts score
  ≥ 0.28 / ≥ 25 and its within-shot frames (pans, a wipe-like occlusion) ≤ 0.23 / ≤ 18.
* :class:`SimilarFrameFilter` implements ``--skip-similar T``: a frame is skipped when the
  mean absolute difference between its gray thumbnail and that of the **last analysed**
  frame is below ``T`` gray levels (0–255). Comparing with the last analysed frame (not the
  previous one) means slow drift still triggers a new analysis once it adds up to ``T``.
  Typical values: 1–2 skips only frozen/static frames, 4–6 skips talking heads.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import cv2
import numpy as np

THUMB_WIDTH = 64


def thumbnail(image: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """A ``width``-pixel-wide BGR copy (area-averaged, aspect kept)."""
    h, w = image.shape[:2]
    th = max(1, round(h * width / max(1, w)))
    # Take every k-th pixel first (a view, no copy) so the area average runs on ≤ 4× the
    # thumbnail's pixels instead of the whole frame: ~10× cheaper on 720p, same decision.
    k = max(1, w // (4 * width))
    if k > 1:
        image = image[::k, ::k]
    return cv2.resize(image, (width, th), interpolation=cv2.INTER_AREA)


def gray_thumbnail(image: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    small = thumbnail(image, width)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    return small.astype(np.float32)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a − b| in gray levels; ``inf`` when the shapes differ (a new source)."""
    if a.shape != b.shape:
        return float("inf")
    return float(np.mean(np.abs(a - b)))


def hsv_histogram(thumb_bgr: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(thumb_bgr, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [16, 4, 4], [0, 180, 0, 256, 0, 256])
    return hist / max(float(hist.sum()), 1.0)


@dataclass
class CutScore:
    hist_distance: float
    mad: float
    is_cut: bool


class ShotCutDetector:
    """Feed every frame the tracker sees; :meth:`update` returns True on the first frame of a
    new shot (never on the very first frame)."""

    def __init__(self, hist_threshold: float = 0.25, mad_threshold: float = 20.0):
        self.hist_threshold = float(hist_threshold)
        self.mad_threshold = float(mad_threshold)
        self._hist: np.ndarray | None = None
        self._gray: np.ndarray | None = None
        self.last: CutScore | None = None

    def score(self, image: np.ndarray) -> CutScore:
        """Compare ``image`` with the previous frame and remember it."""
        small = thumbnail(image)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32) if small.ndim == 3 else small.astype(np.float32)
        hist = hsv_histogram(small if small.ndim == 3 else cv2.cvtColor(small, cv2.COLOR_GRAY2BGR))
        if self._hist is None or self._gray is None:
            s = CutScore(0.0, 0.0, False)
        else:
            hd = float(cv2.compareHist(hist, self._hist, cv2.HISTCMP_BHATTACHARYYA))
            mad = mean_abs_diff(gray, self._gray)
            s = CutScore(hd, mad, hd >= self.hist_threshold and mad >= self.mad_threshold)
        self._hist, self._gray, self.last = hist, gray, s
        return s

    def update(self, image: np.ndarray) -> bool:
        return self.score(image).is_cut

    def reset(self) -> None:
        self._hist = self._gray = None

    def state_dict(self) -> dict:
        """JSON-able state (for resume checkpoints)."""
        return {"hist": _arr_out(self._hist), "gray": _arr_out(self._gray)}

    def load_state_dict(self, state: dict) -> None:
        self._hist, self._gray = _arr_in(state.get("hist")), _arr_in(state.get("gray"))


class SimilarFrameFilter:
    """``--skip-similar T``: :meth:`should_skip` is True when the frame differs from the last
    analysed one by less than ``threshold`` gray levels (mean absolute difference on a
    64-pixel-wide gray thumbnail). ``threshold <= 0`` never skips."""

    def __init__(self, threshold: float = 0.0):
        self.threshold = float(threshold)
        self._ref: np.ndarray | None = None
        self.last_mad: float = float("inf")

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    def should_skip(self, image: np.ndarray) -> bool:
        if not self.enabled:
            return False
        gray = gray_thumbnail(image)
        self.last_mad = float("inf") if self._ref is None else mean_abs_diff(gray, self._ref)
        return self.last_mad < self.threshold

    def mark_analysed(self, image: np.ndarray) -> None:
        """Make ``image`` the reference the next frames are compared with."""
        if self.enabled:
            self._ref = gray_thumbnail(image)

    def reset(self) -> None:
        self._ref = None

    def state_dict(self) -> dict:
        return {"ref": _arr_out(self._ref)}

    def load_state_dict(self, state: dict) -> None:
        self._ref = _arr_in(state.get("ref"))


def _arr_out(a: np.ndarray | None) -> dict | None:
    """A float32 array as JSON (base64 of its bytes: exact and compact)."""
    if a is None:
        return None
    a = np.ascontiguousarray(a, np.float32)
    return {"shape": list(a.shape), "f32": base64.b64encode(a.tobytes()).decode("ascii")}


def _arr_in(d: dict | None) -> np.ndarray | None:
    if d is None:
        return None
    return np.frombuffer(base64.b64decode(d["f32"]), np.float32).reshape(d["shape"]).copy()
