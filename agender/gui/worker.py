"""The inference worker (a :class:`~agender.gui.workers.Worker` loop): newest frame in → analysed, rendered picture out.

It owns the :class:`~agender.analyzer.Analyzer` and builds a new one when the user picks
another detector, estimator or device — on this thread, so the window never freezes while a
model loads, and without restarting anything (frames keep flowing and are shown raw until the
new models are ready). A model that fails to load leaves the previous one running.

Output goes through a one-slot mailbox too (:attr:`InferenceWorker.results`): if the UI thread
is ever slower than inference, it skips stale pictures instead of queueing them.

What the offline pipeline knows, live: the worker runs the detector *ahead* in a helper thread
(:class:`_DetectAhead`: capture mailbox → downscale + detect → a one-frame hand-over → this
thread: track, estimate, draw), so on two cores detection of frame k+1 overlaps estimation and
drawing of frame k; each native library gets half the cores (one onnxruntime / OpenCV thread
each on 2 cores: wider pools only spin against each other). Frames are handed on by reference,
never copied. When the machine cannot keep up, :class:`~agender.gui.adapt.Governor` steps down
through :data:`~agender.gui.adapt.MODES` (detect every 2nd, then 4th frame, tracking between)
and the window's status says which mode it is in.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import numpy as np
from PyQt5.QtCore import pyqtSignal
from PyQt5.QtGui import QImage

from agender.estimators.base import DEFAULT_ESTIMATOR

from agender.errors import AgenderError, one_line
from agender.faces import Faces
from agender.gui.adapt import MODES, Governor
from agender.gui.capture import Captured, FrameSlot, RateMeter
from agender.gui.overlay import OverlayOptions, render_display, render_full
from agender.gui.recorder import open_recorder
from agender.gui.workers import Worker, error_message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    """What the Models panel selects (``None`` = the model's own default)."""

    detector: str = "auto"
    estimator: str = DEFAULT_ESTIMATOR
    device: str = "auto"
    models: str | None = None
    detect_width: int = 640
    conf: float | None = None
    padding: float | None = None
    tracking: bool = True  # ids + per-person smoothed age/gender (steadier labels, people counted once)
    runtime: str = "onnxruntime"  # agender.runtimes (--runtime / --profile)
    threads: int | None = None

    def needs_new_detector(self, other: "ModelConfig") -> bool:
        return ((self.detector, self.device, self.models, self.conf, self.runtime, self.threads)
                != (other.detector, other.device, other.models, other.conf, other.runtime, other.threads))

    def needs_new_estimator(self, other: "ModelConfig") -> bool:
        return ((self.estimator, self.device, self.models, self.runtime, self.threads)
                != (other.estimator, other.device, other.models, other.runtime, other.threads))


@dataclass
class Result:
    """One analysed frame, ready to show."""

    captured: Captured
    faces: Faces
    display: QImage  # already fitted to the view and annotated
    t_done: float  # time.monotonic() when rendering finished
    stage_ms: dict[str, float] = field(default_factory=dict)
    proc_fps: float = 0.0
    mode: str = "full"  # the adaptation mode this frame was analysed in (agender.gui.adapt.MODES)


def _build(config: ModelConfig, old: Any, old_config: ModelConfig | None, factory: Callable[..., Any]) -> Any:
    """A new analyzer for ``config``, reusing the old detector/estimator objects that did not change."""
    det: Any = config.detector
    est: Any = config.estimator
    if old is not None and old_config is not None:
        if not config.needs_new_detector(old_config) and old.detector is not None:
            det = old.detector
        if not config.needs_new_estimator(old_config):
            est = old.estimator
    from agender.cli.common import offline_threads

    with offline_threads():  # sessions made now keep half the cores each (see the module docstring)
        an = factory(detector=det, estimator=est, device=config.device, models=config.models,
                     detect_width=config.detect_width, conf=config.conf, padding=config.padding,
                     **({"runtime": config.runtime, "threads": config.threads}
                        if (config.runtime, config.threads) != ("onnxruntime", None) else {}))
    _warm_up(an)
    return an


def _warm_up(an: Any) -> None:
    """First inferences allocate and plan (tens of ms): do them now, not on the first frames."""
    try:
        img = np.zeros((720, 1280, 3), np.uint8)
        if getattr(an, "detector", None) is not None:
            an.detect(img)
        an.estimate([np.full((128, 128, 3), 96, np.uint8)])
        an.times.__init__()  # keep the warm-up out of the per-stage figures
    except Exception:  # noqa: BLE001 - a fake or an odd model: the first frame warms it instead
        log.debug("warm-up skipped", exc_info=True)


class FrameNotShown(AgenderError):
    """A frame failed after its analysis (drawing, bookkeeping): reported, the video goes on.
    The original exception is its ``__cause__``."""


class RecordingFailed(AgenderError):
    """The MP4 recording could not be started, written or finished: it stops (the half-written
    file removed), the live view goes on. The original exception is its ``__cause__``."""


def _recording_failed(what: str, exc: BaseException) -> RecordingFailed:
    err = RecordingFailed(f"{what}: {one_line(exc)}")
    err.__cause__ = exc
    return err


class _DetectAhead(Worker):
    """Capture mailbox → downscale + detect → :attr:`InferenceWorker._ahead` (one frame).

    Detection is scheduled here by the worker's mode (every frame, or every Nth since the
    source's generation changed); the frame, its faces (``None`` = not detected), whether
    detection was wanted and the seconds this thread was busy travel together."""

    def __init__(self, worker: "InferenceWorker"):
        super().__init__(name="agender-detect-ahead")
        self.w = worker
        self._gen: int | None = None
        self._k = 0

    def work(self) -> None:
        w = self.w
        while not self.should_quit:
            item = w.inbox.get(timeout=0.05)
            if item is None:
                continue
            t0 = time.perf_counter()
            if item.generation != self._gen:
                self._gen, self._k = item.generation, 0
            every = MODES[w.level].detect_every
            want = self._k % every == 0
            self._k += 1
            faces, det_s = None, 0.0
            an = w.analyzer
            if want and an is not None and getattr(an, "detector", None) is not None:
                try:
                    small = an.downscale(item.frame.image)
                    t1 = time.perf_counter()
                    faces = an.detect(item.frame.image, small=small)
                    det_s = time.perf_counter() - t1 + (t1 - t0)
                except Exception:  # noqa: BLE001 - the worker detects again and reports the error
                    faces = None
            busy = time.perf_counter() - t0
            while not self.should_quit:
                try:
                    w._ahead.put((item, faces, want, det_s, busy), timeout=0.05)
                    break
                except queue.Full:
                    continue


class InferenceWorker(Worker):
    """Signals: ``result_ready()`` (take it with ``results.get(0)``), ``models_loaded(dict)``,
    ``models_failed(Exception, object)`` (the error, the :class:`ModelConfig` that failed),
    ``errored(Exception)`` (a frame could not be analysed or shown: the video goes on),
    ``recording(bool, str)`` (on/off and the file), ``recording_failed(Exception)`` (a
    :class:`RecordingFailed`: the recording stopped, the exception object itself)."""

    result_ready = pyqtSignal()
    models_loaded = pyqtSignal(dict)
    models_failed = pyqtSignal(object, object)
    recording = pyqtSignal(bool, str)
    recording_failed = pyqtSignal(object)

    def __init__(self, inbox: FrameSlot, config: ModelConfig, *, overlay: OverlayOptions | None = None,
                 analyzer_factory: Callable[..., Any] | None = None,
                 tracked_factory: Callable[[Any, float], Any] | None = None, parent=None):
        super().__init__(name="agender-inference", parent=parent)
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
        self._lock = threading.Lock()
        self._rerender = False
        self._last: Captured | None = None
        self._record_cmd: tuple[str, Any] | None = None
        self._recorder: Any = None
        self._tracked: Any = None  # TrackedAnalyzer around self.analyzer (None: not tracking)
        self._generation = -1
        self.last_error = ""  # the analysis error reported last ("" = frames analyse fine)
        self.governor = Governor()
        self._t_loaded = 0.0  # time.monotonic() when the models in use finished loading
        self.stale_seqs: list[int] = []  # capture seqs of frames skipped as stale after a model load
        self.level = 0  # index into MODES (read by the detect-ahead thread)
        self.adaptive = True  # False: never leave "full" (tests that need every frame detected)
        self._ahead: queue.Queue = queue.Queue(maxsize=1)
        self._ahead_thread = _DetectAhead(self)
        self._held = Faces()  # untracked degraded mode: the last detected faces, shown on frames between
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
        """The name the window uses for :meth:`quit`."""
        self.quit()

    @property
    def is_recording(self) -> bool:
        return self._recorder is not None

    # -- thread body ----------------------------------------------------------------------
    @property
    def mode(self):
        return MODES[self.level]

    def work(self) -> None:
        """Load models, then analyse what detect-ahead hands over until asked to quit."""
        import cv2

        from agender.devices import physical_cores

        cv2.setNumThreads(max(1, physical_cores() // 2))  # the same split as offline (process-wide)
        self._ahead_thread.start()
        try:
            while not self.should_quit:
                self._apply_pending()
                self._apply_record_cmd()
                again = False
                try:
                    got = self._ahead.get(timeout=0.05)
                except queue.Empty:
                    if self._rerender and self._last is not None:
                        got, again = (self._last, None, True, 0.0, 0.0), True
                    else:
                        continue
                self._rerender = False
                item = got[0]
                if not again and item.seq and item.t_capture < self._t_loaded:
                    # read while models were loading (a live source does not wait): seconds old, skip it
                    self.stale_seqs.append(item.seq)
                    continue
                try:
                    self._process(*got)
                except Exception as exc:  # noqa: BLE001 - a bug in one frame must not stop the video
                    log.exception("frame %s could not be shown", getattr(item.frame, "index", "?"))
                    err = FrameNotShown(f"frame could not be shown: {type(exc).__name__}: {exc}")
                    err.__cause__ = exc
                    self.errored.emit(err)
        finally:
            self._close_recorder()
            self._ahead_thread.quit()
            self._ahead_thread.wait(1000)

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
                self._t_loaded = time.monotonic()
            self._tracked = None  # new models or knobs: tracks start afresh
            if cfg.tracking:
                self._warm_up_tracking()
            self.governor.reset()
            self.config = cfg
        except Exception as exc:  # noqa: BLE001 - a bad model must not take the window down
            log.warning("cannot load models: %s", error_message(exc))
            self.models_failed.emit(exc, cfg)
            return
        self._rerender = True
        self.models_loaded.emit(self._describe())

    def _warm_up_tracking(self) -> None:
        """The tracker's first frame imports and sets up ByteTrack (~0.8 s): not on the video's."""
        try:
            from agender.io.sources import Frame

            ta = self.tracked_factory(self.analyzer, 25.0)
            img = np.zeros((360, 640, 3), np.uint8)
            for i in range(2):
                ta.process(Frame(i, i / 25.0, img))
            self.analyzer.times.__init__()
        except Exception:  # noqa: BLE001 - the first real frame does it instead
            log.debug("tracking warm-up skipped", exc_info=True)

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
            self.recording.emit(False, "")
            self.recording_failed.emit(_recording_failed(f"cannot record to {path}", exc))
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
            self.recording.emit(False, "")
            self.recording_failed.emit(_recording_failed("recording failed", exc))

    def _analyze(self, item: Captured, detected: Faces | None, want: bool) -> tuple[Faces, float]:
        """This frame's faces, and the detector seconds spent here (not ahead)."""
        an = self.analyzer
        new_gen = item.generation != self._generation
        if new_gen:
            self._generation = item.generation
            self._tracked = None  # new source, seek or loop: the people on screen are not the same tracks
            self._held = Faces()
            self.governor.reset()
        if self.config is None or not self.config.tracking:
            if not want and not new_gen and len(self._held):
                return self._held, 0.0  # degraded, between detections: keep the last boxes and labels
            sync = 0.0
            if detected is None:
                t0 = time.perf_counter()
                detected = an.detect(item.frame.image)
                sync = time.perf_counter() - t0
            faces = an.analyze_frames([item.frame.image], detections=[detected])[0]
            self._held = faces
            return faces, sync
        if self._tracked is None:
            self._tracked = self.tracked_factory(an, self.source_fps)
        st = getattr(self._tracked, "stage", None)
        mode = self.mode
        if st is not None and st.detect_every != mode.detect_every:
            st.detect_every, st.reestimate_every = mode.detect_every, mode.reestimate_every
            st.tracker.detect_every = mode.detect_every  # the Kalman step between detections
        try:
            faces = self._tracked.process(item.frame, detected=detected, want=want)
        except TypeError:  # a tracked analyzer without detections made ahead (tests, plug-ins)
            faces = self._tracked.process(item.frame)
        return faces, float(getattr(self._tracked, "sync_detect_s", 0.0) or 0.0)

    def _process(self, item: Captured, detected: Faces | None = None, want: bool = True, det_ahead_s: float = 0.0,
                 busy_ahead_s: float = 0.0) -> None:
        t_start = time.perf_counter()
        self._last = item
        image = item.frame.image
        faces = Faces()
        stage_ms: dict[str, float] = {}
        an = self.analyzer
        mode = self.mode
        if an is not None:
            faces, stage_ms = self._timed_analysis(an, item, detected, want, det_ahead_s)
        if self._recorder is not None:
            self._record_frame(item, faces)
        t0 = time.monotonic()
        display = render_display(image, faces, self.display_size, self.overlay)
        now = time.monotonic()
        stage_ms["draw"] = 1000.0 * (now - t0)
        self.meter.tick(now)
        self.frames += 1
        if an is not None and self.adaptive:
            self._adapt(busy_ahead_s, time.perf_counter() - t_start)
        if an is not None:
            self._count_done(item, now)
        self.results.put(Result(item, faces, display, now, stage_ms, self.meter.rate, mode.name))
        self.result_ready.emit()

    def _timed_analysis(self, an: Any, item: Captured, detected: Faces | None, want: bool,
                        det_ahead_s: float) -> tuple[Faces, dict[str, float]]:
        """This frame's faces (none when the analysis failed: the frame is still shown) and the
        milliseconds each stage took for it."""
        faces = Faces()
        before = replace(an.times)
        t_an = time.perf_counter()
        sync_det = 0.0
        try:
            faces, sync_det = self._analyze(item, detected, want)
            self.last_error = ""
        except Exception as exc:  # noqa: BLE001 - show the frame, report once
            msg = error_message(exc)
            if msg != self.last_error:  # the same failure on every frame: reported once
                self.last_error = msg
                log.warning("analysis failed: %s", msg)
                self.errored.emit(exc)
        t_an = time.perf_counter() - t_an
        t = an.times
        # the detect-ahead thread adds to an.times.resize/detect concurrently: count those per frame instead
        stage_ms = {k: 1000.0 * (getattr(t, k) - getattr(before, k)) for k in ("crop", "estimate")}
        stage_ms["detect"] = 1000.0 * (det_ahead_s + sync_det)
        # "track": everything of the analysis that is not a model (tracker, cut detector, bookkeeping)
        stage_ms["track"] = max(0.0, 1000.0 * (t_an - sync_det) - stage_ms["crop"] - stage_ms["estimate"])
        return faces, stage_ms

    def _record_frame(self, item: Captured, faces: Faces) -> None:
        """The frame and its faces to the recording; a failed write stops the recording (the
        half-written file removed), never the live view."""
        try:
            self._recorder.write(item.frame, faces)
        except Exception as exc:  # noqa: BLE001 - stop recording, keep showing
            rec, self._recorder = self._recorder, None
            try:
                rec.abort()  # no half-written file left behind
            except Exception:  # noqa: BLE001
                pass
            self.recording.emit(False, "")
            self.recording_failed.emit(_recording_failed("recording failed", exc))

    def _adapt(self, busy_ahead_s: float, worker_s: float) -> None:
        """Feed this frame's load to the governor; log when it changes the mode."""
        fps = self.source_fps if self.source_fps and self.source_fps > 0 else 25.0
        level = self.governor.update({"detect": busy_ahead_s, "worker": worker_s}, 1.0 / fps)
        if level != self.level:
            self.level = level
            log.warning("live monitor: %s (load %.2f of the source's frame time)",
                        MODES[level].text if level else "keeping up again: every frame", self.governor.load)

    def _count_done(self, item: Captured, now: float) -> None:
        """Count an analysed frame for the current run (a new source or seek starts a new one)."""
        epoch = item.generation >> 20
        if epoch != self.run_epoch:
            self.run_epoch, self.run_processed, self.t_first_done = epoch, 0, now
        self.run_processed += 1
        self.t_last_done = now


def _tracked_analyzer(analyzer: Any, fps: float) -> Any:
    """Detection and estimation on every frame the worker gets, plus ids and smoothing."""
    from agender.tracked_analyzer import TrackedAnalyzer

    return TrackedAnalyzer(analyzer, fps=fps)


def annotated_frame(frame_bgr: np.ndarray, faces: Faces, overlay: OverlayOptions) -> np.ndarray:
    """The full-resolution annotated frame (snapshots)."""
    return render_full(frame_bgr, faces, overlay)
