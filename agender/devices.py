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

from agender.errors import one_line

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
# TensorRT hands the nodes it cannot build to the next provider: keep CUDA behind it, not only CPU.
_BACKUPS = {"tensorrt": ["cuda"]}
_LABELS = {"tensorrt": "TensorRT", "openvino": "OpenVINO", "coreml": "CoreML", "directml": "DirectML"}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def parse_device(device: str) -> tuple[str, int]:
    """``"cuda:1"`` → ``("cuda", 1)``; ``"cpu"`` → ``("cpu", 0)``."""
    name, _, idx = (device or "auto").strip().lower().partition(":")
    if name == "gpu":
        name = "cuda"
    if (name not in _PROVIDER_BY_DEVICE and name != "auto") or (idx and not idx.isdigit()):
        from agender.errors import AgenderError

        raise AgenderError(
            f"unknown device {device!r}: use auto, cpu, "
            + ", ".join(k for k in _PROVIDER_BY_DEVICE if k != "cpu")
            + " (optionally with an index, e.g. cuda:1)"
        )
    return name, int(idx or 0)


def providers_for(device: str, available: Sequence[str] | None = None) -> list[Any]:
    """onnxruntime providers for ``device`` in preference order, CPU always last."""
    available = list(available if available is not None else available_providers())
    name, idx = parse_device(device)
    wanted = _AUTO_ORDER if name == "auto" else ([] if name == "cpu" else [name, *_BACKUPS.get(name, [])])
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
            return _LABELS.get(dev, dev.upper())
    return provider


def physical_cores() -> int:
    """Physical CPU cores (logical ones where psutil cannot tell)."""
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except Exception:  # psutil missing or odd platform
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Intra-op threads: all physical cores by default (``AGENDER_THREADS`` overrides)."""
    env = os.environ.get("AGENDER_THREADS")
    if env:
        return max(1, int(env))
    return physical_cores()


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
    available: Sequence[str] | None = None  # providers to assume present (default: onnxruntime's list)
    config: dict[str, str] = field(default_factory=dict)  # onnxruntime session config entries
    # "all" | "extended" | "basic" | "disable": some graphs run slower under "all" (its NCHWc
    # layout rewrite doubles the Cydral age net's CPU time), so a model may ask for less.
    opt_level: str = "all"
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
        providers = providers_for(self.device, self.available)
        requested, _ = parse_device(self.device)
        try:
            self._sess = self._factory(model, sess_options=self._options(), providers=providers)
        except Exception as exc:  # accelerator failed at creation
            if _provider_name(providers[0]) == "CPUExecutionProvider":
                raise self._load_error(exc) from exc
            self._fall_back(exc)
        else:
            used = self._sess.get_providers()[0]
            wanted = _provider_name(providers[0])
            if wanted != "CPUExecutionProvider" and used == "CPUExecutionProvider":
                self._note_fallback(f"{device_label(wanted)} unavailable")
            elif requested not in ("auto", "cpu") and wanted == "CPUExecutionProvider":
                # asked for an accelerator onnxruntime does not have: say so instead of a silent "CPU"
                self._note_fallback(f"{device_label(_PROVIDER_BY_DEVICE[requested])} unavailable")
            self.device_used = device_label(used) + (f" ({self.fallback_reason})" if self.fallback_reason else "")
            self._verified = used == "CPUExecutionProvider"
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self.output_names = [o.name for o in self._sess.get_outputs()]

    def _options(self):
        so = self._ort.SessionOptions()
        so.intra_op_num_threads = self.threads or default_threads()
        so.inter_op_num_threads = 1
        so.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        levels = self._ort.GraphOptimizationLevel
        so.graph_optimization_level = {
            "disable": levels.ORT_DISABLE_ALL, "basic": levels.ORT_ENABLE_BASIC,
            "extended": levels.ORT_ENABLE_EXTENDED,
        }.get(self.opt_level, levels.ORT_ENABLE_ALL)
        so.log_severity_level = 3
        for key, value in self.config.items():  # e.g. {"session.intra_op.allow_spinning": "0"}
            so.add_session_config_entry(key, value)
        return so

    def _note_fallback(self, reason: str) -> None:
        self.fallback_reason = reason
        log.warning("%s: %s, running on CPU", self.name, reason)

    def _load_error(self, exc: BaseException):
        from agender.errors import ModelError

        return ModelError(f"cannot load {self.name} with onnxruntime: {_first_line(exc)}")

    def _cpu_session(self) -> Any:
        # through the same factory, so an injected/wrapping factory also builds the CPU session
        try:
            return self._factory(self._model, sess_options=self._options(), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise self._load_error(exc) from exc

    def _adopt_cpu(self, sess: Any, reason: str) -> None:
        self._note_fallback(reason)
        self._sess = sess
        self.device_used = f"CPU ({self.fallback_reason})"
        self._verified = True
        self.input_names = [i.name for i in sess.get_inputs()]
        self.output_names = [o.name for o in sess.get_outputs()]

    def _fall_back(self, exc: BaseException) -> None:
        self._adopt_cpu(self._cpu_session(), f"accelerator failed: {_first_line(exc)}")

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        """Run the net. The first run on an accelerator is also run on CPU: an accelerator
        that fails *or* computes something else (a broken kernel, an fp16 overflow) is
        replaced by the CPU for good, logged once; speed never buys a wrong answer."""
        if self._verified:
            return self._sess.run(outputs, feeds)
        try:
            out = self._sess.run(outputs, feeds)
        except Exception as exc:  # accelerator failed at first inference -- or the input is bad
            cpu = self._cpu_session()
            ref = cpu.run(outputs, feeds)  # fails too: the input is at fault, keep the accelerator
            self._adopt_cpu(cpu, f"accelerator failed: {_first_line(exc)}")
            return ref
        cpu = self._cpu_session()
        ref = cpu.run(outputs, feeds)
        problem = disagreement(out, ref)
        if problem:
            self._adopt_cpu(cpu, f"accelerator disagrees with CPU: {problem}")
            return ref
        self._verified = True
        return out


# How far an accelerator's first outputs may stray from the CPU's: fp16/TF32 kernels differ in
# the 3rd-4th significant digit; a broken kernel or an overflow differs by far more.
AGREE_RTOL = 0.02
AGREE_ATOL = 1e-3


def disagreement(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> str:
    """'' when every output matches the CPU reference within tolerance, else what differs."""
    for k, (got, want) in enumerate(zip(outputs, reference)):
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        if got.shape != want.shape:
            return f"output {k} has shape {got.shape}, CPU {want.shape}"
        err = np.abs(got - want)
        bound = AGREE_ATOL + AGREE_RTOL * max(float(np.abs(want).max(initial=0.0)), 1e-12)
        if not np.isfinite(got).all() or float(err.max(initial=0.0)) > bound:
            worst = float(np.nanmax(err)) if np.isfinite(err).any() else float("nan")
            return f"output {k} max |Δ| {worst:.3g} > {bound:.3g}"
    return ""


def _first_line(exc: BaseException) -> str:
    return one_line(exc, limit=120)


def cv2_dnn_backend(device: str, what: str = "cv2.dnn") -> tuple[int, int, str]:
    """cv2.dnn backend and target ids for ``device`` (CUDA only when OpenCV was built with
    it), and the device label; ``what`` names the model in the warning when CUDA is missing."""
    import cv2

    name, _ = parse_device(device)
    if name in ("auto", "cuda"):
        try:
            if cv2.cuda.getCudaEnabledDeviceCount() > 0:
                return cv2.dnn.DNN_BACKEND_CUDA, cv2.dnn.DNN_TARGET_CUDA, "CUDA"
        except Exception:  # OpenCV built without CUDA
            pass
    if name == "cuda":
        log.warning("OpenCV has no CUDA backend here, %s runs on CPU", what)
        return cv2.dnn.DNN_BACKEND_OPENCV, cv2.dnn.DNN_TARGET_CPU, "CPU (OpenCV built without CUDA)"
    return cv2.dnn.DNN_BACKEND_OPENCV, cv2.dnn.DNN_TARGET_CPU, "CPU"


def cv2_dnn_target(net: Any, device: str) -> str:
    """Point a ``cv2.dnn`` net at CUDA when asked/available; returns the device label used."""
    backend, target, label = cv2_dnn_backend(device)
    net.setPreferableBackend(backend)
    net.setPreferableTarget(target)
    return label
