"""The capture thread: reads a source and keeps only the newest frame.

Why a thread of its own with a one-slot mailbox (:class:`FrameSlot`): when inference is slower
than the camera, the frames it cannot keep up with are dropped *here*, before they queue up,
so the picture on screen is never older than one inference. Files are paced at their native
frame rate (a 12 fps clip plays in real time) unless ``realtime=False`` (soak tests, benchmarks).

Live sources (cameras, network streams) that fail — not there, busy, unplugged — are retried
with exponential back-off; the window shows a message (or the kiosk idle screen) meanwhile.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from PyQt5.QtCore import pyqtSignal

from agender.errors import SourceError
from agender.gui.workers import Worker, error_message
from agender.io.mailbox import Mailbox
from agender.io.sources import CameraSource, Frame, is_url, open_source, parse_camera

log = logging.getLogger(__name__)


@dataclass
class Captured:
    """A frame plus what the pipeline needs to measure latency and ignore stale sources."""

    frame: Frame
    t_capture: float  # time.monotonic() when the frame was read
    generation: int  # which opened source it came from (bumped on every open/seek)
    seq: int = 0  # 1, 2, ... in the order the capture thread handed frames over (0: a repeat)


FrameSlot = Mailbox  # the GUI's name for the one newest-wins mailbox (agender.io.mailbox)


class RateMeter:
    """Events per second over the last ``window_s`` seconds.

    Why not an average of 1/interval: two frames that arrive together (a catch-up after a
    stall) would read as 1000 fps and swamp the average.
    """

    def __init__(self, window_s: float = 2.0):
        self.window_s = window_s
        self._t: deque[float] = deque()

    def tick(self, t: float | None = None) -> None:
        t = time.monotonic() if t is None else t
        self._t.append(t)
        while len(self._t) > 2 and t - self._t[0] > self.window_s:
            self._t.popleft()

    @property
    def rate(self) -> float:
        if len(self._t) < 2 or self._t[-1] <= self._t[0]:
            return 0.0
        return (len(self._t) - 1) / (self._t[-1] - self._t[0])

    def reset(self) -> None:
        self._t.clear()


@dataclass
class Backoff:
    """Retry delays that grow ``factor``-fold up to ``maximum``; :meth:`reset` after a success."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 10.0
    _next: float = 0.0

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._next = self.initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay


def is_live_spec(spec: str) -> bool:
    """Cameras and network streams are retried when they fail; files are not."""
    return parse_camera(str(spec)) is not None or is_url(str(spec))


def list_cameras(max_index: int = 4, opener: Callable[[int], Any] = CameraSource) -> list[int]:
    """Indices of the cameras that actually open (a device node that exists but is busy or
    not a capture device is left out). Slow (each probe opens a device): call off the UI thread."""
    from cv2.utils import logging as cvlog

    found = []
    level = cvlog.getLogLevel()
    cvlog.setLogLevel(cvlog.LOG_LEVEL_ERROR)  # each missing /dev/videoN would print a warning
    try:
        for i in range(max_index + 1):
            try:
                cam = opener(i)
            except Exception:  # noqa: BLE001 - not there, busy, or a driver error: not usable
                continue
            try:
                cam.close()
            finally:
                found.append(i)
    finally:
        cvlog.setLogLevel(level)
    return found


@dataclass
class _Pacer:
    """When each frame of a file is due at its own frame rate: anchored at the first frame
    after a start, seek or rewind (not before the previous frame's slot, so a loop keeps its
    rhythm), and re-anchored when playback falls behind."""

    fps: float
    t_ref: float | None = None
    idx_ref: int | None = None
    t_next: float = 0.0  # when the next frame is due (keeps the rhythm across a loop's rewind)

    def due(self, index: int, now: float) -> float:
        if self.t_ref is None or self.idx_ref is None or index < self.idx_ref:
            self.t_ref, self.idx_ref = max(now, self.t_next), index
        due = self.t_ref + (index - self.idx_ref) / self.fps
        self.t_next = due + 1.0 / self.fps
        return due

    def anchor(self, index: int, now: float) -> None:
        self.t_ref, self.idx_ref, self.t_next = now, index, now + 1.0 / self.fps


@dataclass
class _Playback:
    """Where :meth:`CaptureThread._play` stands in its source."""

    it: Any
    pacer: _Pacer
    read: int = 0  # frames read since the last rewind
    at_end: bool = False

    def rewound(self, it, keep_end: bool = False) -> None:
        self.it, self.pacer.t_ref, self.read = it, None, 0
        if not keep_end:
            self.at_end = False


class CaptureThread(Worker):
    """Reads ``spec`` into ``slot``; controllable from the UI thread (pause, step, seek, loop).

    Signals (delivered on the UI thread):
    ``opened(dict)`` name/fps/frame_count/is_live of the source;
    ``failed(Exception, float)`` the error and the seconds until the next retry
    (``-1`` = no retry: the source is given up, e.g. an unreadable file);
    ``position(int)`` index of the last frame read; ``ended()`` a file reached its end;
    ``truncated(int, int)`` a file ended well before the frame count its header declares
    (frames that decode, declared count: a truncated or corrupt file); ``paused_changed(bool)``.
    """

    opened = pyqtSignal(dict)
    failed = pyqtSignal(object, float)
    position = pyqtSignal(int)
    ended = pyqtSignal()
    truncated = pyqtSignal(int, int)
    paused_changed = pyqtSignal(bool)

    def __init__(self, spec: str, slot: FrameSlot, *, opener: Callable[[str], Any] = open_source,
                 realtime: bool = True, loop: bool = False, reconnect: bool | None = None,
                 backoff: Backoff | None = None, generation: int = 0, ready: threading.Event | None = None,
                 parent=None):
        super().__init__(name="agender-capture", parent=parent)
        # files wait for this (the worker's first models, loaded or failed) before playing, so a
        # clip is not half-way through unanalysed when the models arrive; live sources never wait
        self.ready = ready
        self.spec = str(spec)
        self.slot = slot
        self.opener = opener
        self.realtime = realtime
        self.reconnect = is_live_spec(self.spec) if reconnect is None else reconnect
        self.backoff = backoff or Backoff()
        self.generation = generation
        self.meter = RateMeter()
        self.source: Any = None
        self.retries = 0  # reconnect attempts so far (read by tests and the status bar)
        self._loop = loop
        self._paused = False
        self._step = False
        self._seek_to: int | None = None
        self._last: Frame | None = None
        self._last_pos_emit = 0.0
        self.decodable: int | None = None  # frames that really decode, once a truncated end was met
        self.frames_read = 0  # frames handed to the worker (the --stats-json "captured" count)
        self.t_first: float | None = None  # time.monotonic() of the first and last frame handed over
        self.t_last: float | None = None

    # -- control (any thread) -------------------------------------------------------------
    def stop(self) -> None:
        """The name the window and tests use for :meth:`quit`."""
        self.quit()

    def set_paused(self, paused: bool) -> None:
        if paused != self._paused:
            self._paused = paused
            self.paused_changed.emit(paused)
        self.wake()

    @property
    def fps(self) -> float:
        """Frames handed to the worker per second, measured over the last seconds."""
        return self.meter.rate

    @property
    def last_index(self) -> int | None:
        """Index of the last frame read (the one on screen once the worker caught up)."""
        last = self._last
        return None if last is None else int(last.index)

    @property
    def paused(self) -> bool:
        return self._paused

    def step(self) -> None:
        """Show the next frame while paused."""
        self._step = True
        self.wake()

    def seek(self, index: int) -> None:
        self._seek_to = max(0, int(index))
        self.wake()

    def set_loop(self, loop: bool) -> None:
        self._loop = loop
        self.wake()

    # -- thread body ----------------------------------------------------------------------
    def work(self) -> None:
        """Open, play, and (live sources) reopen after a failure until asked to quit."""
        while not self.should_quit:
            try:
                src = self.opener(self.spec)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a message
                if not self._failed(exc):
                    return
                continue
            self.source = src
            try:
                self.opened.emit({
                    "name": getattr(src, "name", self.spec), "fps": float(getattr(src, "fps", 0.0) or 0.0),
                    "frame_count": getattr(src, "frame_count", None), "is_live": bool(getattr(src, "is_live", False)),
                    "spec": self.spec,
                })
                self._play(src)
            except Exception as exc:  # noqa: BLE001
                if not self._failed(exc):
                    return
            finally:
                try:
                    src.close()
                finally:
                    self.source = None
            if not self.reconnect:
                return

    def _failed(self, exc: BaseException) -> bool:
        """Report ``exc``; True when we will retry (after sleeping the back-off delay)."""
        if not self.reconnect or self.should_quit:
            self.failed.emit(exc, -1.0)
            return False
        delay = self.backoff.next()
        self.retries += 1
        log.info("%s; retrying in %.1f s", error_message(exc, self.spec), delay)
        self.failed.emit(exc, delay)
        self.sleep(delay)
        return not self.should_quit

    def _check_length(self, src, read_since_rewind: int) -> None:
        """At the end of a file: did it end where its header says? A truncated mp4 keeps its
        header (frame count, duration) but its frames stop early; say so once, with the real
        length, instead of looping a second of video under an 82-s slider."""
        declared = getattr(src, "frame_count", None)
        last = self._last
        if self.decodable is not None or not declared or not read_since_rewind or last is None:
            return
        n = int(last.index) + 1
        if n < declared - max(3, declared // 50):  # the same tolerance as VideoSource(check_length=True)
            self.decodable = n
            self.truncated.emit(n, int(declared))

    def _play(self, src) -> None:
        """Read ``src`` into the slot until stopped: seeks, pause/step, the end (loop, or
        wait), and a file's own frame rate when ``realtime``."""
        live = bool(getattr(src, "is_live", False))
        fps = float(getattr(src, "fps", 0.0) or 0.0)
        can_seek = hasattr(src, "seek")
        if self.ready is not None and not live:
            t_give_up = time.monotonic() + 60.0
            while not self.ready.is_set() and not self.should_quit and time.monotonic() < t_give_up:
                self.ready.wait(0.05)
        st = _Playback(iter(src), _Pacer(fps))
        while not self.should_quit:
            seek_to, self._seek_to = self._seek_to, None
            if seek_to is not None and can_seek:
                src.seek(seek_to)
                st.rewound(iter(src))
                self.generation += 1
                self._step = self._step or self._paused  # show where we landed
            want = (not self._paused and not st.at_end) or self._step
            if not want and not live:
                self.sleep(0.1)
                continue
            try:
                fr = next(st.it)
            except StopIteration:
                self._reached_end(src, st, live, can_seek)
                continue
            st.read += 1
            if live and not want:
                continue  # paused camera: keep draining the driver's buffer, show nothing new
            self._step = False
            now = time.monotonic()
            if self.realtime and not live and fps > 0:
                verdict = self._wait_until_due(st.pacer, fr, now)
                if verdict == "stop":
                    return
                if verdict == "drop":
                    continue
                now = time.monotonic()
            self._publish(fr, now)

    def _reached_end(self, src, st: "_Playback", live: bool, can_seek: bool) -> None:
        """The source ran out: a stream ended (an error), a loop rewinds, a file waits at its end."""
        if live or (self.reconnect and not self._loop):
            raise SourceError(f"{self.spec}: stream ended") from None
        self._check_length(src, st.read)
        if self._loop and can_seek and st.read:
            src.seek(0)
            st.rewound(iter(src), keep_end=True)
            self.generation += 1
            return
        if not st.at_end:
            st.at_end = True
            self.ended.emit()
        self._step = False
        self.sleep(0.1)

    def _wait_until_due(self, pacer: "_Pacer", fr: Frame, now: float) -> str:
        """Sleep until ``fr`` is due at the file's frame rate. ``"stop"``: the thread was
        stopped meanwhile; ``"drop"``: the user seeked meanwhile; ``""``: show it."""
        due = pacer.due(fr.index, now)
        if due - now > 0:
            self.sleep(due - now)
            if self.should_quit:
                return "stop"
            if self._seek_to is not None:
                return "drop"  # the user moved the slider while we waited
        elif now - due > 2.0 / pacer.fps:  # fell behind (slow decode, busy CPU): re-anchor, don't sprint
            pacer.anchor(fr.index, now)
        return ""

    def _publish(self, fr: Frame, now: float) -> None:
        """Hand ``fr`` to the worker (newest wins) and tell the window where playback is."""
        self.meter.tick(now)
        self.frames_read += 1
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        self._last = fr
        self.backoff.reset()
        self.slot.put(Captured(fr, now, self.generation, self.frames_read))
        if now - self._last_pos_emit > 0.05 or self._paused:
            self._last_pos_emit = now
            self.position.emit(fr.index)
