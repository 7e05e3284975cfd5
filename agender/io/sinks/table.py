"""Per-face table rows and the resumable partial file that CSV and JSONL sinks share.

Why a fixed partial path (``.<name>.partial`` next to the target) instead of a random temp
file: a run killed with SIGKILL must find its own half-written output on the next start.
The runner asks :meth:`PartialFileSink.checkpoint` for a state (``{"offset": …}``) at frame-group
boundaries and stores it; :meth:`PartialFileSink.begin` with that state cuts the partial back
to exactly that byte, so a resumed run appends the same rows an uninterrupted run writes.
Only :meth:`PartialFileSink.close` moves the file into place (``os.replace``), so nothing
incomplete ever carries the final name.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from agender.faces import gender_of
from agender.io.sinks.base import Sink, remove_quietly, writing

if TYPE_CHECKING:
    from agender.faces import Faces
    from agender.io.sources import Frame

# Column sets. The frame key comes first (``frame,time_s`` for video, ``file`` for images).
VIDEO_KEY = ("frame", "time_s")
IMAGE_KEY = ("file",)
FACE_COLUMNS = ("face", "x1", "y1", "x2", "y2", "det_conf", "age", "age_std", "gender", "p_male")
TRACK_COLUMNS = ("face_id", "track_conf", "age_avg", "p_male_avg", "gender_avg", "person_id")

# Decimals each float column is written with (CSV text and JSONL numbers alike): the Faces
# field of the same name, or of the box corner.
_DECIMALS = {"det_conf": 4, "age": 2, "age_std": 2, "p_male": 4, "track_conf": 4, "age_avg": 2, "p_male_avg": 4}
_BOX_DECIMALS = 1

# A text cell starting with one of these is a formula to Excel/LibreOffice/Sheets ("CSV
# injection": a file named ``=cmd|' /C calc'!A0.jpg``). OWASP's remedy, as spreadsheet-safe CSV
# writers do it: prefix such *text* cells with a single quote. Numbers are never touched (they
# are ints/floats here, not text), so -1 or -0.5 stay numbers.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """``value`` with a ``'`` in front if it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _num(v: float, nd: int) -> float | None:
    v = float(v)
    return None if not math.isfinite(v) else round(v, nd)


def _float_column(name: str, nd: int) -> Callable[["Faces", int], Any]:
    return lambda f, i: _num(getattr(f, name)[i], nd)


def _box_column(k: int) -> Callable[["Faces", int], Any]:
    return lambda f, i: _num(f.xyxy[i, k], _BOX_DECIMALS)


def _id_column(name: str) -> Callable[["Faces", int], Any]:
    return lambda f, i: int(getattr(f, name)[i]) if getattr(f, name)[i] >= 0 else None


# column -> value for face i of ``faces`` (None = unknown → empty cell / JSON null)
_FACE_VALUE: dict[str, Callable[["Faces", int], Any]] = {
    "face": lambda f, i: i,
    **{c: _box_column(k) for k, c in enumerate(("x1", "y1", "x2", "y2"))},
    "det_conf": _float_column("det_conf", _DECIMALS["det_conf"]),
    "age": _float_column("age", _DECIMALS["age"]),
    "age_std": _float_column("age_std", _DECIMALS["age_std"]),
    "gender": lambda f, i: gender_of(float(f.p_male[i])) or None,
    "p_male": _float_column("p_male", _DECIMALS["p_male"]),
    "age_label": lambda f, i: f.age_label[i] or None,
    "face_id": _id_column("track_id"),
    "track_conf": _float_column("track_conf", _DECIMALS["track_conf"]),
    "age_avg": _float_column("age_avg", _DECIMALS["age_avg"]),
    "p_male_avg": _float_column("p_male_avg", _DECIMALS["p_male_avg"]),
    "gender_avg": lambda f, i: gender_of(float(f.p_male_avg[i])) or None,
    "person_id": _id_column("person_id"),
}


def columns_for(key: str, extra: Sequence[str] = ()) -> list[str]:
    """Full column list: ``key`` is ``"frame"`` (video) or ``"file"`` (images)."""
    cols = [*(VIDEO_KEY if key == "frame" else IMAGE_KEY), *FACE_COLUMNS]
    for c in extra:
        if c not in _FACE_VALUE:
            raise ValueError(f"unknown column {c!r}")
        if c not in cols:
            cols.append(c)
    return cols


def face_rows(frame: "Frame", faces: "Faces", columns: Sequence[str]) -> list[list[Any]]:
    """One list of values per face, in ``columns`` order (None where unknown)."""
    key = {"frame": frame.index, "time_s": round(float(frame.time_s), 3), "file": frame.name}
    getters = [(_FACE_VALUE.get(c), key.get(c)) for c in columns]
    return [[g(faces, i) if g is not None else k for g, k in getters] for i in range(len(faces))]


class PartialFileSink(Sink):
    """Append-only output at ``.<name>.partial``, resumable at checkpoints, renamed on close.

    Subclasses implement :meth:`header` (bytes written once at the start) and :meth:`encode`.
    """

    resumable = True

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self._fh = None
        self.rows = 0
        self.finalize: Callable[[Path], None] | None = None  # called on the complete partial before the rename

    # -- subclass hooks ------------------------------------------------------------------
    def header(self) -> bytes:
        return b""

    def encode(self, frame: "Frame", faces: "Faces") -> bytes:
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------------
    def begin(self, state: dict | None = None) -> bool:
        """Open the partial: fresh (``state=None``) or cut back to a checkpoint's state.

        Returns False (and opens nothing) when ``state`` cannot be honoured because the
        partial is missing or shorter than the recorded offset; the runner then starts over.
        An OS error (disk full, read-only folder) is raised as an
        :class:`~agender.errors.OutputError` naming the partial file, here and below.
        """
        with writing(self.partial):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if state is not None:
                off = int(state.get("offset", -1))
                if off < 0 or not self.partial.is_file() or self.partial.stat().st_size < off:
                    return False
                self._fh = open(self.partial, "r+b")
                self._fh.truncate(off)
                self._fh.seek(off)
                self.rows = int(state.get("rows", 0))
                return True
            self._fh = open(self.partial, "wb")
            self._fh.write(self.header())
            self.rows = 0
            return True

    def write(self, frame: "Frame", faces: "Faces") -> None:
        if self._fh is None:
            self.begin(None)
        if len(faces):
            with writing(self.partial):
                self._fh.write(self.encode(frame, faces))
            self.rows += len(faces)

    def checkpoint(self) -> dict:
        """Make everything written so far durable; the state to resume exactly here."""
        if self._fh is None:
            self.begin(None)
        with writing(self.partial):
            self._fh.flush()
            os.fsync(self._fh.fileno())
            return {"offset": self._fh.tell(), "rows": self.rows}

    def close(self) -> None:
        if self._fh is None:
            self.begin(None)
        with writing(self.partial):
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            if self.finalize is not None:
                self.finalize(self.partial)
        with writing(self.path):
            os.replace(self.partial, self.path)

    def suspend(self) -> None:
        """Stop writing but keep the partial for a later resume (Ctrl-C)."""
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError:  # its buffer could not be flushed (disk full): the fd is closed anyway
                pass

    def abort(self) -> None:
        self.suspend()
        remove_quietly(self.partial)


def rewrite_person_ids(path: str | Path, fmt: str, person_of: dict[int, int]) -> None:
    """Set every row's ``person_id`` from its ``face_id`` (``person_of``; empty/null when the
    track has none) in the CSV or JSONL table at ``path``, in place (atomically)."""
    import csv
    import io
    import json

    from agender.io.sinks.base import atomic_write_text

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if fmt == "jsonl":
        out = []
        for line in text.splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if "person_id" in rec:
                fid = rec.get("face_id")
                rec["person_id"] = person_of.get(int(fid)) if fid is not None else None
            out.append(json.dumps(rec, ensure_ascii=False) + "\n")
        atomic_write_text(path, "".join(out))
        return
    lines = text.splitlines(keepends=True)
    if not lines:
        return
    header = next(csv.reader([lines[0]]))
    if "person_id" not in header or header[-1] != "person_id" or "face_id" not in header:
        return
    fi = header.index("face_id")
    buf = io.StringIO()
    buf.write(lines[0])
    for row in csv.reader(io.StringIO("".join(lines[1:]))):
        fid = row[fi]
        pid = person_of.get(int(fid)) if fid not in ("", None) else None
        row[-1] = "" if pid is None else str(pid)
        buf.write(_csv_line(row))
    atomic_write_text(path, buf.getvalue())


def _csv_line(row) -> str:
    import csv
    import io

    b = io.StringIO()
    csv.writer(b, lineterminator="\n").writerow(row)
    return b.getvalue()
