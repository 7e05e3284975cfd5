"""Device policy in one place: which onnxruntime providers / cv2.dnn backend to use, and the
automatic fall back to CPU when an accelerator fails.

Devices are parameters (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"tensorrt"``,
``"openvino"``, ``"coreml"``, ``"directml"``), never globals. A session remembers the device it
actually ended up on (:attr:`OnnxSession.device_used`) and why (:attr:`OnnxSession.fallback_reason`)
so the CLI can log it and the GUI can show it in the status bar.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

# Preference order for "auto": accelerators first, CPU always last.
_PROVIDER_BY_DEVICE = {
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_AUTO_ORDER = ["tensorrt", "cuda", "openvino", "coreml", "directml"]


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def parse_device(device: str) -> tuple[str, int]:
    """``"cuda:1"`` → ``("cuda", 1)``; ``"cpu"`` → ``("cpu", 0)``."""
    name, _, idx = (device or "auto").strip().lower().partition(":")
    if name == "gpu":
        name = "cuda"
    if name not in _PROVIDER_BY_DEVICE and name != "auto":
        from agender.errors import AgenderError

        raise AgenderError(
            f"unknown device {device!r}: use auto, cpu, " + ", ".join(k for k in _PROVIDER_BY_DEVICE if k != "cpu")
        )
    return name, int(idx or 0)


def providers_for(device: str, available: Sequence[str] | None = None) -> list[Any]:
    """onnxruntime providers for ``device`` in preference order, CPU always last."""
    available = list(available if available is not None else available_providers())
    name, idx = parse_device(device)
    wanted = _AUTO_ORDER if name == "auto" else ([] if name == "cpu" else [name])
    out: list[Any] = []
    for dev in wanted:
        prov = _PROVIDER_BY_DEVICE[dev]
        if prov in available:
            out.append((prov, {"device_id": idx}) if dev in ("cuda", "tensorrt") else prov)
    out.append("CPUExecutionProvider")
    return out


def _provider_name(p: Any) -> str:
    return p[0] if isinstance(p, tuple) else p


def device_label(provider: str) -> str:
    for dev, prov in _PROVIDER_BY_DEVICE.items():
        if prov == provider:
            return dev.upper() if dev != "directml" else "DirectML"
    return provider


def default_threads() -> int:
    """Intra-op threads: all physical cores by default (``AGENDER_THREADS`` overrides)."""
    env = os.environ.get("AGENDER_THREADS")
    if env:
        return max(1, int(env))
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except Exception:  # psutil missing or odd platform
        return max(1, os.cpu_count() or 1)


@dataclass
class OnnxSession:
    """An onnxruntime session that falls back to CPU on accelerator failure.

    Failure at creation *or* at the first inference triggers the fall back (CUDA often
    fails late, at the first ``run``, when cuDNN is missing). The fall back is logged once.
    """

    model: str | bytes | Path
    device: str = "auto"
    threads: int | None = None
    session_factory: Callable[..., Any] | None = None  # injectable for fault tests
    name: str = "model"
    device_used: str = field(init=False, default="CPU")
    fallback_reason: str = field(init=False, default="")
    _sess: Any = field(init=False, default=None, repr=False)
    _verified: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        self._ort = ort
        self._factory = self.session_factory or ort.InferenceSession
        model = str(self.model) if isinstance(self.model, Path) else self.model
        self._model = model
        providers = providers_for(self.device)
        try:
            self._sess = self._factory(model, sess_options=self._options(), providers=providers)
            used = self._sess.get_providers()[0]
            wanted = _provider_name(providers[0])
            if wanted != "CPUExecutionProvider" and used == "CPUExecutionProvider":
                self._note_fallback(f"{device_label(wanted)} unavailable")
            self.device_used = device_label(used) + (f" ({self.fallback_reason})" if self.fallback_reason else "")
            self._verified = used == "CPUExecutionProvider"
        except Exception as exc:  # accelerator failed at creation
            if _provider_name(providers[0]) == "CPUExecutionProvider":
                raise
            self._fall_back(exc)
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self.output_names = [o.name for o in self._sess.get_outputs()]

    def _options(self):
        so = self._ort.SessionOptions()
        so.intra_op_num_threads = self.threads or default_threads()
        so.inter_op_num_threads = 1
        so.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return so

    def _note_fallback(self, reason: str) -> None:
        self.fallback_reason = reason
        log.warning("%s: %s, running on CPU", self.name, reason)

    def _fall_back(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}".rstrip(": ")
        self._note_fallback(f"accelerator failed: {reason}")
        self._sess = self._ort.InferenceSession(
            self._model, sess_options=self._options(), providers=["CPUExecutionProvider"]
        )
        self.device_used = f"CPU ({self.fallback_reason})"
        self._verified = True

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        if self._verified:
            return self._sess.run(outputs, feeds)
        try:
            out = self._sess.run(outputs, feeds)
            self._verified = True
            return out
        except Exception as exc:  # accelerator failed at first inference
            self._fall_back(exc)
            self.input_names = [i.name for i in self._sess.get_inputs()]
            return self._sess.run(outputs, feeds)


def cv2_dnn_target(net: Any, device: str) -> str:
    """Point a ``cv2.dnn`` net at CUDA when asked/available; returns the device label used."""
    import cv2

    name, _ = parse_device(device)
    if name in ("auto", "cuda"):
        try:
            if cv2.cuda.getCudaEnabledDeviceCount() > 0:
                net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
                net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
                return "CUDA"
        except Exception:  # OpenCV built without CUDA
            pass
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    if name == "cuda":
        log.warning("OpenCV has no CUDA backend here, cv2.dnn runs on CPU")
        return "CPU (OpenCV built without CUDA)"
    return "CPU"
