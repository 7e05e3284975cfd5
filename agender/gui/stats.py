"""Who has been seen: gender split and age histogram over the last minutes.

:class:`SeenStats` is the (Qt-free) bookkeeping; :class:`StatsChart` paints it with QPainter.
With a tracker each person counts once (their track's smoothed values); without one, the
faces in view are sampled once per second, so a person standing still for a minute weighs
more than one walking past — the chart says which it is counting.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from PyQt5.QtCore import QRectF, QSize, Qt
from PyQt5.QtGui import QColor, QFont, QPainter
from PyQt5.QtWidgets import QSizePolicy, QWidget

from agender.faces import Faces
from agender.gui.overlay import FEMALE_RGB, MALE_RGB

AGE_BINS = (0, 10, 20, 30, 40, 50, 60, 70)  # lower edges; the last bin is 70+


def _pick(avg: float, raw: float) -> float:
    return avg if avg == avg else raw


@dataclass
class SeenSummary:
    female: int = 0
    male: int = 0
    hist_female: list[int] = field(default_factory=lambda: [0] * len(AGE_BINS))
    hist_male: list[int] = field(default_factory=lambda: [0] * len(AGE_BINS))
    tracked: bool = False

    @property
    def total(self) -> int:
        return self.female + self.male


class SeenStats:
    """Rolling record of observations ``(t, p_male, age)`` over ``window_s`` seconds."""

    def __init__(self, window_s: float = 300.0, sample_s: float = 1.0):
        self.window_s = window_s
        self.sample_s = sample_s
        self._samples: deque[tuple[float, float, float]] = deque()
        self._tracks: dict[tuple[int, int], tuple[float, float, float]] = {}
        self._last_sample = -1e18

    def clear(self) -> None:
        self._samples.clear()
        self._tracks.clear()
        self._last_sample = -1e18

    def add(self, t: float, faces: Faces, epoch: int = 0) -> None:
        tracked = faces.track_id >= 0
        for i in range(len(faces)):
            pm = _pick(float(faces.p_male_avg[i]), float(faces.p_male[i]))
            age = _pick(float(faces.age_avg[i]), float(faces.age[i]))
            if tracked[i]:
                self._tracks[(epoch, int(faces.track_id[i]))] = (t, pm, age)
        if (~tracked).any() and t - self._last_sample >= self.sample_s:
            self._last_sample = t
            for i in range(len(faces)):
                if not tracked[i]:
                    self._samples.append((t, _pick(float(faces.p_male_avg[i]), float(faces.p_male[i])),
                                          _pick(float(faces.age_avg[i]), float(faces.age[i]))))
        self._prune(t)

    def _prune(self, now: float) -> None:
        cut = now - self.window_s
        while self._samples and self._samples[0][0] < cut:
            self._samples.popleft()
        for k in [k for k, v in self._tracks.items() if v[0] < cut]:
            del self._tracks[k]

    def summary(self) -> SeenSummary:
        s = SeenSummary(tracked=bool(self._tracks))
        for _, pm, age in [*self._samples, *self._tracks.values()]:
            if pm != pm:
                continue
            male = pm >= 0.5
            if male:
                s.male += 1
            else:
                s.female += 1
            if age == age:
                b = min(len(AGE_BINS) - 1, max(0, int(age // 10)))
                (s.hist_male if male else s.hist_female)[b] += 1
        return s


class StatsChart(QWidget):
    """Gender split + stacked age histogram, painted from a :class:`SeenSummary`.

    Lays itself out side by side when wide (a strip under the video) and stacked when narrow.
    """

    def __init__(self, window_s: float = 300.0, parent=None):
        super().__init__(parent)
        self.window_s = window_s
        self.summary = SeenSummary()
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setMinimumHeight(120)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(640, 130)

    def set_summary(self, summary: SeenSummary) -> None:
        self.summary = summary
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        r = QRectF(self.rect()).adjusted(10, 6, -10, -4)
        if r.width() > 2.5 * r.height():
            split_w = min(300.0, r.width() * 0.34)
            self._paint_split(p, QRectF(r.left(), r.top(), split_w, r.height()))
            self._paint_hist(p, QRectF(r.left() + split_w + 24, r.top(), r.width() - split_w - 24, r.height()))
        else:
            top = QRectF(r.left(), r.top(), r.width(), min(70.0, r.height() * 0.4))
            self._paint_split(p, top)
            self._paint_hist(p, QRectF(r.left(), top.bottom() + 8, r.width(), r.bottom() - top.bottom() - 8))
        p.end()

    def _fonts(self, p: QPainter, scale: float = 1.0) -> QFont:
        f = QFont(self.font())
        f.setPointSizeF(max(7.0, self.font().pointSizeF() * scale))
        p.setFont(f)
        return f

    def _muted(self) -> QColor:
        c = QColor(self.palette().windowText().color())
        c.setAlpha(160)
        return c

    def _paint_split(self, p: QPainter, r: QRectF) -> None:
        s = self.summary
        female, male = QColor(*FEMALE_RGB), QColor(*MALE_RGB)
        self._fonts(p, 0.9)
        line = p.fontMetrics().height()
        p.setPen(self._muted())
        what = "people" if s.tracked else "face samples (1/s)"
        p.drawText(QRectF(r.left(), r.top(), r.width(), line), Qt.AlignLeft | Qt.AlignVCenter,
                   f"Seen, last {self.window_s / 60:.0f} min: {s.total} {what}")
        big = self._fonts(p, 1.6)
        big_h = p.fontMetrics().height()
        y = r.top() + line + 4
        pct = (lambda n: f"{100 * n / s.total:.0f}%") if s.total else (lambda n: "–")
        p.setPen(female)
        p.drawText(QRectF(r.left(), y, r.width() / 2, big_h), Qt.AlignLeft | Qt.AlignVCenter, f"F {pct(s.female)}")
        p.setPen(male)
        p.drawText(QRectF(r.left() + r.width() / 2, y, r.width() / 2, big_h), Qt.AlignRight | Qt.AlignVCenter,
                   f"{pct(s.male)} M")
        del big
        y += big_h + 4
        bar_h = min(16.0, max(8.0, r.bottom() - y - line - 4))
        if s.total:
            fw = r.width() * s.female / s.total
            p.fillRect(QRectF(r.left(), y, fw, bar_h), female)
            p.fillRect(QRectF(r.left() + fw, y, r.width() - fw, bar_h), male)
        else:
            p.fillRect(QRectF(r.left(), y, r.width(), bar_h), QColor(128, 128, 128, 60))
        self._fonts(p, 0.85)
        p.setPen(self._muted())
        y += bar_h + 2
        p.drawText(QRectF(r.left(), y, r.width() / 2, line), Qt.AlignLeft | Qt.AlignTop, f"{s.female} female")
        p.drawText(QRectF(r.left() + r.width() / 2, y, r.width() / 2, line), Qt.AlignRight | Qt.AlignTop,
                   f"{s.male} male")

    def _paint_hist(self, p: QPainter, r: QRectF) -> None:
        s = self.summary
        female, male = QColor(*FEMALE_RGB), QColor(*MALE_RGB)
        self._fonts(p, 0.85)
        line = p.fontMetrics().height()
        p.setPen(self._muted())
        p.drawText(QRectF(r.left(), r.top(), r.width(), line), Qt.AlignLeft | Qt.AlignVCenter, "Age")
        top, bottom = r.top() + 2 * line + 2, r.bottom() - line - 2  # a line of headroom for the counts
        n = len(AGE_BINS)
        slot = r.width() / n
        peak = max([f + m for f, m in zip(s.hist_female, s.hist_male)] + [1])
        p.setPen(QColor(128, 128, 128, 90))
        p.drawLine(int(r.left()), int(bottom), int(r.right()), int(bottom))
        for i in range(n):
            x = r.left() + i * slot + slot * 0.12
            bw = slot * 0.76
            hf = (bottom - top) * s.hist_female[i] / peak
            hm = (bottom - top) * s.hist_male[i] / peak
            p.fillRect(QRectF(x, bottom - hf, bw, hf), female)
            p.fillRect(QRectF(x, bottom - hf - hm, bw, hm), male)
            p.setPen(self._muted())
            label = f"{AGE_BINS[i]}+" if i == n - 1 else f"{AGE_BINS[i]}–{AGE_BINS[i] + 9}"
            p.drawText(QRectF(r.left() + i * slot, bottom + 1, slot, line), Qt.AlignHCenter | Qt.AlignTop, label)
            total = s.hist_female[i] + s.hist_male[i]
            if total:
                p.drawText(QRectF(r.left() + i * slot, bottom - hf - hm - line - 1, slot, line),
                           Qt.AlignHCenter | Qt.AlignBottom, str(total))
