"""Progress for long runs: a tqdm bar (frames/s, ETA) on a terminal, plain log lines otherwise
(a log file or a CI console gets one line every ``every_s`` seconds, not bar redraws)."""
from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger("agender")


class TqdmProgress:
    def __init__(self) -> None:
        self.bar = None

    def start(self, name: str, total: int | None) -> None:
        from tqdm import tqdm

        try:
            size = os.get_terminal_size(sys.stderr.fileno())
        except (OSError, ValueError, AttributeError):
            size = os.terminal_size((0, 0))
        # a terminal that reports no size (a fresh pty, `docker exec -t`) would get an empty bar
        sized = size.columns > 0 and size.lines > 0
        self.bar = tqdm(total=total, desc=name, unit="frame", file=sys.stderr, dynamic_ncols=sized,
                        ncols=None if sized else 100, nrows=None if sized else 24, smoothing=0.1, leave=True)

    def advance(self, frames: int, faces: int) -> None:
        if self.bar is not None:
            self.bar.update(frames)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LogProgress:
    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s

    def start(self, name: str, total: int | None) -> None:
        self.name, self.total = name, total
        self.done = self.faces = 0
        self.t0 = self.last = time.monotonic()

    def advance(self, frames: int, faces: int) -> None:
        self.done += frames
        self.faces += faces
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        fps = self.done / max(1e-9, now - self.t0)
        if self.total:
            eta = max(0.0, (self.total - self.done) / fps) if fps > 0 else float("nan")
            log.info("%s: %d/%d frames (%.0f%%), %.1f frames/s, ETA %s", self.name, self.done, self.total,
                     100.0 * self.done / self.total, fps, _hms(eta))
        else:
            log.info("%s: %d frames, %.1f frames/s", self.name, self.done, fps)

    def finish(self) -> None:
        pass


def _hms(s: float) -> str:
    if s != s:
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
