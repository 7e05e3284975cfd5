"""agender's gender net: dlib's CC0 face-descriptor ResNet fine-tuned here for gender.

Why a second net: the age net's 64-px trunk tops out at ~91.6 % gender on faces-dev however it
is trained (age_gender_net/agender.md, "Tried since"); a face-recognition trunk that saw
millions of faces at 150 px, fine-tuned on the same training data for gender only, reaches
~93 % and is better on children and on East-Asian faces. The age still comes from the age net.

Input: one 150x150 RGB chip per face, dlib's face-chip geometry (5-point template, 0.25
padding — what ``dlib.get_face_chip`` and :class:`agender.reid.FaceEmbedder` cut), landmarks
from YuNet when the detector gives them (mapped to the template with the same calibration as
the age chip), else dlib's 5-point predictor on the crop. Float RGB 0..255 in (the net
normalises itself), ``p_male`` (N, 1) out. No flip averaging: it bought nothing on the
training hold-outs (93.5 → 93.3 % UTK val, 94.5 → 95.1 % AAF) for twice the cost.

The file stores its convolution weights as int8 with one scale per output channel
(``DequantizeLinear`` on initializers: 5.6 MB instead of 22 MB float32 / 11 MB float16, under
the 10 MB a shipped file may have); :func:`float_model` turns them back into float32 in
memory before onnxruntime sees the graph, so compute is float32 and costs nothing at run time.

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


class GenderNet:
    """P(male) of face crops through the 150-px gender net (see the module docstring)."""

    def __init__(self, path: Path | str, *, threads: int | None = None, device: str = "auto"):
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
        # opt "all": 4.9 vs 8.1 ms a chip under "extended" (measured)
        self._sess = OnnxSession(model.SerializeToString(), device=device, threads=threads,
                                 name=str(self.path), opt_level="all")
        self.device_used = self._sess.device_used
        self._predictor_obj = None

    # -- chips ------------------------------------------------------------------------------
    def _predictor(self):
        if self._predictor_obj is None:
            import dlib

            from agender.estimators.cydral import CydralBundle

            self._predictor_obj = dlib.shape_predictor(str(CydralBundle.load().shape_predictor))
        return self._predictor_obj

    def chip(self, crop: np.ndarray, landmarks: np.ndarray | None = None, crop_padding: float = 0.25) -> np.ndarray:
        """The RGB uint8 150-px chip of one padded BGR crop."""
        crop = np.ascontiguousarray(to_bgr8(crop))
        if landmarks is not None and np.size(landmarks) == 10 and np.isfinite(landmarks).all():
            pts, template = np.asarray(landmarks, np.float64).reshape(5, 2), YUNET_TEMPLATE
        else:
            pts, template = dlib_five_points(self._predictor(), crop, crop_padding), DLIB_TEMPLATE
        return aligned_chip(crop, pts, template, CHIP, PADDING)[..., ::-1]

    def run_chips(self, chips: np.ndarray) -> np.ndarray:
        """P(male) (N,) float64 for RGB uint8 chips (N, 150, 150, 3)."""
        if not len(chips):
            return np.zeros(0, np.float64)
        x = np.ascontiguousarray(chips, np.float32)
        out = self._sess.run({self._sess.input_names[0]: x})[0]
        return np.asarray(out, np.float64).reshape(-1)

    def p_male(self, crops: Sequence[np.ndarray], landmarks=None, crop_padding: float = 0.25) -> np.ndarray:
        chips = np.stack([self.chip(c, None if landmarks is None else landmarks[i], crop_padding)
                          for i, c in enumerate(crops)]) if len(crops) else np.zeros((0, CHIP, CHIP, 3), np.uint8)
        return self.run_chips(chips)
