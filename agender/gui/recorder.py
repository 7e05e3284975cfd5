"""Record button → an annotated video file, through the project's video sink.

The GUI has no video-format logic of its own: it hands every analysed frame to
:class:`agender.io.sinks.mp4.Mp4Sink`, the writer ``agender analyze --export-mp4`` uses
(annotated by :mod:`agender.annotate`, written to a temporary name and renamed on close).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from agender.io.sinks.base import Sink


def open_recorder(path: str | Path, fps: float) -> Sink:
    """A sink (``write(frame, faces)``, ``close()``, ``abort()``) writing an annotated video,
    encoding in its own thread (:class:`~agender.io.sinks.background.BackgroundSink`), not in
    the inference thread that calls ``write``.

    ``fps`` is the source's frame rate: frames the worker dropped become repeats of the last
    picture, so the recording plays in real time.
    """
    from agender.io.sinks.background import BackgroundSink
    from agender.io.sinks.mp4 import Mp4Sink

    return BackgroundSink(_MonotonicFrames(Mp4Sink(Path(path), fps=float(fps) if fps and fps > 0 else 25.0)))


class _MonotonicFrames(Sink):
    """Feeds a sink frame indices that only go forward.

    The MP4 sink places frame ``index`` at its time slot. A looping file or a seek backwards
    would send an index it has already passed; here the recording just continues from where
    it was.
    """

    def __init__(self, sink: Sink):
        self.sink = sink
        self._offset = 0
        self._last: int | None = None

    def write(self, frame, faces) -> None:
        idx = int(frame.index) + self._offset
        if self._last is not None and idx <= self._last:
            self._offset += self._last + 1 - idx
            idx = self._last + 1
        self._last = idx
        self.sink.write(replace(frame, index=idx), faces)

    def close(self) -> None:
        if self._last is None:  # Record pressed and released before a frame came: nothing to keep
            self.sink.abort()
            return
        self.sink.close()

    def abort(self) -> None:
        self.sink.abort()
