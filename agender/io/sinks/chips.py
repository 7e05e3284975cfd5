"""``--export-chips``: a tar of face chips (JPEG) plus a TSV saying where each came from.

The layout follows trifle/face's diagnosis export (``<video>_chips.tar`` of JPEGs named
``<video>_frame_<N>_second_<S>_face<K>.jpg`` and a headerless TSV keyed by the chip name), so
tools written for it read ours. Files: ``<name>.chips.tar`` and ``<name>.chips.tsv``, one TSV
row per chip, tab-separated, no header, columns (:data:`TSV_COLUMNS`)::

    chip  frame  x1  y1  x2  y2  age  p_male  time_s  face_id  det_conf  age_avg  p_male_avg

``x1..y2`` is the face box in frame pixels; ``age``/``p_male`` the raw estimate on that chip
(P(male), 0..1 — trifle's own score is P(female)); ``face_id`` the track (−1 untracked),
``K`` in the name is the track id, or the face's number in its frame when untracked. Chips of
an image set are named ``<image stem>_face<K>.jpg`` (``frame`` = the image's place in the set;
tab/CR/LF in the stem become ``_``). A ``chip`` cell that a spreadsheet would run as a formula
(starting with ``= + - @``) gets a ``'`` in front, as in the CSV tables: strip it to find the
tar member.

Which faces: only faces with a fresh estimate on that frame; per track at most one chip every
``every_s`` seconds, plus the track's best chip (highest :func:`chip_score`) so the
``best_chip`` of ``<name>.tracks.csv`` is always in the tar. Untracked faces: every one.
Chips are the face box padded by ``padding`` per side, clipped at the frame, longest side
≤ ``max_side``. Written to partial files, renamed on close; not resumable.
"""
from __future__ import annotations

import io
import math
import os
import re
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from agender.imageops import crop_boxes, pad_boxes
from agender.io.sinks.base import Sink
from agender.io.sinks.table import spreadsheet_safe
from agender.tracking import face_quality

if TYPE_CHECKING:
    from agender.faces import Faces
    from agender.io.sources import Frame

TSV_COLUMNS = ("chip", "frame", "x1", "y1", "x2", "y2", "age", "p_male", "time_s", "face_id", "det_conf",
               "age_avg", "p_male_avg")


def chip_name(stem: str, frame_index: int, time_s: float, face_no: int) -> str:
    """trifle/face's naming: ``<stem>_frame_<N>_second_<S>_face<K>.jpg``."""
    return f"{stem}_frame_{int(frame_index)}_second_{int(math.floor(max(time_s, 0.0)))}_face{int(face_no)}.jpg"


def has_fresh_estimate(faces: "Faces", i: int) -> bool:
    return bool(np.isfinite(faces.age[i]) or np.isfinite(faces.p_male[i]))


def chip_score(image: np.ndarray, faces: "Faces", i: int) -> float:
    """How good a chip face ``i`` makes (size × sharpness × detector confidence); the same
    number picks the tar's best chip per track and ``best_chip`` in ``<name>.tracks.csv``."""
    return face_quality(image, faces.xyxy[i], float(faces.det_conf[i]))[0]


def _fmt(v: float, nd: int) -> str:
    v = float(v)
    return f"{v:.{nd}f}" if math.isfinite(v) else ""


class ChipsSink(Sink):
    resumable = False

    def __init__(self, path: str | Path, *, stem: str, every_s: float = 1.0, padding: float = 0.25,
                 max_side: int = 256, jpeg_quality: int = 90, per_image: bool = False):
        self.path = Path(path)  # the .tar
        self.tsv_path = self.path.with_suffix(".tsv")
        self.stem = stem
        self.every_s = float(every_s)
        self.padding = float(padding)
        self.max_side = int(max_side)
        self.jpeg_quality = int(jpeg_quality)
        self.per_image = per_image  # an image set: chips named after each image file
        self._image_of: dict[str, int] = {}
        self._tar_partial = self.path.with_name(f".{self.path.name}.partial")
        self._tsv_partial = self.tsv_path.with_name(f".{self.tsv_path.name}.partial")
        self._tar: tarfile.TarFile | None = None
        self._rows: list[str] = []
        self._written: set[str] = set()
        self._last_chip_s: dict[int, float] = {}
        self._best: dict[int, tuple[float, str, bytes, str]] = {}  # face_id -> (score, name, jpeg, row)
        self.chips = 0

    @property
    def paths(self) -> list[Path]:
        return [self.path, self.tsv_path]

    def write(self, frame: "Frame", faces: "Faces") -> None:
        if not len(faces):
            return
        image, t = frame.image, float(frame.time_s)
        for i in range(len(faces)):
            if not has_fresh_estimate(faces, i):
                continue
            tid = int(faces.track_id[i])
            name = self._name(frame, tid if tid >= 0 else i)
            if tid < 0:
                self._add(name, self._jpeg(image, faces, i), self._row(name, frame, faces, i))
                continue
            score = chip_score(image, faces, i)
            due = t - self._last_chip_s.get(tid, -math.inf) >= self.every_s
            best = self._best.get(tid)
            if not due and (best is not None and score <= best[0]):
                continue
            jpeg, row = self._jpeg(image, faces, i), self._row(name, frame, faces, i)
            if due:
                self._add(name, jpeg, row)
                self._last_chip_s[tid] = t
            if best is None or score > best[0]:
                self._best[tid] = (score, name, jpeg, row)

    def close(self) -> None:
        for _, name, jpeg, row in sorted(self._best.values(), key=lambda b: b[1]):
            if name not in self._written:
                self._add(name, jpeg, row)
        self._open()
        self._tar.close()
        self._tar = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._tsv_partial, "w", encoding="utf-8", newline="\n") as fh:
            fh.writelines(self._rows)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_path(self._tar_partial)
        os.replace(self._tar_partial, self.path)
        os.replace(self._tsv_partial, self.tsv_path)

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        self._tar_partial.unlink(missing_ok=True)
        self._tsv_partial.unlink(missing_ok=True)

    suspend = abort

    # -- helpers ------------------------------------------------------------------------------
    def _name(self, frame: "Frame", face_no: int) -> str:
        if not self.per_image:
            return chip_name(self.stem, frame.index, float(frame.time_s), face_no)
        # tab/CR/LF in a file name would break the TSV's rows: not in chip names
        stem = re.sub(r"[\t\r\n]", "_", Path(frame.name).stem) or f"image{frame.index}"
        name = f"{stem}_face{face_no}.jpg"
        if self._image_of.setdefault(stem, frame.index) != frame.index:  # two images with one stem
            name = f"{stem}_{frame.index}_face{face_no}.jpg"
        return name

    def _open(self) -> None:
        if self._tar is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tar = tarfile.open(self._tar_partial, "w", format=tarfile.USTAR_FORMAT)

    def _add(self, name: str, jpeg: bytes, row: str) -> None:
        if name in self._written:
            return
        self._open()
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(jpeg), int(time.time()), 0o644
        self._tar.addfile(info, io.BytesIO(jpeg))
        self._rows.append(row)
        self._written.add(name)
        self.chips += 1

    def _jpeg(self, image: np.ndarray, faces: "Faces", i: int) -> bytes:
        (crop,), _ = crop_boxes(image, pad_boxes(faces.xyxy[i : i + 1], self.padding))
        h, w = crop.shape[:2]
        s = min(1.0, self.max_side / float(max(h, w, 1)))
        if s < 1.0:
            crop = cv2.resize(crop, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise ValueError(f"{self.path}: could not encode a chip")
        return buf.tobytes()

    @staticmethod
    def _row(name: str, frame: "Frame", faces: "Faces", i: int) -> str:
        x1, y1, x2, y2 = (_fmt(v, 1) for v in faces.xyxy[i])
        vals = [spreadsheet_safe(name), str(int(frame.index)), x1, y1, x2, y2, _fmt(faces.age[i], 2), _fmt(faces.p_male[i], 4),
                f"{float(frame.time_s):.3f}", str(int(faces.track_id[i])), _fmt(faces.det_conf[i], 4),
                _fmt(faces.age_avg[i], 2), _fmt(faces.p_male_avg[i], 4)]
        return "\t".join(vals) + "\n"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
