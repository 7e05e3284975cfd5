"""``--export-ass``: Advanced SubStation Alpha subtitles with one event per track segment.

Load the file in a player (mpv, VLC, MPC-HC) next to the video and every tracked face gets its
box and label (``#3 F 27``) drawn by the subtitle renderer, the way inaFaceAnalyzer's ASS
export is used. inaFaceAnalyzer writes two events per face per frame; here a *segment* is a
run of consecutive written frames of one track over which the label stays the same and the
box moves on a straight line at constant size (within ``tolerance`` × the box size), so one
event with ``\\move`` covers it: a still face is one event for as long as its label holds.

Each event is ``{\\an7\\move(x1,y1,x1',y1',0,ms)…}{\\p1}m 0 0 l w 0 w h 0 h{\\p0}\\N#3 F 27``:
the box is a vector drawing whose top-left corner is the anchor (so it lands exactly on the
face box), the label is the line under it. ``PlayResX/PlayResY`` are the video's size, so all
coordinates are video pixels. The event's Name field is the track id (``face_id``).
Untracked faces (``track_id`` −1) get one-frame events named ``-1``.

Written to ``.<name>.partial`` and renamed on close (atomic). Not resumable.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agender.annotate import COLORS, display_values, face_label
from agender.io.sinks.base import Sink

if TYPE_CHECKING:
    from agender.faces import Faces
    from agender.io.sources import Frame


def ass_time(t: float) -> str:
    """Seconds → ``H:MM:SS.cc`` (centiseconds, as ASS wants), rounded *down*: an event for
    frames ``[t_k, t_j)`` then starts at or before ``t_k`` and ends at or before ``t_j``, so
    a player shows it on exactly those frames."""
    cs = max(0, int(math.floor(t * 100 + 1e-6)))
    h, rem = divmod(cs, 360000)
    m, rem = divmod(rem, 6000)
    s, c = divmod(rem, 100)
    return f"{h}:{m:02d}:{s:02d}.{c:02d}"


def ass_color(bgr: tuple[int, int, int]) -> str:
    """OpenCV BGR → ASS ``&HBBGGRR&`` (ASS stores blue first too)."""
    b, g, r = (int(v) for v in bgr)
    return f"&H{b:02X}{g:02X}{r:02X}&"


@dataclass
class _Segment:
    face_id: int
    label: str
    color: tuple[int, int, int]
    times: list[float] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)

    def fits(self, t: float, box: np.ndarray, tol: float) -> bool:
        """Would the segment still be one straight move at constant size with (t, box) added?"""
        b0, t0 = self.boxes[0], self.times[0]
        size = np.array([b0[2] - b0[0], b0[3] - b0[1]], np.float32)
        scale = float(max(size.max(), 1.0))
        if np.abs(np.array([box[2] - box[0], box[3] - box[1]]) - size).max() > tol * scale:
            return False
        if t <= t0:
            return False
        for ti, bi in zip(self.times[1:], self.boxes[1:]):
            pred = b0[:2] + (box[:2] - b0[:2]) * (ti - t0) / (t - t0)
            if np.abs(bi[:2] - pred).max() > tol * scale:
                return False
        return True


class AssSink(Sink):
    """ASS subtitle export. ``width``/``height``: the video size (PlayRes; 0 = the first
    frame's); ``fps``: the source's frame rate (the length of a one-frame event and of the
    last frame)."""

    resumable = False

    def __init__(self, path: str | Path, *, fps: float, width: int = 0, height: int = 0, tolerance: float = 0.1,
                 title: str = ""):
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.width, self.height = int(width), int(height)
        self.frame_s = 1.0 / fps if fps and fps > 0 else 0.04
        self.tolerance = float(tolerance)
        self.title = title or self.path.stem
        self.events: list[tuple[float, float, int, str]] = []  # start, end, face_id, text
        self._open: dict[int, _Segment] = {}
        self._prev_t: float | None = None
        self._dt = self.frame_s

    def write(self, frame: "Frame", faces: "Faces") -> None:
        if not (self.width and self.height):
            self.height, self.width = frame.image.shape[:2]
        t = float(frame.time_s)
        if self._prev_t is not None and t > self._prev_t:
            self._dt = t - self._prev_t
        seen = set()
        for face in faces:
            tid = int(face.track_id)
            box = np.asarray(face.xyxy, np.float32)
            gender, _, _ = display_values(face)
            label, color = face_label(face, show_ids=True), COLORS.get(gender, COLORS[""])
            if tid < 0:
                self._emit(_Segment(tid, label, color, [t], [box]), t + self._dt)
                continue
            seen.add(tid)
            seg = self._open.get(tid)
            if seg is not None and (seg.label != label or not seg.fits(t, box, self.tolerance)):
                self._emit(seg, t)
                seg = None
            if seg is None:
                seg = self._open[tid] = _Segment(tid, label, color)
            seg.times.append(t)
            seg.boxes.append(box)
        for tid in [k for k in self._open if k not in seen]:  # the track is gone from this frame
            self._emit(self._open.pop(tid), t)
        self._prev_t = t

    def close(self) -> None:
        for seg in list(self._open.values()):
            self._emit(seg, seg.times[-1] + self._dt)
        self._open.clear()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.partial, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(self.header())
            for start, end, fid, text in sorted(self.events, key=lambda e: (e[0], e[2])):
                fh.write(f"Dialogue: 0,{ass_time(start)},{ass_time(end)},Face,{fid},0,0,0,,{text}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        self.partial.unlink(missing_ok=True)

    suspend = abort

    # -- formatting ---------------------------------------------------------------------------
    def header(self) -> str:
        fs = max(10, round(self.height / 30))
        return (
            "[Script Info]\n"
            f"Title: {self.title}\n"
            "ScriptType: v4.00+\n"
            f"PlayResX: {self.width}\n"
            f"PlayResY: {self.height}\n"
            "WrapStyle: 2\n"
            "ScaledBorderAndShadow: yes\n"
            "\n[V4+ Styles]\n"
            "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, "
            "Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, "
            "Alignment, MarginL, MarginR, MarginV, Encoding\n"
            f"Style: Face,DejaVu Sans,{fs},&H00FFFFFF,&H00FFFFFF,&H00000000,&H00000000,"
            "0,0,0,0,100,100,0,0,1,2,0,7,0,0,0,1\n"
            "\n[Events]\n"
            "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
        )

    def _emit(self, seg: _Segment, end: float) -> None:
        start = seg.times[0]
        end = max(end, start + 0.01)
        b0, b1 = seg.boxes[0], seg.boxes[-1]
        sizes = np.array([[b[2] - b[0], b[3] - b[1]] for b in seg.boxes])
        w, h = (int(round(v)) for v in sizes.mean(axis=0))
        x0, y0, x1, y1 = (int(round(v)) for v in (b0[0], b0[1], b1[0], b1[1]))
        if (x0, y0) == (x1, y1) or len(seg.times) == 1:
            where = f"\\pos({x0},{y0})"
        else:  # reach the last box at the last frame's time, then hold it
            ms = int(round((seg.times[-1] - start) * 1000))
            where = f"\\move({x0},{y0},{x1},{y1},0,{ms})"
        col = ass_color(seg.color)
        text = (f"{{\\an7{where}\\bord2\\shad0\\3c{col}}}"
                f"{{\\1a&HFF&\\p1}}m 0 0 l {w} 0 {w} {h} 0 {h}{{\\p0\\1a&H00&}}"
                f"\\N{{\\bord3\\3c{col}}}{_escape(seg.label)}")
        self.events.append((start, end, seg.face_id, text))


def _escape(text: str) -> str:
    """Braces and backslashes would start override tags."""
    return text.replace("\\", "/").replace("{", "(").replace("}", ")")
