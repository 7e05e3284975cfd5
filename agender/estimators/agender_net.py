"""agender's own age & gender net (trained by :mod:`agender.train`), one ONNX file.

One 64x64 chip per face, cut exactly like Cydral's age chip (dlib ``extract_image_chip`` on
the 5-point template, 0.2 padding; landmarks from YuNet when the detector gave them, else
from dlib's 5-point predictor), so training chips (:mod:`agender.train.data`) and inference
chips come from the same code: :meth:`AgenderEstimator.chip`.

The net has two outputs: ``age_probs`` (N, K) over the ages listed in the model's metadata
and ``p_male`` (N,). Age = expected value; ``age_std`` = the distribution's spread times a
calibration factor fitted on a training hold-out (metadata ``agender.std_scale``, and
``agender.std_scale_flip`` for the flipped-average below).

Flip: every chip is scored with its mirror image in the same batch and the two age
distributions and P(male) are averaged. Why: it cuts MAE and gender errors at a cost of one
extra chip through the int8 net (~0.2 ms a face), far less than anything else that buys as
much (measured on the training hold-outs: see the model card, ``age_gender_net/agender.md``).

Variants: ``agender:int8`` runs the net statically quantized to int8 on the user's machine
(:mod:`agender.estimators.cydral_int8`'s recipe and per-CPU agreement check, which for this
net also bounds |ΔP(male)|); where that check fails or quantizing is impossible, one warning
and the float net. ``agender:fp32`` always runs the float net. ``agender`` / ``agender:g150``
(the default) is ``agender:int8`` plus the 150-px gender net (:mod:`agender.estimators.gender_net`)
for P(male) and, with its age head, a second view of the age (the two mixed); as a :class:`~agender.estimators.base.SplitGender`
it skips that net (and the mirror pass) on the refresh estimates of a tracked face.

Where the ONNX comes from: ``$AGENDER_NET`` (a file path) if set, else
``agender-net-v1.onnx`` on the model search path (``--models DIR``, ``$AGENDER_MODELS``, ...),
else the copy shipped inside the package (``agender/models/weights/``). The weights inherit
UTKFace's non-commercial terms (see the model card); ``cydral`` (CC0) stays selectable.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from agender.devices import OnnxSession
from agender.errors import AgenderError, ModelError
from agender.estimators.base import SplitGender
from agender.estimators.gender_net import mixture
from agender.estimators.cydral import DLIB_TEMPLATE, YUNET_TEMPLATE, CydralBundle, aligned_chip, dlib_five_points
from agender.faces import Estimates
from agender.imageops import to_bgr8

log = logging.getLogger(__name__)

MODEL_FILE = "agender-net-v1.onnx"
ENV_VAR = "AGENDER_NET"
CHIP = 64
# Cydral's age-net normalization (RGB, (x - mean) * scale), kept since the trunk is seeded from it
MEANS = (122.782, 117.001, 104.298)
SCALE = 1.0 / 256.0


def read_metadata(path: Path | str) -> dict:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in m.metadata_props}
    try:
        return {
            "ages": np.asarray(json.loads(meta["agender.ages"]), np.float64),
            "std_scale": float(meta.get("agender.std_scale", "1.0")),
            "std_scale_flip": float(meta.get("agender.std_scale_flip", meta.get("agender.std_scale", "1.0"))),
            "means": np.asarray(json.loads(meta.get("agender.means", json.dumps(MEANS))), np.float32),
            "scale": float(meta.get("agender.scale", str(SCALE))),
        }
    except (KeyError, ValueError) as exc:
        raise ModelError(f"{path}: not an agender net (metadata {exc})") from exc


def packaged_model() -> Path:
    """The net shipped as package data (may be absent in a source checkout without it)."""
    return Path(__file__).resolve().parent.parent / "models" / "weights" / MODEL_FILE


class AgenderEstimator(SplitGender):
    """Age distribution + P(male) from one 64-px chip (see the module docstring); with the
    gender net (``agender:g150``) P(male) from the 150-px net and the age mixed with its age head's."""

    name = "agender"
    VARIANTS = ("int8", "fp32", "g150")
    wants_landmarks = True
    default_padding = 0.25  # same crop as cydral: the chip reaches beyond the detector box

    def __init__(self, models=None, device: str = "auto", variant: str = "", *,
                 crop_padding: float | None = None, threads: int | None = None,
                 model_path: str | Path | None = None, load_net: bool = True, flip: bool = True,
                 runtime: str = "onnxruntime", gender_net: bool | None = None):
        if variant not in ("", "v1", "fp32", "int8", "g150"):
            raise AgenderError(f"estimator agender has no variant {variant!r} (g150, the default, int8 or fp32)")
        # g150 (the default, also plain "agender"): the int8 age net + the 150-px gender net for
        # P(male) (agender.estimators.gender_net): 93.8 vs 91.6 % gender on faces-dev, and in
        # a tracked video the gender net runs only on a few estimates per track (SplitGender)
        if variant == "":
            variant = "g150"
        gender_net = variant == "g150" if gender_net is None else bool(gender_net)
        g150 = variant == "g150" and gender_net
        if variant == "g150":
            variant = "int8"
        self.flip = bool(flip)
        self.bundle = CydralBundle.load()  # dlib's shape predictor and the chip padding
        self.crop_padding = self.default_padding if crop_padding is None else float(crop_padding)
        self.device_used = "CPU"
        self._predictor_obj = None
        self.model_files = [self.bundle.age.path, self.bundle.gender.path, self.bundle.shape_predictor]
        if not load_net:  # chips only (training data prep)
            return
        path = Path(model_path) if model_path else None
        if path is None and os.environ.get(ENV_VAR):
            path = Path(os.environ[ENV_VAR]).expanduser()
        if path is None and models is not None:
            path = models.find(MODEL_FILE)
        if path is None and packaged_model().is_file():
            path = packaged_model()
        if path is None or not path.is_file():
            raise ModelError(f"agender net not found: {path or MODEL_FILE} (set ${ENV_VAR} to the ONNX file, put "
                             f"{MODEL_FILE} in --models DIR, or train one: python -m agender.train --out DIR)")
        self.model_path = path
        self.model_files.append(path)
        self.meta = read_metadata(path)
        from agender.runtimes import check_runtime, open_session

        runtime = check_runtime(runtime)
        net_path, opt = path, "extended"
        if variant in ("", "int8") and runtime == "litert":
            # no quantized .tflite has passed the int8 agreement check: the float conversion runs
            log.info("agender:int8 with --runtime litert runs the float .tflite net")
        elif variant in ("", "int8"):
            net_path, opt = self._int8_net(path)
        # no spinning when the gender net runs right after it (idle threads would spin against it)
        spin = {"session.intra_op.allow_spinning": "0"} if gender_net else {}
        ort = None if runtime == "litert" else OnnxSession(net_path, device=device, threads=threads,
                                                           name=str(net_path), opt_level=opt, config=spin)
        if ort is not None:
            ort.runtime = "onnxruntime"
        # the shipped .tflite is the conversion of the shipped net only (a retrained one has none)
        key = "agender-net-v1" if path == packaged_model() else None
        self._net = open_session(path, runtime=runtime, device=device, threads=threads, name=str(net_path),
                                 tflite_key=key, onnx_session=ort, compare_outputs=net_path == path)
        self.runtime = runtime
        self.device_used = self._net.device_used
        # gender from the 150-px gender net (agender.estimators.gender_net) where there is one:
        # ~93 % on faces-dev against the age net's own 91.6 % (age_gender_net/agender.md)
        self.gender = None
        if gender_net:
            from agender.estimators.gender_net import GenderNet, find_model

            gpath = find_model(models)
            if gpath is not None:
                self.gender = GenderNet(gpath, threads=threads, device=device)
                self.model_files.append(gpath)
            elif g150:
                raise ModelError("agender:g150 needs agender-gender-v1.onnx (shipped in the package, or "
                                 "$AGENDER_GENDER_NET, or train one: python -m agender.train.gender_net --out DIR)")
        if g150:
            self.name = "agender:g150"

    def _int8_net(self, path: Path) -> tuple[Path, str]:
        """The int8 net, quantized here once and used only after it agreed with the float net
        on this CPU (ages and P(male)); else one warning and the float net."""
        from agender.estimators.cydral_int8 import int8_or_float

        q = int8_or_float(path, self.meta["means"], self.meta["scale"], True, self.meta["ages"], "agender:int8",
                          what=path.name, logger=log)
        if q is None:
            return path, "extended"
        self.name = "agender:int8"
        return q, "all"

    # -- chips (shared with agender.train.data) -----------------------------------------------
    def _predictor(self):
        if self._predictor_obj is None:
            import dlib

            self._predictor_obj = dlib.shape_predictor(str(self.bundle.shape_predictor))
        return self._predictor_obj

    def dlib_landmarks(self, image: np.ndarray) -> np.ndarray:
        return dlib_five_points(self._predictor(), image, self.crop_padding)

    def points(self, crop: np.ndarray, landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The face's 5 points in the crop and the template they map to: YuNet's landmarks when
        given, else dlib's 5-point predictor (~2 ms a face: the gender chip reuses them)."""
        if landmarks is not None:
            return np.asarray(landmarks, np.float64).reshape(5, 2), YUNET_TEMPLATE
        return self.dlib_landmarks(np.ascontiguousarray(crop)), DLIB_TEMPLATE

    def chip(self, crop: np.ndarray, landmarks: np.ndarray | None = None, size: int = CHIP,
             points: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """The RGB uint8 chip for one padded BGR crop (Cydral's age-chip geometry)."""
        crop = np.ascontiguousarray(crop)
        pts, template = points if points is not None else self.points(crop, landmarks)
        return aligned_chip(crop, pts, template, size, self.bundle.chip_padding)[..., ::-1]

    def chips_batch(self, crops: Sequence[np.ndarray], landmarks=None) -> tuple[np.ndarray, np.ndarray]:
        chips, ok, _ = self._chips_and_points(crops, landmarks)
        return chips, ok

    def _chips_and_points(self, crops: Sequence[np.ndarray], landmarks=None):
        n = len(crops)
        out = np.zeros((n, CHIP, CHIP, 3), np.uint8)
        ok = np.zeros(n, bool)
        points: list = [None] * n
        for i, crop in enumerate(crops):
            crop = to_bgr8(crop)
            if min(crop.shape[:2]) < 2:
                continue
            lm = None if landmarks is None else landmarks[i]
            if lm is not None and not (np.size(lm) == 10 and np.isfinite(lm).all()):
                lm = None
            points[i] = self.points(crop, lm)
            out[i] = self.chip(crop, points=points[i])
            ok[i] = True
        return out, ok, points

    # -- the protocol --------------------------------------------------------------------------
    def tensor(self, chips: np.ndarray) -> np.ndarray:
        x = chips.astype(np.float32)
        x -= self.meta["means"]
        x *= np.float32(self.meta["scale"])
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def distributions(self, chips: np.ndarray, mirror: np.ndarray | None = None) -> np.ndarray:
        """The age distributions (N, K) over ``meta["ages"]`` (see :meth:`run_chips`)."""
        return self._run(chips, mirror)[0]

    def _run(self, chips: np.ndarray, mirror: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(chips)
        mirror = np.full(n, self.flip) if mirror is None else np.asarray(mirror, bool).reshape(n) & self.flip
        idx = np.flatnonzero(mirror)
        x = np.concatenate([chips, chips[idx, :, ::-1]]) if len(idx) else chips
        probs, p_male = self._net.run({self._net.input_names[0]: self.tensor(x)})[:2]
        p = probs[:n].astype(np.float64)
        pm = np.asarray(p_male, np.float64).reshape(-1)
        if len(idx):
            p[idx] = 0.5 * (p[idx] + probs[n:])
            pm[idx] = 0.5 * (pm[idx] + pm[n:])
        return p, pm[:n], mirror

    def run_chips(self, chips: np.ndarray, mirror: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(age, age_std, p_male) for RGB uint8 chips (N, 64, 64, 3); with ``flip`` each chip
        (or each where ``mirror`` is true) and its mirror image go through the net in one batch
        and their outputs are averaged."""
        p, pm, mirror = self._run(chips, mirror)
        return (*self._age_and_std(p, mirror), pm)

    def _age_and_std(self, p: np.ndarray, mirror: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected age and calibrated spread of distributions ``p`` (the factor depends on
        whether the mirror pass was averaged in)."""
        ages = self.meta["ages"]
        mean = p @ ages
        var = (p * (ages[None, :] - mean[:, None]) ** 2).sum(axis=1)
        scale = np.where(mirror, self.meta["std_scale_flip"], self.meta["std_scale"])
        return mean, np.sqrt(np.maximum(var, 0.0)) * scale

    def estimate(self, crops: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None] | None = None,
                 gender: np.ndarray | None = None) -> Estimates:
        """``gender`` (SplitGender): where false, the face is a refresh of a track whose gender
        is known: no gender net (its P(male) is the age net's own head's), and its age skips the
        mirror pass (the track's running mean over many frames already averages what the mirror
        averages on a still: 0.25 instead of 0.59 ms a face through the int8 net, measured)."""
        n = len(crops)
        if n == 0:
            return Estimates.empty()
        chips, ok, points = self._chips_and_points(crops, landmarks)
        age = np.full(n, np.nan, np.float32)
        std = np.full(n, np.nan, np.float32)
        p_male = np.full(n, np.nan, np.float32)
        if not ok.any():
            return Estimates(age=age, p_male=p_male, age_std=std)
        want = np.ones(n, bool) if gender is None else np.asarray(gender, bool).reshape(n)
        # the mirror pass only where no second view comes: with the gender net's age head the
        # mixture is that view (the hold-outs: 0.06 y for 0.34 ms a face), and a tracked face's
        # refresh estimates are averaged over the track anyway
        mirror = want[ok] & (self.gender is None or not self.gender.has_age)
        probs, g, mirror = self._run(chips[ok], mirror)
        age[ok], std[ok] = self._age_and_std(probs, mirror)
        p_male[ok] = g
        if self.gender is None:
            return Estimates(age=age, p_male=p_male, age_std=std)
        # the 150-px net: P(male) (and, with its age head, part of the age) where a gender is
        # wanted; a refresh of a tracked face keeps the age net's own P(male) (free), which the
        # tracker shows in the row but does not fold into the track's gender
        idx = np.flatnonzero(ok & want)
        if len(idx):
            pm, p_age = self.gender.p_male_and_age([crops[i] for i in idx], points=[points[i] for i in idx])
            p_male[idx] = pm
            if p_age is not None:
                sel = np.searchsorted(np.flatnonzero(ok), idx)  # rows of probs
                mean, spread = mixture(probs[sel], self.meta["ages"], p_age, self.gender.age_weight)
                age[idx], std[idx] = mean, spread * self.gender.age_std_scale
        return Estimates(age=age, p_male=p_male, age_std=std)
