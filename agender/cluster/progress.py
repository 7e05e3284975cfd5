"""One progress bar for a whole cluster job: frames done / total, cluster fps, workers alive."""
from __future__ import annotations

import logging
import time

log = logging.getLogger("agender")


class ClusterProgress:
    """A tqdm bar on a terminal, else a log line every ``every_s`` seconds."""

    def __init__(self, tty: bool, every_s: float = 10.0):
        self.tty, self.every_s = tty, every_s
        self.bar = None

    def start_cluster(self, total: int, done: int, workers: int) -> None:
        self.total, self.done, self.workers = total, done, workers
        self.t0 = self.last = time.monotonic()
        self.done0 = done
        if self.tty:  # the single-machine bar (sized right also on a pty that reports no size)
            from agender.cli.progress import TqdmProgress

            tp = TqdmProgress()
            tp.start("cluster", total)
            self.bar = tp.bar
            if done:
                self.bar.update(done)

    def update(self, done: int, alive: int) -> None:
        done = min(max(done, self.done), self.total)
        now = time.monotonic()
        fps = (done - self.done0) / max(1e-9, now - self.t0)
        if self.bar is not None:
            self.bar.update(done - self.done)
            self.bar.set_postfix_str(f"{fps:.1f} fps, workers {alive}/{self.workers}", refresh=False)
        elif now - self.last >= self.every_s:
            self.last = now
            log.info("cluster: %d/%d frames, %.1f frames/s, workers %d/%d alive", done, self.total, fps, alive,
                     self.workers)
        self.done = done

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class NoClusterProgress(ClusterProgress):
    def __init__(self):
        super().__init__(tty=False, every_s=float("inf"))
