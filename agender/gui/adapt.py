"""What the live monitor does when the machine cannot keep up with the source (Qt-free).

The degraded modes, in the order they are taken (and left, in reverse):

0. ``full`` — every frame detected (detection runs ahead of estimation on its own core) and
   every face estimated on every frame.
1. ``detect/2`` — detect every 2nd frame; between detections the tracker moves the boxes
   (Kalman) and each face is re-estimated every 2nd frame.
2. ``detect/4`` — detect every 4th frame, re-estimate each face every 4th frame.

Beyond the last mode the capture mailbox drops the oldest waiting frame (the newest wins) and
the status says frames are being dropped. Without tracking, frames between detections keep the
last boxes and labels.

How it decides (:class:`Governor`): over windows of at least ``window_s`` seconds it sums how
long each pipeline thread was busy (the detector thread, the estimating/drawing thread) and
compares the busiest with the time the source takes to deliver those frames (frames × 1/fps).
Above ``high`` (0.9: less than 10 % headroom) it steps down one mode; below ``low`` it tries
one mode up again after ``hold_s`` — a try that has to be undone within ``retry_fail_s`` doubles
the hold (up to ``max_hold_s``), so a machine that really is too slow does not oscillate.
The first frames after a new source or new models (first inferences allocate and plan) are
not counted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Mode:
    name: str
    detect_every: int
    reestimate_every: int
    text: str


MODES = (
    Mode("full", 1, 1, "every frame"),
    Mode("detect/2", 2, 2, "behind: detecting every 2nd frame, tracking between"),
    Mode("detect/4", 4, 4, "behind: detecting every 4th frame, tracking between"),
)


class Governor:
    """Picks the mode (an index into :data:`MODES`) from per-frame busy times."""

    def __init__(self, *, high: float = 0.9, low: float = 0.55, window_s: float = 1.0, min_frames: int = 8,
                 hold_s: float = 3.0, max_hold_s: float = 60.0, retry_fail_s: float = 5.0, warmup_frames: int = 8,
                 levels: int = len(MODES), clock: Callable[[], float] = time.monotonic, enabled: bool = True):
        self.high, self.low = high, low
        self.window_s, self.min_frames = window_s, min_frames
        self.hold0, self.max_hold, self.retry_fail_s = hold_s, max_hold_s, retry_fail_s
        self.warmup_frames = warmup_frames
        self.levels = levels
        self.clock = clock
        self.enabled = enabled
        self.level = 0
        self.hold_s = hold_s
        self.history: list[tuple[float, int, float]] = []  # (time, new level, load that caused it)
        self.load = 0.0  # the busiest thread's share of the source's time, last window
        self.reset()

    def reset(self) -> None:
        """A new source or new models: measure afresh (the mode is kept)."""
        self._skip = self.warmup_frames
        self._t0: float | None = None
        self._frames = 0
        self._busy: dict[str, float] = {}
        self._interval = 0.0
        now = self.clock()
        self._t_change = now
        self._t_recovered = -1e18

    @property
    def mode(self) -> Mode:
        return MODES[self.level]

    def update(self, busy_s: dict[str, float], interval_s: float) -> int:
        """One frame: ``busy_s`` maps each pipeline thread to the seconds it spent on this frame,
        ``interval_s`` is 1/fps of the source. Returns the level to use from the next frame on."""
        if not self.enabled or interval_s <= 0:
            return self.level
        if self._skip > 0:
            self._skip -= 1
            return self.level
        now = self.clock()
        if self._t0 is None:
            self._t0 = now
        self._frames += 1
        self._interval += interval_s
        for k, v in busy_s.items():
            self._busy[k] = self._busy.get(k, 0.0) + max(0.0, float(v))
        if self._frames < self.min_frames or now - self._t0 < self.window_s:
            return self.level
        load = max(self._busy.values(), default=0.0) / self._interval
        self.load = load
        self._t0, self._frames, self._busy, self._interval = now, 0, {}, 0.0
        if load > self.high and self.level < self.levels - 1:
            if now - self._t_recovered < self.retry_fail_s:  # the last step up did not hold: wait longer next time
                self.hold_s = min(self.max_hold, 2 * self.hold_s)
            self._set(self.level + 1, now, load)
        elif load < self.low and self.level > 0 and now - self._t_change >= self.hold_s:
            self._t_recovered = now
            self._set(self.level - 1, now, load)
        elif now - self._t_change > 4 * self.retry_fail_s and now - self._t_recovered > self.retry_fail_s:
            self.hold_s = self.hold0
        return self.level

    def _set(self, level: int, now: float, load: float) -> None:
        self.level = level
        self._t_change = now
        self.history.append((now, level, round(load, 3)))
