"""The offline pipeline's threads change when work happens, never what comes out."""
from __future__ import annotations

import numpy as np

from agender.analyzer import Analyzer
from agender.io.sinks.base import Sink
from agender.io.sources import VideoSource
from agender.pipeline import FramePipeline
from conftest import VIDEOS


class _Collect(Sink):
    def __init__(self):
        self.rows = []

    def write(self, frame, faces):
        self.rows.append((frame.index, faces.xyxy.copy(), faces.age.copy(), faces.p_male.copy()))


def _run(detect_ahead: bool):
    an = Analyzer(detector="yunet", estimator="cydral", device="cpu")
    pipe = FramePipeline(an, detect_ahead=detect_ahead, group_frames=4)
    src = VideoSource(str(VIDEOS / "walking_and_pause_270p.mp4"), max_frames=16)
    reader = pipe.read(src, maxsize=4)
    sink = _Collect()
    try:
        pipe.run(reader, [sink])
    finally:
        reader.close()
    return pipe, sink.rows


def test_detecting_ahead_on_reader_made_copies_gives_the_same_faces_as_inline_detection():
    ahead, rows_ahead = _run(True)
    inline, rows_inline = _run(False)
    assert ahead.detect_ahead and ahead.reader_prepare is not None
    assert not inline.detect_ahead and inline.reader_prepare is None
    assert len(rows_ahead) == len(rows_inline) == 16
    assert sum(len(r[1]) for r in rows_ahead) >= 16 * 2  # the clip shows 2-3 faces a frame
    for a, b in zip(rows_ahead, rows_inline):
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])
        np.testing.assert_array_equal(a[3], b[3])
