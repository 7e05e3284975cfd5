"""The live readouts of :class:`MainWindow`: the Live panel figures, the status line and the
"seen" chart, refreshed at their own rates from the results the window shows.

Why apart from the window: what is measured (latency, drops, the people seen) and how often it
is redrawn is its own concern; the window only hands over each result it puts on screen.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from agender.gui.stats import SeenStats

if TYPE_CHECKING:
    from agender.gui.main_window import MainWindow
    from agender.gui.worker import Result

READOUT_PERIOD_S = 0.25
CHART_PERIOD_S = 1.0


def _ema(old: float, new: float, a: float = 0.1) -> float:
    return new if old == 0 else (1 - a) * old + a * new


class Readouts:
    """Latency (smoothed), the people seen, and when the panel/chart were last redrawn."""

    def __init__(self, win: "MainWindow"):
        self.win = win
        self.seen = SeenStats()
        self.latency_ms = 0.0
        self._t_readout = 0.0
        self._t_chart = 0.0
        self._drops_prev = 0

    def reset(self) -> None:
        """A new source: its own figures from zero."""
        self.seen.clear()
        self.latency_ms = 0.0
        self.win.panel.reset_readouts()
        self.win.chart.set_summary(self.seen.summary())

    def shown(self, res: "Result", now: float) -> None:
        """``res`` is on screen at ``now``: count it, redraw what is due."""
        self.latency_ms = _ema(self.latency_ms, 1000.0 * (now - res.captured.t_capture))
        self.seen.add(now, res.faces, res.captured.generation)
        if now - self._t_readout >= READOUT_PERIOD_S:
            self._t_readout = now
            self.update(res)
        if now - self._t_chart >= CHART_PERIOD_S:
            self._t_chart = now
            self.win.chart.set_summary(self.seen.summary())

    def update(self, res: "Result") -> None:
        win = self.win
        cap_fps = win.capture.fps if win.capture is not None else 0.0
        p = win.panel
        p.set_readout("capture", f"{cap_fps:.1f} fps")
        p.set_readout("process", f"{res.proc_fps:.1f} fps")
        p.set_readout("latency", f"{self.latency_ms:.0f} ms")
        p.set_readout("faces", str(len(res.faces)))
        st = res.stage_ms
        p.set_readout("stages", " · ".join(f"{k} {st[k]:.1f}" for k in ("detect", "estimate", "draw") if k in st))
        p.set_readout("dropped", str(win.slot.dropped))
        win.statusBar().clearMessage()
        dev = win.models_info.get("device", "") if win.worker.analyzer is not None else "no model loaded"
        win.status_label.setText(
            f"capture {cap_fps:.1f} fps · processing {res.proc_fps:.1f} fps · latency {self.latency_ms:.0f} ms"
            f" · {len(res.faces)} face{'s' * (len(res.faces) != 1)} · {dev} · {self.mode_text()}")

    def mode_text(self) -> str:
        """What the status bar says about keeping up (agender.gui.adapt.MODES, then dropping)."""
        text = self.win.worker.mode.text
        dropped = self.win.slot.dropped
        if dropped > self._drops_prev:  # since the last readout
            text += "; dropping frames (newest wins)"
        self._drops_prev = dropped
        return text
