"""A LiteRT (TensorFlow Lite) interpreter behind the :class:`agender.runtimes.Session` interface.

``ai-edge-litert`` is the maintained TensorFlow Lite interpreter wheel (x86-64 and aarch64,
~15 MB, no TensorFlow); its default op resolver applies XNNPACK to float graphs, which is the
fast CPU path on a Raspberry Pi. The ``.tflite`` files come from
:mod:`agender.runtimes.convert` (onnx2tf), which puts 4-D inputs in NHWC: this session takes
the ONNX layout (NCHW) like the onnxruntime one and transposes, unless the caller already
holds NHWC (``layout="NHWC"`` feeds, see :attr:`layout`).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from agender.errors import ModelError

log = logging.getLogger(__name__)


class LiteRTSession:
    """One ``.tflite`` through its ``serving_default`` signature (ONNX input/output names).

    The interpreter is resized only when the batch or image size changes (YuNet's H and W
    and the estimators' batch are dynamic in the conversion), so a steady stream pays no
    re-allocation."""

    runtime = "litert"
    layout = "NHWC"

    def __init__(self, path: Path, *, threads: int | None = None, name: str = ""):
        from ai_edge_litert.interpreter import Interpreter

        from agender.devices import default_threads

        self.path = Path(path)
        self.name = name or str(path)
        self.threads = int(threads or default_threads())
        try:
            self._it = Interpreter(model_path=str(self.path), num_threads=self.threads)
            self._runner = self._it.get_signature_runner("serving_default")
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load {self.path} with LiteRT: {str(exc).strip().splitlines()[0][:160]}") from None
        sig = self._it.get_signature_list()["serving_default"]
        self.input_names = list(sig["inputs"])
        meta = self.path.with_suffix(".json")
        order = json.loads(meta.read_text()).get("outputs") if meta.is_file() else None
        self.output_names = list(order or sig["outputs"])  # the ONNX order (the signature sorts them)
        self._in_rank = {k: len(v["shape"]) for k, v in self._runner.get_input_details().items()}
        self.device_used = f"CPU (LiteRT XNNPACK, {self.threads} thread{'s' if self.threads > 1 else ''})"

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None,
            *, layout: str = "NCHW") -> list[np.ndarray]:
        """Outputs in ``outputs`` order (default: the ONNX net's), as float32 arrays."""
        args = {}
        for k, v in feeds.items():
            v = np.asarray(v, np.float32)
            if v.ndim == 4 and layout == "NCHW" and self._in_rank.get(k) == 4:
                v = v.transpose(0, 2, 3, 1)
            args[k] = np.ascontiguousarray(v)
        try:
            res = self._runner(**args)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.name}: LiteRT failed: {str(exc).strip().splitlines()[0][:160]}") from None
        return [np.array(res[n]) for n in (outputs or self.output_names)]
