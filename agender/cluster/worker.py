"""What a cluster worker runs: one segment of one video → a headerless table part + a meta file.

:class:`SegmentWorker` is a plain class (Ray makes it an actor in :mod:`agender.cluster.driver`;
this module never imports Ray): it builds the Analyzer once and keeps it for every segment it
gets. A segment is the single-machine pipeline (:class:`~agender.pipeline.FramePipeline`, the
same stages and the same table sink class) over a frame range; its rows go to
``<segdir>/seg-NNNN.<fmt>`` (the sink's partial file, renamed on close: atomic) and what the
driver needs to stitch it goes to ``seg-NNNN.json`` (written atomically last: its presence
with the plan's fingerprint is what marks the segment done).
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import cv2

from agender.cluster.replay import FacesDump, dump_path
from agender.io.sinks.base import Sink
from agender.io.sinks.sidecar import write_sidecar
from agender.io.sources import Frame, ImageSource, VideoSource
from agender.pipeline import FramePipeline, FrameStage
from agender.tracked_analyzer import TrackingStage


def part_path(segdir: Path, index: int, fmt: str) -> Path:
    return Path(segdir) / f"seg-{index:04d}.{fmt}"


def meta_path(segdir: Path, index: int) -> Path:
    return Path(segdir) / f"seg-{index:04d}.json"


class SegmentFrames:
    """The frames of one segment: container seek to ``seek`` (a keyframe), ``grab()`` up to
    ``warm``, then the analysed frames (``--start``/``--fps`` rules of the whole run) up to
    ``stop``. Times are ``index / fps`` as in :class:`VideoSource`."""

    def __init__(self, source: VideoSource, seg: dict, *, first_global: int, check_length: bool):
        self.source, self.seg = source, seg
        self.first_global = first_global
        self.check_length = check_length
        self.name = source.name
        self.seek_s = 0.0

    def __iter__(self) -> Iterator[Frame]:
        src, seg = self.source, self.seg
        cap, idx = src.cap, 0
        t0 = time.perf_counter()
        if seg["seek"] > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, seg["seek"])
            idx = int(round(cap.get(cv2.CAP_PROP_POS_FRAMES)))
            if idx != seg["seek"]:  # the container would not seek there: the exact, slow way
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                idx = 0
        while idx < seg["warm"]:
            if not cap.grab():
                return
            idx += 1
        self.seek_s = time.perf_counter() - t0
        stop = seg["stop"]
        while stop is None or idx < stop:
            if src.end_s is not None and idx / src.fps >= src.end_s:
                return
            if idx < self.first_global or not src._in_rate(idx):
                if not cap.grab():
                    return
                idx += 1
                continue
            ok, img = cap.read()
            if not ok:
                if self.check_length and stop is None:
                    src._ended_at(idx)
                return
            yield Frame(idx, idx / src.fps, img, src.name)
            idx += 1

    def close(self) -> None:
        pass


class _From(Sink):
    """Passes frames ``index >= first`` (and ``< until``) to ``sink``: overlap rows are not written."""

    def __init__(self, sink, first: int, until: int | None = None):
        self.sink, self.first, self.until = sink, first, until
        self.frames = 0

    def write(self, frame: Frame, faces) -> None:
        if frame.index >= self.first and (self.until is None or frame.index < self.until):
            self.frames += 1
            self.sink.write(frame, faces)


class _Boxes(Sink):
    """Records ``[frame, face_id, x1, y1, x2, y2]`` of the frames in ``ranges`` (the overlaps)."""

    def __init__(self, ranges: list[tuple[int, int | None]]):
        self.ranges, self.rows = ranges, []

    def write(self, frame: Frame, faces) -> None:
        if not any(a <= frame.index and (b is None or frame.index < b) for a, b in self.ranges):
            return
        for i in range(len(faces)):
            tid = int(faces.track_id[i])
            if tid >= 0:
                self.rows.append([int(frame.index), tid, *(round(float(v), 1) for v in faces.xyxy[i])])


def _segment_stages(job: dict, source, segdir: Path) -> list[FrameStage]:
    """The tracking stage ``agender analyze`` would run on this video (none without tracking)."""
    from agender.exports import TrackOptions

    tr = job.get("track")
    if not tr:
        return []
    ctx = SimpleNamespace(item=SimpleNamespace(kind="video", name=job["name"]), source=source,
                          options=SimpleNamespace(**job["options"]), outdir=segdir, stages=[])
    stage = TrackOptions(**tr).stage_factory()(ctx)
    return [stage] if stage is not None else []


def _segment_sinks(job: dict, seg: dict, table: Sink, tracked: bool, people: bool = False):
    """The segment's table rows (overlap frames left out) and, when tracked, its tracks, the
    overlap boxes the driver stitches tracks with and (with re-identification) the per-track
    sums of ``people.csv``: ``(sinks, tracks, boxes, people)``."""
    sinks: list[Sink] = [_From(table, seg["first"], seg["stop"])]
    if not tracked:
        return sinks, None, None, None
    from agender.io.sinks.people import PeopleSink
    from agender.io.sinks.tracks import TracksSink

    idx = seg["index"]
    tracks = TracksSink(Path(job["segdir"]) / f".seg-{idx:04d}.tracks", stem=job["name"], format="csv")
    tail = seg.get("next_warm")
    boxes = _Boxes([(seg["warm"], seg["first"])] + ([(tail, seg["stop"])] if tail is not None else []))
    sinks += [_From(tracks, seg["first"], seg["stop"]), boxes]
    acc = None
    if people:  # the sums only: the driver joins them by the whole run's person map
        acc = PeopleSink(Path(job["segdir"]) / f".seg-{idx:04d}.people", person_map=dict, fps=1.0)
        acc.begin(None)
        sinks.append(_From(acc, seg["first"], seg["stop"]))
    return sinks, tracks, boxes, acc


class SegmentWorker:
    """Keeps one Analyzer loaded; :meth:`run` analyses a segment. :meth:`status` answers from a
    second thread while a segment runs (the driver's progress bar and workers-alive count)."""

    def __init__(self, model_args: dict, threads: int = 1, pin: list[int] | None = None):
        if pin and hasattr(os, "sched_setaffinity"):  # local:N: worker k gets its own cores
            os.sched_setaffinity(0, pin)
        self.pin = pin
        os.environ.setdefault("AGENDER_THREADS", str(max(1, threads)))
        cv2.setNumThreads(max(1, threads))
        from agender.cli.common import build_analyzer

        t0 = time.perf_counter()
        args = SimpleNamespace(**model_args)
        self.analyzer = build_analyzer(args, no_detect=bool(model_args.get("no_detect")))
        self.model_load_s = time.perf_counter() - t0
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self._lock = threading.Lock()
        self._current: tuple[str, int] | None = None
        self._done_frames = 0
        self._first_segment = True

    def status(self) -> dict:
        with self._lock:
            return {"worker": self.id, "pid": os.getpid(), "segment": self._current, "frames": self._done_frames}

    def pid(self) -> int:
        return os.getpid()

    def _open(self, job: dict, seg: dict, segdir: Path):
        """``(source, frames, stages, table key, failed images)`` of a segment: a time range of a
        video (tracked as the whole run is), or a run of consecutive images of an image set
        (``failed``: the images that could not be read, as ``[path, reason]``; None for videos)."""
        o = job["options"]
        if job.get("kind") == "images":
            failed: list[list[str]] = []
            src = ImageSource(job["paths"][: seg["stop"]], name=job["name"], skip_to=seg["first"],
                              on_error=lambda p, exc: failed.append([str(p), str(exc)]))
            return src, src, [], "file", failed
        source = VideoSource(job["spec"], start_s=o["start_s"], end_s=o["end_s"], rate=o["fps"],
                             open_timeout_s=o["timeout_s"])
        frames = SegmentFrames(source, seg, first_global=job["first_frame"], check_length=True)
        return source, frames, _segment_stages(job, source, segdir), "frame", None

    def _record(self, job: dict, seg: dict, pipe, table, frames, written: int, t_start: float,
                cpu_start: float) -> dict:
        """The segment's meta record: what the driver stitches, counts and reports with."""
        segdir, idx = Path(job["segdir"]), seg["index"]
        return {
            "plan": job["plan"], "index": idx, "worker": self.id,
            "frames_analysed": pipe.stats.frames_analysed,
            "frames_written": written,
            "frames_detected": pipe.stats.frames_detected, "faces": table.rows,
            "bytes": part_path(segdir, idx, job["format"]).stat().st_size,
            "last_frame": pipe.stats.frames_read - 1,
            "wall_s": round(time.perf_counter() - t_start, 4),
            "cpu_s": round(time.process_time() - cpu_start, 4),  # all threads of this worker
            "seek_s": round(frames.seek_s, 4) if isinstance(frames, SegmentFrames) else 0.0,
            "cores": self.pin,
            "model_load_s": round(self.model_load_s, 4) if self._first_segment else 0.0,
            "ms_per_frame": pipe.ms_per_frame(),
        }

    def run(self, job: dict, seg: dict) -> dict:
        """Analyse ``seg`` of ``job`` (see :meth:`agender.cluster.driver.ClusterRunner._job`);
        returns the segment's meta record (also written to its meta file)."""
        from agender.runner import FORMATS

        t_start, cpu_start = time.perf_counter(), time.process_time()
        segdir, fmt, idx = Path(job["segdir"]), job["format"], seg["index"]
        with self._lock:
            self._current, self._done_frames = (job["name"], idx), 0
        o = job["options"]
        source, frames, stages, key, failed = self._open(job, seg, segdir)
        table = FORMATS[fmt](part_path(segdir, idx, fmt), key=key, extra_columns=job["columns"])
        table.header = lambda: b""  # the driver writes the header once
        reid = stages[0].reid if stages and isinstance(stages[0], TrackingStage) else None
        sinks, tracks, boxes, people = _segment_sinks(job, seg, table, tracked=bool(stages), people=reid is not None)
        dump = FacesDump() if job.get("exports") else None  # the driver replays them through the exports
        if dump is not None:
            sinks.append(_From(dump, seg["first"], seg["stop"]))
        pipe = FramePipeline(self.analyzer, stages=stages, group_frames=o["group_frames"], no_detect=o["no_detect"])
        reader = pipe.read(frames, maxsize=o["queue_frames"])
        def count(last: Frame) -> None:
            with self._lock:
                self._done_frames = pipe.stats.frames_analysed

        table.begin(None)
        try:
            pipe.run(reader, sinks, on_group=count)
            table.close()
        except BaseException:
            table.abort()
            raise
        finally:
            reader.close()
            source.close()
        rec = self._record(job, seg, pipe, table, frames, sinks[0].frames, t_start, cpu_start)
        if tracks is not None:
            rec["tracks"] = tracks.checkpoint()["tracks"]
            rec["boxes"] = boxes.rows
            rec["tail_from"] = seg.get("next_warm")
        if failed is not None:
            rec["failed_files"] = failed
        if dump is not None:
            dump.save(dump_path(segdir, idx))
        if people is not None:  # descriptors are identity data: this meta file goes with the segment folder
            rec["people"] = {"tracks": people.checkpoint()["tracks"], **reid.people_state()}
        self._first_segment = False
        write_sidecar(meta_path(segdir, idx), rec)
        with self._lock:
            self._current = None
        return rec

