"""The inference worker (a QThread): newest frame in → analysed, rendered picture out.

It owns the :class:`~agender.analyzer.Analyzer` and builds a new one when the user picks
another detector, estimator or device — on this thread, so the window never freezes while a
model loads, and without restarting anything (frames keep flowing and are shown raw until the
new models are ready). A model that fails to load leaves the previous one running.

Output goes through a one-slot mailbox too (:attr:`InferenceWorker.results`): if the UI thread
is ever slower than inference, it skips stale pictures instead of queueing them.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import numpy as np
from PyQt5.QtCore import QThread, pyqtSignal
from PyQt5.QtGui import QImage

from agender.errors import AgenderError
from agender.faces import Faces
from agender.gui.capture import Captured, FrameSlot, RateMeter
from agender.gui.overlay import OverlayOptions, render_display, render_full
from agender.gui.recorder import open_recorder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    """What the Models panel selects (``None`` = the model's own default)."""

    detector: str = "auto"
    estimator: str = "cydral:int8"
    device: str = "auto"
    models: str | None = None
    detect_width: int = 640
    conf: float | None = None
    padding: float | None = None
    tracking: bool = True  # ids + per-person smoothed age/gender (steadier labels, people counted once)

    def needs_new_detector(self, other: "ModelConfig") -> bool:
        return (self.detector, self.device, self.models, self.conf) != (other.detector, other.device, other.models, other.conf)

    def needs_new_estimator(self, other: "ModelConfig") -> bool:
        return (self.estimator, self.device, self.models) != (other.estimator, other.device, other.models)


@dataclass
class Result:
    """One analysed frame, ready to show."""

    captured: Captured
    faces: Faces
    display: QImage  # already fitted to the view and annotated
    t_done: float  # time.monotonic() when rendering finished
    stage_ms: dict[str, float] = field(default_factory=dict)
    proc_fps: float = 0.0


def _build(config: ModelConfig, old: Any, old_config: ModelConfig | None, factory: Callable[..., Any]) -> Any:
    """A new analyzer for ``config``, reusing the old detector/estimator objects that did not change."""
    det: Any = config.detector
    est: Any = config.estimator
    if old is not None and old_config is not None:
        if not config.needs_new_detector(old_config) and old.detector is not None:
            det = old.detector
        if not config.needs_new_estimator(old_config):
            est = old.estimator
    return factory(detector=det, estimator=est, device=config.device, models=config.models,
                   detect_width=config.detect_width, conf=config.conf, padding=config.padding)


class InferenceWorker(QThread):
    """Signals: ``result_ready()`` (take it with ``results.get(0)``), ``models_loaded(dict)``,
    ``models_failed(str, object)`` (message, the :class:`ModelConfig` that failed),
    ``error(str)`` (a frame could not be analysed), ``recording(bool, str)`` (on/off, path or error)."""

    result_ready = pyqtSignal()
    models_loaded = pyqtSignal(dict)
    models_failed = pyqtSignal(str, object)
    error = pyqtSignal(str)
    recording = pyqtSignal(bool, str)

    def __init__(self, inbox: FrameSlot, config: ModelConfig, *, overlay: OverlayOptions | None = None,
                 analyzer_factory: Callable[..., Any] | None = None,
                 tracked_factory: Callable[[Any, float], Any] | None = None, parent=None):
        super().__init__(parent)
        if analyzer_factory is None:
            from agender.analyzer import Analyzer

            analyzer_factory = Analyzer
        self.inbox = inbox
        self.results = FrameSlot()
        self.factory = analyzer_factory
        self.tracked_factory = tracked_factory or _tracked_analyzer
        self.source_fps = 25.0  # set by the window when a source opens (the tracker's time base)
        self.config: ModelConfig | None = None  # what is loaded now
        self.analyzer: Any = None
        self.overlay = overlay or OverlayOptions()
        self.display_size: tuple[int, int] = (960, 540)
        self.frames = 0  # frames analysed since start (read by tests and the soak)
        self.meter = RateMeter()
        self._pending: ModelConfig | None = config
        self.ready = threading.Event()  # set once the first models are loaded (or failed to)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._rerender = False
        self._last: Captured | None = None
        self._record_cmd: tuple[str, Any] | None = None
        self._recorder: Any = None
        self._tracked: Any = None  # TrackedAnalyzer around self.analyzer (None: not tracking)
        self._generation = -1
        self.last_error = ""  # the analysis error reported last ("" = frames analyse fine)
        # frames analysed (with models) from the source opened last, and when the first/last was done
        self.run_epoch = -1
        self.run_processed = 0
        self.t_first_done: float | None = None
        self.t_last_done: float | None = None

    # -- control (UI thread) --------------------------------------------------------------
    def set_models(self, config: ModelConfig) -> None:
        with self._lock:
            self._pending = config

    def set_overlay(self, overlay: OverlayOptions) -> None:
        self.overlay = overlay
        self._rerender = True

    def set_display_size(self, w: int, h: int) -> None:
        self.display_size = (max(1, int(w)), max(1, int(h)))

    def start_recording(self, path: str, fps: float) -> None:
        self._record_cmd = ("start", (path, fps))

    def stop_recording(self) -> None:
        self._record_cmd = ("stop", None)

    def stop(self) -> None:
        self._stop.set()

    @property
    def is_recording(self) -> bool:
        return self._recorder is not None

    # -- thread body ----------------------------------------------------------------------
    def run(self) -> None:  # noqa: D401 - QThread entry point
        try:
            while not self._stop.is_set():
                self._apply_pending()
                self._apply_record_cmd()
                item = self.inbox.get(timeout=0.05)
                if item is None:
                    if self._rerender and self._last is not None:
                        item = self._last
                    else:
                        continue
                self._rerender = False
                try:
                    self._process(item)
                except Exception as exc:  # noqa: BLE001 - a bug in one frame must not stop the video
                    log.exception("frame %s could not be shown", getattr(item.frame, "index", "?"))
                    self.error.emit(f"frame could not be shown: {type(exc).__name__}: {exc}")
        finally:
            self._close_recorder()

    def _apply_pending(self) -> None:
        try:
            self._load_pending()
        finally:
            self.ready.set()

    def _load_pending(self) -> None:
        with self._lock:
            cfg, self._pending = self._pending, None
        if cfg is None or cfg == self.config:
            return
        try:
            if self.analyzer is not None and self.config is not None and not (
                cfg.needs_new_detector(self.config) or cfg.needs_new_estimator(self.config)
            ):  # only knobs changed: no reload
                self.analyzer.detect_width = cfg.detect_width
                self.analyzer.padding = (self.analyzer.estimator.default_padding if cfg.padding is None
                                         else float(cfg.padding))
            else:
                self.analyzer = _build(cfg, self.analyzer, self.config, self.factory)
            self._tracked = None  # new models or knobs: tracks start afresh
            self.config = cfg
        except Exception as exc:  # noqa: BLE001 - a bad model must not take the window down
            msg = str(exc) if isinstance(exc, AgenderError) else f"{type(exc).__name__}: {exc}"
            log.warning("cannot load models: %s", msg)
            self.models_failed.emit(msg, cfg)
            return
        self._rerender = True
        self.models_loaded.emit(self._describe())

    def _describe(self) -> dict:
        if self.analyzer is None:
            return {}
        d = dict(self.analyzer.describe())
        d["detector_device"] = getattr(self.analyzer.detector, "device_used", "")
        d["config"] = asdict(self.config) if self.config else {}
        return d

    def _apply_record_cmd(self) -> None:
        cmd, self._record_cmd = self._record_cmd, None
        if cmd is None:
            return
        if cmd[0] == "stop":
            self._close_recorder()
            return
        self._close_recorder()
        path, fps = cmd[1]
        try:
            self._recorder = open_recorder(path, fps)
        except Exception as exc:  # noqa: BLE001
            self.recording.emit(False, str(exc))
            return
        self.recording.emit(True, str(path))

    def _close_recorder(self) -> None:
        rec, self._recorder = self._recorder, None
        if rec is None:
            return
        try:
            rec.close()
            self.recording.emit(False, "")
        except Exception as exc:  # noqa: BLE001
            self.recording.emit(False, f"recording failed: {exc}")

    def _analyze(self, item: Captured) -> Faces:
        an = self.analyzer
        if self.config is None or not self.config.tracking:
            return an(item.frame.image)
        if self._tracked is None or item.generation != self._generation:
            # new source, seek or loop: the people on screen are not the same tracks
            self._tracked = self.tracked_factory(an, self.source_fps)
            self._generation = item.generation
        return self._tracked.process(item.frame)

    def _process(self, item: Captured) -> None:
        self._last = item
        image = item.frame.image
        faces = Faces()
        stage_ms: dict[str, float] = {}
        an = self.analyzer
        if an is not None:
            before = replace(an.times)
            t_an = time.perf_counter()
            try:
                faces = self._analyze(item)
                self.last_error = ""
            except Exception as exc:  # noqa: BLE001 - show the frame, report once
                msg = str(exc) if isinstance(exc, AgenderError) else f"{type(exc).__name__}: {exc}"
                if msg != self.last_error:
                    self.last_error = msg
                    log.warning("analysis failed: %s", msg)
                    self.error.emit(msg)
            t_an = time.perf_counter() - t_an
            t = an.times
            stage_ms = {k: 1000.0 * (getattr(t, k) - getattr(before, k)) for k in ("resize", "detect", "crop", "estimate")}
            # "track": everything of the analysis that is not a model (tracker, cut detector, bookkeeping)
            stage_ms["track"] = max(0.0, 1000.0 * t_an - sum(stage_ms.values()))
        if self._recorder is not None:
            try:
                self._recorder.write(item.frame, faces)
            except Exception as exc:  # noqa: BLE001 - stop recording, keep showing
                rec, self._recorder = self._recorder, None
                try:
                    rec.abort()  # no half-written file left behind
                except Exception:  # noqa: BLE001
                    pass
                self.recording.emit(False, f"recording failed: {exc}")
        t0 = time.monotonic()
        display = render_display(image, faces, self.display_size, self.overlay)
        now = time.monotonic()
        stage_ms["draw"] = 1000.0 * (now - t0)
        self.meter.tick(now)
        self.frames += 1
        if an is not None:
            epoch = item.generation >> 20
            if epoch != self.run_epoch:
                self.run_epoch, self.run_processed, self.t_first_done = epoch, 0, now
            self.run_processed += 1
            self.t_last_done = now
        self.results.put(Result(item, faces, display, now, stage_ms, self.meter.rate))
        self.result_ready.emit()


def _tracked_analyzer(analyzer: Any, fps: float) -> Any:
    """Detection and estimation on every frame the worker gets, plus ids and smoothing."""
    from agender.tracked_analyzer import TrackedAnalyzer

    return TrackedAnalyzer(analyzer, fps=fps)


def annotated_frame(frame_bgr: np.ndarray, faces: Faces, overlay: OverlayOptions) -> np.ndarray:
    """The full-resolution annotated frame (snapshots)."""
    return render_full(frame_bgr, faces, overlay)
