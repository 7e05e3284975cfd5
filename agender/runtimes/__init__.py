"""Which inference runtime runs a net: onnxruntime, LiteRT (TensorFlow Lite + XNNPACK), or ``auto``.

One tiny interface (:class:`Session`: ``input_names``, ``output_names``, ``run(feeds)``,
``device_used``, ``runtime``) over two backends, so a detector or estimator asks
:func:`open_session` for its net and never imports a runtime itself:

- ``onnxruntime``: :class:`agender.devices.OnnxSession` (device policy, accelerator fallback);
- ``litert``: :class:`agender.runtimes.litert.LiteRTSession` on the net's ``.tflite`` conversion
  (shipped as package data for nets whose license allows it, else converted once into the
  cache by ``agender models convert --to tflite``);
- ``auto``: both, and whichever is faster *on this machine, on the first real input*, keeps
  running (:class:`AutoSession`): a Pi and an x86 desktop pick differently, and neither by habit.

Feeds are always in the ONNX layout (NCHW images); a LiteRT session transposes what its
``.tflite`` wants (NHWC). A caller that already holds NHWC can ask :attr:`Session.layout`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from agender.errors import AgenderError

log = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "litert", "auto")
DEFAULT_RUNTIME = "onnxruntime"


class Session(Protocol):
    """What a detector/estimator needs from a loaded net."""

    runtime: str
    device_used: str
    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]: ...


def check_runtime(text: str) -> str:
    """``--runtime`` value, lower-cased; one line naming the choices otherwise."""
    name = (text or DEFAULT_RUNTIME).strip().lower()
    if name in ("tflite", "tensorflow-lite", "ai-edge-litert"):
        name = "litert"
    if name == "ort":
        name = "onnxruntime"
    if name not in RUNTIMES:
        raise AgenderError(f"unknown runtime {text!r}: use {', '.join(RUNTIMES)}")
    return name


def litert_available() -> bool:
    """True when the ``ai-edge-litert`` wheel imports (``pip install 'agender[litert]'``)."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def open_session(
    onnx_path: Path,
    *,
    runtime: str = DEFAULT_RUNTIME,
    device: str = "auto",
    threads: int | None = None,
    name: str = "",
    opt_level: str = "all",
    tflite_key: str | None = None,
    onnx_session: Any = None,
    compare_outputs: bool = True,
) -> Session:
    """The net at ``onnx_path`` on ``runtime``.

    ``tflite_key`` names the net's LiteRT conversion (see :mod:`agender.runtimes.tflite_store`;
    ``None``: this net has none, so ``litert`` is refused and ``auto`` means onnxruntime).
    ``onnx_session`` reuses an already-built onnxruntime session (e.g. the int8 age net);
    ``compare_outputs=False`` when that session is not meant to equal the .tflite exactly."""
    runtime = check_runtime(runtime)
    name = name or str(onnx_path)

    def ort_session():
        if onnx_session is not None:
            return onnx_session
        from agender.devices import OnnxSession

        sess = OnnxSession(onnx_path, device=device, threads=threads, name=name, opt_level=opt_level)
        sess.runtime = "onnxruntime"
        return sess

    if runtime == "onnxruntime":
        return ort_session()
    if tflite_key is None:
        if runtime == "litert":
            raise AgenderError(f"{name}: no LiteRT (.tflite) version of this net; use --runtime onnxruntime")
        return ort_session()
    if not litert_available():
        if runtime == "litert":
            raise AgenderError("--runtime litert needs the ai-edge-litert package: pip install 'agender[litert]'")
        log.debug("%s: ai-edge-litert not installed, auto runtime = onnxruntime", name)
        return ort_session()
    from agender.runtimes.litert import LiteRTSession
    from agender.runtimes.tflite_store import find_tflite

    try:
        tfl = find_tflite(tflite_key, onnx_path)
    except AgenderError:
        if runtime == "litert":
            raise
        log.info("%s: no .tflite conversion found, auto runtime = onnxruntime", name)
        return ort_session()
    lite = LiteRTSession(tfl, threads=threads, name=name)
    if runtime == "litert":
        return lite
    return AutoSession(ort_session(), lite, name=name, compare_outputs=compare_outputs)


def _outputs_agree(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> str:
    from agender.devices import disagreement

    return disagreement(a, b)


@dataclass
class AutoSession:
    """Both runtimes until the first real input, then the faster one alone.

    On that input each session runs ``repeats`` times (interleaved) after a warm-up; the lower median
    wins; the loser is dropped (its memory too). If their outputs disagree beyond the
    accelerator tolerance of :mod:`agender.devices` (a broken conversion) onnxruntime, the
    reference, wins whatever its speed. ``compare_outputs=False`` for pairs that are not meant
    to be equal bit for bit (the int8 age net against the float .tflite)."""

    ort: Any
    lite: Any
    name: str = "model"
    repeats: int = 9
    compare_outputs: bool = True
    chosen: Any = field(init=False, default=None)
    timings_ms: dict[str, float] = field(init=False, default_factory=dict)
    runtime: str = field(init=False, default="auto")

    def __post_init__(self) -> None:
        self.input_names = list(self.ort.input_names)
        self.output_names = list(self.ort.output_names)

    @property
    def device_used(self) -> str:
        return (self.chosen or self.ort).device_used

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        if self.chosen is not None:
            return self.chosen.run(feeds, outputs)
        sessions = (self.ort, self.lite)
        results = {sess.runtime: sess.run(feeds, outputs) for sess in sessions}  # warm-up (and the answer)
        times: dict[str, list[float]] = {sess.runtime: [] for sess in sessions}
        for _ in range(self.repeats):  # interleaved: load that drifts meanwhile weighs on both alike
            for sess in sessions:
                t0 = time.perf_counter()
                sess.run(feeds, outputs)
                times[sess.runtime].append(time.perf_counter() - t0)
        self.timings_ms = {k: round(1000.0 * float(np.median(v)), 3) for k, v in times.items()}
        problem = _outputs_agree(results["litert"], results["onnxruntime"]) if self.compare_outputs else ""
        faster = min(self.timings_ms, key=self.timings_ms.get)
        if problem:
            faster = "onnxruntime"
            log.warning("%s: LiteRT disagrees with onnxruntime (%s); using onnxruntime", self.name, problem)
        self.chosen = self.lite if faster == "litert" else self.ort
        self.runtime = f"auto→{faster}"
        shape = "x".join(str(s) for s in next(iter(feeds.values())).shape)
        log.info("%s: runtime auto picked %s (%s ms/run on a %s input; %s)", Path(self.name).name, faster,
                 self.timings_ms[faster], shape,
                 ", ".join(f"{k} {v} ms" for k, v in self.timings_ms.items()))
        return results[faster]


def runtime_kwargs(klass: Any, what: str, runtime: str, threads: int | None) -> dict[str, Any]:
    """The ``runtime``/``threads`` keyword arguments ``klass`` takes, for the registries.

    A model class takes ``runtime`` when its constructor has that parameter; asking ``litert`` of one that has none is one line naming it,
    ``auto`` quietly means onnxruntime for it (the only runtime it has)."""
    import inspect

    runtime = check_runtime(runtime)
    params = inspect.signature(klass).parameters
    out: dict[str, Any] = {}
    if "runtime" in params:
        out["runtime"] = runtime
    elif runtime == "litert":
        raise AgenderError(f"{what} has no LiteRT runtime (LiteRT runs yunet, agender and cydral); "
                           "use --runtime onnxruntime or auto")
    if threads is not None and "threads" in params:
        out["threads"] = int(threads)
    return out


def runtime_label(sess: Any) -> str:
    """``onnxruntime`` / ``litert`` / ``auto→litert`` for logs, bench and the sidecar."""
    return str(getattr(sess, "runtime", "onnxruntime"))
