"""Snapshot (PNG) and recording (MP4) of the annotated picture, for :class:`MainWindow`.

Why a class of its own: the two share the same rules (nothing while privacy is on, a file
dialog, one error box) and the red "● REC" label, none of which the rest of the window needs.
It works on the window it is part of (worker, dialogs, settings, status bar, the Record action).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PyQt5.QtGui import QColor, QFont, QPalette
from PyQt5.QtWidgets import QLabel

from agender.errors import AgenderError
from agender.gui.worker import annotated_frame

if TYPE_CHECKING:
    from agender.gui.main_window import MainWindow


def rec_label() -> QLabel:
    """Red and bold: recording must be obvious. Hidden until a recording starts."""
    label = QLabel("● REC")
    f = QFont(label.font())
    f.setBold(True)
    f.setPointSizeF(f.pointSizeF() * 1.25 if f.pointSizeF() > 0 else 12)
    label.setFont(f)
    pal = label.palette()
    pal.setColor(QPalette.WindowText, QColor(210, 20, 20))
    label.setPalette(pal)
    label.setToolTip("Recording the annotated video (R stops)")
    label.hide()
    return label


class RecordSnapshot:
    """``snapshot()``, ``toggle_record()`` and the worker's ``recording(on, text)`` reports."""

    def __init__(self, win: "MainWindow"):
        self.win = win
        self.label = rec_label()
        win.statusBar().addPermanentWidget(self.label)

    def _suggest(self, ext: str) -> str:
        return str(Path(self.win.settings.last_dir or ".") / time.strftime(f"agender-%Y%m%d-%H%M%S.{ext}"))

    def snapshot(self, path: str | None = None) -> str | None:
        """Save the annotated frame as PNG (full resolution); returns the path written."""
        win = self.win
        res = win.last_result
        if res is None or win.worker.overlay.privacy:
            return None
        if path is None:
            path = win.dialogs.save_file(win, "Save snapshot", self._suggest("png"), "PNG image (*.png)")
            if not path:
                return None
        import cv2

        from agender.io.sinks.base import atomic_write_bytes

        img = annotated_frame(res.captured.frame.image, res.faces, replace(win.worker.overlay, privacy=False))
        ok, buf = cv2.imencode(".png", img)
        try:
            if not ok:
                raise AgenderError(f"{path}: could not encode the PNG")
            atomic_write_bytes(path, buf.tobytes())
        except (OSError, AgenderError) as exc:
            win.dialogs.error(win, "Snapshot failed", f"{path}: {getattr(exc, 'strerror', None) or exc}")
            return None
        win.statusBar().showMessage(f"Snapshot saved: {path}", 5000)
        return path

    def toggle_record(self, on: bool | None = None) -> None:
        win = self.win
        on = (not win.worker.is_recording) if not isinstance(on, bool) else on
        if not on:
            win.worker.stop_recording()
            return
        if win.worker.overlay.privacy:
            self.set_checked(False)
            return
        path = win.dialogs.save_file(win, "Record annotated video", self._suggest("mp4"), "MP4 video (*.mp4)")
        if not path:
            self.set_checked(False)
            return
        win.worker.start_recording(path, win.source_info.get("fps") or 25.0)

    def set_checked(self, on: bool) -> None:
        """Tick the Record action without it asking to start/stop again."""
        act = self.win.act_record
        act.blockSignals(True)
        act.setChecked(on)
        act.blockSignals(False)

    def on_recording(self, on: bool, path: str) -> None:
        win = self.win
        self.set_checked(on)
        self.label.setVisible(on)
        win.view.set_recording(on)
        if on:
            win.statusBar().showMessage(f"Recording to {path}", 5000)

    def on_recording_failed(self, exc: BaseException) -> None:
        """The worker's ``recording_failed``: the exception itself, shown as one line."""
        from agender.gui.workers import error_message

        self.win.dialogs.error(self.win, "Recording", error_message(exc))
