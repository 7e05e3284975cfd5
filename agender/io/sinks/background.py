"""A sink that writes in its own thread: what the GUI's Record button uses, so that H.264
encoding runs beside inference instead of inside it.

Frames go through a small bounded queue in order (a slow disk or encoder holds the caller back
only once the queue is full; nothing is dropped or reordered). A failure in the writer thread
is raised in the caller at its next :meth:`BackgroundSink.write` or at :meth:`close`, so the
caller handles it exactly as if the wrapped sink had failed in its own thread.
"""
from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING

from agender.io.sinks.base import Sink

if TYPE_CHECKING:
    from agender.faces import Faces
    from agender.io.sources import Frame

_END = object()


class BackgroundSink(Sink):
    """``sink``'s writes in a daemon thread; ``close``/``abort`` wait for it to finish."""

    def __init__(self, sink: Sink, *, maxsize: int = 8):
        self.sink = sink
        self.path = sink.path
        self._q: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sink-writer", daemon=True)
        self._thread.start()

    @property
    def paths(self):
        return self.sink.paths

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _END:
                return
            if self._error is None:  # after a failure: drain, write nothing more
                try:
                    self.sink.write(*item)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, frame: "Frame", faces: "Faces") -> None:
        self._raise_error()
        self._q.put((frame, faces))

    def _finish_thread(self) -> None:
        if self._thread.is_alive():
            self._q.put(_END)
            self._thread.join()

    def close(self) -> None:
        self._finish_thread()
        self._raise_error()
        self.sink.close()

    def abort(self) -> None:
        self._finish_thread()
        self.sink.abort()
