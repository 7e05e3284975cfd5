"""Write a real ``.caffemodel`` for a real deploy prototxt, with seeded random weights.

The Levi–Hassner weights are not in the shared store (43.5 MB each), but their prototxts
are. This module reads a prototxt (protobuf text format), infers every learnable layer's
blob shapes, and serialises a Caffe ``NetParameter`` (the 2015 V1 layout the upstream
files use: ``layers`` with enum types, 4-d num/channels/height/width blobs) with a
minimal hand-written protobuf encoder, so the estimator is tested through the exact path
a user's downloaded file takes: ``cv2.dnn.readNetFromCaffe(prototxt, caffemodel)``.
"""
from __future__ import annotations

import math
import re
import shutil
import struct
from pathlib import Path

import numpy as np

# -- prototxt (protobuf text format), just enough for deploy files ----------------------------
_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|([A-Za-z_][\w.]*)\s*:\s*("(?:[^"\\]|\\.)*"|[^\s{}#]+)|([A-Za-z_][\w.]*)\s*:?\s*\{|(\}))')


def parse_prototxt(text: str) -> dict:
    """Nested dict; every key maps to a list of values (scalars as str, messages as dict)."""
    root: dict = {}
    stack = [root]
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot parse prototxt near {text[pos:pos + 40]!r}")
        pos = m.end()
        comment, key, value, block, close = m.groups()
        if comment:
            continue
        if key:
            stack[-1].setdefault(key, []).append(value.strip('"'))
        elif block:
            child: dict = {}
            stack[-1].setdefault(block, []).append(child)
            stack.append(child)
        elif close:
            stack.pop()
    return root


def _one(msg: dict, key: str, default=None):
    return msg.get(key, [default])[0]


# -- shape inference ---------------------------------------------------------------------------
def learnable_shapes(net: dict) -> list[tuple[str, str, list[tuple[int, ...]]]]:
    """(layer name, V1 type, [weight shape, bias shape]) for every layer with parameters."""
    dims = [int(d) for d in net.get("input_dim", [])]
    shapes = {net["input"][0]: (1, *dims[1:4])}
    out = []
    for layer in net.get("layers", []) + net.get("layer", []):
        kind = _one(layer, "type").upper().replace("INNERPRODUCT", "INNER_PRODUCT")
        n, c, h, w = shapes[_one(layer, "bottom")]
        top = _one(layer, "top")
        if kind == "CONVOLUTION":
            p = _one(layer, "convolution_param")
            k, s, pad = int(_one(p, "kernel_size")), int(_one(p, "stride", 1)), int(_one(p, "pad", 0))
            num, group = int(_one(p, "num_output")), int(_one(p, "group", 1))
            shapes[top] = (n, num, (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1)
            out.append((_one(layer, "name"), kind, [(num, c // group, k, k), (1, 1, 1, num)]))
        elif kind == "POOLING":
            p = _one(layer, "pooling_param")
            k, s, pad = int(_one(p, "kernel_size")), int(_one(p, "stride", 1)), int(_one(p, "pad", 0))
            # Caffe pools with ceil
            shapes[top] = (n, c, math.ceil((h + 2 * pad - k) / s) + 1, math.ceil((w + 2 * pad - k) / s) + 1)
        elif kind == "INNER_PRODUCT":
            num = int(_one(_one(layer, "inner_product_param"), "num_output"))
            shapes[top] = (n, num, 1, 1)
            out.append((_one(layer, "name"), kind, [(1, 1, num, c * h * w), (1, 1, 1, num)]))
        else:  # ReLU, LRN, Dropout, Softmax keep the shape
            shapes[top] = (n, c, h, w)
    return out


# -- protobuf wire format ----------------------------------------------------------------------
def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:  # length-delimited (wire type 2)
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _int(num: int, v: int) -> bytes:  # varint (wire type 0)
    return _varint(num << 3) + _varint(v)


_V1_TYPES = {"CONVOLUTION": 4, "INNER_PRODUCT": 14}


def _blob(arr: np.ndarray) -> bytes:
    """BlobProto: num=1 channels=2 height=3 width=4, data=5 (packed float)."""
    n, c, h, w = arr.shape
    body = _int(1, n) + _int(2, c) + _int(3, h) + _int(4, w)
    return body + _field(5, np.ascontiguousarray(arr, "<f4").tobytes())


def caffemodel_bytes(prototxt: str | Path, seed: int = 0) -> bytes:
    """A serialised NetParameter (V1 ``layers``, field 2) with seeded He-style weights,
    scaled so that softmax outputs stay soft (raw 0..255 pixels in, logits of order 1 out)."""
    net = parse_prototxt(Path(prototxt).read_text())
    rng = np.random.default_rng(seed)
    layers = learnable_shapes(net)
    body = _field(1, _one(net, "name", "net").encode())
    for i, (name, kind, (wshape, bshape)) in enumerate(layers):
        fan_in = int(np.prod(wshape[1:])) if kind == "CONVOLUTION" else wshape[-1]
        std = math.sqrt(2.0 / fan_in)
        if i == 0:
            std /= 60.0  # mean-subtracted pixels are ~±60, not ~±1
        if i == len(layers) - 1:
            std = math.sqrt(1.0 / fan_in) * 0.5
        weights = rng.standard_normal(wshape, dtype=np.float32) * np.float32(std)
        bias = rng.standard_normal(bshape, dtype=np.float32) * np.float32(0.01)
        layer = _field(4, name.encode()) + _int(5, _V1_TYPES[kind]) + _field(6, _blob(weights)) + _field(6, _blob(bias))
        body += _field(2, layer)
    return body


def write_caffemodel(prototxt: Path, dest: Path, seed: int = 0) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(caffemodel_bytes(prototxt, seed))
    return dest


def upstream_gender_prototxt(age_prototxt: Path) -> str:
    """Levi–Hassner's gender deploy net: the age deploy net with 2 outputs instead of 8.

    Upstream (GilLevi/AgeGenderDeepLearning gender_net_definitions/train_val_*.prototxt)
    trains the gender net with exactly the age net's layers (conv2 5x5, LRN size 5, pool 3);
    the copy in the shared store was edited (conv2 8x8, pool2 5x5, LRN size 8, which
    OpenCV rejects), so tests that need a loadable gender net build it from the age one.
    """
    text = Path(age_prototxt).read_text()
    fc8 = text.index('name: "fc8"')
    assert text.count("num_output: 8", fc8) == 1
    return text[:fc8] + text[fc8:].replace("num_output: 8", "num_output: 2")
