"""Kiosk mode: the window as an appliance on a wall screen.

Fullscreen, no menus or controls, no mouse cursor; it starts the configured source, loops
files, reconnects to a camera that disappears (the capture thread's back-off) and shows a
friendly idle screen — never an error box nobody is there to click — while it waits.
Esc still quits, for whoever has a keyboard.
"""
from __future__ import annotations

import time

from PyQt5.QtCore import QRect, Qt
from PyQt5.QtGui import QColor, QFont, QLinearGradient, QPainter


def paint_idle(p: QPainter, rect: QRect, detail: str = "") -> None:
    """A calm full-screen card: the time, a welcome line, and (small) what we are waiting for."""
    g = QLinearGradient(0, rect.top(), 0, rect.bottom())
    g.setColorAt(0.0, QColor(20, 28, 48))
    g.setColorAt(1.0, QColor(8, 10, 18))
    p.fillRect(rect, g)
    h = rect.height()
    p.setRenderHint(QPainter.TextAntialiasing)
    f = QFont(p.font())
    f.setPixelSize(max(24, h // 6))
    f.setWeight(QFont.Light)
    p.setFont(f)
    p.setPen(QColor(235, 238, 245))
    clock = QRect(rect.left(), rect.top() + int(h * 0.22), rect.width(), h // 4)
    p.drawText(clock, Qt.AlignCenter, time.strftime("%H:%M"))
    f.setPixelSize(max(14, h // 22))
    f.setWeight(QFont.Normal)
    p.setFont(f)
    p.setPen(QColor(180, 190, 210))
    p.drawText(QRect(rect.left(), clock.bottom() + h // 30, rect.width(), h // 12), Qt.AlignCenter,
               "Back in a moment…")
    if detail:
        f.setPixelSize(max(11, h // 48))
        p.setFont(f)
        p.setPen(QColor(120, 130, 150))
        p.drawText(QRect(rect.left() + 40, rect.bottom() - h // 8, rect.width() - 80, h // 10),
                   Qt.AlignCenter | Qt.TextWordWrap, detail)


def apply_kiosk(window) -> None:
    """Strip a :class:`~agender.gui.main_window.MainWindow` down to the picture."""
    window.menuBar().hide()
    window.statusBar().hide()
    window.panel_scroll.hide()
    window.transport.hide()
    window.chart.hide()
    window.setCursor(Qt.BlankCursor)
    window.view.setCursor(Qt.BlankCursor)
    window.view.message = ""
    window.showFullScreen()
