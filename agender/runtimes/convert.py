"""``agender models convert --to tflite``: ONNX → ``.tflite``, reproducibly, checked on the spot.

The route: fold Cydral's spelled-out batch norms into their convs
(:func:`agender.runtimes.fold.fold_conv_affine`), then onnx2tf (ONNX → TensorFlow → TFLite,
NHWC, dynamic batch and image size kept), then run the result beside onnxruntime on the same
input and refuse it (nothing written) when any output differs by more than
:data:`MAX_ABS_DIFF`. Needs the ``[convert]`` extra (onnx2tf + tensorflow-cpu, ~600 MB): a
converter, never a run-time dependency; the shipped ``.tflite`` files were made with it.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from agender.errors import AgenderError, ModelError

log = logging.getLogger(__name__)

# float32 weights match onnxruntime to ~1e-6; float16 weights (half the file) to ~1e-3 on
# probabilities and scores. Beyond these the conversion is broken, not rounded.
MAX_ABS_DIFF = {"float32": 1e-3, "float16": 2e-2}


@dataclass(frozen=True)
class Convertible:
    """A net with a LiteRT conversion: its key, where its ONNX file is, a sample input."""

    key: str
    name: str  # the --detector/--estimator name that uses it
    license: str
    redistributable: bool
    onnx: Callable[[Any], Path]  # (ModelStore) -> the ONNX file
    sample: Callable[[], dict[str, np.ndarray]]


def _cydral(task: str, models: Any = None) -> Path:
    from agender.estimators.cydral import CydralBundle

    b = CydralBundle.load(verify=False)
    return (b.age if task == "age" else b.gender).path


def _chips(side: int) -> dict[str, np.ndarray]:
    # face-like value range after the package's normalisation ((x - mean) * scale, ~ ±2)
    rng = np.random.default_rng(0)
    return {"images": (rng.standard_normal((4, 3, side, side)) * 1.0).astype(np.float32)}


def _yunet(models: Any = None) -> Path:
    from agender.detectors.yunet import MODEL
    from agender.models import ModelStore

    return (models or ModelStore()).resolve(MODEL)


def _frame() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"input": (rng.random((1, 3, 288, 480)) * 255).astype(np.float32)}


def _agender(models: Any = None) -> Path:
    from agender.estimators.agender_net import packaged_model

    return packaged_model()


CONVERTIBLE = {
    c.key: c
    for c in (
        # our own net (age_gender_net/agender.md): ours to ship; its license is the data's
        Convertible("agender-net-v1", "agender", "non-commercial research (UTKFace/AAF terms)", True, _agender,
                    lambda: _chips(64)),
        Convertible("cydral-age-v1", "cydral", "CC0-1.0", True, lambda m: _cydral("age", m), lambda: _chips(64)),
        Convertible("cydral-gender-v1", "cydral", "CC0-1.0", True, lambda m: _cydral("gender", m), lambda: _chips(32)),
        Convertible("yunet", "yunet", "MIT", True, _yunet, _frame),
    )
}


def keys_for(names: list[str]) -> list[str]:
    """Conversion keys for ``--detector/--estimator`` names (``cydral``, ``yunet``) or keys."""
    if not names:
        return list(CONVERTIBLE)
    out = []
    for n in names:
        n = n.strip().lower().partition(":")[0]
        hits = [k for k, c in CONVERTIBLE.items() if n in (k, c.name)]
        if not hits:
            names_ = sorted({c.name for c in CONVERTIBLE.values()})
            raise AgenderError(f"no LiteRT conversion for {n!r}: convertible nets are {', '.join(names_)}")
        out += [h for h in hits if h not in out]
    return out


def _converter_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnx2tf", "tensorflow-cpu", "tensorflow", "onnx", "ai-edge-litert"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


# package data files stay under this (the project's rule for shipped files)
SHIP_LIMIT_BYTES = 10_000_000


def convert(key: str, dest: Path, *, weights: str = "auto", models: Any = None) -> Path:
    """Convert net ``key`` into ``dest/KEY.tflite`` (+ ``KEY.json``); returns the path.

    ``weights="auto"``: float32, or float16 when the float32 file would exceed
    :data:`SHIP_LIMIT_BYTES` (Cydral's age net: 10.75 MB → 5.4 MB)."""
    onnx, onnx2tf = _import_converter()
    if weights not in (*MAX_ABS_DIFF, "auto"):
        raise AgenderError(f"unknown weight type {weights!r}: use {', '.join(MAX_ABS_DIFF)}")
    spec = CONVERTIBLE[key]
    src = spec.onnx(models)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="agender-tflite-") as tmp:
        made_dir = _run_onnx2tf(onnx, onnx2tf, key, src, Path(tmp))
        if weights == "auto":
            weights = _auto_weights(made_dir / f"{key}_float32.tflite")
        made = made_dir / f"{key}_{weights}.tflite"
        if not made.is_file():
            raise ModelError(f"onnx2tf wrote no {made.name} for {src}")
        sample = spec.sample()
        out_names, ref = _onnxruntime_outputs(src, sample)
        meta = _conversion_meta(spec, src, weights, sample, out_names)
        part = _write_partial(dest, key, made, meta, out_names)
        diff = _check_partial(part, key, weights, sample, out_names, ref)
        meta["check"] = {"input": {k: list(v.shape) for k, v in sample.items()}, "max_abs_diff": diff}
        out = _publish(part, dest, key, meta)
    log.info("wrote %s (%.1f MB, max |Δ| vs onnxruntime %.2g)", out, out.stat().st_size / 1e6, diff)
    return out


def _import_converter() -> tuple[Any, Any]:
    """``onnx`` and ``onnx2tf``, or the one-line error naming the ``[convert]`` extra."""
    try:
        import onnx
        import onnx2tf
    except ImportError as exc:
        raise AgenderError(f"converting to tflite needs onnx2tf and tensorflow ({exc.name} missing): "
                           "pip install 'agender[convert]'") from None
    return onnx, onnx2tf


def _run_onnx2tf(onnx: Any, onnx2tf: Any, key: str, src: Path, tmp: Path) -> Path:
    """Fold ``src``'s weights and batch norms into plain convs, run onnx2tf on the result;
    returns the folder onnx2tf wrote its ``KEY_float32/16.tflite`` files to."""
    from agender.estimators.cydral_int8 import fold_fp16_initializers
    from agender.runtimes.fold import fold_conv_affine

    folded = tmp / f"{key}.onnx"
    model = onnx.load(str(src))
    fold_fp16_initializers(model)  # agender's net stores float16 weights behind Cast nodes
    onnx.save(fold_conv_affine(model), str(folded))
    log.info("converting %s (%s) with onnx2tf", key, src)
    onnx2tf.convert(input_onnx_file_path=str(folded), output_folder_path=str(tmp / "out"),
                    output_signaturedefs=True, copy_onnx_input_output_names_to_tflite=True,
                    non_verbose=True)
    return tmp / "out"


def _auto_weights(f32: Path) -> str:
    """float32 when that file fits :data:`SHIP_LIMIT_BYTES`, else float16."""
    return "float32" if f32.is_file() and f32.stat().st_size <= SHIP_LIMIT_BYTES else "float16"


def _onnxruntime_outputs(src: Path, sample: dict[str, np.ndarray]) -> tuple[list[str], list]:
    """The reference: ``src``'s output names and outputs on ``sample`` under onnxruntime, with
    graph optimisations off (the ONNX file as written, not ORT's rewrite of it)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref_sess = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in ref_sess.get_outputs()]
    return out_names, ref_sess.run(None, sample)


def _conversion_meta(spec: Convertible, src: Path, weights: str, sample: dict[str, np.ndarray],
                     out_names: list[str]) -> dict:
    """The ``KEY.json`` record: where the file came from and how it was made (reproducibility)."""
    from agender.models.store import sha256_file

    return {"key": spec.key, "source": src.name, "source_sha256": sha256_file(src), "license": spec.license,
            "weights": weights, "compute": "float32 (XNNPACK)", "inputs": list(sample),
            "outputs": out_names, "layout": "NHWC", "converter": _converter_versions(),
            "route": "fold_conv_affine + onnx2tf.convert(output_signaturedefs, copy_onnx_input_output_names)"}


def _write_partial(dest: Path, key: str, made: Path, meta: dict, out_names: list[str]) -> Path:
    """The converted file as ``dest/.KEY.tflite.partial`` (+ its ``.json``, which
    :class:`~agender.runtimes.litert.LiteRTSession` reads the output names from)."""
    part = dest / f".{key}.tflite.partial"
    part.write_bytes(made.read_bytes())
    part.with_suffix(".json").write_text(json.dumps({**meta, "outputs": out_names}))
    return part


def _check_partial(part: Path, key: str, weights: str, sample: dict[str, np.ndarray], out_names: list[str],
                   ref: list) -> float:
    """The largest difference between ``part``'s outputs under LiteRT and onnxruntime's;
    beyond :data:`MAX_ABS_DIFF` the partial files are removed and nothing is written."""
    from agender.runtimes.litert import LiteRTSession

    got = LiteRTSession(part, threads=1).run(sample, out_names)
    diff = max(float(np.abs(np.asarray(g, np.float64) - r).max()) for g, r in zip(got, ref))
    if not diff <= MAX_ABS_DIFF[weights]:
        part.unlink()
        part.with_suffix(".json").unlink()
        raise ModelError(f"{key}: the .tflite differs from onnxruntime by {diff:.3g} "
                         f"(> {MAX_ABS_DIFF[weights]}): not written")
    return diff


def _publish(part: Path, dest: Path, key: str, meta: dict) -> Path:
    """The checked partial file renamed into place as ``dest/KEY.tflite``, then its final
    ``KEY.json`` written beside it (each step atomic)."""
    out = dest / f"{key}.tflite"
    os.replace(part, out)
    part.with_suffix(".json").unlink()
    tmp_meta = dest / f".{key}.json.partial"
    tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_meta, out.with_suffix(".json"))
    return out
