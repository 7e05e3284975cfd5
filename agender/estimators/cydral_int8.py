"""Static int8 (QDQ) quantization of Cydral's age net, built on the user's machine and cached.

Why static and not dynamic: ``quantize_dynamic`` measures each activation's range over the
whole batch tensor at run time, so a face's age depends on which other faces share its batch
(measured: up to 0.08 in a class probability between batch 8 and one-by-one). That breaks
"same face, same answer", on which ``agender analyze`` resumes rely. Static ranges are fixed
in the model: the result of a face does not depend on its batch (tested bit-exact).

Why the calibration images are synthetic: a static model needs activation ranges, and there
are no face images a user is guaranteed to have (none of agender's dependencies ships any),
and we ship no data derived from face sets. So the ranges are calibrated on 128 images drawn
from a fixed seed: a third uniform noise, a third smooth multi-scale noise, a third
"dead leaves" (occluding discs with power-law radii: the classic data-free model of natural
image statistics, sharp edges at every scale). The mix was chosen over each kind alone on
fp32 agreement on 338 news-video face chips (not the evaluation set).

Graph changes before quantizing:

* dlib's ``affine`` layers (a per-channel Mul then Add after each Conv) are folded into the
  Conv weights and bias (exact in real arithmetic). Left alone, the quantizer gives their
  ``[1, C, 1, 1]`` constants per-axis scales that onnxruntime rejects at run time.
* the final Gemm and Softmax stay float: quantizing the probabilities to 8 bits rounds every
  class to multiples of 1/255 and the expected age with it.

The quantized model is cached under ``cache_dir()/quantized/<sha256 of age-v1.onnx>-<version>.onnx``
(atomic write); its metadata names the source sha256 and :data:`QUANTIZER_VERSION`, and a
cached file whose metadata does not match is rebuilt, never trusted.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np

from agender.errors import ModelError
from agender.io.sinks.base import atomic_write_bytes

QUANTIZER_VERSION = "cydral-int8/1"
CALIBRATION_SEED = 20240611
CALIBRATION_SIZE = 128


# -- graph surgery -------------------------------------------------------------------------------
def fold_affine(model) -> None:
    """Fold every Conv → Mul(const) → Add(const) chain into the Conv, in place (float64 math)."""
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    drop: set[int] = set()
    rename: dict[str, str] = {}
    for conv in [n for n in g.node if n.op_type == "Conv" and len(n.input) == 3]:
        nxt = consumers.get(conv.output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "Mul" or nxt[0].input[1] not in inits:
            continue
        mul = nxt[0]
        nxt = consumers.get(mul.output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "Add" or nxt[0].input[1] not in inits:
            continue
        add = nxt[0]
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
        s = numpy_helper.to_array(inits[mul.input[1]]).astype(np.float64).reshape(-1)
        o = numpy_helper.to_array(inits[add.input[1]]).astype(np.float64).reshape(-1)
        if s.size != w.shape[0] or o.size != w.shape[0]:
            continue
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array((w * s[:, None, None, None]).astype(np.float32), conv.input[1]))
        inits[conv.input[2]].CopyFrom(numpy_helper.from_array((b * s + o).astype(np.float32), conv.input[2]))
        rename[add.output[0]] = conv.output[0]
        drop |= {id(mul), id(add)}
    keep = [n for n in g.node if id(n) not in drop]
    for n in keep:
        for k, name in enumerate(n.input):
            if name in rename:
                n.input[k] = rename[name]
    for out in g.output:
        if out.name in rename:  # never the case for age-v1, but keep the graph valid
            raise ModelError("age net ends in an affine layer: cannot fold it")
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input}
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)


# -- data-free calibration -----------------------------------------------------------------------
def calibration_chips(n: int = CALIBRATION_SIZE, size: int = 64, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """``n`` synthetic uint8 RGB chips (no face data): noise, smooth noise, dead leaves."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        kind = i % 3
        if kind == 0:  # uniform noise: every filter sees its full response
            out[i] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        elif kind == 1:  # smooth multi-scale noise, random brightness and contrast
            img = np.zeros((size, size, 3), np.float32)
            for k, amp in ((2, 1.0), (4, 0.6), (8, 0.35), (16, 0.2), (size, 0.08)):
                grid = rng.standard_normal((k, k, 3)).astype(np.float32)
                img += amp * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
            img = (img - img.mean()) / (img.std() + 1e-6)
            out[i] = np.clip(rng.uniform(40, 210) + rng.uniform(20, 70) * img, 0, 255).astype(np.uint8)
        else:  # dead leaves: occluding discs, radius density ~ r^-3
            img = np.empty((size, size, 3), np.uint8)
            img[:] = rng.integers(0, 256, 3).astype(np.uint8)
            for _ in range(int(rng.integers(60, 200))):
                r = int(min(size, 1.5 / (rng.random() ** 0.5 + 1e-3)))
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                centre = (int(rng.integers(-8, size + 8)), int(rng.integers(-8, size + 8)))
                cv2.circle(img, centre, max(1, r), colour, -1, cv2.LINE_AA)
            sigma = rng.uniform(0, 1.2)
            out[i] = cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0.3 else img
    return out


# -- build and cache -------------------------------------------------------------------------------
def quantize_age_net(source: Path, calibration: np.ndarray, source_sha256: str) -> bytes:
    """Serialized int8 QDQ model of ``source`` calibrated on ``calibration`` (float NCHW input)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(source))
    fold_affine(model)
    input_name = model.graph.input[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{input_name: calibration[i:i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="agender-q8-") as tmp, _quiet_quantizer():
        folded, pre, out = (Path(tmp) / f for f in ("folded.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, str(folded))
        quant_pre_process(str(folded), str(pre), skip_symbolic_shape=True)
        tail = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in ("Gemm", "Softmax")]
        quantize_static(
            str(pre), str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=tail,
        )
        q = onnx.load(str(out))
    import onnxruntime

    onnx.helper.set_model_props(q, {
        "agender.quantizer": QUANTIZER_VERSION, "source_sha256": source_sha256, "source_file": source.name,
        "onnxruntime": onnxruntime.__version__,
    })
    return q.SerializeToString()


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime.quantization logs through the root logger (progress, and one "Increased
    scale" line per all-zero weight channel): hide that from the user for the one build."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def int8_cache_path(source_sha256: str) -> Path:
    from agender.models.store import cache_dir

    return cache_dir() / "quantized" / f"{source_sha256}-{QUANTIZER_VERSION.replace('/', '-')}.onnx"


def cache_is_current(path: Path, source_sha256: str) -> bool:
    """True when ``path`` is a complete model written by this quantizer from this source."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception:  # truncated, foreign or damaged: rebuild it
        return False
    props = {p.key: p.value for p in model.metadata_props}
    return props.get("agender.quantizer") == QUANTIZER_VERSION and props.get("source_sha256") == source_sha256


def cached_int8_age_net(source: Path, means: np.ndarray, scale: float, rgb: bool = True) -> Path:
    """Path of the int8 age net for ``source``, quantizing (once) when not cached yet.

    ``means``/``scale`` are the net's input normalisation (the calibration chips go through
    the same arithmetic as real chips). Raises on any failure; the estimator falls back.
    """
    from agender.models.store import sha256_file

    sha = sha256_file(source)
    out = int8_cache_path(sha)
    if out.is_file() and cache_is_current(out, sha):
        return out
    chips = calibration_chips()
    if not rgb:
        chips = chips[..., ::-1]
    x = (chips.astype(np.float32) - np.asarray(means, np.float32)) * np.float32(scale)
    data = quantize_age_net(Path(source), np.ascontiguousarray(x.transpose(0, 3, 1, 2)), sha)
    atomic_write_bytes(out, data)
    return out
