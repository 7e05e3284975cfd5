"""The main window: wires the capture thread, the inference worker and the widgets together.

Everything slow happens elsewhere (capture and inference threads); handlers here only move
small objects between them and repaint. Errors arrive as one-line messages: a dialog for
things the user did (an unreadable file), a banner for things that fix themselves (a camera
that is being retried), the idle screen in kiosk mode.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QKeySequence
from PyQt5.QtWidgets import (QAction, QApplication, QLabel, QMainWindow, QScrollArea, QSplitter, QVBoxLayout,
                             QWidget)

from agender.gui.adapt import MODES
from agender.gui.capture import Backoff, CaptureThread, FrameSlot
from agender.gui.dialogs import Dialogs, fetch_name, start_fetch
from agender.gui.kiosk import apply_kiosk, paint_idle
from agender.gui.livestats import RunStats, write_json
from agender.gui.overlay import OverlayOptions
from agender.gui.panel import ControlPanel
from agender.gui.settings import Settings
from agender.gui.source_control import SourceControl
from agender.gui.readouts import Readouts
from agender.gui.record_snapshot import RecordSnapshot
from agender.gui.stats import SeenStats, StatsChart
from agender.gui.transport import TransportBar
from agender.gui.video_view import VideoView
from agender.gui.worker import InferenceWorker, ModelConfig, Result
from agender.gui.workers import error_message
from agender.io.sources import open_source

log = logging.getLogger(__name__)

CLOSE_BUDGET_S = 1.8  # the promise: closing releases everything within 2 s
AUTOMATION_SIZE = (1280, 760)  # --exit-after runs: the same window size every time (docs, CI)
SEEK_STEP_S = 5.0  # Left / Right arrow


class MainWindow(QMainWindow):
    """``source``: what to open at start (``None``: nothing). ``opener`` and ``backoff`` are
    injectable (tests use a fake camera that unplugs). ``realtime=False`` plays files as fast
    as they decode. ``exit_after`` makes an automated run: a fixed window size, settings
    read but never written, no questions asked."""

    cameras_found = pyqtSignal(list)
    finished_run = pyqtSignal(int)  # --exit-after reached (exit code)

    def __init__(self, *, settings: Settings | None = None, config: ModelConfig | None = None,
                 overlay: OverlayOptions | None = None, source: str | None = None, kiosk: bool = False,
                 dialogs: Dialogs | None = None, opener: Callable[[str], Any] = open_source,
                 backoff: Callable[[], Backoff] = Backoff, realtime: bool = True,
                 analyzer_factory: Callable[..., Any] | None = None,
                 exit_after: int | None = None, screenshot: str | None = None, probe_cameras: bool = True,
                 stats_json: str | None = None):
        super().__init__()
        self.settings = settings or Settings()
        self.automated = exit_after is not None
        if self.automated:
            self.settings.read_only = True  # a CI run or doc screenshot must not change the user's window
        self.dialogs = dialogs or Dialogs()
        self.kiosk = kiosk
        self.opener = opener
        self.backoff_factory = backoff
        self.realtime = realtime
        self.exit_after = exit_after
        self.screenshot_path = screenshot
        self.stats_json = stats_json
        self.run_stats = RunStats()
        self._stats_base: tuple | None = None  # (frames read, dropped, t, missed) when the run's figures start
        self.exit_code = 0
        self.setWindowTitle("agender — live monitor")
        self.setAcceptDrops(True)

        cfg = config or self.settings.model_config()
        ov = overlay or self.settings.overlay()
        self._init_state()
        self._build_widgets(cfg, ov)
        self._start_worker(cfg, ov, analyzer_factory)
        self._place_window()
        self.view.set_message("Loading models…" if source else self.view.message)
        self._update_privacy_actions(ov.privacy)
        if kiosk:
            apply_kiosk(self)
        elif probe_cameras:
            self.scan_cameras()
        if source:
            self.open_source(source)

    def _init_state(self) -> None:
        """What the window tracks about the source, the run and its own shutdown."""
        self.slot = FrameSlot(capacity=2)  # room for one frame of jitter; beyond it the newest wins
        self.capture: CaptureThread | None = None
        self.source_spec: str | None = None
        self.source_info: dict = {}
        self.last_result: Result | None = None
        self.models_info: dict = {}
        self._closing = False
        self._finished = False
        self._quit_confirmed = False  # the user already said yes (keyboard quit): do not ask again
        self._ended_at: int | None = None  # --exit-after: the file ended on this frame index
        self.source_warning = ""  # shown as the banner while this source plays (e.g. truncated file)
        self._epoch = 0
        self._probes: list = []  # camera probes still running (kept alive until they end)
        self._orphans: list = []  # threads that outlived their stop budget (kept alive until they end)
        self.source_control = SourceControl(self)

    def _build_widgets(self, cfg: ModelConfig, ov: OverlayOptions) -> None:
        """Picture, transport and chart on the left; the control panel on the right (pure layout)."""
        self.view = VideoView()
        self.view.idle_painter = paint_idle
        self.view.on_painted = lambda ms: self.run_stats.painted(ms) if self.view.has_frame else None
        self.transport = TransportBar()
        self.panel = ControlPanel()
        self.panel.set_model_config(cfg)
        self.panel.set_overlay(ov)
        self.transport.loop_box.setChecked(self.settings.loop or self.kiosk)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.setSpacing(0)
        lv.addWidget(self.view, 1)
        lv.addWidget(self.transport)
        self.chart = StatsChart()
        lv.addWidget(self.chart)
        scroll = QScrollArea()
        scroll.setWidget(self.panel)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(self.panel.minimumWidth() + 16)
        self.panel_scroll = scroll
        split = QSplitter(Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(scroll)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 0)
        split.setCollapsible(0, False)
        self.setCentralWidget(split)
        self.status_label = QLabel("")
        self.statusBar().addPermanentWidget(self.status_label, 1)
        self.record_snapshot = RecordSnapshot(self)
        self.rec_label = self.record_snapshot.label
        self.readouts = Readouts(self)
        self._build_actions()
        self.panel_scroll.setVisible(self.settings.show_panel)

    def _start_worker(self, cfg: ModelConfig, ov: OverlayOptions, analyzer_factory: Callable[..., Any] | None) -> None:
        """The inference worker, and the wiring of the widgets to it and to the window."""
        self.worker = InferenceWorker(self.slot, cfg, overlay=ov, analyzer_factory=analyzer_factory)
        self.worker.result_ready.connect(self._on_result)
        self.worker.models_loaded.connect(self._on_models_loaded)
        self.worker.models_failed.connect(self._on_models_failed)
        self.worker.errored.connect(self._on_worker_error)
        self.worker.recording.connect(self.record_snapshot.on_recording)
        self.worker.recording_failed.connect(self.record_snapshot.on_recording_failed)
        self.view.resized.connect(self.worker.set_display_size)
        self.view.file_dropped.connect(self.open_source)
        self.transport.play_toggled.connect(self.toggle_pause)
        self.transport.step.connect(self.step)
        self.transport.seek.connect(self.seek)
        self.transport.loop_toggled.connect(self.source_control.set_loop)
        self.panel.models_changed.connect(self.set_models)
        self.panel.overlay_changed.connect(self.set_overlay)
        self.panel.open_file.connect(self.source_control.ask_open_file)
        self.panel.open_url.connect(self.source_control.ask_open_url)
        self.panel.camera_chosen.connect(lambda i: self.open_source(f"cam:{i}"))
        self.panel.rescan.connect(self.scan_cameras)
        self.cameras_found.connect(self.panel.set_cameras)
        self.cameras_found.connect(self.source_control.fill_camera_menu)
        self.worker.set_display_size(self.view.width(), self.view.height())
        self.worker.start()

    def _place_window(self) -> None:
        """Automated runs get the documented size; otherwise where the user left the window."""
        geo = self.settings.geometry()
        if self.automated and not self.kiosk:
            self.panel_scroll.setVisible(True)  # the documented window, whatever was remembered
            self.resize(*AUTOMATION_SIZE)
        elif geo is not None and not self.kiosk:
            self.restoreGeometry(geo)
        else:
            self.resize(*AUTOMATION_SIZE)

    # -- actions and shortcuts ---------------------------------------------------------------
    def _action(self, text: str, slot, shortcut=None, checkable: bool = False) -> QAction:
        a = QAction(text, self)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
            a.setShortcutContext(Qt.WindowShortcut)
        a.setCheckable(checkable)
        if checkable:
            a.toggled.connect(slot)
        else:  # triggered(bool checked): never pass that bool on as an argument (a path, a flag)
            a.triggered.connect(lambda _checked=False, slot=slot: slot())
        self.addAction(a)  # shortcuts keep working with the menu bar hidden (kiosk, fullscreen)
        return a

    def _build_actions(self) -> None:
        self.act_open = self._action("&Open file…", self.source_control.ask_open_file, QKeySequence.Open)
        self.act_url = self._action("Open &URL…", self.source_control.ask_open_url, "Ctrl+U")
        self.act_snapshot = self._action("&Snapshot", self.snapshot, "S")
        self.act_record = self._action("&Record", self.toggle_record, "R", checkable=True)
        # "Ctrl+Q" spelled out: QKeySequence.Quit is empty on platforms without a desktop theme
        self.act_quit = self._action("&Quit", self.request_quit, "Ctrl+Q")
        self.act_pause = self._action("&Pause", self.toggle_pause, "Space")
        src = self.source_control
        self.act_back = self._action(f"&Back {SEEK_STEP_S:g} s", lambda: src.seek_by(-SEEK_STEP_S), "Left")
        self.act_forward = self._action(f"&Forward {SEEK_STEP_S:g} s", lambda: src.seek_by(SEEK_STEP_S), "Right")
        self.act_prev_frame = self._action("P&revious frame", self.source_control.step_back, ",")
        self.act_next_frame = self._action("&Next frame", self.step, ".")
        self.act_full = self._action("&Fullscreen", self.toggle_fullscreen, "F")
        # Esc is not a shortcut: shortcuts see keys before widgets do, so an Esc meant to close a
        # dropdown would quit. keyPressEvent gets it only when no widget used it ("\tEsc": the menu shows the key)
        self.act_escape = self._action("Leave fullscreen / quit\tEsc", self.escape)
        self.act_panel = self._action("Side &panel", self._toggle_panel, "Ctrl+P", checkable=True)
        self.act_panel.blockSignals(True)
        self.act_panel.setChecked(self.settings.show_panel)
        self.act_panel.blockSignals(False)
        mb = self.menuBar()
        m = mb.addMenu("&File")
        for a in (self.act_open, self.act_url):
            m.addAction(a)
        self.camera_menu = m.addMenu("&Camera")
        self.camera_menu.addAction("Rescan", self.scan_cameras)
        m.addSeparator()
        for a in (self.act_snapshot, self.act_record):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.act_quit)
        m = mb.addMenu("&Play")
        for a in (self.act_pause, self.act_back, self.act_forward, self.act_prev_frame, self.act_next_frame):
            m.addAction(a)
        m = mb.addMenu("&View")
        for a in (self.act_full, self.act_panel):
            m.addAction(a)
        m = mb.addMenu("&Help")
        m.addAction("Keys: Space pause · ←/→ 5 s · ,/. frame · S snapshot · R record · F fullscreen · "
                    "Esc leave fullscreen/quit · Ctrl+O open").setEnabled(False)

    # -- sources and player (SourceControl) ---------------------------------------------------
    def open_source(self, spec: str) -> None:
        """Stop the current source (if any) and start ``spec``."""
        self.source_control.open_source(spec)

    def scan_cameras(self) -> None:
        self.source_control.scan_cameras()

    def toggle_pause(self) -> None:
        self.source_control.toggle_pause()

    def step(self) -> None:
        self.source_control.step()

    def seek(self, index: int) -> None:
        self.source_control.seek(index)

    # -- models and overlay --------------------------------------------------------------------
    def set_models(self, cfg: ModelConfig) -> None:
        """Switch detector/estimator/device/knobs while running (loaded on the worker thread)."""
        self.settings.set_model_config(cfg)
        self.status_label.setText("Loading models…")
        self.worker.set_models(cfg)

    def set_overlay(self, ov: OverlayOptions) -> None:
        self.settings.set_overlay(ov)
        self.worker.set_overlay(ov)
        self._update_privacy_actions(ov.privacy)

    def _update_privacy_actions(self, privacy: bool) -> None:
        for a in (self.act_snapshot, self.act_record):
            a.setEnabled(not privacy)
        if privacy and self.worker.is_recording:
            self.worker.stop_recording()

    def _on_models_loaded(self, info: dict) -> None:
        self.models_info = info
        cfg = self.worker.config
        if cfg is not None:
            self.panel.set_model_config(cfg)
        dev = info.get("device", "")
        det_dev = info.get("detector_device", "")
        text = dev if not det_dev or det_dev == dev else f"{dev}; detector {det_dev}"
        self.panel.set_readout("device", text)
        self.status_label.setText(f"{info.get('detector')} + {info.get('estimator')} on {dev}")

    def _on_models_failed(self, exc: BaseException, cfg: ModelConfig) -> None:
        message = error_message(exc)
        cur = self.worker.config
        if cur is not None:
            self.panel.set_model_config(cur)  # show what is really running
        self.status_label.setText(f"Model not loaded: {message}")
        if self.exit_after is not None and self.worker.analyzer is None:
            self.exit_code = 1  # an automated run without models is a failed run
        if self.kiosk:
            self.view.set_banner(message)
            return
        name = fetch_name(message)
        on_fetch = (lambda: self._fetch_and_retry(name, cfg)) if name else None
        self.dialogs.missing_model(self, message, on_fetch, self._pick_other_model)

    def _pick_other_model(self) -> None:
        self.panel_scroll.show()
        self.panel.estimator.setFocus()
        self.panel.estimator.showPopup()

    def _fetch_and_retry(self, name: str, cfg: ModelConfig) -> None:
        def done(ok: bool, msg: str) -> None:
            if ok:
                self.statusBar().showMessage(msg, 5000)
                self.set_models(cfg)
            else:
                self.dialogs.error(self, "Fetch failed", msg)

        self._fetch_thread = start_fetch(self, name, done)

    def _on_worker_error(self, exc: BaseException) -> None:
        message = error_message(exc)
        self.statusBar().showMessage(message, 8000)
        if self.kiosk:
            return
        self.view.set_banner(message)

    # -- results -----------------------------------------------------------------------------
    def _on_result(self) -> None:
        res: Result | None = self.worker.results.get(0)
        if res is None or self._closing or not self._is_current(res):
            return  # a frame of the previous source that was still in the worker
        self.last_result = res
        self.view.set_frame(res.display)
        if self.view.banner != self.source_warning and self.capture is not None and self.worker.last_error == "":
            self.view.set_banner(self.source_warning)  # a transient message is over; a warning about the source stays
        now = time.monotonic()
        if self.worker.analyzer is not None:
            if self.run_stats.displayed == 0:  # the run's figures start at the first analysed frame
                cap = self.capture
                self._stats_base = (res.captured.seq, res.captured.t_capture,
                                    getattr(cap.source, "missed", 0) if cap is not None else 0)
            self.run_stats.shown(res.captured.t_capture, now, res.stage_ms, getattr(res, "mode", ""))
        self.readouts.shown(res, now)
        if self.exit_after is not None and (
                self.view.frames_shown >= self.exit_after
                or (self._ended_at is not None and res.captured.frame.index >= self._ended_at)):
            self.finish()

    def _is_current(self, res: Result) -> bool:
        """Did ``res`` come from the source opened last? (generations start at epoch << 20)"""
        return (res.captured.generation >> 20) == self._epoch
    def _update_readouts(self, res: Result) -> None:
        self.readouts.update(res)

    @property
    def seen(self) -> SeenStats:
        return self.readouts.seen

    @property
    def latency_ms(self) -> float:
        return self.readouts.latency_ms

    # -- snapshot / record --------------------------------------------------------------------
    def snapshot(self, path: str | None = None) -> str | None:
        """Save the annotated frame as PNG (full resolution); returns the path written."""
        return self.record_snapshot.snapshot(path)

    def toggle_record(self, on: bool | None = None) -> None:
        self.record_snapshot.toggle_record(on)

    # -- window ------------------------------------------------------------------------------
    def toggle_fullscreen(self) -> None:
        if self.isFullScreen() and not self.kiosk:
            self.showNormal()
        else:
            self.showFullScreen()

    def escape(self) -> None:
        """Esc closes an open dropdown, else leaves fullscreen, else asks to quit (kiosk: quits)."""
        popup = QApplication.activePopupWidget()
        if popup is not None:  # the Esc was meant for the dropdown (shortcuts see keys first)
            popup.close()
            return
        if self.isFullScreen() and not self.kiosk:
            self.showNormal()
        else:
            self.request_quit()

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if event.key() == Qt.Key_Escape and not event.modifiers():
            event.accept()
            self.escape()
            return
        super().keyPressEvent(event)

    def request_quit(self) -> bool:
        """Quit from the keyboard (Esc, Ctrl+Q): asks first, so a stray key does not end a
        session or a recording. Kiosk mode quits at once (whoever has the keyboard means it);
        automated runs never ask. Returns whether the window is closing."""
        if not (self.kiosk or self.automated):
            if self.worker.is_recording:
                q = ("Stop recording and quit?", "A recording is in progress. Quitting stops it and keeps what "
                     "was recorded so far.")
            else:
                q = ("Quit agender?", "Close the live monitor?")
            if not self.dialogs.confirm(self, q[0], q[1], "Quit"):
                return False
            self._quit_confirmed = True
        return self.close()

    def _toggle_panel(self, on: bool) -> None:
        self.panel_scroll.setVisible(on)
        self.settings.show_panel = on

    def finish(self) -> None:
        """``--exit-after``: save the screenshot (whole window) and close."""
        if self._finished:
            return
        self._finished = True
        if self.stats_json:
            self.write_stats(self.stats_json)
        if self.screenshot_path:
            self.save_screenshot(self.screenshot_path)
        self.close()
        self.finished_run.emit(self.exit_code)

    def live_stats(self) -> dict:
        """The run's figures (``--stats-json``): rates over the whole run of the current source."""
        cap, w = self.capture, self.worker
        base_seq, t0, base_missed = self._stats_base or (1, None, 0)
        base_seq = max(1, base_seq)
        captured = cap.frames_read - base_seq + 1 if cap is not None else 0
        t0 = t0 if t0 is not None else (cap.t_first if cap is not None else None)
        cap_span = (cap.t_last - t0) if cap is not None and t0 is not None and cap.t_last is not None else 0.0
        missed = getattr(cap.source, "missed", None) if cap is not None else None
        mine = w.run_epoch == self._epoch
        processed = w.run_processed if mine else 0
        proc_span = (w.t_last_done - w.t_first_done) if mine and w.t_first_done is not None else 0.0
        dev = self.models_info.get("device", "") if w.analyzer is not None else "no model loaded"
        return self.run_stats.to_dict(
            captured=captured, capture_span_s=cap_span, processed=processed, process_span_s=proc_span,
            dropped=self.dropped_frames(since_seq=base_seq), device=dev,
            source_missed=None if missed is None else int(missed - base_missed), source=self.source_spec or "", mode=w.mode.name,
            dropped_indices=list(self.slot.dropped_indices),
            mode_changes=[{"t_s": round(t - (cap.t_first or t), 2) if cap is not None else 0.0, "mode": MODES[lv].name,
                           "load": load} for t, lv, load in w.governor.history],
            source_fps=float(self.source_info.get("fps") or 0.0), models=dict(self.models_info.get("config", {})),
            detector=self.models_info.get("detector"), estimator=self.models_info.get("estimator"))

    def dropped_frames(self, since_seq: int = 1) -> int:
        """Frames of this source read (from capture sequence number ``since_seq`` on) but never
        analysed: dropped by the mailbox, or skipped as stale after a model load."""
        n = sum(1 for q in self.slot.dropped_seqs if q >= since_seq)
        return n + sum(1 for q in list(self.worker.stale_seqs) if q >= since_seq)

    def write_stats(self, path: str) -> bool:
        try:
            write_json(path, self.live_stats())
            return True
        except (OSError, ValueError) as exc:
            log.error("could not write %s: %s", path, exc)
            self.exit_code = 1
            return False

    def save_screenshot(self, path: str) -> bool:
        self.chart.set_summary(self.seen.summary())
        if self.last_result is not None:
            self.readouts.update(self.last_result)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        ok = self.grab().save(str(path), "PNG")
        if not ok:
            log.error("could not write screenshot %s", path)
            self.exit_code = 1
        return ok

    def shutdown(self) -> float:
        """Stop capture and inference and release the source; returns the seconds it took."""
        t0 = time.monotonic()
        if self._closing:
            return 0.0
        self._closing = True
        if self.capture is not None:
            self.capture.stop()
        self.worker.stop()
        self.source_control.stop_capture(timeout_s=CLOSE_BUDGET_S / 2)
        left = max(0.05, CLOSE_BUDGET_S - (time.monotonic() - t0))
        if not self.worker.wait(int(left * 1000)):
            log.warning("inference still busy after %.1f s; leaving it to finish in the background", left)
            self._orphans.append(self.worker)
        for probe in list(self._probes):  # a camera probe cannot be interrupted: give it what is left
            if not probe.wait(int(max(0.05, CLOSE_BUDGET_S - (time.monotonic() - t0)) * 1000)):
                self._orphans.append(probe)
        return time.monotonic() - t0

    def closeEvent(self, event) -> None:  # noqa: N802
        if (self.worker.is_recording and not (self._quit_confirmed or self._finished or self.kiosk or self.automated)
                and not self._closing):
            # the window's close button (or Ctrl+C) while recording: the same question as the keys
            if not self.dialogs.confirm(self, "Stop recording and quit?", "A recording is in progress. Quitting "
                                        "stops it and keeps what was recorded so far.", "Quit"):
                event.ignore()
                return
            self._quit_confirmed = True
        if not self.kiosk and not self.isFullScreen() and not self.automated:
            self.settings.set_geometry(self.saveGeometry())
        self.settings.sync()  # models and overlay were saved when the user changed them
        if (self.screenshot_path or self.stats_json) and not self._finished:
            self._finished = True
            if self.stats_json:
                self.write_stats(self.stats_json)
            if self.screenshot_path:
                self.save_screenshot(self.screenshot_path)
        self.shutdown()
        super().closeEvent(event)
