"""Player controls under the video: play/pause, step, seek slider, loop, position."""
from __future__ import annotations

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSlider, QStyle, QToolButton, QWidget


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class TransportBar(QWidget):
    """Signals: ``play_toggled()``, ``step()``, ``seek(int)`` frame index, ``loop_toggled(bool)``."""

    play_toggled = pyqtSignal()
    step = pyqtSignal()
    seek = pyqtSignal(int)
    loop_toggled = pyqtSignal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(6, 2, 6, 2)
        st = self.style()
        self.play_btn = QToolButton(toolTip="Play / pause (Space)")
        self.play_btn.setIcon(st.standardIcon(QStyle.SP_MediaPause))
        self.play_btn.clicked.connect(self.play_toggled)
        self.step_btn = QToolButton(toolTip="Next frame")
        self.step_btn.setIcon(st.standardIcon(QStyle.SP_MediaSkipForward))
        self.step_btn.clicked.connect(self.step)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setFocusPolicy(Qt.NoFocus)
        self.slider.sliderMoved.connect(self.seek)
        self.slider.sliderReleased.connect(lambda: self.seek.emit(self.slider.value()))
        self.slider.actionTriggered.connect(self._page_step)
        self.loop_box = QCheckBox("Loop")
        self.loop_box.setFocusPolicy(Qt.NoFocus)
        self.loop_box.toggled.connect(self.loop_toggled)
        self.time_label = QLabel("--:-- / --:--")
        self.time_label.setMinimumWidth(110)
        self.time_label.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        for w in (self.play_btn, self.step_btn):
            w.setFocusPolicy(Qt.NoFocus)
            w.setAutoRaise(True)
            lay.addWidget(w)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.time_label)
        lay.addWidget(self.loop_box)
        self.fps = 0.0
        self.frame_count = 0

    def _page_step(self, action: int) -> None:
        if action in (QSlider.SliderPageStepAdd, QSlider.SliderPageStepSub):
            # the value updates after this signal; read it on the next turn of the event loop
            from PyQt5.QtCore import QTimer

            QTimer.singleShot(0, lambda: self.seek.emit(self.slider.value()))

    def set_source(self, frame_count: int | None, fps: float, seekable: bool) -> None:
        self.fps = fps
        self.frame_count = frame_count or 0
        self.slider.setEnabled(seekable and self.frame_count > 1)
        self.step_btn.setEnabled(seekable)
        self.slider.setRange(0, max(0, self.frame_count - 1))
        self.slider.setPageStep(max(1, int(fps * 5)) if fps else 10)
        self.set_position(0)

    def set_paused(self, paused: bool) -> None:
        st = self.style()
        self.play_btn.setIcon(st.standardIcon(QStyle.SP_MediaPlay if paused else QStyle.SP_MediaPause))

    def set_position(self, index: int) -> None:
        if not self.slider.isSliderDown():
            self.slider.blockSignals(True)
            self.slider.setValue(index)
            self.slider.blockSignals(False)
        if self.fps > 0 and self.frame_count:
            self.time_label.setText(f"{_clock(index / self.fps)} / {_clock(self.frame_count / self.fps)}")
        elif self.fps > 0:
            self.time_label.setText(_clock(index / self.fps))
        else:
            self.time_label.setText("")
