"""Player controls under the video: play/pause, step, seek slider, loop, position."""
from __future__ import annotations

from PyQt5.QtCore import Qt, QTimer, pyqtSignal
from PyQt5.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSlider, QStyle, QStyleOptionSlider, QToolButton, QWidget


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class SeekSlider(QSlider):
    """A slider whose track jumps to where it is clicked (a player's seek bar), instead of
    QSlider's page step towards the click; the handle then follows the drag as usual."""

    def value_at(self, x: int) -> int:
        """The value under horizontal position ``x`` (widget pixels)."""
        opt = QStyleOptionSlider()
        self.initStyleOption(opt)
        st = self.style()
        groove = st.subControlRect(QStyle.CC_Slider, opt, QStyle.SC_SliderGroove, self)
        handle = st.subControlRect(QStyle.CC_Slider, opt, QStyle.SC_SliderHandle, self)
        span = max(1, groove.width() - handle.width())
        pos = x - groove.x() - handle.width() // 2
        return QStyle.sliderValueFromPosition(self.minimum(), self.maximum(), pos, span, opt.upsideDown)

    def mousePressEvent(self, ev) -> None:  # noqa: N802
        if ev.button() == Qt.LeftButton and self.isEnabled() and self.maximum() > self.minimum():
            opt = QStyleOptionSlider()
            self.initStyleOption(opt)
            handle = self.style().subControlRect(QStyle.CC_Slider, opt, QStyle.SC_SliderHandle, self)
            if not handle.contains(ev.pos()):
                # move the handle under the pointer first: the press below then grabs it, and
                # the release seeks to it (sliderReleased), as a drag would
                self.setSliderPosition(self.value_at(ev.pos().x()))
        super().mousePressEvent(ev)


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
        self.step_btn = QToolButton(toolTip="Next frame (.)")
        self.step_btn.setIcon(st.standardIcon(QStyle.SP_MediaSkipForward))
        self.step_btn.clicked.connect(self.step)
        self.slider = SeekSlider(Qt.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setFocusPolicy(Qt.NoFocus)
        self.slider.sliderMoved.connect(self.seek)
        self.slider.sliderReleased.connect(lambda: self.seek.emit(self.slider.value()))
        self.slider.actionTriggered.connect(self._page_step)
        self.loop_box = QCheckBox("Loop")
        self.loop_box.setFocusPolicy(Qt.NoFocus)
        self.loop_box.toggled.connect(self.loop_toggled)
        self.time_label = QLabel("--:-- / --:--")
        self.time_label.setMinimumWidth(190)
        self.time_label.setToolTip("Position / length, and the frame number (from 0) / frame count")
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
        self.index = 0

    def _page_step(self, action: int) -> None:
        if action in (QSlider.SliderPageStepAdd, QSlider.SliderPageStepSub):
            # the value updates after this signal; read it on the next turn of the event loop
            QTimer.singleShot(0, lambda: self.seek.emit(self.slider.value()))

    def set_source(self, frame_count: int | None, fps: float, seekable: bool) -> None:
        self.fps = fps
        self.frame_count = frame_count or 0
        self.slider.setEnabled(seekable and self.frame_count > 1)
        self.step_btn.setEnabled(seekable)
        self.slider.setRange(0, max(0, self.frame_count - 1))
        self.slider.setPageStep(max(1, int(fps * 5)) if fps else 10)
        self.index = 0
        self.set_position(0)

    def set_frame_count(self, frame_count: int) -> None:
        """The real length, found while playing (a truncated file); the position stays."""
        self.frame_count = max(0, int(frame_count))
        self.slider.setRange(0, max(0, self.frame_count - 1))
        self.set_position(min(self.index, max(0, self.frame_count - 1)))

    def set_paused(self, paused: bool) -> None:
        st = self.style()
        self.play_btn.setIcon(st.standardIcon(QStyle.SP_MediaPlay if paused else QStyle.SP_MediaPause))

    def set_position(self, index: int) -> None:
        self.index = int(index)
        if not self.slider.isSliderDown():
            self.slider.blockSignals(True)
            self.slider.setValue(index)
            self.slider.blockSignals(False)
        self.time_label.setText(position_text(index, self.frame_count, self.fps))


def position_text(index: int, frame_count: int, fps: float) -> str:
    """``00:02 / 00:03 · frame 30 / 41``: time, length, frame index (from 0, as in the CLI's
    exports) and frame count; what is unknown is left out."""
    parts = []
    if fps > 0:
        parts.append(_clock(index / fps) + (f" / {_clock(frame_count / fps)}" if frame_count else ""))
    parts.append(f"frame {index}" + (f" / {frame_count}" if frame_count else ""))
    return " · ".join(parts)
