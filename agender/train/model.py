"""The net: Cydral's CC0 dlib age ResNet (64x64 chip) rebuilt in PyTorch from its ONNX,
with an age distribution head over 0..100 years and a gender head on the same trunk.

No converter dependency: :class:`AgenderNet` mirrors ``age-v1.onnx`` layer by layer (conv +
per-channel affine, dlib's residual / residual_down blocks with their zero padding), loads its
weights from the initializers, and :func:`export_onnx` writes the trained weights back into
that very graph (so parity is structural), adding the gender branch and storing the weights
as float16 (cast to float32 at load: ORT folds the casts, compute stays float32).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ages of the output classes: Cydral's 81 (0.25, 1, ..., 80) extended to 100 (UTK has 1-116,
# faces-dev up to 100+)
AGES = np.array([0.25] + list(range(1, 101)), np.float64)
N_CYDRAL = 81

# (conv, affine) ONNX layer numbers, in forward order
CONVS = [(52, 51), (47, 46), (44, 43), (39, 38), (36, 35), (28, 27), (25, 24), (20, 19), (17, 16),
         (9, 8), (6, 5)]


def cydral_age_path() -> Path:
    from agender.estimators.cydral import CydralBundle

    return CydralBundle.load().age.path


def _initializers(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


class ConvAff(nn.Module):
    def __init__(self, w: np.ndarray, b: np.ndarray, scale: np.ndarray, offset: np.ndarray, stride: int, pad: int):
        super().__init__()
        self.conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=stride, padding=pad)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(np.array(w)))
            self.conv.bias.copy_(torch.from_numpy(np.array(b)))
        self.scale = nn.Parameter(torch.from_numpy(scale.reshape(1, -1, 1, 1).copy()))
        self.offset = nn.Parameter(torch.from_numpy(offset.reshape(1, -1, 1, 1).copy()))

    def forward(self, x):
        return self.conv(x) * self.scale + self.offset


class AgenderNet(nn.Module):
    def __init__(self, onnx_path: Path | None = None, gender_hidden: int = 0):
        super().__init__()
        init = _initializers(onnx_path or cydral_age_path())
        layers = []
        for conv, aff in CONVS:
            w = init[f"layer_{conv}_weights"]
            stride, pad = (2, 0) if conv in (52, 39, 20) else (1, 1)
            layers.append(ConvAff(w, init[f"layer_{conv}_bias"], init[f"layer_{aff}_scale"],
                                  init[f"layer_{aff}_offset"], stride, pad))
        self.c = nn.ModuleList(layers)
        wa, ba = init["layer_1_weights"], init["layer_1_bias"]  # (256, 81), (81,)
        k = len(AGES)
        w = np.zeros((k, 256), np.float32)
        b = np.zeros(k, np.float32)
        w[:N_CYDRAL], b[:N_CYDRAL] = wa.T, ba
        w[N_CYDRAL:], b[N_CYDRAL:] = wa.T[-1], ba[-1] - 1.0  # 81..100 start like "80", a bit less likely
        self.age = nn.Linear(256, k)
        with torch.no_grad():
            self.age.weight.copy_(torch.from_numpy(w))
            self.age.bias.copy_(torch.from_numpy(b))
        # gender tower: its own copy of the last (256-channel) stage, seeded from the age net's.
        # Measured: a linear probe on the age trunk's pooled features gets 61 % gender on UTK
        # (the age net's last stage discards gender); sharing everything, joint fine-tuning
        # reached 59.5 % after one epoch.
        self.g = nn.ModuleList(copy.deepcopy(layers[7:]))
        self.drop = nn.Dropout(0.2)
        self.gender = nn.Linear(256, 1)
        nn.init.normal_(self.gender.weight, std=0.01)
        nn.init.zeros_(self.gender.bias)

    def trunk(self, x):
        c = self.c
        x = F.relu(c[0](x))
        x = F.max_pool2d(x, 3, 2)
        x = F.relu(c[2](F.relu(c[1](x))) + x)  # residual
        # residual_down: conv path padded one trailing row/col, shortcut avg-pooled + zero channels
        y = F.pad(c[4](F.relu(c[3](x))), (0, 1, 0, 1))
        s = F.pad(F.avg_pool2d(x, 2, 2), (0, 0, 0, 0, 0, 64))
        x = F.relu(y + s)
        return F.relu(c[6](F.relu(c[5](x))) + x)

    @staticmethod
    def last_stage(c, x):
        """dlib residual_down (128 -> 256) + residual; ``c`` = the stage's 4 ConvAff."""
        y = c[1](F.relu(c[0](x)))
        s = F.pad(F.avg_pool2d(x, 2, 2), (0, 0, 0, 0, 0, 128))
        x = F.relu(y + s)
        x = F.relu(c[3](F.relu(c[2](x))) + x)
        return x.mean(dim=(2, 3))

    def features(self, x):
        return self.last_stage(self.c[7:], self.trunk(x))

    def forward(self, x):
        t = self.trunk(x)
        fa = self.last_stage(self.c[7:], t)
        fg = self.last_stage(self.g, t)
        return self.age(fa), self.gender(self.drop(fg)).squeeze(1)


def export_onnx(net: AgenderNet, out: Path, *, std_scale: float, extra_meta: dict | None = None,
                fp16: bool = True) -> Path:
    """Cydral's graph with ``net``'s weights, a 101-year age head and a gender branch."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(cydral_age_path()))
    g = m.graph
    casts = _replace_initializers(g, _trained_initializers(net), fp16)
    # outputs: rename softmax output, add gender
    for n in g.node:
        if n.op_type == "Softmax":
            n.output[0] = "age_probs"
    order = list(g.node)
    nodes = casts + order + _gender_tower(order) + [
        helper.make_node("Gemm", ["g_layer_1_flatten", "gender_weights", "gender_bias"], ["gender_logit"]),
        helper.make_node("Sigmoid", ["gender_logit"], ["p_male"]),
    ]
    del g.node[:]
    g.node.extend(nodes)
    del g.output[:]
    g.output.extend([
        helper.make_tensor_value_info("age_probs", TensorProto.FLOAT, ["N", len(AGES)]),
        helper.make_tensor_value_info("p_male", TensorProto.FLOAT, ["N", 1]),
    ])
    del g.value_info[:]
    g.name = "agender-net-v1"
    del m.metadata_props[:]
    for k, v in _export_metadata(std_scale, extra_meta).items():
        m.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(m)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(out))
    return out


def _trained_initializers(net: AgenderNet) -> dict[str, np.ndarray]:
    """``net``'s weights under the ONNX graph's initializer names (float32); the gender
    tower's copies of the last stage under the same names prefixed ``g_``."""
    sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    new = {}
    for i, (conv, aff) in enumerate(CONVS):
        new[f"layer_{conv}_weights"] = sd[f"c.{i}.conv.weight"]
        new[f"layer_{conv}_bias"] = sd[f"c.{i}.conv.bias"]
        new[f"layer_{aff}_scale"] = sd[f"c.{i}.scale"]
        new[f"layer_{aff}_offset"] = sd[f"c.{i}.offset"]
    new["layer_1_weights"] = sd["age.weight"].T.copy()
    new["layer_1_bias"] = sd["age.bias"]
    for i, (conv, aff) in enumerate(CONVS[7:]):
        new[f"g_layer_{conv}_weights"] = sd[f"g.{i}.conv.weight"]
        new[f"g_layer_{conv}_bias"] = sd[f"g.{i}.conv.bias"]
        new[f"g_layer_{aff}_scale"] = sd[f"g.{i}.scale"]
        new[f"g_layer_{aff}_offset"] = sd[f"g.{i}.offset"]
    new["gender_weights"] = sd["gender.weight"].T.copy()  # (256, 1)
    new["gender_bias"] = sd["gender.bias"]
    return new


def _replace_initializers(g, new: dict[str, np.ndarray], fp16: bool) -> list:
    """Swap graph ``g``'s initializers for ``new`` (the others kept). With ``fp16``, large
    tensors are stored as float16 behind a Cast to float32 (half the file; ORT folds the
    casts at load, compute stays float32); returns those Cast nodes."""
    from onnx import TensorProto, helper, numpy_helper

    keep = [t for t in g.initializer if t.name not in new]
    del g.initializer[:]
    g.initializer.extend(keep)
    casts = []
    for name, arr in new.items():
        if fp16 and arr.size >= 1024:
            g.initializer.append(numpy_helper.from_array(arr.astype(np.float16), name + "_fp16"))
            casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT))
        else:
            g.initializer.append(numpy_helper.from_array(arr, name))
    return casts


def _gender_tower(order: list) -> list:
    """The gender tower: the nodes from the last stage's first conv to Flatten, cloned with "g_"
    names, reading the same stage input (layer_22_relu)."""
    import onnx

    start = next(i for i, n in enumerate(order) if n.output[0] == "layer_20_conv")
    stop = next(i for i, n in enumerate(order) if n.op_type == "Flatten")
    produced, tower = set(), []
    for n in order[start:stop + 1]:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.name = "g_" + n.name if n.name else ""
        for j, t in enumerate(c.input):
            if t in produced or (t.startswith("layer_") and ("_weights" in t or "_bias" in t or "_scale" in t
                                                              or "_offset" in t)):
                c.input[j] = "g_" + t
        for j, t in enumerate(c.output):
            produced.add(t)
            c.output[j] = "g_" + t
        tower.append(c)
    return tower


def _export_metadata(std_scale: float, extra_meta: dict | None) -> dict[str, str]:
    """The ``agender.*`` metadata the estimator reads (ages, std scale, normalisation), the
    weights' license, and ``extra_meta`` (provenance)."""
    from agender.estimators.agender_net import MEANS, SCALE

    return {
        "agender.ages": json.dumps([float(a) for a in AGES]),
        "agender.std_scale": f"{std_scale:.6f}",
        "agender.means": json.dumps(list(MEANS)),
        "agender.scale": str(SCALE),
        "agender.license": "weights trained on UTKFace + All-Age-Faces: non-commercial research use only; "
                           "seeded from Cydral's CC0 dlib age net",
        **{f"agender.{k}": str(v) for k, v in (extra_meta or {}).items()},
    }
