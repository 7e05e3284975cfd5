"""``<name>.tracks.csv`` (``<name>.tracks.jsonl`` with ``--format jsonl``): one row per track
(person on screen) of a tracked video.

Columns (:data:`COLUMNS`): ``face_id`` (the CSV's ``face_id``), ``first_s``/``last_s`` (first
and last time shown, seconds), ``frames`` (written frames it appears in), ``age_mean`` and
``p_male_mean`` (the track's final confidence-weighted means: its last ``age_avg``/
``p_male_avg``), ``age_std`` (spread: RMS distance of its raw per-frame ages from
``age_mean``), ``gender`` (from ``p_male_mean``), ``best_chip`` (name of its best face chip,
:func:`agender.io.sinks.chips.chip_name`; the chip itself is in the ``--export-chips`` tar).

Built from the stream of written frames (no tracker internals), so it matches the CSV. The
file is written once, atomically, on close; the running state is small and JSON, so the
sink is resumable (``begin``/``checkpoint``). In the CSV the ``best_chip`` text is made
spreadsheet-safe like the main table's text cells; the JSONL has numbers as JSON numbers and
``null`` where unknown.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from agender.faces import gender_of
from agender.io.sinks.base import Sink, write_table
from agender.io.sinks.chips import chip_name, chip_score, has_fresh_estimate
from agender.io.sinks.table import spreadsheet_safe
from agender.tracking import TrackSummary

if TYPE_CHECKING:
    from agender.faces import Faces
    from agender.io.sources import Frame

COLUMNS = ("face_id", "first_s", "last_s", "frames", "age_mean", "age_std", "gender", "p_male_mean", "best_chip")


def _num(v: float | None, nd: int) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.{nd}f}"


class TracksSink(Sink):
    resumable = True

    def __init__(self, path: str | Path, *, stem: str, format: str = "csv"):
        if format not in ("csv", "jsonl"):
            raise ValueError(f"format must be csv or jsonl, not {format!r}")
        self.path = Path(path)
        self.stem = stem
        self.format = format
        self._acc: dict[int, TrackSummary] = {}

    def write(self, frame: "Frame", faces: "Faces") -> None:
        t = float(frame.time_s)
        for i, tid in faces.tracked():
            a = self._acc.get(tid)
            if a is None:
                a = self._acc[tid] = TrackSummary(tid, frame.index, t, frame.index, t)
            a.last_frame, a.last_s = frame.index, t
            a.frames += 1
            if math.isfinite(faces.age_avg[i]):
                a.age_avg = float(faces.age_avg[i])
            if math.isfinite(faces.p_male_avg[i]):
                a.p_male_avg = float(faces.p_male_avg[i])
            a.add_raw_age(float(faces.age[i]))
            if has_fresh_estimate(faces, i):
                score = chip_score(frame.image, faces, i)
                if score > a.best_score:
                    a.best_score, a.best_chip = score, chip_name(self.stem, frame.index, t, tid)

    def rows(self) -> list[list[str]]:
        """The CSV's rows (text cells, as written)."""
        out = []
        for a in sorted(self._acc.values(), key=lambda a: a.face_id):
            p = a.p_male_avg
            out.append([str(a.face_id), f"{a.first_s:.3f}", f"{a.last_s:.3f}", str(a.frames), _num(a.age_avg, 2),
                        _num(a.age_std, 2), gender_of(p), _num(p, 4), spreadsheet_safe(a.best_chip)])
        return out

    def records(self) -> list[dict]:
        """The JSONL's objects: same fields, numbers as numbers, ``None`` where unknown."""
        def num(v: float | None, nd: int) -> float | None:
            return None if v is None or not math.isfinite(v) else round(v, nd)

        out = []
        for a in sorted(self._acc.values(), key=lambda a: a.face_id):
            p = a.p_male_avg
            out.append(dict(zip(COLUMNS, [
                a.face_id, round(a.first_s, 3), round(a.last_s, 3), a.frames, num(a.age_avg, 2), num(a.age_std, 2),
                gender_of(p) or None, num(p, 4), a.best_chip or None])))
        return out

    def close(self) -> None:
        write_table(self.path, self.format, COLUMNS, self.rows(), self.records())

    # -- resume -------------------------------------------------------------------------------
    def begin(self, state: dict | None = None) -> bool:
        self._acc = {}
        if state is not None:
            for d in state.get("tracks", []):
                self._acc[int(d["face_id"])] = TrackSummary.from_state(d)
        return True

    def checkpoint(self) -> dict:
        return {"tracks": [asdict(a) for a in self._acc.values()]}
