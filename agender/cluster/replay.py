"""Exports on a cluster: the segments' faces, replayed through the export sinks by the driver.

``--export-mp4``, ``--export-ass`` and ``--export-chips`` show track ids (labels, event names,
chip names), and a track's global id is known only once the segments are stitched. So a worker
keeps every written frame's :class:`~agender.faces.Faces` whole (:class:`FacesDump`, one
``seg-NNNN.faces.npz`` beside its part), and the driver, after :func:`~agender.cluster.stitch.
reconcile`, decodes the video once more and hands each analysed frame with its faces (ids made
global) to the very sinks a single-machine run uses (:func:`replay`). Decoding is the only
work repeated: no model runs twice.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from agender.faces import Faces
from agender.io.sinks.base import Sink

#: The Faces fields kept (landmarks are the detector's, which no export draws).
FIELDS = tuple(f.name for f in dataclasses.fields(Faces) if f.name != "landmarks")


def dump_path(segdir: Path, index: int) -> Path:
    return Path(segdir) / f"seg-{index:04d}.faces.npz"


class FacesDump(Sink):
    """Every frame it is given (a segment's written frames) with its faces, saved by :meth:`save`."""

    def __init__(self) -> None:
        self.index: list[int] = []
        self.time: list[float] = []
        self.count: list[int] = []
        self.cols: dict[str, list] = {name: [] for name in FIELDS}

    def write(self, frame, faces: Faces) -> None:
        self.index.append(int(frame.index))
        self.time.append(float(frame.time_s))
        self.count.append(len(faces))
        for name in FIELDS:
            v = getattr(faces, name)
            self.cols[name].append(np.asarray(v, dtype=str) if name == "age_label" else np.asarray(v))

    def save(self, path: Path) -> None:
        """Atomically (temp file + rename): the segment's meta, written after it, marks it done."""
        empty = Faces()
        arrays = {name: np.concatenate(v) if v else np.asarray(getattr(empty, name)) for name, v in self.cols.items()}
        arrays["age_label"] = arrays["age_label"].astype(str)
        tmp = path.with_name(f".{path.name}.partial")
        with open(tmp, "wb") as fh:
            np.savez(fh, _index=np.asarray(self.index, np.int64), _time=np.asarray(self.time, np.float64),
                     _count=np.asarray(self.count, np.int64), **arrays)
        os.replace(tmp, path)


def dumped_frames(path: Path, ids: dict[int, int]) -> Iterator[tuple[int, float, Faces]]:
    """``(index, time_s, faces)`` of a :class:`FacesDump` file, track ids mapped by ``ids``."""
    with np.load(path, allow_pickle=False) as d:
        cols = {name: d[name] for name in FIELDS}
        index, time_s, count = d["_index"], d["_time"], d["_count"]
    ends = np.cumsum(count)
    for k, (idx, t) in enumerate(zip(index, time_s)):
        a, b = int(ends[k] - count[k]), int(ends[k])
        part = {name: v[a:b] for name, v in cols.items()}
        part["age_label"] = [str(s) for s in part["age_label"]]
        part["track_id"] = np.array([ids.get(int(x), int(x)) if x >= 0 else -1 for x in part["track_id"]], np.int64)
        yield int(idx), float(t), Faces(**part)


def replay(sinks: list[Sink], frames, dumps: list[tuple[Path, dict[int, int]]]) -> int:
    """Feed ``sinks`` every frame of ``frames`` (the analysed frames, decoded again) with the
    faces the segments wrote for it; returns the frames replayed. A frame the dumps do not have
    (or the other way round) is an error: the replay must be the run that was analysed."""
    from agender.errors import AgenderError

    stream = (rec for path, ids in dumps for rec in dumped_frames(path, ids))
    n = 0
    for s in sinks:
        s.begin(None)
    try:
        for frame in frames:
            rec = next(stream, None)
            if rec is None or rec[0] != frame.index:
                raise AgenderError(f"cluster exports: frame {frame.index} was not in the segments' faces")
            for s in sinks:
                s.write(frame, rec[2])
            n += 1
        if next(stream, None) is not None:
            raise AgenderError("cluster exports: the video ended before the segments' frames")
        for s in sinks:
            s.close()
    except BaseException:
        for s in sinks:
            s.abort()
        raise
    return n
