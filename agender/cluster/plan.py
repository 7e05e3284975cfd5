"""Cutting one video into segments that workers analyse independently and that stitch back
into exactly the rows of one uninterrupted run.

* The frames a run analyses are decided from the frame index alone (``--start/--end``,
  ``--fps``: :meth:`VideoSource._in_rate`, ``--max-frames``), so the driver lists them up front.
* Segment boundaries fall on multiples of ``group_frames`` analysed frames: every estimator
  batch of a segment is the batch the single-machine run makes (same batches → same numbers).
* A worker starts decoding at the last keyframe at or before its first frame (a container seek,
  then ``grab()`` up to the boundary): decoding from a keyframe gives the frames a sequential
  decode gives, so no frame differs.
* With tracking, a segment also analyses ``overlap`` analysed frames before its boundary
  (a multiple of ``group_frames`` too) to warm its tracker up; those rows are not written, they
  only serve to match its track ids to the previous segment's (:mod:`agender.cluster.stitch`).
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
from dataclasses import asdict, dataclass


@dataclass
class Segment:
    index: int
    seek: int  # keyframe to seek to (source frame index)
    warm: int  # first frame analysed (== first unless tracking overlaps the previous segment)
    first: int  # first frame whose rows this segment writes
    stop: int | None  # frames >= stop belong to the next segment (None: to the end of the video)
    frames: int  # analysed frames whose rows it writes

    def to_dict(self) -> dict:
        return asdict(self)


def keyframes(path: str, fps: float) -> list[int]:
    """Frame indices of the video's keyframes, from the container's packets (nothing decoded)."""
    import av

    out: list[int] = []
    with av.open(path) as c:
        vs = c.streams.video[0]
        tb = float(vs.time_base)
        t0 = vs.start_time or 0
        for pkt in c.demux(vs):
            if pkt.is_keyframe and pkt.pts is not None:
                out.append(int(round((pkt.pts - t0) * tb * fps)))
    return sorted(set(out)) or [0]


def analysed_indices(frame_count: int, fps: float, *, start_s: float = 0.0, end_s: float | None = None,
                     rate: float | None = None, max_frames: int | None = None) -> list[int]:
    """The source frame indices a single-machine run analyses (VideoSource's own rules)."""
    from agender.io.sources import VideoSource

    probe = VideoSource.__new__(VideoSource)  # only for its _in_rate rule
    probe.fps, probe.rate = fps, (float(rate) if rate and rate > 0 else None)
    first = int(round(max(0.0, start_s) * fps))
    last = frame_count if end_s is None else min(frame_count, int(math.ceil(end_s * fps)))
    out = []
    for i in range(first, last):
        if end_s is not None and i / fps >= end_s:
            break
        if probe._in_rate(i):
            out.append(i)
            if max_frames is not None and len(out) >= max_frames:
                break
    return out


def plan_segments(indices: list[int], keys: list[int], *, segments: int, group_frames: int, overlap: int = 0,
                  open_end: bool = True) -> list[Segment]:
    """Cut ``indices`` (analysed frames) into at most ``segments`` pieces on group boundaries.
    ``overlap``: analysed frames each segment (but the first) also runs before its first one.
    ``open_end``: the last segment reads to the end of the stream (its frame count may be off)."""
    n = len(indices)
    g = max(1, group_frames)
    groups = max(1, math.ceil(n / g))
    k = max(1, min(segments, groups))
    ov = int(math.ceil(overlap / g)) * g if overlap > 0 else 0
    cuts = sorted({round(j * groups / k) * g for j in range(k)})
    out: list[Segment] = []
    for j, pos in enumerate(cuts):
        end = cuts[j + 1] if j + 1 < len(cuts) else n
        warm_pos = max(0, pos - ov)
        first = indices[pos] if pos < n else 0
        warm = indices[warm_pos] if warm_pos < n else 0
        seek = keys[max(0, bisect.bisect_right(keys, warm) - 1)] if warm > 0 else 0
        stop = indices[end] if end < n else (None if open_end else (indices[-1] + 1 if n else 0))
        out.append(Segment(j, seek, warm, first, stop, end - pos))
    return out


def plan_fingerprint(run_fingerprint: str, segs: list[Segment]) -> str:
    text = json.dumps({"run": run_fingerprint, "segments": [s.to_dict() for s in segs]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_image_chunks(n: int, *, chunks: int, group_frames: int) -> list[Segment]:
    """An image set of ``n`` images cut into up to ``chunks`` runs of consecutive images, each a
    multiple of ``group_frames`` long (the last takes the rest), so every estimator batch is the
    batch a single-machine run makes and the parts concatenate to its table."""
    group = max(1, int(group_frames))
    groups = max(1, math.ceil(n / group))
    k = max(1, min(int(chunks), groups))
    out, a = [], 0
    for i in range(k):
        share = (groups * (i + 1)) // k - (groups * i) // k  # this chunk's estimator groups
        b = n if i == k - 1 else min(n, a + group * share)
        out.append(Segment(index=i, seek=a, warm=a, first=a, stop=b, frames=b - a))
        a = b
    return out
