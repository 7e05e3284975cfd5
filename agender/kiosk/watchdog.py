"""Freeze watchdog for the kiosk: progress = a new frame shown; no progress → restart.

Why frames and not "the process is alive": the failure a wall screen shows is a picture that
stopped — a USB camera that still enumerates but delivers nothing, a capture thread stuck in
a driver call, or the Qt loop blocked — while the process looks healthy to ``Restart=``.
The GUI reports progress from a timer *on the Qt thread* (:func:`attach`), so a blocked loop
and a silent camera look alike here: no progress. On a fault the watchdog logs one line and
calls ``on_fault`` (in the service: ``os._exit(WATCHDOG_EXIT)``, systemd restarts it).
Under systemd (``NOTIFY_SOCKET`` set) it also sends ``READY=1`` once and ``WATCHDOG=1`` while
healthy, so ``WatchdogSec=`` catches a process that hangs as a whole.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)

WATCHDOG_EXIT = 75  # EX_TEMPFAIL: "try again" — systemd's Restart=always restarts it


def sd_notify(message: str, path: str | None = None) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to systemd's notify socket; False without one."""
    path = path if path is not None else os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path  # abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify(%s) failed: %s", message, exc)
        return False


def _exit_now(reason: str) -> None:
    logging.shutdown()
    os._exit(WATCHDOG_EXIT)


@dataclass
class Watchdog:
    """Fires when :meth:`progress` has not been called for ``timeout_s`` (``startup_s`` before
    the first call: loading the models on a Pi takes a while)."""

    timeout_s: float
    startup_s: float = 120.0
    on_fault: Callable[[str], None] = _exit_now
    notify_socket: str | None = None  # default: $NOTIFY_SOCKET
    clock: Callable[[], float] = time.monotonic
    fired: str = field(init=False, default="")
    progress_count: int = field(init=False, default=0)
    _last: float = field(init=False, default=0.0)
    _started: float = field(init=False, default=0.0)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _thread: threading.Thread | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"watchdog timeout must be > 0 s (got {self.timeout_s})")
        self._started = self._last = self.clock()

    def progress(self) -> None:
        """A new frame reached the screen."""
        self._last = self.clock()
        self.progress_count += 1

    def check(self) -> str:
        """'' while healthy, else why it is not (and then it fires once)."""
        if self.fired:
            return self.fired
        now = self.clock()
        if self.progress_count == 0:
            waited, limit, what = now - self._started, max(self.startup_s, self.timeout_s), "since start"
        else:
            waited, limit, what = now - self._last, self.timeout_s, "since the last one"
        if waited <= limit:
            sd_notify("WATCHDOG=1", self.notify_socket)
            return ""
        self.fired = (f"watchdog: no new frame on screen for {waited:.1f} s {what} (limit {limit:g} s): "
                      "camera or display loop frozen; exiting so the service restarts")
        log.error("%s", self.fired)
        self.on_fault(self.fired)
        return self.fired

    def start(self, interval_s: float | None = None) -> "Watchdog":
        sd_notify("READY=1", self.notify_socket)
        step = interval_s or max(0.05, min(1.0, self.timeout_s / 4))

        def loop() -> None:
            while not self._stop.wait(step):
                if self.check():
                    return

        self._thread = threading.Thread(target=loop, name="agender-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)


def attach(window, watchdog: Watchdog, interval_ms: int = 250):
    """Report progress from ``window`` (a MainWindow: ``window.view.frames_shown``) on the Qt
    thread; returns the QTimer (keep a reference)."""
    from PyQt5.QtCore import QTimer

    seen = {"n": -1}

    def tick() -> None:
        n = window.view.frames_shown
        if n != seen["n"] and n > 0:
            seen["n"] = n
            watchdog.progress()

    timer = QTimer(window)
    timer.timeout.connect(tick)
    timer.start(interval_ms)
    return timer
