"""``<name>.csv``: one row per face per analysed frame (or per image, keyed by ``file``).

Columns: ``frame,time_s,face,x1,y1,x2,y2,det_conf,age,age_std,gender,p_male`` for video,
``file,face,…`` for images, plus any extra columns asked for (the tracker's ``face_id,…``).
Unknown values are empty cells, never a dropped row. Text cells that a spreadsheet would run as
a formula (starting with ``= + - @``, tab or CR: a file named ``=cmd|' /C calc'!A0.jpg``) get a
``'`` in front (:func:`~agender.io.sinks.table.spreadsheet_safe`); numbers are never changed.
Written to a partial file and renamed on close; resumable at checkpoints (see
:mod:`agender.io.sinks.table`).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from agender.io.sinks.table import PartialFileSink, columns_for, face_rows, spreadsheet_safe

if TYPE_CHECKING:
    from agender.faces import Faces
    from agender.io.sources import Frame


class CsvSink(PartialFileSink):
    """CSV rows per face. ``key="frame"`` for videos, ``"file"`` for image sets."""

    def __init__(self, path: str | Path, *, key: str = "frame", extra_columns: Sequence[str] = ()):
        super().__init__(path)
        self.columns = columns_for(key, extra_columns)

    def _csv(self, rows) -> bytes:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        quoted = None
        for row in rows:
            cells = ["" if v is None else spreadsheet_safe(v) for v in row]
            if any(isinstance(v, str) and "\r" in v for v in cells):
                # Python < 3.12 leaves a lone CR unquoted (it is not in the line terminator),
                # which splits the row for every reader: quote this row's text cells
                quoted = quoted or csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
                quoted.writerow(cells)
            else:
                w.writerow(cells)
        return buf.getvalue().encode("utf-8")

    def header(self) -> bytes:
        return self._csv([self.columns])

    def encode(self, frame: "Frame", faces: "Faces") -> bytes:
        return self._csv(face_rows(frame, faces, self.columns))
