"""The fast spec layer: the result type, the estimate merge, and the runner's contract with its
frame stages and sinks, on fakes (no model is loaded; the whole file runs in seconds).

What the runner promises a stage or a sink, by subclassing :class:`~agender.pipeline.FrameStage`
and :class:`~agender.io.sinks.base.Sink`: every hook is called (none is probed for), in frame
order; a resumable stage's state and a resumable sink's checkpoint come back on resume, and an
interrupted run then writes exactly what an uninterrupted one writes.
"""
from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from agender.analyzer import StageTimes
from agender.faces import Estimates, Faces, columns, gender_of
from agender.inputs import InputItem
from agender.io.sinks.base import Sink
from agender.pipeline import FramePipeline, FrameStage, merge_estimates
from agender.runner import RunOptions, Runner


# --------------------------------------------------------------------------- Faces
def _three() -> Faces:
    return Faces(xyxy=[[0, 0, 10, 10], [5, 5, 25, 25], [1, 2, 3, 4]], det_conf=[0.9, 0.8, 0.7],
                 landmarks=np.arange(30, dtype=np.float32).reshape(3, 5, 2), age=[20, 30, np.nan],
                 age_label=["a", "b", "c"], track_id=[7, -1, 9])


def test_every_dataclass_field_of_faces_is_a_column_and_unknowns_are_nan_or_minus_one():
    f = Faces(xyxy=[[0, 0, 1, 1]], det_conf=[0.5])
    assert columns()[:3] == ("xyxy", "det_conf", "landmarks") and "age_std_avg" in columns()
    assert np.isnan(f.age).all() and np.isnan(f.age_std_avg).all() and f.track_id.tolist() == [-1]
    assert f.person_id.tolist() == [-1] and f.age_label == [""] and f.landmarks is None


@pytest.mark.parametrize("index, rows", [
    (0, [0]), (np.int64(2), [2]), (slice(1, None), [1, 2]), (slice(None, None, -1), [2, 1, 0]),
    (np.array([True, False, True]), [0, 2]), ([2, 0], [2, 0]), (np.zeros(3, bool), []), ([], []),
])
def test_faces_select_by_int_slice_mask_or_index_array_and_keep_every_column(index, rows):
    f = _three()
    got = f[index]
    assert isinstance(got, Faces) and len(got) == len(rows)
    assert got.xyxy.tolist() == f.xyxy[rows].tolist()
    assert got.track_id.tolist() == f.track_id[rows].tolist()
    assert got.age_label == [f.age_label[i] for i in rows]
    assert got.landmarks.shape == (len(rows), 5, 2)


def test_empty_faces_index_iterate_and_round_trip():
    e = Faces()
    assert len(e) == 0 and list(e) == [] and len(e[np.zeros(0, bool)]) == 0
    assert len(Faces.from_state(e.to_state())) == 0 and len(Faces.from_sv(e.to_sv())) == 0


def test_iterating_gives_one_face_record_per_row_with_plain_python_values():
    face = list(_three())[1]
    assert face.xyxy == (5.0, 5.0, 25.0, 25.0) and face.age == 30.0 and face.track_id == -1
    assert face.age_label == "b" and face.landmarks.shape == (5, 2)


def test_json_state_and_supervision_round_trips_keep_every_column():
    f = replace(_three(), age_std_avg=np.array([1.5, np.nan, 2.5], np.float32))
    for back in (Faces.from_state(f.to_state()), Faces.from_sv(f.to_sv())):
        for name in columns():
            a, b = getattr(f, name), getattr(back, name)
            assert (a == b if name == "age_label" else np.array_equal(a, b, equal_nan=True)), name


def test_a_supervision_filter_takes_whole_rows():
    picked = Faces.from_sv(_three().to_sv()[np.array([False, True, True])])
    assert picked.age_label == ["b", "c"] and picked.track_id.tolist() == [-1, 9]


def test_gender_comes_from_p_male_at_one_half():
    assert [gender_of(p) for p in (0.0, 0.4999, 0.5, 1.0, float("nan"), None)] == \
        ["female", "female", "male", "male", "", ""]


def test_the_merge_puts_the_estimated_subset_back_and_leaves_the_others():
    full = Faces(xyxy=np.zeros((3, 4)), det_conf=np.ones(3), age=[np.nan, 40.0, np.nan], p_male=[np.nan, 0.2, np.nan])
    part = Faces(xyxy=np.zeros((2, 4)), det_conf=np.ones(2)).with_estimates(
        Estimates(age=[10.0, 30.0], p_male=[0.9, 0.1], age_std=[1.0, 3.0], age_label=["x", "z"]))
    got = merge_estimates(full, np.array([0, 2]), part)
    assert got.age.tolist() == [10.0, 40.0, 30.0] and got.age_label == ["x", "", "z"]
    assert np.allclose(got.p_male, [0.9, 0.2, 0.1]) and np.isnan(got.age_std[1])
    assert merge_estimates(full, np.zeros(0, int), part) is full


# --------------------------------------------------------------------------- the runner, on fakes
class FakeAnalyzer:
    """One face a frame, its box moving with the frame index; the estimate is the box's x."""

    detector = type("FakeDetector", (), {"name": "fake"})()
    estimator = type("FakeEstimator", (), {"name": "fake-est"})()
    conf, batch_size, device_used = None, 32, "CPU"

    def __init__(self):
        self.times = StageTimes()
        self.estimated = 0

    def describe(self) -> dict:
        return {"detector": "fake", "estimator": "fake-est", "device": "CPU"}

    def model_files(self) -> list[Path]:
        return []

    def downscale(self, image):
        return image, 1.0

    def detect(self, image, small=None) -> Faces:
        x = float(round(image.mean() / 10.0) * 10)  # the clip is lossy: its level to the nearest 10
        return Faces(xyxy=[[x, 1, x + 8, 9]], det_conf=[0.9])

    def analyze_frames(self, images, detections):
        self.estimated += sum(len(d) for d in detections)
        return [d.with_estimates(Estimates(age=d.xyxy[:, 0], p_male=np.full(len(d), 0.75))) for d in detections]


class CountingStage(FrameStage):
    """Numbers the faces and keeps a running count (its resumable state)."""

    name, resumable, columns = "counting", True, ("face_id",)

    def __init__(self):
        self.seen = 0
        self.calls: list[str] = []

    def should_detect(self, frame, want=None):
        self.calls.append(f"should_detect {frame.index}")
        return True

    def prepare(self, frame, faces):
        self.calls.append(f"prepare {frame.index}")
        self.seen += 1
        return replace(faces, track_id=np.full(len(faces), self.seen - 1))

    def update(self, frame, faces, detected):
        self.calls.append(f"update {frame.index}")
        return faces

    def close(self):
        self.calls.append("close")

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


class StopAt(Sink):
    """Ctrl-C when frame ``at`` arrives (not resumable unless told)."""

    def __init__(self, at: int | None, resumable: bool = True):
        self.at, self.resumable, self.frames = at, resumable, []

    def begin(self, state=None):
        return True  # nothing on disk to continue: any state will do

    def write(self, frame, faces):
        if frame.index == self.at:
            raise KeyboardInterrupt
        self.frames.append(frame.index)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """12 flat frames of level index × 10 (what the fake detector reads)."""
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(12):
        out.write(np.full((48, 64, 3), i * 10, np.uint8))
    out.release()
    return path


def _run(clip: Path, out: Path, stop_at: int | None = None, sink_resumable: bool = True):
    stages, sinks = [], []

    def stage(ctx):
        stages.append(CountingStage())
        return stages[-1]

    def sink(ctx):
        sinks.append(StopAt(stop_at, sink_resumable))
        return sinks[-1]

    opts = RunOptions(group_frames=4, checkpoint_s=0.0)
    runner = Runner(FakeAnalyzer(), out, opts, stage_factories=[stage], sink_factories=[sink])
    item = InputItem(spec=str(clip), kind="video", name="clip")
    return runner.run([item])[0], stages[-1], sinks[-1]


def _table(out: Path) -> list[dict]:
    with open(out / "clip.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_runner_calls_every_hook_of_a_stage_in_frame_order_and_every_sink_sees_every_frame(clip, tmp_path):
    res, stage, sink = _run(clip, tmp_path)
    assert res.status == "done", res.error
    assert stage.calls[:9] == [f"{h} {i}" for i in range(4) for h in ("should_detect", "prepare")] + ["update 0"]
    assert stage.calls[-1] == "close" and stage.seen == 12 and sink.frames == list(range(12))
    table = _table(tmp_path)
    assert [r["face_id"] for r in table] == [str(i) for i in range(12)]
    assert [float(r["age"]) for r in table] == [float(i * 10) for i in range(12)]


def test_an_interrupted_run_resumes_stage_state_and_sinks_and_writes_what_an_uninterrupted_one_writes(clip, tmp_path):
    _run(clip, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        _run(clip, tmp_path / "cut", stop_at=6)
    res, stage, sink = _run(clip, tmp_path / "cut")
    assert res.status == "done" and res.resumed_from == 4  # the last checkpoint: after the first group
    assert stage.calls[0] == "should_detect 4" and stage.seen == 12 and sink.frames == list(range(4, 12))
    assert (tmp_path / "cut" / "clip.csv").read_bytes() == (tmp_path / "whole" / "clip.csv").read_bytes()


def test_one_sink_that_cannot_resume_makes_the_input_start_over(clip, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(clip, tmp_path, stop_at=6, sink_resumable=False)
    res, stage, sink = _run(clip, tmp_path, sink_resumable=False)
    assert res.status == "done" and res.resumed_from is None and sink.frames == list(range(12))
    assert [r["face_id"] for r in _table(tmp_path)] == [str(i) for i in range(12)]


def test_one_frame_driver_gives_the_live_loop_the_offline_rows(clip):
    from agender.io.sources import VideoSource

    def faces_by(drive) -> list[list]:
        an = FakeAnalyzer()
        pipe = FramePipeline(an, stages=[CountingStage()], group_frames=4, detect_ahead=False)
        src = VideoSource(str(clip))
        try:
            return drive(pipe, list(src))
        finally:
            src.close()

    class Keep(Sink):
        def __init__(self):
            self.rows = []

        def write(self, frame, faces):
            self.rows.append([faces.xyxy.tolist(), faces.age.tolist(), faces.track_id.tolist()])

    def offline(pipe, frames):
        keep = Keep()
        pipe.run(frames, [keep])
        return keep.rows

    def live(pipe, frames):
        return [[f.xyxy.tolist(), f.age.tolist(), f.track_id.tolist()] for f in map(pipe.process_frame, frames)]

    assert faces_by(offline) == faces_by(live)


# --------------------------------------------------------------------------- a sink in its own thread
class Slow(Sink):
    def __init__(self, fail_at: int | None = None):
        self.frames, self.fail_at, self.closed, self.aborted = [], fail_at, False, False

    def write(self, frame, faces):
        import time

        time.sleep(0.002)
        if frame.index == self.fail_at:
            raise OSError(28, "No space left on device")
        self.frames.append(frame.index)

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True


def _frame(i: int):
    from agender.io.sources import Frame

    return Frame(i, i / 10.0, np.zeros((2, 2, 3), np.uint8))


def test_a_background_sink_writes_every_frame_in_order_and_closes_after_the_last():
    from agender.io.sinks.background import BackgroundSink

    inner = Slow()
    sink = BackgroundSink(inner, maxsize=2)
    for i in range(20):
        sink.write(_frame(i), Faces())
    sink.close()
    assert inner.frames == list(range(20)) and inner.closed


def test_a_background_sink_raises_the_writer_threads_failure_in_the_caller():
    from agender.io.sinks.background import BackgroundSink

    inner = Slow(fail_at=3)
    sink = BackgroundSink(inner, maxsize=2)
    with pytest.raises(OSError, match="No space"):
        for i in range(50):
            sink.write(_frame(i), Faces())
        sink.close()
    sink.abort()
    assert inner.frames == [0, 1, 2] and inner.aborted and not inner.closed
