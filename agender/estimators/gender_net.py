"""agender's gender net: dlib's CC0 face-descriptor ResNet fine-tuned here for gender.

Why a second net: the age net's 64-px trunk tops out at ~91.6 % gender on faces-dev however it
is trained (age_gender_net/agender.md, "Tried since"); a face-recognition trunk that saw
millions of faces at 150 px, fine-tuned on the same training data for gender only, reaches
~93 % and is better on children and on East-Asian faces. Its age head (below) gives the age a
second view, mixed with the age net's.

Input: one 150x150 RGB chip per face, dlib's face-chip geometry (5-point template, 0.25
padding — what ``dlib.get_face_chip`` and :class:`agender.reid.FaceEmbedder` cut), landmarks
from YuNet when the detector gives them (mapped to the template with the same calibration as
the age chip), else dlib's 5-point predictor on the crop. Float RGB 0..255 in (the net
normalises itself), ``p_male`` (N, 1) and ``age_probs`` (N, 101) out. No flip averaging: it bought nothing on the
training hold-outs (93.5 → 93.3 % UTK val, 94.5 → 95.1 % AAF) for twice the cost.

The file stores its convolution weights as int8 with one scale per output channel
(``DequantizeLinear`` on initializers: 6.0 MB instead of 22 MB float32 / 11 MB float16, under
the 10 MB a shipped file may have); :func:`float_model` turns them back into float32 in
memory before onnxruntime sees the graph, so compute is float32 and costs nothing at run time.

The age head (training step 5, :func:`agender.train.gender_net.train_age_head`): a small MLP
(128 → 256 → 101 ages) on the frozen 128-d descriptor, a second output ``age_probs``. The
estimator mixes its distribution with the age net's (:func:`mixture`, the age net's share
``agender.age_weight`` chosen on the training hold-outs): faces-dev MAE 5.77 → 5.40, 70+
9.84 → 8.66, women/men gap 1.56 → 1.15.

int8 (``GenderNet(int8=True)``, not the default): the float graph statically quantized on the
user's machine with the age nets' recipe (:mod:`agender.estimators.cydral_int8`: 7-bit
per-channel weights, data-free synthetic calibration, the final MatMul/Gemm/Softmax/Sigmoid
kept float), cached by the file's sha256 and used only after it agreed with the float net
*on that CPU*: |ΔP(male)| mean ≤ 0.05 / p90 ≤ 0.10 and, with the age head, |Δage| mean ≤ 2.5 /
p90 ≤ 6 y on 48 seeded synthetic 150-px chips. It halves the time a face (0.8–1.0 vs 1.6–2.0
ms at batch 8 on 2 cores) and keeps the gender (faces-dev: |ΔP(male)| 0.006, 6 of 1504 sides
changed), but the age head's ages drift (faces-dev: mean 6 y, head MAE 6.2 → 9.1, worst on
older women; keeping the first or last convolutions float does not fix it), and the check
refuses it here (synthetic chips: 2.63 / 6.39 y). So the shipped net runs float.

Where the ONNX comes from: ``$AGENDER_GENDER_NET`` (a file path), else ``agender-gender-v1.onnx``
on the model search path, else the copy shipped in the package. Its weights inherit UTKFace's
non-commercial terms (trained on it) on top of dlib's CC0 starting point.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from agender.errors import ModelError
from agender.estimators.cydral import DLIB_TEMPLATE, YUNET_TEMPLATE, aligned_chip, dlib_five_points
from agender.imageops import to_bgr8

log = logging.getLogger(__name__)

MODEL_FILE = "agender-gender-v1.onnx"
ENV_VAR = "AGENDER_GENDER_NET"
CHIP = 150
PADDING = 0.25  # dlib.get_face_chip's default: the descriptor net was trained on these chips


def packaged_model() -> Path:
    return Path(__file__).resolve().parent.parent / "models" / "weights" / MODEL_FILE


def find_model(models=None) -> Path | None:
    """The gender net's file (see the module docstring), or None when there is none."""
    if os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR]).expanduser()
        if not path.is_file():
            raise ModelError(f"${ENV_VAR}={path}: no such file")
        return path
    if models is not None:
        found = models.find(MODEL_FILE)
        if found is not None:
            return found
    return packaged_model() if packaged_model().is_file() else None


def float_model(path: Path | str):
    """The ONNX model with every int8-stored initializer (``DequantizeLinear`` of a constant)
    replaced by its float32 value: the same numbers onnxruntime would compute, folded once."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    keep, folded = [], {}
    for n in g.node:
        if n.op_type == "DequantizeLinear" and all(i in inits for i in n.input):
            q = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
            s = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            z = numpy_helper.to_array(inits[n.input[2]]).astype(np.float32) if len(n.input) > 2 else 0.0
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if np.ndim(s):
                shape[axis] = -1
            folded[n.output[0]] = ((q - np.reshape(z, shape)) * np.reshape(s, shape)).astype(np.float32)
        else:
            keep.append(n)
    if not folded:
        return m
    used = {i for n in keep for i in n.input}
    new_inits = [t for t in g.initializer if t.name in used] + \
        [numpy_helper.from_array(v, k) for k, v in folded.items()]
    del g.node[:]
    g.node.extend(keep)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    return m


def mixture(p_net: np.ndarray, net_ages: np.ndarray, p_head: np.ndarray, w: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of the mixture ``w`` × the age net's distribution + (1 − ``w``) × the head's:
    what :class:`agender.estimators.agender_net.AgenderEstimator` reports when both ran (the
    training command chose ``w`` on its hold-outs). Why a mixture and not a plain mean of the
    ages: its spread includes the two nets' disagreement, so ``age_std`` stays honest."""
    head_ages = np.arange(p_head.shape[1], dtype=np.float64)
    m1, m2 = p_net @ net_ages, p_head @ head_ages
    s1 = p_net @ net_ages ** 2
    s2 = p_head @ head_ages ** 2
    mean = w * m1 + (1 - w) * m2
    return mean, np.sqrt(np.maximum(w * s1 + (1 - w) * s2 - mean ** 2, 0.0))


# op types the int8 recipe leaves float: the 128-d descriptor's projection and the head
KEEP_FLOAT = ("MatMul", "Gemm", "Sigmoid", "Softmax")


def check_chips() -> np.ndarray:
    """The int8 agreement check's input: 48 seeded synthetic 150-px chips (float RGB 0..255,
    the net's own input), the same generator as the age nets' check (never face data)."""
    from agender.estimators.cydral_int8 import CHECK_SEED, CHECK_SIZE, calibration_chips

    return calibration_chips(CHECK_SIZE, size=CHIP, seed=CHECK_SEED).astype(np.float32)


def p_male_agreement(int8_path: Path, float_model_bytes: bytes, x: np.ndarray) -> dict:
    """|int8 P(male) − float P(male)| over ``x`` on this CPU (``n``, ``p_male_mean``/``p90``/``max``),
    and with the age head |Δ expected age| in years (``mean``/``p90``/``max``)."""
    from agender.estimators.cydral_int8 import difference_stats, run_both

    fp, q = run_both(float_model_bytes, int8_path, x)  # opt level "all", as GenderNet runs them
    pairs = [("p_male_", np.abs(q[0].reshape(-1) - fp[0].reshape(-1)))]
    if len(fp) > 1:  # the age head: expected ages in years, judged like the age nets'
        ages = np.arange(fp[1].shape[1], dtype=np.float64)
        pairs.append(("", np.abs(q[1] @ ages - fp[1] @ ages)))
    return difference_stats(pairs, len(x))


def cached_int8_gender_net(path: Path, model=None) -> Path:
    """The int8 gender net for ``path``, quantized here once and checked on this CPU (raises
    :class:`~agender.estimators.cydral_int8.Int8Rejected` when it disagrees with the float net)."""
    from agender.estimators.cydral_int8 import CALIBRATION_SEED, calibration_chips, cached_int8, quantize_age_net
    from agender.models.store import sha256_file

    path = Path(path)
    sha = sha256_file(path)
    model = float_model(path) if model is None else model
    data = model.SerializeToString()

    def build() -> bytes:
        import onnx

        calibration = calibration_chips(128, size=CHIP, seed=CALIBRATION_SEED).astype(np.float32)
        return quantize_age_net(path, calibration, sha, model=onnx.load_from_string(data), keep_float=KEEP_FLOAT)

    return cached_int8(path, sha, build, lambda out: p_male_agreement(out, data, check_chips()))


class GenderNet:
    """P(male) of face crops through the 150-px gender net (see the module docstring).

    ``int8``: run the int8 copy once it agreed with the float net on this CPU (else one warning
    and the float net; the shipped net with its age head is refused, see the module docstring);
    ``name`` says which runs (``gender150:int8`` or ``gender150:fp32``)."""

    def __init__(self, path: Path | str, *, threads: int | None = None, device: str = "auto", int8: bool = False):
        from agender.devices import OnnxSession

        self.path = Path(path)
        try:
            model = float_model(self.path)
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: say which
            raise ModelError(f"{self.path}: not a readable gender net ({exc})") from exc
        meta = {p.key: p.value for p in model.metadata_props}
        if meta.get("agender.kind") != "gender150":
            raise ModelError(f"{self.path}: not an agender gender net (metadata agender.kind missing)")
        self.license = meta.get("agender.license", "")
        # the age head (training step 5), when the file has one: its share of the age mixture
        self.has_age = "age_probs" in [o.name for o in model.graph.output] and "agender.age_weight" in meta
        self.age_weight = float(meta.get("agender.age_weight", "1.0"))
        self.age_std_scale = float(meta.get("agender.age_std_scale", "1.0"))
        source, self.name = model.SerializeToString(), "gender150:fp32"
        self.int8_path: Path | None = None
        if int8:
            self.int8_path = self._int8(model)
            if self.int8_path is not None:
                source, self.name = str(self.int8_path), "gender150:int8"
        # opt "all": 4.9 vs 8.1 ms a chip under "extended" (measured)
        self._sess = OnnxSession(source, device=device, threads=threads, name=str(self.path), opt_level="all")
        self.device_used = self._sess.device_used
        self._predictor_obj = None

    def _int8(self, model) -> Path | None:
        from agender.errors import one_line
        from agender.estimators.cydral_int8 import Int8Rejected

        try:
            return cached_int8_gender_net(self.path, model)
        except Int8Rejected as exc:
            log.warning("gender net: %s; using fp32", exc)
        except Exception as exc:  # noqa: BLE001 - quantizer missing/changed, cache not writable, ...
            log.warning("gender net: cannot quantize %s (%s), using fp32", self.path.name, one_line(exc, limit=160))
        return None

    # -- chips ------------------------------------------------------------------------------
    def _predictor(self):
        if self._predictor_obj is None:
            import dlib

            from agender.estimators.cydral import CydralBundle

            self._predictor_obj = dlib.shape_predictor(str(CydralBundle.load().shape_predictor))
        return self._predictor_obj

    def chip(self, crop: np.ndarray, landmarks: np.ndarray | None = None, crop_padding: float = 0.25,
             points: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """The RGB uint8 150-px chip of one padded BGR crop; ``points``: the face's 5 points and
        their template when the caller has them already (the age chip's), else from
        ``landmarks`` (YuNet's) or dlib's 5-point predictor."""
        crop = np.ascontiguousarray(to_bgr8(crop))
        if points is not None:
            pts, template = points
        elif landmarks is not None and np.size(landmarks) == 10 and np.isfinite(landmarks).all():
            pts, template = np.asarray(landmarks, np.float64).reshape(5, 2), YUNET_TEMPLATE
        else:
            pts, template = dlib_five_points(self._predictor(), crop, crop_padding), DLIB_TEMPLATE
        return aligned_chip(crop, pts, template, CHIP, PADDING)[..., ::-1]

    def run_chips_all(self, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(P(male) (N,), age distribution (N, 101) over ages 0..100 or None without the age
        head), float64, for RGB uint8 chips (N, 150, 150, 3)."""
        if not len(chips):
            return np.zeros(0, np.float64), (np.zeros((0, 101)) if self.has_age else None)
        x = np.ascontiguousarray(chips, np.float32)
        out = self._sess.run({self._sess.input_names[0]: x})
        p = np.asarray(out[0], np.float64).reshape(-1)
        return p, (np.asarray(out[1], np.float64) if self.has_age and len(out) > 1 else None)

    def run_chips(self, chips: np.ndarray) -> np.ndarray:
        """P(male) (N,) float64 for RGB uint8 chips (N, 150, 150, 3)."""
        return self.run_chips_all(chips)[0]

    def p_male_and_age(self, crops: Sequence[np.ndarray], landmarks=None, crop_padding: float = 0.25,
                       points=None) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`run_chips_all` of the crops' chips."""
        return self.run_chips_all(self.chips(crops, landmarks, crop_padding, points))

    def chips(self, crops: Sequence[np.ndarray], landmarks=None, crop_padding: float = 0.25, points=None) -> np.ndarray:
        if not len(crops):
            return np.zeros((0, CHIP, CHIP, 3), np.uint8)
        return np.stack([self.chip(c, None if landmarks is None else landmarks[i], crop_padding,
                                   None if points is None else points[i]) for i, c in enumerate(crops)])

    def p_male(self, crops: Sequence[np.ndarray], landmarks=None, crop_padding: float = 0.25) -> np.ndarray:
        return self.run_chips(self.chips(crops, landmarks, crop_padding))
