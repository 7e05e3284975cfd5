"""The source side of :class:`~agender.gui.main_window.MainWindow`: what plays and how.

Why apart from the window: opening files, URLs and cameras, the capture worker's life and its
reports (retries, truncated files, the end of a clip) and the player controls change for reasons
that have nothing to do with models, readouts or recording.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PyQt5.QtCore import QTimer

from agender.gui.capture import CaptureThread, is_live_spec, list_cameras
from agender.gui.workers import create_worker, error_message

if TYPE_CHECKING:
    from agender.gui.main_window import MainWindow

log = logging.getLogger(__name__)


class SourceControl:
    """Which source plays and how: open a file, URL or camera, the capture worker's life
    (start, stop within a budget, its reports), and the player (pause, step, seek, loop).

    Why a class of its own: the capture side of the window changes for reasons (sources, retries,
    truncated files) that have nothing to do with models, readouts or recording. It works on the
    window it is part of; the window keeps the state other parts read (``capture``, ``source_*``).
    """

    def __init__(self, win: "MainWindow"):
        self.win = win

    # -- sources -----------------------------------------------------------------------------
    def ask_open_file(self) -> None:
        win = self.win
        if win.kiosk:
            return
        path = win.dialogs.open_file(win, win.settings.last_dir)
        if path:
            win.settings.last_dir = str(Path(path).parent)
            self.open_source(path)

    def ask_open_url(self) -> None:
        win = self.win
        if win.kiosk:
            return
        url = win.dialogs.open_url(win)
        if url:
            self.open_source(url)

    def scan_cameras(self) -> None:
        """Enumerate the cameras that open, off the UI thread (probing is slow)."""
        win = self.win
        probe = create_worker(list_cameras, name="camera-probe")
        probe.returned.connect(self._on_cameras_probed)
        probe.errored.connect(lambda exc: self._on_cameras_probed([]))  # a probe that fails finds none
        probe.finished.connect(lambda: win._probes.remove(probe) if probe in win._probes else None)
        win._probes.append(probe)  # alive until its thread ends
        probe.start()

    def _on_cameras_probed(self, found: list[int]) -> None:
        win = self.win
        if not win._closing:
            win.cameras_found.emit(list(found))

    def fill_camera_menu(self, found: list[int]) -> None:
        win = self.win
        win.camera_menu.clear()
        for i in found:
            win.camera_menu.addAction(f"Camera {i}", lambda i=i: self.open_source(f"cam:{i}"))
        if not found:
            win.camera_menu.addAction("No camera found").setEnabled(False)
        win.camera_menu.addSeparator()
        win.camera_menu.addAction("Rescan", self.scan_cameras)

    def open_source(self, spec: str) -> None:
        """Stop the current source (if any) and start ``spec``."""
        win = self.win
        spec = str(spec)
        self.stop_capture()
        win._epoch += 1
        win.slot.reset()  # and "Dropped" counts this source's frames only
        win.run_stats.reset()
        win._stats_base = None
        win.worker.stale_seqs = []  # sequence numbers restart with the new capture thread
        win.source_spec = spec
        win.source_info = {}
        win.source_warning = ""
        win._ended_at = None
        win.last_result = None
        win.panel.set_source(spec)
        win.readouts.reset()
        win.transport.set_source(None, 0.0, seekable=False)
        win.view.set_banner("")
        live = is_live_spec(spec)
        cap = CaptureThread(spec, win.slot, opener=win.opener, realtime=win.realtime,
                            loop=win.transport.loop_box.isChecked(), backoff=win.backoff_factory(),
                            generation=win._epoch << 20, ready=win.worker.ready)
        cap.opened.connect(self._on_opened)
        cap.failed.connect(self._on_source_failed)
        cap.position.connect(win.transport.set_position)
        cap.ended.connect(self._on_ended)
        cap.truncated.connect(self._on_truncated)
        cap.paused_changed.connect(win.transport.set_paused)
        win.capture = cap
        win.transport.set_paused(False)
        # the previous source's picture (and its boxes) must not stay on screen under this one's messages
        win.view.clear(f"Connecting to {spec}…" if live else f"Opening {Path(spec).name}…")
        cap.start()

    def stop_capture(self, timeout_s: float = 1.0) -> bool:
        win = self.win
        cap, win.capture = win.capture, None
        if cap is None:
            return True
        for sig in (cap.opened, cap.failed, cap.position, cap.ended, cap.truncated, cap.paused_changed):
            try:
                sig.disconnect()
            except TypeError:
                pass
        cap.stop()
        ok = cap.wait(int(timeout_s * 1000))
        if not ok:
            log.warning("capture thread did not stop within %.1f s", timeout_s)
            win._orphans.append(cap)  # keep the QThread object alive until it ends
        return ok

    def _on_opened(self, info: dict) -> None:
        win = self.win
        win.source_info = info
        win.worker.source_fps = float(info.get("fps") or 25.0)
        win.settings.source = info.get("spec", "")
        win.view.set_banner(win.source_warning)
        if win.kiosk:
            win.view.set_idle(False)
        fc = info.get("frame_count")
        win.transport.set_source(fc, info.get("fps", 0.0), seekable=not info.get("is_live") and bool(fc))
        fps = info.get("fps") or 0.0
        detail = "live" if info.get("is_live") else " · ".join(
            x for x in (f"{fc} frame{'s' * (fc != 1)}" if fc else "", f"{fps:g} fps" if fps else "") if x)
        win.panel.set_source(info.get("spec", info.get("name", "")), detail)

    def _on_source_failed(self, exc: BaseException, retry_in: float) -> None:
        win = self.win
        message = error_message(exc, win.source_spec)
        if retry_in >= 0:
            text = f"{message} — retrying in {retry_in:.0f} s" if retry_in >= 1 else f"{message} — retrying"
            if win.kiosk:
                win.view.set_idle(True, message)
            elif not win.view.has_frame:
                win.view.set_message(text)
            else:
                win.view.set_banner(text)
            win.statusBar().showMessage(text, 5000)
            return
        win.view.clear(message)
        if win.exit_after is not None:  # automated run: the one line goes to stderr, exit 1
            log.error("error: %s", message)
            win.exit_code = 1
            QTimer.singleShot(0, win.finish)
        elif not win.kiosk:
            win.dialogs.error(win, "Cannot open source", message)

    def _on_ended(self) -> None:
        win = self.win
        win.transport.set_paused(True)
        if win.exit_after is not None:
            # the last frame is still in the worker (which may still be loading its models):
            # finish once it is drawn, so the screenshot shows a result, never "Opening …"
            last = win.capture.last_index if win.capture is not None else None
            win._ended_at = -1 if last is None else last
            res = win.last_result
            if res is not None and win._is_current(res) and res.captured.frame.index >= win._ended_at:
                win.finish()
            elif last is None:
                QTimer.singleShot(300, win.finish)  # nothing was read: nothing to wait for
            else:
                QTimer.singleShot(30000, win.finish)  # a worker that never delivers must not hang the run

    def _on_truncated(self, frames: int, declared: int) -> None:
        """A file that stops decoding long before its header's frame count: say so, and show its
        real length (the slider, the panel) instead of a clip that seems to loop its first second."""
        win = self.win
        name = Path(win.source_spec or "").name or "video"
        fps = win.transport.fps
        took = f" ({frames / fps:.1f} s)" if fps else ""
        win.source_warning = (f"{name}: the video ends at frame {frames} of {declared} (truncated or corrupt file); "
                               f"playing the {frames} frames{took} that decode")
        log.warning("%s", win.source_warning)
        win.view.set_banner(win.source_warning)
        win.statusBar().showMessage(win.source_warning, 10000)
        win.transport.set_frame_count(frames)
        win.source_info["frame_count"] = frames
        detail = " · ".join(x for x in (f"{frames} of {declared} frames decode", f"{fps:g} fps" if fps else "") if x)
        win.panel.set_source(win.source_info.get("spec", win.source_spec or ""), detail)

    # -- player ------------------------------------------------------------------------------
    def toggle_pause(self) -> None:
        win = self.win
        if win.capture is not None:
            win.capture.set_paused(not win.capture.paused)

    def step(self) -> None:
        win = self.win
        if win.capture is not None:
            win.capture.set_paused(True)
            win.capture.step()

    def seek(self, index: int) -> None:
        win = self.win
        if win.capture is not None:
            n = win.transport.frame_count
            win.capture.seek(min(int(index), n - 1) if n else int(index))

    def _position(self) -> int:
        """The frame on screen (the last one read, before the first result arrives)."""
        win = self.win
        res = win.last_result
        if res is not None and win._is_current(res):
            return int(res.captured.frame.index)
        idx = win.capture.last_index if win.capture is not None else None
        return int(idx or 0)

    def _seekable(self) -> bool:
        win = self.win
        return win.capture is not None and win.transport.slider.isEnabled()

    def seek_by(self, seconds: float) -> None:
        """Left / Right arrow: jump ``seconds`` back or forward (files), clamped to the clip."""
        win = self.win
        if not self._seekable():
            return
        fps = win.transport.fps or win.worker.source_fps or 25.0
        n = win.transport.frame_count
        target = max(0, self._position() + int(round(seconds * fps)))
        self.seek(min(target, n - 1) if n else target)

    def step_back(self) -> None:
        """``,``: pause and show the previous frame."""
        win = self.win
        if not self._seekable():
            return
        win.capture.set_paused(True)
        self.seek(max(0, self._position() - 1))

    def set_loop(self, on: bool) -> None:
        win = self.win
        win.settings.loop = on
        if win.capture is not None:
            win.capture.set_loop(on)
