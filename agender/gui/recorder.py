"""Record button → an annotated video file, through the project's video sink.

The GUI has no video-format logic of its own: it hands every analysed frame to the MP4 sink
(:mod:`agender.io.sinks.mp4`) the CLI uses too. Until that sink is importable, a minimal
OpenCV writer stands in (temp file + rename, like every sink).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agender.errors import AgenderError


def open_recorder(path: str | Path, fps: float) -> Any:
    """A sink (``write(frame, faces)``, ``close()``, ``abort()``) writing an annotated video."""
    fps = float(fps) if fps and fps > 0 else 25.0
    try:
        from agender.io.sinks import mp4  # noqa: F401
    except ImportError:
        return _CvRecorder(Path(path), fps)
    return _mp4_sink(Path(path), fps)


def _mp4_sink(path: Path, fps: float) -> Any:
    from agender.io.sinks.mp4 import Mp4Sink

    return _MonotonicFrames(Mp4Sink(path, fps=fps))


class _MonotonicFrames:
    """Feeds a sink frame indices that only go forward.

    The MP4 sink places frame ``index`` at its time slot (gaps from dropped frames repeat the
    last picture, so the recording keeps real time). A looping file or a seek backwards would
    send an index it has already passed; here the recording just continues from where it was.
    """

    def __init__(self, sink: Any):
        self.sink = sink
        self._offset = 0
        self._last: int | None = None

    def write(self, frame, faces) -> None:
        from dataclasses import replace

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


class _CvRecorder:
    """Stand-in writer: annotated frames → ``path`` via ``cv2.VideoWriter`` (mp4v)."""

    def __init__(self, path: Path, fps: float):
        import cv2

        self.path = path
        self.fps = fps
        self.tmp = path.with_name(f".{path.stem}.part{path.suffix or '.mp4'}")
        self._cv2 = cv2
        self._vw: Any = None
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise AgenderError(f"{path}: cannot write here (permission denied)")

    def write(self, frame, faces) -> None:
        from agender.gui.overlay import OverlayOptions, render_full

        img = render_full(frame.image, faces, OverlayOptions())
        if self._vw is None:
            h, w = img.shape[:2]
            self._vw = self._cv2.VideoWriter(str(self.tmp), self._cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._vw.isOpened():
                raise AgenderError(f"{self.path}: cannot open a video writer")
        self._vw.write(img)

    def close(self) -> None:
        if self._vw is not None:
            self._vw.release()
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._vw is not None:
            self._vw.release()
        self.tmp.unlink(missing_ok=True)
