"""Levi & Hassner (CVPR-W 2015) age and gender Caffe nets, run through ``cv2.dnn``.

The classic "OpenCV age/gender" pair: 227x227 BGR crops minus a per-channel mean, eight age
buckets and (male, female). Kept because many users know its outputs; the weights are a
research release, fetched by ``agender models fetch levi-hassner`` or pointed at with
``age_model=`` / ``gender_model=``. Every batch is one ``blobFromImages`` and one forward
per net.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from agender.devices import cv2_dnn_target
from agender.errors import AgenderError, ModelError
from agender.faces import Estimates
from agender.imageops import to_bgr8

INPUT_SIZE = 227
MEAN_BGR = (78.4263377603, 87.7689143744, 114.895847746)
AGE_BUCKETS: tuple[tuple[int, int], ...] = ((0, 2), (4, 6), (8, 12), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100))
AGE_LABELS = tuple(f"({lo}-{hi})" for lo, hi in AGE_BUCKETS)
_MID = np.array([(lo + hi) / 2 for lo, hi in AGE_BUCKETS])
# a face is anywhere in its bucket: uniform within it, so a bucket contributes width²/12
_WITHIN_VAR = np.array([(hi - lo) ** 2 / 12 for lo, hi in AGE_BUCKETS])
GENDERS = ("male", "female")  # the gender net's output order

FILES = {
    "age": ("levi_hassner/age_deploy.prototxt", "levi_hassner/age_net.caffemodel"),
    "gender": ("levi_hassner/gender_deploy.prototxt", "levi_hassner/gender_net.caffemodel"),
}


def _first_line(exc: BaseException) -> str:
    """cv2.error messages span lines and start with a source path; keep the reason, one line."""
    text = " ".join(str(exc).split())
    m = re.search(r"error: \(-?\d+:[^)]*\) (.*)", text)
    return (m.group(1) if m else text)[:200]


def age_from_probs(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(expected age, std, argmax bucket label) of (N, 8) bucket probabilities.

    The std counts the spread between buckets and the width of each bucket, so a confident
    "(60-100)" still says ±11.5 years.
    """
    p = np.asarray(p, np.float64)
    mean = p @ _MID
    var = (p * ((_MID[None, :] - mean[:, None]) ** 2 + _WITHIN_VAR[None, :])).sum(axis=1)
    return mean, np.sqrt(var), [AGE_LABELS[i] for i in p.argmax(axis=1)]


class LeviHassnerEstimator:
    """Age bucket, expected age and P(male) from the Levi–Hassner Caffe nets."""

    name = "levi-hassner"
    wants_landmarks = False
    # The nets were trained on Adience's loosely cropped faces (the face fills roughly half
    # the image width), so they want generous context around a detector's tight box.
    default_padding = 0.4

    def __init__(
        self,
        models=None,
        device: str = "auto",
        variant: str = "",
        *,
        age_model: str | Path | None = None,
        gender_model: str | Path | None = None,
        age_proto: str | Path | None = None,
        gender_proto: str | Path | None = None,
    ):
        """``age_model``/``gender_model`` point at .caffemodel files directly (their prototxt is
        ``age_proto``/``gender_proto``, else a ``*deploy.prototxt`` beside them, else the one on
        the model search path)."""
        if variant:
            raise AgenderError(f"estimator levi-hassner has no variants (got {variant!r})")
        from agender.models import ModelStore

        self.models = models if models is not None else ModelStore()
        self.model_files: list[Path] = []  # filled by _load
        self._age_net = self._load("age", age_model, age_proto)
        self._gender_net = self._load("gender", gender_model, gender_proto)
        self.device_used = cv2_dnn_target(self._age_net, device)
        cv2_dnn_target(self._gender_net, device)

    # -- loading -------------------------------------------------------------------------------
    def _paths(self, task: str, model: str | Path | None, proto: str | Path | None) -> tuple[Path, Path]:
        proto_file, model_file = FILES[task]
        if model is None:
            return self._explicit(proto) or self.models.resolve(proto_file), self.models.resolve(model_file)
        model_path = Path(model).expanduser()
        if not model_path.is_file():
            raise ModelError(f"{task} model {model_path} not found")
        beside = [model_path.with_name(Path(proto_file).name), model_path.with_name("deploy.prototxt")]
        proto_path = self._explicit(proto) or next((p for p in beside if p.is_file()), None)
        return proto_path or self.models.resolve(proto_file), model_path

    @staticmethod
    def _explicit(proto: str | Path | None) -> Path | None:
        if proto is None:
            return None
        path = Path(proto).expanduser()
        if not path.is_file():
            raise ModelError(f"prototxt {path} not found")
        return path

    def _load(self, task: str, model: str | Path | None, proto: str | Path | None):
        proto_path, model_path = self._paths(task, model, proto)
        self.model_files += [proto_path, model_path]
        try:
            net = cv2.dnn.readNetFromCaffe(str(proto_path), str(model_path))
            # A prototxt that does not match the weights (layer shapes) only fails at the first
            # forward: do it now, so the user hears about it at load time, naming both files.
            net.setInput(np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), np.float32))
            out = net.forward()
        except cv2.error as exc:
            raise ModelError(
                f"cannot load {task} net {model_path} with {proto_path}: {_first_line(exc)}"
                " (do these weights belong to this prototxt?)"
            ) from exc
        classes = len(AGE_BUCKETS) if task == "age" else len(GENDERS)
        if out.reshape(1, -1).shape[1] != classes:
            raise ModelError(f"{task} net {model_path} gives {out.size} outputs, expected {classes}")
        return net

    # -- the protocol --------------------------------------------------------------------------
    def probabilities(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw softmax outputs for non-empty BGR crops: (N, 8) age buckets, (N, 2) (male, female).
        One ``blobFromImages`` (resize to 227x227, subtract the mean, no channel swap) feeds both nets."""
        blob = cv2.dnn.blobFromImages(list(crops), 1.0, (INPUT_SIZE, INPUT_SIZE), MEAN_BGR, swapRB=False, crop=False)
        out = []
        for net in (self._age_net, self._gender_net):
            net.setInput(blob)
            out.append(net.forward().reshape(len(blob), -1))
        return out[0], out[1]

    def estimate(
        self, crops: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None] | None = None
    ) -> Estimates:
        n = len(crops)
        if n == 0:
            return Estimates.empty()
        images = [to_bgr8(c) for c in crops]
        idx = np.flatnonzero([img.size > 0 for img in images])  # empty crops stay unknown (NaN, "")
        age = np.full(n, np.nan, np.float32)
        std = np.full(n, np.nan, np.float32)
        p_male = np.full(n, np.nan, np.float32)
        labels = [""] * n
        if len(idx):
            pa, pg = self.probabilities([images[i] for i in idx])
            mean, spread, names = age_from_probs(pa)
            age[idx], std[idx], p_male[idx] = mean, spread, pg[:, GENDERS.index("male")]
            for i, label in zip(idx, names):
                labels[i] = label
        return Estimates(age=age, p_male=p_male, age_std=std, age_label=labels)
