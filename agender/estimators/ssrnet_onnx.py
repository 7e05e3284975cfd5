"""SSR-Net Keras HDF5 weights → ONNX, so SSR-Net runs on onnxruntime without TensorFlow.

The upstream checkpoints (Yang et al., IJCAI 2018) are ``save_weights`` files: weights only,
no graph. The graph is the fixed SSR-Net topology (two conv streams, three stages, soft
stagewise regression), rebuilt here with ``onnx.helper`` from the weights' shapes:

* age nets (``SSR_net``) end in a layer named ``pred_a`` and scale the regression by V = 101;
* gender nets (``SSR_net_general``) end in ``pred`` and use V = 1 (a score in 0..1).

Why the converter does more than translate layer by layer:

* BatchNormalization is folded into the preceding convolution (exact in real arithmetic, one
  op fewer per block at run time);
* the model takes NHWC input (what OpenCV gives) and transposes once; Dense layers that read a
  Keras ``Flatten`` (NHWC order) get their kernel rows permuted to NCHW order instead of
  transposing activations at run time;
* Keras layer names carry session counters (``conv2d_5``), so roles are assigned by the rank
  of the numeric suffix, which survives a model built after another in the same session.

Converted models are cached under ``cache_dir()/onnx/<sha256 of the .h5>.onnx`` (written
atomically) and reused; the converter version is stored in the model's metadata so a cache
written by an older converter is rebuilt rather than trusted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agender.errors import ModelError, one_line
from agender.io.sinks.base import atomic_write_bytes
from agender.models.conversion import GraphBuilder, is_current

CONVERTER_VERSION = "ssrnet-onnx/2"
OPSET = 17
BN_EPSILON = 1e-3  # Keras BatchNormalization default, used by every SSR-Net checkpoint
INPUT_NAME = "input"  # (N, 64, 64, 3) float32 BGR, per-image min-max scaled to 0..255
OUTPUT_NAME = "pred"  # (N,) age in years (age nets) or male score (gender nets)
IMAGE_SIZE = 64

_SUFFIX = re.compile(r"^(?P<base>.+?)(?:_(?P<n>\d+))?$")


@dataclass(frozen=True)
class KerasWeights:
    """Weights of one SSR-Net checkpoint, by Keras layer name (kernel first, then bias)."""

    path: Path
    layers: dict[str, list[np.ndarray]]

    def by_kind(self, base: str) -> list[list[np.ndarray]]:
        """Layers called ``base`` or ``base_<n>``, in construction order (numeric suffix)."""
        hits = []
        for name, arrays in self.layers.items():
            m = _SUFFIX.match(name)
            if m and m.group("base") == base:
                hits.append((int(m.group("n") or 0), arrays))
        return [arrays for _, arrays in sorted(hits, key=lambda t: t[0])]

    def named(self, *names: str) -> list[np.ndarray]:
        for n in names:
            if n in self.layers:
                return self.layers[n]
        raise ModelError(f"model file {self.path} is not an SSR-Net checkpoint: no layer {' or '.join(names)}")


def read_keras_weights(path: Path | str) -> KerasWeights:
    """Read a Keras 2 HDF5 weights file (``save_weights`` or full ``save``) with h5py.

    Raises :class:`ModelError` (one line naming the file) when it is not readable HDF5.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            root = h5["model_weights"] if "model_weights" in h5 else h5
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs.get("layer_names", [])]
            if not names:
                raise ModelError(f"model file {path} is not a Keras weights file (no layer_names)")
            layers: dict[str, list[np.ndarray]] = {}
            for name in names:
                group = root[name]
                wnames = [w.decode() if isinstance(w, bytes) else str(w) for w in group.attrs.get("weight_names", [])]
                if wnames:
                    layers[name] = [np.asarray(group[w], dtype=np.float32) for w in wnames]
    except ModelError:
        raise
    except Exception as exc:  # h5py raises OSError/KeyError/ValueError on damaged files
        reason = one_line(exc, named=False)
        raise ModelError(f"model file {path} is unreadable or corrupt ({reason})") from None
    return KerasWeights(path=path, layers=layers)


class _GraphBuilder(GraphBuilder):
    """:class:`~agender.models.conversion.GraphBuilder` with SSR-Net's Keras layers."""

    # -- layers ------------------------------------------------------------------------------
    def conv_bn(self, x: str, conv: list[np.ndarray], bn: list[np.ndarray] | None, act: str | None) -> str:
        """Keras Conv2D (valid, stride 1) + optional BatchNormalization folded in + activation."""
        kernel, bias = conv
        w = kernel.transpose(3, 2, 0, 1).astype(np.float64)  # (kh,kw,cin,cout) → (cout,cin,kh,kw)
        b = bias.astype(np.float64)
        if bn is not None:
            gamma, beta, mean, var = (a.astype(np.float64) for a in bn)
            scale = gamma / np.sqrt(var + BN_EPSILON)
            w = w * scale[:, None, None, None]
            b = (b - mean) * scale + beta
        kh, kw = w.shape[2:]
        y = self.op("Conv", [x, self.const(w.astype(np.float32)), self.const(b.astype(np.float32))],
                    kernel_shape=[kh, kw], pads=[0, 0, 0, 0], strides=[1, 1])
        return self.op(act, [y]) if act else y

    def pool(self, x: str, kind: str, size: int) -> str:
        return self.op(kind, [x], kernel_shape=[size, size], strides=[size, size])

    def flatten(self, x: str) -> str:
        return self.op("Flatten", [x], axis=1)

    def dense(self, x: str, layer: list[np.ndarray], act: str | None, nhwc_from: tuple[int, int, int] | None = None) -> str:
        """Keras Dense; ``nhwc_from=(h, w, c)`` reorders kernel rows from Keras' NHWC flatten
        order to the NCHW flatten order of this graph."""
        kernel, bias = layer
        if nhwc_from is not None:
            h, w, c = nhwc_from
            kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
        y = self.op("Gemm", [x, self.const(kernel), self.const(bias)])
        return self.op(act, [y]) if act else y


def _expect(weights: KerasWeights, ok: bool, what: str) -> None:
    if not ok:
        raise ModelError(f"model file {weights.path} is not an SSR-Net (3,3,3) checkpoint: {what}")


def _checked_layers(weights: KerasWeights) -> tuple[list, list, list]:
    """The Conv2D, BatchNormalization and Dense weights, checked to be SSR-Net (3,3,3)'s."""
    convs = weights.by_kind("conv2d")
    bns = weights.by_kind("batch_normalization")
    dense = weights.by_kind("dense")
    _expect(weights, len(convs) == 14, f"{len(convs)} Conv2D layers, expected 14")
    _expect(weights, len(bns) == 8, f"{len(bns)} BatchNormalization layers, expected 8")
    _expect(weights, len(dense) == 9, f"{len(dense)} Dense layers, expected 9")
    _expect(weights, convs[0][0].shape[:3] == (3, 3, 3), f"first kernel {convs[0][0].shape}, expected 3x3 on BGR")
    return convs, bns, dense


def _two_streams(g: "_GraphBuilder", nchw: str, convs: list, bns: list) -> list[tuple[str, str, int | None]]:
    """The x and s streams; returns what each stage reads: ``(s, x, pool)`` at decreasing depth.

    x = conv/BN/ReLU/avg-pool (convs 0-3), s = conv/BN/tanh/max-pool (convs 4-7). tanh is
    monotonic, so max-pool(tanh(v)) == tanh(max-pool(v)): pooling first computes tanh on a
    quarter of the values (it was the costliest non-conv op of the s stream).
    """
    x, s = nchw, nchw
    x_pooled, s_pooled = [], []
    for i in range(4):
        x = g.conv_bn(x, convs[i], bns[i], "Relu")
        if i < 3:
            x = g.pool(x, "AveragePool", 2)
            s = g.op("Tanh", [g.pool(g.conv_bn(s, convs[4 + i], bns[4 + i], None), "MaxPool", 2)])
            x_pooled.append(x)
            s_pooled.append(s)
        else:
            s = g.conv_bn(s, convs[4 + i], bns[4 + i], "Tanh")
    # stage 1 the last block (4x4), stage 2 after pool 2 (14x14 → max/avg pool 4 → 3x3),
    # stage 3 after pool 1 (31x31 → pool 8 → 3x3)
    return [(s, x, None), (s_pooled[1], x_pooled[1], 4), (s_pooled[0], x_pooled[0], 8)]


def _stages(g: "_GraphBuilder", weights: KerasWeights, taps, convs: list, dense: list) -> list[tuple]:
    """Per stage: the bin probabilities, the local shifts, the width delta and the bin count."""
    spatial = [(4, 4), (3, 3), (3, 3)]
    stage_out = []
    for k, ((s_in, x_in, pool), (h, w)) in enumerate(zip(taps, spatial)):
        fs = g.conv_bn(s_in, convs[8 + 2 * k], None, "Relu")
        fx = g.conv_bn(x_in, convs[9 + 2 * k], None, "Relu")
        if pool:
            fs, fx = g.pool(fs, "MaxPool", pool), g.pool(fx, "AveragePool", pool)
        c = convs[8 + 2 * k][0].shape[3]
        fs, fx = g.flatten(fs), g.flatten(fx)
        _expect(weights, dense[3 * k][0].shape[0] == h * w * c, f"stage {k + 1} Dense reads {dense[3 * k][0].shape[0]} features, expected {h * w * c}")
        delta = g.dense(g.op("Mul", [fs, fx]), weights.named(f"delta_s{k + 1}"), "Tanh", nhwc_from=(h, w, c))
        mix = g.op("Mul", [g.dense(fs, dense[3 * k], "Relu", nhwc_from=(h, w, c)),
                          g.dense(fx, dense[3 * k + 1], "Relu", nhwc_from=(h, w, c))])
        feat = g.dense(mix, dense[3 * k + 2], "Relu")
        pred_layer = weights.named(f"pred_age_stage{k + 1}", f"pred_stage{k + 1}")
        prob = g.dense(feat, pred_layer, "Relu")
        local = g.dense(feat, weights.named(f"local_delta_stage{k + 1}"), "Tanh")
        stage_out.append((prob, local, delta, pred_layer[0].shape[1]))
    return stage_out


def _soft_stagewise_regression(g: "_GraphBuilder", stage_out: list[tuple], lambda_local: float, lambda_d: float,
                               scale_v: float) -> str:
    """Stage k contributes sum_i (i + λ·local_i)·p_i, divided by the product over stages
    j ≤ k of s_j·(1 + λ_d·Δ_j); the sum of stages is scaled by V."""
    denom = None
    total = None
    for prob, local, delta, n in stage_out:
        idx = g.const(np.arange(n, dtype=np.float32).reshape(1, n), "bins")
        shifted = g.op("Add", [idx, g.op("Mul", [local, g.const(np.float32(lambda_local).reshape(1), "lambda_local")])])
        num = g.op("MatMul", [g.op("Mul", [shifted, prob]), g.const(np.ones((n, 1), np.float32), "ones")])
        width = g.op("Mul", [g.op("Add", [g.op("Mul", [delta, g.const(np.float32(lambda_d).reshape(1), "lambda_d")]),
                                         g.const(np.ones(1, np.float32), "one")]),
                            g.const(np.float32(n).reshape(1), "stage_n")])
        denom = width if denom is None else g.op("Mul", [denom, width])
        term = g.op("Div", [num, denom])
        total = term if total is None else g.op("Add", [total, term])
    return g.op("Mul", [total, g.const(np.float32(scale_v).reshape(1), "V")])


def build_ssrnet(weights: KerasWeights, kind: str | None = None, lambda_local: float = 1.0,
                 lambda_d: float = 1.0) -> "onnx.ModelProto":  # noqa: F821
    """The SSR-Net graph as an ONNX model with a dynamic batch dimension.

    ``kind`` is ``"age"`` (V = 101) or ``"gender"`` (V = 1); by default it is read from the
    final layer's name (``pred_a`` vs ``pred``).
    """
    import onnx
    from onnx import TensorProto, helper

    if kind is None:
        kind = "age" if "pred_a" in weights.layers or "pred_age_stage1" in weights.layers else "gender"
    scale_v = 101.0 if kind == "age" else 1.0
    convs, bns, dense = _checked_layers(weights)

    g = _GraphBuilder()
    nchw = g.op("Transpose", [INPUT_NAME], perm=[0, 3, 1, 2])
    taps = _two_streams(g, nchw, convs, bns)
    stage_out = _stages(g, weights, taps, convs, dense)
    scaled = _soft_stagewise_regression(g, stage_out, lambda_local, lambda_d, scale_v)
    g.nodes.append(helper.make_node("Reshape", [scaled, g.const(np.array([-1], np.int64), "shape")], [OUTPUT_NAME],
                                    name="to_vector"))

    graph = helper.make_graph(
        g.nodes, f"ssrnet_{kind}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", IMAGE_SIZE, IMAGE_SIZE, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch"])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="agender")
    model.ir_version = 8  # readable by every onnxruntime ≥ 1.14
    model.doc_string = f"SSR-Net {kind} (Yang et al., IJCAI 2018), converted from {weights.path.name}"
    helper.set_model_props(model, {"agender.converter": CONVERTER_VERSION, "ssrnet.kind": kind})
    onnx.checker.check_model(model)
    return model


def onnx_cache_path(source_sha256: str) -> Path:
    from agender.models.store import cache_dir

    return cache_dir() / "onnx" / f"{source_sha256}.onnx"


def cached_onnx(h5_path: Path | str, source_sha256: str | None = None, kind: str | None = None) -> Path:
    """Path of the ONNX conversion of ``h5_path``, converting (once) when not cached yet.

    The cache key is the sha256 of the ``.h5`` so a re-downloaded or replaced checkpoint can
    never be served a stale conversion; the write is atomic (temp file + rename) so two
    processes converting at once both end with a complete file.
    """
    from agender.models.store import sha256_file

    h5_path = Path(h5_path)
    sha = source_sha256 or sha256_file(h5_path)
    out = onnx_cache_path(sha)
    if out.is_file() and is_current(out, CONVERTER_VERSION, sha):
        return out
    import onnx

    model = build_ssrnet(read_keras_weights(h5_path), kind)
    onnx.helper.set_model_props(
        model, {**{p.key: p.value for p in model.metadata_props}, "source_sha256": sha, "source_file": h5_path.name}
    )
    data = model.SerializeToString()
    try:
        atomic_write_bytes(out, data)
    except OSError as exc:
        raise ModelError(f"cannot write ONNX conversion of {h5_path} to {out.parent}: {exc.strerror or exc}") from None
    return out
