"""The video view: shows the worker's ready-made picture, scaled with the window (aspect kept).

It only paints. Overlays are already in the picture (drawn by the worker at this view's size),
so a resize costs one scaled blit until the next frame arrives at the new size. When there is
no picture — starting, a camera that is gone — it paints a message or the kiosk idle screen.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
from PyQt5.QtCore import QRect, QSize, Qt, pyqtSignal
from PyQt5.QtGui import QColor, QFont, QImage, QPainter
from PyQt5.QtWidgets import QSizePolicy, QWidget


class VideoView(QWidget):
    """Signals: ``resized(int, int)`` the drawable size; ``file_dropped(str)`` a dropped file."""

    resized = pyqtSignal(int, int)
    file_dropped = pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(320, 180)
        self.setAcceptDrops(True)
        self.setAttribute(Qt.WA_OpaquePaintEvent)
        self._qimage: QImage | None = None
        self.message = "Open a video, a stream or a camera (Ctrl+O, or drop a file here)"
        self.banner = ""  # shown over the picture (e.g. "reconnecting…")
        self.idle = False  # kiosk idle screen instead of the picture
        self.idle_painter: Callable[[QPainter, QRect, str], None] | None = None
        self.frames_shown = 0
        self.on_painted: Callable[[float], None] | None = None  # ms each paint took (the stats' "paint")
        self.paint_ms = 0.0
        self.recording = False  # paints a red "● REC" badge over the picture (seen in fullscreen too)
        self.setFocusPolicy(Qt.ClickFocus)  # a click on the video takes the keys back from the panel

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(960, 540)

    # -- content ----------------------------------------------------------------------------
    @property
    def has_frame(self) -> bool:
        return self._qimage is not None

    @property
    def image_array(self) -> np.ndarray | None:
        """The picture on screen as an RGB array (a copy; for tests and tools)."""
        if self._qimage is None:
            return None
        import cv2

        from agender.gui.overlay import qimage_to_bgr

        return cv2.cvtColor(qimage_to_bgr(self._qimage), cv2.COLOR_BGR2RGB)

    def set_frame(self, image: QImage) -> None:
        self._qimage = image
        self.idle = False
        self.frames_shown += 1
        self.update()

    def clear(self, message: str = "") -> None:
        self._qimage = None
        self.message = message
        self.update()

    def set_message(self, message: str) -> None:
        self.message = message
        self.update()

    def set_banner(self, text: str) -> None:
        self.banner = text
        self.update()

    def set_recording(self, on: bool) -> None:
        self.recording = bool(on)
        self.update()

    def set_idle(self, idle: bool, message: str = "") -> None:
        self.idle = idle
        if message:
            self.message = message
        self.update()

    def image_rect(self) -> QRect:
        """Where the picture is drawn inside the widget (centred, aspect kept)."""
        if self._qimage is None:
            return QRect()
        iw, ih = self._qimage.width(), self._qimage.height()
        s = min(self.width() / iw, self.height() / ih)
        w, h = int(round(iw * s)), int(round(ih * s))
        return QRect((self.width() - w) // 2, (self.height() - h) // 2, w, h)

    # -- Qt events --------------------------------------------------------------------------
    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self.resized.emit(self.width(), self.height())

    def paintEvent(self, event) -> None:  # noqa: N802
        t0 = time.perf_counter()
        self._paint()
        self.paint_ms = 1000.0 * (time.perf_counter() - t0)
        if self.on_painted is not None:
            self.on_painted(self.paint_ms)

    def _paint(self) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(16, 18, 22))
        if self.idle and self.idle_painter is not None:
            self.idle_painter(p, self.rect(), self.message)
            p.end()
            return
        if self._qimage is not None:
            r = self.image_rect()
            if r.size() != self._qimage.size():
                p.setRenderHint(QPainter.SmoothPixmapTransform)
            p.drawImage(r, self._qimage)
        elif self.message:
            self._text(p, self.rect(), self.message, 13, QColor(200, 204, 212))
        if self.banner:
            band = QRect(0, self.height() - 40, self.width(), 40)
            p.fillRect(band, QColor(0, 0, 0, 170))
            self._text(p, band, self.banner, 11, QColor(255, 214, 102))
        if self.recording:
            self._rec_badge(p)
        p.end()

    def _rec_badge(self, p: QPainter) -> None:
        """A red dot and a bold "REC" on a dark pill, top left: unmistakable at any size."""
        f = QFont(p.font())
        f.setPixelSize(18)
        f.setBold(True)
        p.setFont(f)
        p.setRenderHint(QPainter.Antialiasing)
        fm = p.fontMetrics()
        h = fm.height() + 10
        w = h + fm.horizontalAdvance("REC") + 12
        pill = QRect(12, 12, w, h)
        p.setPen(Qt.NoPen)
        p.setBrush(QColor(0, 0, 0, 180))
        p.drawRoundedRect(pill, h / 2, h / 2)
        red = QColor(230, 30, 30)
        p.setBrush(red)
        d = h - 14
        p.drawEllipse(pill.left() + 8, pill.top() + 7, d, d)
        p.setPen(red)
        p.drawText(pill.adjusted(h, 0, -8, 0), Qt.AlignVCenter | Qt.AlignLeft, "REC")

    @staticmethod
    def _text(p: QPainter, rect: QRect, text: str, pt: int, color: QColor) -> None:
        f = QFont(p.font())
        f.setPointSize(pt)
        p.setFont(f)
        p.setPen(color)
        p.drawText(rect.adjusted(20, 0, -20, 0), Qt.AlignCenter | Qt.TextWordWrap, text)

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        for url in event.mimeData().urls():
            if url.isLocalFile():
                self.file_dropped.emit(str(Path(url.toLocalFile())))
                event.acceptProposedAction()
                return
