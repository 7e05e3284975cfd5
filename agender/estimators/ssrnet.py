"""SSR-Net age + gender (Yang et al., IJCAI 2018) on onnxruntime, no TensorFlow.

Each variant pairs an age net with a gender net trained on the same corpus (IMDB, WIKI,
MORPH2). The upstream Keras weights are converted to ONNX once and cached
(:mod:`agender.estimators.ssrnet_onnx`); both nets see the same preprocessed batch.

Preprocessing reproduces the reference exactly: the whole crop, ``cv2.resize`` to 64x64
(bilinear) on uint8, then a per-image min-max stretch to 0..255 in float32 (what
``cv2.normalize(..., NORM_MINMAX)`` does), BGR channel order. The stretch is vectorised over
the batch; only the resize is per crop (crops differ in size).

Gender polarity: every checkpoint is checked against labelled faces. The MORPH gender net
reports P(female) (accuracy 0.29 read as male, 0.71 inverted, on faces-dev), so its output is
flipped; every variant returns P(male).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from agender.errors import AgenderError
from agender.faces import Estimates
from agender.imageops import to_bgr8
from agender.models import ModelStore

IMAGE_SIZE = 64
# Thread pool workers sleep instead of spinning between ops. SSR-Net's ops are tens of
# microseconds to a few milliseconds; spinning workers then mostly burn cores that the video
# decoder, the detector and the GUI need, and under any contention they made a 2-thread session
# 2-3x slower than a sleeping one (measured on 2 shared cores). Threads stay the device
# policy's default (physical cores; AGENDER_THREADS or ``threads=`` override).
SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}


@dataclass(frozen=True)
class SSRNetVariant:
    """The two checkpoints of one training corpus."""

    age_file: str
    gender_file: str
    gender_is_female: bool = False  # checkpoint outputs P(female): flip to P(male)


VARIANTS: dict[str, SSRNetVariant] = {
    "wiki": SSRNetVariant("ssrnet/wiki_age.h5", "ssrnet/wiki_gender.h5"),
    "imdb": SSRNetVariant("ssrnet/imdb_age.h5", "ssrnet/imdb_gender.h5"),
    "morph": SSRNetVariant("ssrnet/morph2_age.h5", "ssrnet/morph_gender.h5", gender_is_female=True),
}
ALIASES = {"morph2": "morph"}
DEFAULT_VARIANT = "wiki"


def canonical_variant(variant: str) -> str:
    v = (variant or DEFAULT_VARIANT).strip().lower()
    v = ALIASES.get(v, v)
    if v not in VARIANTS:
        raise AgenderError(f"unknown ssrnet variant {variant!r}; choose one of: {', '.join([*VARIANTS, *ALIASES])}")
    return v


def preprocess(crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """BGR crops → ``(N, 64, 64, 3)`` float32 batch, plus a mask of crops that were usable.

    An empty crop (a box wholly outside the frame) becomes a zero image and is masked out,
    so the caller can report NaN for that face instead of failing the whole batch.
    """
    n = len(crops)
    chips = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    ok = np.ones(n, bool)
    for i, crop in enumerate(crops):
        crop = np.asarray(crop)
        if crop.size == 0:
            ok[i] = False
            continue
        if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
            crop = to_bgr8(crop)
        cv2.resize(crop, (IMAGE_SIZE, IMAGE_SIZE), dst=chips[i], interpolation=cv2.INTER_LINEAR)
    flat = chips.reshape(n, -1)
    lo = flat.min(axis=1).astype(np.float64)
    hi = flat.max(axis=1).astype(np.float64)
    # cv2.normalize(NORM_MINMAX): scale = 255 / (max - min) (0 for a flat image), shift = -min·scale.
    span = hi - lo
    scale = np.divide(255.0, span, out=np.zeros_like(span), where=span > np.finfo(np.float64).eps)
    shift = -lo * scale
    batch = chips.astype(np.float32)
    batch *= scale.astype(np.float32)[:, None, None, None]
    batch += shift.astype(np.float32)[:, None, None, None]
    return batch, ok


class SSRNetEstimator:
    """Estimator protocol implementation for SSR-Net (``"ssrnet"``, ``"ssrnet:imdb"``, …).

    >>> est = SSRNetEstimator(variant="imdb", device="cpu")
    >>> est.estimate([bgr_crop]).age
    """

    # SSR-Net's demos crop the detector box grown by 0.4 of its width/height on every side
    # (``ad = 0.4``), and the IMDB-WIKI training chips carry the same 40 % margin: the nets
    # expect hair, ears and chin in the chip, not a tight face box.
    default_padding: float = 0.4
    wants_landmarks: bool = False
    # Faces per session run. Larger runs are *slower* per face here: the first activations of
    # a 32-face run (32x32x62x62 floats, 16 MB) fall out of L2, while an 8-face run stays near
    # it. Measured on this 2-core Xeon, one thread, both nets: 0.70 ms/face in runs of 4-16,
    # 0.79 in runs of 32, 0.82 in runs of 64, 0.74 one face at a time.
    max_batch: int = 8

    def __init__(
        self,
        models: ModelStore | None = None,
        device: str = "auto",
        variant: str = DEFAULT_VARIANT,
        *,
        threads: int | None = None,
    ):
        from agender.devices import OnnxSession
        from agender.estimators.ssrnet_onnx import cached_onnx

        self.variant = canonical_variant(variant)
        self.name = f"ssrnet:{self.variant}"
        spec = VARIANTS[self.variant]
        self.spec = spec
        store = models or ModelStore()
        sessions = []
        self.model_files: list[Path] = []  # the converted nets (the HDF5 files: the store's)
        for file in (spec.age_file, spec.gender_file):
            h5 = store.resolve(file)
            onnx_path = cached_onnx(h5, store.sha256(h5))
            self.model_files.append(Path(onnx_path))
            sessions.append(
                OnnxSession(onnx_path, device=device, threads=threads, name=f"{self.name} {file}", config=SESSION_CONFIG)
            )
        self.age_session, self.gender_session = sessions

    @property
    def device_used(self) -> str:
        return self.age_session.device_used

    def run_nets(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs of the two nets for a preprocessed batch: age in years and the gender
        checkpoint's own score (before any polarity flip)."""
        ages, scores = [], []
        for start in range(0, len(batch), self.max_batch):
            chunk = np.ascontiguousarray(batch[start:start + self.max_batch])
            feed = {"input": chunk}
            ages.append(self.age_session.run(feed)[0])
            scores.append(self.gender_session.run(feed)[0])
        if not ages:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return np.concatenate(ages), np.concatenate(scores)

    def p_male(self, gender_score: np.ndarray) -> np.ndarray:
        """The gender checkpoint's score normalised to P(male) in 0..1."""
        p = 1.0 - gender_score if self.spec.gender_is_female else gender_score
        return np.clip(p, 0.0, 1.0)

    def estimate(
        self, crops: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None] | None = None
    ) -> Estimates:
        if len(crops) == 0:
            return Estimates.empty()
        batch, ok = preprocess(crops)
        age, score = self.run_nets(batch)
        p = self.p_male(score)
        age = np.where(ok, age, np.nan)
        p = np.where(ok, p, np.nan)
        return Estimates(age=age, p_male=p)

    def __repr__(self) -> str:
        return f"SSRNetEstimator(variant={self.variant!r}, device_used={self.device_used!r})"
