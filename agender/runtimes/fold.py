"""Fold per-channel constant ``Mul``/``Add`` after a ``Conv`` into the conv's weights and bias.

Why: Cydral's dlib-exported nets spell every batch norm as ``Conv → Mul(1,C,1,1) → Add(1,C,1,1)``;
onnx2tf's NCHW→NHWC layout pass mis-transposes those constants (``Dimensions must be equal, but
are 16 and 64``), and folded they are also three ops fewer per layer for any runtime. The
algebra is exact (``(W*x + b) * s + o = (s*W)*x + (s*b + o)``); only float rounding moves.
"""
from __future__ import annotations

import numpy as np


def fold_conv_affine(model):
    """A copy of ``model`` (an ``onnx.ModelProto``) with Conv→Mul/Add chains folded."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    graph_outputs = {o.name for o in g.output}
    consumers: dict[str, list] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    dropped: set[int] = set()
    new_inits = []
    for node in g.node:
        if node.op_type != "Conv" or node.input[1] not in consts:
            continue
        w = consts[node.input[1]].astype(np.float64)
        b = (consts[node.input[2]] if len(node.input) > 2 and node.input[2] in consts
             else np.zeros(w.shape[0])).astype(np.float64)
        out, chain = node.output[0], []
        while out not in graph_outputs:
            users = consumers.get(out, [])
            if len(users) != 1 or users[0].op_type not in ("Mul", "Add"):
                break
            op = users[0]
            other = op.input[1] if op.input[0] == out else op.input[0]
            k = consts.get(other)
            if k is None or k.size != w.shape[0] or (k.ndim == 4 and k.shape[1] != w.shape[0]):
                break
            k = k.reshape(-1).astype(np.float64)
            if op.op_type == "Mul":
                w, b = w * k[:, None, None, None], b * k
            else:
                b = b + k
            chain.append(op)
            out = op.output[0]
        if not chain:
            continue
        wn, bn = f"{node.output[0]}__w_folded", f"{node.output[0]}__b_folded"
        new_inits += [numpy_helper.from_array(w.astype(np.float32), wn),
                      numpy_helper.from_array(b.astype(np.float32), bn)]
        inputs = [node.input[0], wn, bn]
        del node.input[:]
        node.input.extend(inputs)
        node.output[0] = out  # the conv now writes what the chain's last op wrote
        dropped.update(id(op) for op in chain)
    kept = [n for n in g.node if id(n) not in dropped]
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(new_inits)
    used = {name for n in g.node for name in n.input}
    keep_inits = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    onnx.checker.check_model(model)
    return model
