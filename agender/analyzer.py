"""The pipeline every shell uses: detect on a small copy, crop at full resolution, estimate
all faces of a frame (or of several frames) in one batch.

Why detect small: detectors are the cost centre and a 640 px copy finds the same faces a
1080p frame does. Why crop full-res: the estimator sees the sharpest face we have.
"""
from __future__ import annotations

import dataclasses

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from agender.detectors import Detector, create_detector
from agender.estimators import Estimator, create_estimator
from agender.faces import Estimates, Faces
from agender.imageops import clip_boxes, crop_boxes, pad_boxes, resize_for_detection, to_bgr8
from agender.models import ModelStore

log = logging.getLogger(__name__)


DEFAULT_DETECT_WIDTH = 640  # detectors without a default_detect_width of their own
DEFAULT_MIN_FACE = 10  # px, short side of a face box in the full frame (--min-face)


@dataclass
class StageTimes:
    """Cumulative seconds per stage, for `agender bench` and the GUI's stage readout."""

    resize: float = 0.0
    detect: float = 0.0
    crop: float = 0.0
    estimate: float = 0.0
    frames: int = 0
    faces: int = 0


class Analyzer:
    """Detect → crop → estimate, configured once, called per frame.

    >>> an = Analyzer(detector="haar", estimator="cydral", device="cpu")
    >>> faces = an(frame)            # Faces, iterable of Face
    >>> est = an.estimate(crops)     # Estimates for pre-cropped faces

    ``models`` is a directory (or list of directories) searched before the default search path.
    """

    def __init__(
        self,
        detector: str | Detector = "auto",
        estimator: str | Estimator = "auto",
        device: str = "auto",
        models: str | Sequence[str] | ModelStore | None = None,
        *,
        detect_width: int | None | str = "auto",
        conf: float | None = None,
        min_face: int = DEFAULT_MIN_FACE,
        padding: float | None = None,
        batch_size: int = 32,
        min_gender_conf: float | None = None,
        runtime: str = "onnxruntime",
        threads: int | None = None,
    ):
        # runtime/threads: agender.runtimes (onnxruntime | litert | auto) for the nets that have one
        self.runtime = runtime
        self.models = models if isinstance(models, ModelStore) else ModelStore(models)
        # Abstention: a face whose gender confidence max(p, 1 - p) is below this gets no gender
        # (p_male NaN): every output then leaves it empty and it casts no vote in its track's
        # or person's gender. None or <= 0.5: every face keeps its gender.
        self.min_gender_conf = None if min_gender_conf is None or min_gender_conf <= 0.5 else float(min_gender_conf)
        self.device = device
        self.min_face = int(min_face)
        self.batch_size = max(1, int(batch_size))
        self.conf = conf
        # min_face is one rule, in full-frame pixels, applied once in detect(): a detector built
        # here gets min_face=0, since its own filter would count pixels of the downscaled copy it
        # sees (a 10 px YuNet minimum is 27 full-frame px on 720p at 480 px). A Detector passed
        # in as an object keeps whatever filter its caller gave it.
        self.detector: Detector | None = (
            None if detector in (None, "none")
            else create_detector(detector, models=self.models, device=device, conf=conf, min_face=0,
                                 runtime=runtime, threads=threads)
        )
        # "auto": the detector's own choice (YuNet 480 px), else 640; None or 0: the full frame
        self.detect_width = (getattr(self.detector, "default_detect_width", DEFAULT_DETECT_WIDTH)
                             if detect_width == "auto" else detect_width)
        self.estimator: Estimator = create_estimator(estimator, models=self.models, device=device,
                                                     runtime=runtime, threads=threads)
        self.padding = self.estimator.default_padding if padding is None else float(padding)
        if hasattr(self.estimator, "crop_padding"):  # estimators that find the box inside the crop
            self.estimator.crop_padding = self.padding
        self.times = StageTimes()

    # -- description ---------------------------------------------------------------------
    @property
    def device_used(self) -> str:
        """The device actually in use, e.g. ``"CPU"`` or ``"CPU (CUDA failed: …)"``."""
        return getattr(self.estimator, "device_used", "CPU")

    def describe(self) -> dict:
        d = {
            "detector": getattr(self.detector, "name", None),
            "estimator": self.estimator.name,
            "device": self.device_used,
            "detect_width": self.detect_width,
            "padding": self.padding,
            "min_face": self.min_face,
            **({"min_gender_conf": self.min_gender_conf} if self.min_gender_conf is not None else {}),
        }
        if self.runtime != "onnxruntime":  # another runtime, other rows (default runs keep their fingerprint)
            d["runtime"] = self.runtime
        return d

    def model_files(self) -> list[Path]:
        """Every model file in use, once each: what the store resolved, then the files the
        detector and estimator name themselves (weights inside a pip package, OpenCV's
        cascades, cached conversions)."""
        parts = [p for p in (self.detector, self.estimator) if p is not None]
        paths = [*self.models.resolved.values(), *(Path(f) for part in parts for f in part.model_files)]
        out, seen = [], set()
        for p in paths:
            try:
                key = str(p.resolve())
                if key in seen or not p.is_file():
                    continue
            except OSError:
                continue
            seen.add(key)
            out.append(p)
        return out

    # -- stages --------------------------------------------------------------------------
    def downscale(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """The copy the detector runs on, and its scale. Separate from :meth:`detect` so an
        offline pipeline can resize in its reader thread, overlapped with detection."""
        import time

        t0 = time.perf_counter()
        out = resize_for_detection(to_bgr8(frame), self.detect_width,
                                   fast=bool(getattr(self.detector, "fast_downscale", False)))
        self.times.resize += time.perf_counter() - t0
        return out

    def detect(self, frame: np.ndarray, small: tuple[np.ndarray, float] | None = None) -> Faces:
        """Faces in ``frame`` with boxes (and landmarks) in full-resolution coordinates.
        ``small`` is ``downscale(frame)`` when the caller already made it."""
        import time

        if self.detector is None:
            raise ValueError("this Analyzer has no detector (detector='none')")
        frame = to_bgr8(frame)
        if frame.size == 0:
            return Faces()
        small, scale = small if small is not None else self.downscale(frame)
        t1 = time.perf_counter()
        faces = self.detector.detect(small)
        t2 = time.perf_counter()
        self.times.detect += t2 - t1
        if len(faces) == 0:
            return faces
        if scale != 1.0:
            faces.xyxy = faces.xyxy / scale
            if faces.landmarks is not None:
                faces.landmarks = faces.landmarks / scale
        faces.xyxy = clip_boxes(faces.xyxy, frame.shape)
        wh = faces.xyxy[:, 2:] - faces.xyxy[:, :2]
        return faces[(wh.min(axis=1) >= self.min_face)]  # the one min_face rule: full-frame pixels

    def crops(self, frame: np.ndarray, faces: Faces) -> tuple[list[np.ndarray], list[np.ndarray | None] | None]:
        """Padded crops from the full-resolution frame, and landmarks in crop coordinates."""
        crops, origins = crop_boxes(frame, pad_boxes(faces.xyxy, self.padding))
        if faces.landmarks is None:
            return crops, None
        return crops, [lm - o for lm, o in zip(faces.landmarks, origins.astype(np.float32))]

    def estimate(self, crops: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None] | None = None,
                 gender: np.ndarray | None = None) -> Estimates:
        """Score pre-cropped faces, ``batch_size`` at a time (one estimator call per chunk).
        ``gender``: per crop, whether its P(male) is wanted (None: all); only a
        :class:`~agender.estimators.base.SplitGender` estimator uses it (a cheaper P(male) where
        not wanted)."""
        import time

        from agender.estimators.base import SplitGender

        crops = [to_bgr8(c) for c in crops]
        if not crops:
            return Estimates.empty()
        split = isinstance(self.estimator, SplitGender) and gender is not None
        t0 = time.perf_counter()
        parts = []
        for i in range(0, len(crops), self.batch_size):
            lm = None if landmarks is None else landmarks[i : i + self.batch_size]
            kw = {"gender": np.asarray(gender[i : i + self.batch_size], bool)} if split else {}
            parts.append(self.estimator.estimate(crops[i : i + self.batch_size], lm, **kw))
        self.times.estimate += time.perf_counter() - t0
        if len(parts) == 1:
            return self._abstain(parts[0])
        labels = None
        if all(p.age_label is not None for p in parts):
            labels = sum((list(p.age_label) for p in parts), [])
        return self._abstain(Estimates(
            age=np.concatenate([p.age for p in parts]),
            p_male=np.concatenate([p.p_male for p in parts]),
            age_std=np.concatenate([p.age_std for p in parts]),
            age_label=labels,
        ))

    def _abstain(self, est: Estimates) -> Estimates:
        """``est`` with P(male) unknown where the gender confidence is below ``min_gender_conf``."""
        if self.min_gender_conf is None or not len(est.p_male):
            return est
        p = np.asarray(est.p_male, np.float32)
        unsure = np.maximum(p, 1.0 - p) < self.min_gender_conf  # NaN stays NaN (comparison False)
        if not unsure.any():
            return est
        return dataclasses.replace(est, p_male=np.where(unsure, np.float32(np.nan), p))

    # -- whole frames --------------------------------------------------------------------
    def __call__(self, frame: np.ndarray) -> Faces:
        return self.analyze_frames([frame])[0]

    def analyze_frames(self, frames: Sequence[np.ndarray], detections: Sequence[Faces] | None = None,
                       gender: Sequence[np.ndarray] | None = None) -> list[Faces]:
        """Analyse several frames with **one** estimator batch across all their faces
        (what offline analysis does to keep the estimator's batch full). ``gender``: per
        frame, which of its faces need a P(male) (see :meth:`estimate`; None: all)."""
        import time

        frames = [to_bgr8(f) for f in frames]
        dets = list(detections) if detections is not None else [self.detect(f) for f in frames]
        t0 = time.perf_counter()
        all_crops: list[np.ndarray] = []
        all_lms: list[np.ndarray | None] = []
        have_lm = True
        for f, d in zip(frames, dets):
            if not len(d):
                continue
            c, lm = self.crops(f, d)
            all_crops += c
            if lm is None:
                have_lm = False
                all_lms += [None] * len(c)
            else:
                all_lms += lm
        self.times.crop += time.perf_counter() - t0
        want = None
        if gender is not None:
            want = np.concatenate([np.asarray(g, bool).reshape(len(d)) for g, d in zip(gender, dets) if len(d)]
                                  or [np.zeros(0, bool)])
        est = self.estimate(all_crops, all_lms if have_lm else None, want)
        out, k = [], 0
        for d in dets:
            n = len(d)
            part = Estimates(est.age[k : k + n], est.p_male[k : k + n], est.age_std[k : k + n],
                             None if est.age_label is None else list(est.age_label[k : k + n]))
            out.append(d.with_estimates(part) if n else d)
            k += n
        self.times.frames += len(frames)
        self.times.faces += k
        return out
