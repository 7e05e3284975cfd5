"""Small shared pieces of the converters that turn a model file into ONNX on the user's machine
(SSR-Net's Keras weights: :mod:`agender.estimators.ssrnet_onnx`; dlib's face descriptor:
:mod:`agender.reid_onnx`): a graph builder with unique names, and the cache check that reuses a
conversion only when it was made by the same converter from the same source bytes."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class GraphBuilder:
    """Collects ONNX nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, array: np.ndarray, hint: str = "w") -> str:
        from onnx import numpy_helper

        n = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name=n))
        return n

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        from onnx import helper

        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def is_current(path: Path, converter: str, source_sha256: str) -> bool:
    """True when the ONNX file at ``path`` was written by ``converter`` from the source whose
    sha256 is ``source_sha256`` (its metadata says so); a truncated or foreign file is not."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # truncated or foreign file: rebuild it
        return False
    props = {p.key: p.value for p in model.metadata_props}
    return props.get("agender.converter") == converter and props.get("source_sha256") == source_sha256
