"""Stand-ins the runner tests share."""
from __future__ import annotations


class StopAfter:
    """A progress hook that presses Ctrl-C after ``n`` frames (the runner keeps its checkpoint)."""

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def start(self, name, total):
        pass

    def advance(self, frames, faces):
        self.seen += frames
        if self.seen >= self.n:
            raise KeyboardInterrupt

    def finish(self):
        pass
