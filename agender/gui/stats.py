"""Who has been seen: gender split and age histogram over the last minutes.

:class:`SeenStats` is the (Qt-free) bookkeeping; :class:`StatsChart` paints it with QPainter.
With a tracker each person counts once (their track's smoothed values); without one, the
faces in view are sampled once per second, so a person standing still for a minute weighs
more than one walking past — the chart says which it is counting.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from PyQt5.QtCore import QRectF, QSize, Qt
from PyQt5.QtGui import QColor, QFont, QPainter
from PyQt5.QtWidgets import QSizePolicy, QWidget

from agender.faces import Faces, gender_of
from agender.gui.overlay import FEMALE_RGB, MALE_RGB

AGE_BINS = (0, 10, 20, 30, 40, 50, 60, 70)  # lower edges; the last bin is 70+
UNITS = {"person": "people", "track": "tracks", "sample": "face samples (1/s)"}
MIN_DECIDE = 3  # fresh estimates before a person's gender counts as decided (a later flip is an event)


def _pick(avg: float, raw: float) -> float:
    return avg if avg == avg else raw


def _weight(faces: Faces, i: int) -> float:
    """Confidence × size, as in agender.io.sinks.people (the CLI's people.csv)."""
    from agender.io.sinks.people import face_weight

    return face_weight(faces, i)


def _bin(age: float) -> int:
    return min(len(AGE_BINS) - 1, max(0, int(age // 10)))


@dataclass
class SeenSummary:
    female: int = 0
    male: int = 0
    hist_female: list[int] = field(default_factory=lambda: [0] * len(AGE_BINS))
    hist_male: list[int] = field(default_factory=lambda: [0] * len(AGE_BINS))
    tracked: bool = False
    unit: str = "sample"  # what is counted: "person" (re-identified), "track", "sample" (untracked, 1/s)
    passes: int = 1  # passes over a looping file (or seeks): each pass is counted on its own
    changes: list[tuple[int, str, str]] = field(default_factory=list)  # (person, old, new) gender changes
    source: object = None  # the SeenStats it came from (the chart's CSV export)

    @property
    def total(self) -> int:
        return self.female + self.male

    @property
    def unit_label(self) -> str:
        return UNITS.get(self.unit, self.unit)


@dataclass
class _Person:
    t_first: float
    t_last: float
    w: float = 0.0
    wp: float = 0.0
    wa: float = 0.0
    wage: float = 0.0
    n: int = 0
    decided: str = ""  # gender once MIN_DECIDE estimates are in
    pm: float = float("nan")  # fallback (smoothed) values when no weighted estimate yet
    age: float = float("nan")
    seconds: float = 0.0

    @property
    def p_male(self) -> float:
        return self.wp / self.w if self.w > 0 else self.pm

    @property
    def age_mean(self) -> float:
        return self.wage / self.wa if self.wa > 0 else self.age


class SeenStats:
    """Rolling record of who was seen over ``window_s`` seconds, in one named unit.

    With re-identification (``person_id`` filled) each *person* counts once, with a gender and
    age decided from all of their faces (confidence-weighted, as ``people.csv`` does); a counted
    person whose decided gender flips is an *event* (:attr:`changes`), never a silent move.
    Tracked faces without a person count as *tracks*; without a tracker the faces in view are
    *sampled* once per second. The units never mix: the best one present is counted.

    A looping file (or a seek) starts a new *pass* (the GUI's worker starts new tracks then):
    each pass is counted on its own and the summary says which pass it is, so a file's cast is
    not counted twice. :meth:`export_csv` writes the figures per ``interval_s`` for a kiosk
    owner; with ``AGENDER_AUDIENCE_CSV`` set, every finished interval is appended there.
    """

    def __init__(self, window_s: float = 300.0, sample_s: float = 1.0, interval_s: float = 60.0):
        import os

        self.window_s = window_s
        self.sample_s = sample_s
        self.interval_s = float(interval_s)
        self.auto_export = os.environ.get("AGENDER_AUDIENCE_CSV") or None
        self.clear()

    def clear(self) -> None:
        import time

        self._samples: deque[tuple[float, float, float]] = deque()
        self._tracks: dict[tuple[int, int], tuple[float, float, float]] = {}
        self._people: dict[tuple[int, int], _Person] = {}
        self._last_sample = -1e18
        self._last_t: float | None = None
        self._pass_gen: int | None = None
        self.passes = 1
        self.changes: list[tuple[float, int, str, str]] = []
        self._wall0 = time.time() - time.monotonic()
        self._intervals: dict[int, dict] = {}
        self._exported: set[int] = set()

    def add(self, t: float, faces: Faces, epoch: int = 0) -> None:
        if self._pass_gen is None:
            self._pass_gen = epoch
        elif epoch != self._pass_gen:
            if (epoch >> 20) == (self._pass_gen >> 20):
                self.passes += 1  # the same source again: a loop (or a seek)
            self._pass_gen = epoch
        dt = 0.0 if self._last_t is None else min(max(t - self._last_t, 0.0), 1.0)
        self._last_t = t
        tracked = faces.track_id >= 0
        iv = self._interval(t)
        for i in range(len(faces)):
            pm = _pick(float(faces.p_male_avg[i]), float(faces.p_male[i]))
            age = _pick(float(faces.age_avg[i]), float(faces.age[i]))
            pid = int(faces.person_id[i])
            if pid >= 0:
                key = (epoch, pid)
                p = self._people.get(key)
                if p is None:
                    p = self._people[key] = _Person(t, t)
                p.t_last = t
                p.seconds += dt
                p.pm, p.age = pm, age
                w = _weight(faces, i)
                raw_p, raw_a = float(faces.p_male[i]), float(faces.age[i])
                if w > 0 and raw_p == raw_p and 0 <= raw_p <= 1:
                    p.w += w
                    p.wp += w * raw_p
                    p.n += 1
                if w > 0 and raw_a == raw_a:
                    p.wa += w
                    p.wage += w * raw_a
                g = gender_of(p.p_male)
                if p.n >= MIN_DECIDE and g:
                    if p.decided and g != p.decided:
                        self.changes.append((t, pid, p.decided, g))
                    p.decided = g
                self._note(iv, ("person", key), p.p_male, p.age_mean, dt)
            elif tracked[i]:
                self._tracks[(epoch, int(faces.track_id[i]))] = (t, pm, age)
                self._note(iv, ("track", (epoch, int(faces.track_id[i]))), pm, age, dt)
        if (~tracked).any() and t - self._last_sample >= self.sample_s:
            self._last_sample = t
            for i in range(len(faces)):
                if not tracked[i]:
                    pm = _pick(float(faces.p_male_avg[i]), float(faces.p_male[i]))
                    age = _pick(float(faces.age_avg[i]), float(faces.age[i]))
                    self._samples.append((t, pm, age))
                    self._note(iv, ("sample", (t, i)), pm, age, 0.0)
        self._prune(t)

    # -- intervals (the export) -------------------------------------------------------------
    def _interval(self, t: float) -> int:
        k = int(t // self.interval_s)
        if self.auto_export:
            done = [j for j in self._intervals if j < k and j not in self._exported]
            if done:
                self.export_csv(self.auto_export, only=done, append=True)
        return k

    def _note(self, k: int, key, pm: float, age: float, dt: float) -> None:
        iv = self._intervals.setdefault(k, {"who": {}, "seconds": {"female": 0.0, "male": 0.0, "unknown": 0.0}})
        iv["who"][key] = (pm, age)
        g = gender_of(pm) or "unknown"
        iv["seconds"][g] += dt

    EXPORT_COLUMNS = ("interval_start", "interval_end", "unit", "count", "female", "male", "unknown_gender",
                      *(f"age_{a}+" if a == AGE_BINS[-1] else f"age_{a}-{a + 9}" for a in AGE_BINS),
                      "on_screen_s_female", "on_screen_s_male", "pass")

    def export_rows(self, only=None) -> list[list]:
        """One row per interval: counts in the interval's unit (see :attr:`EXPORT_COLUMNS`)."""
        rows = []
        for k in sorted(self._intervals if only is None else only):
            iv = self._intervals.get(k)
            if iv is None:
                continue
            unit = next((u for u in ("person", "track", "sample") if any(w[0] == u for w in iv["who"])), "sample")
            who = [v for w, v in iv["who"].items() if w[0] == unit]
            f = sum(1 for pm, _ in who if pm == pm and pm < 0.5)
            m = sum(1 for pm, _ in who if pm == pm and pm >= 0.5)
            bins = [0] * len(AGE_BINS)
            for _, age in who:
                if age == age:
                    bins[_bin(age)] += 1
            start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self._wall0 + k * self.interval_s))
            end = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self._wall0 + (k + 1) * self.interval_s))
            rows.append([start, end, UNITS[unit], len(who), f, m, len(who) - f - m, *bins,
                         round(iv["seconds"]["female"], 1), round(iv["seconds"]["male"], 1), self.passes])
        return rows

    def export_csv(self, path, only=None, append: bool = False) -> int:
        """Write (or append) the per-interval figures as CSV; returns the rows written."""
        import csv
        import os

        rows = self.export_rows(only)
        new = not (append and os.path.exists(path) and os.path.getsize(path) > 0)
        with open(path, "a" if append else "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            if new:
                w.writerow(self.EXPORT_COLUMNS)
            w.writerows(rows)
        self._exported.update(self._intervals if only is None else only)
        return len(rows)

    def _prune(self, now: float) -> None:
        cut = now - self.window_s
        while self._samples and self._samples[0][0] < cut:
            self._samples.popleft()
        for k in [k for k, v in self._tracks.items() if v[0] < cut]:
            del self._tracks[k]
        for k in [k for k, v in self._people.items() if v.t_last < cut]:
            del self._people[k]
        for k in [k for k in self._intervals if (k + 1) * self.interval_s < cut - 3600]:  # an hour of history
            del self._intervals[k]

    def summary(self) -> SeenSummary:
        gen = self._pass_gen
        people = [p for (e, _), p in self._people.items() if e == gen]
        tracks = [v for (e, _), v in self._tracks.items() if e == gen]
        if people:
            unit, items = "person", [(p.p_male, p.age_mean) for p in people]
        elif tracks:
            unit, items = "track", [(pm, age) for _, pm, age in tracks]
        else:
            unit, items = "sample", [(pm, age) for _, pm, age in self._samples]
        s = SeenSummary(tracked=unit != "sample", unit=unit, passes=self.passes, source=self,
                        changes=[(pid, a, b) for _, pid, a, b in self.changes[-20:]])
        for pm, age in items:
            if pm != pm:
                continue
            male = pm >= 0.5
            if male:
                s.male += 1
            else:
                s.female += 1
            if age == age:
                (s.hist_male if male else s.hist_female)[_bin(age)] += 1
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

    def headline(self) -> str:
        """The chart's first line: count, unit and pass, e.g. "Seen, last 5 min: 6 people (pass 2)"."""
        s = self.summary
        text = f"Seen, last {self.window_s / 60:.0f} min: {s.total} {s.unit_label}"
        if s.passes > 1:
            text += f" (pass {s.passes})"
        return text

    def events_line(self) -> str:
        """Gender changes of counted people, e.g. "1 gender change (person 4: M→F)"; "" if none."""
        s = self.summary
        if not s.changes:
            return ""
        pid, a, b = s.changes[-1]
        return (f"{len(s.changes)} gender change{'s' if len(s.changes) > 1 else ''}"
                f" (person {pid}: {a[:1].upper()}→{b[:1].upper()})")

    def contextMenuEvent(self, event) -> None:  # noqa: N802
        from PyQt5.QtWidgets import QFileDialog, QMenu

        menu = QMenu(self)
        act = menu.addAction("Export audience figures (CSV per minute)…")
        act.setEnabled(self.summary.source is not None)
        if menu.exec_(event.globalPos()) is act:
            path, _ = QFileDialog.getSaveFileName(self, "Export audience figures", "audience.csv", "CSV (*.csv)")
            if path:
                self.summary.source.export_csv(path)

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
        p.drawText(QRectF(r.left(), r.top(), r.width(), line), Qt.AlignLeft | Qt.AlignVCenter, self.headline())
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
        events = self.events_line()
        p.drawText(QRectF(r.left(), r.top(), r.width(), line), Qt.AlignLeft | Qt.AlignVCenter,
                   "Age" + (f"  ·  {events}" if events else ""))
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
