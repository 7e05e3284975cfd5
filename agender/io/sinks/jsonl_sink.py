"""``<name>.jsonl``: the CSV's rows as JSON objects, one per line (``null`` where unknown).

Same columns, same atomic partial-then-rename and checkpoint resume as :class:`CsvSink`; for
pipelines that would rather not parse CSV.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from agender.io.sinks.table import PartialFileSink, columns_for, face_rows

if TYPE_CHECKING:
    from agender.faces import Faces
    from agender.io.sources import Frame


class JsonlSink(PartialFileSink):
    """One JSON object per face per analysed frame (or image)."""

    def __init__(self, path: str | Path, *, key: str = "frame", extra_columns: Sequence[str] = ()):
        super().__init__(path)
        self.columns = columns_for(key, extra_columns)

    def encode(self, frame: "Frame", faces: "Faces") -> bytes:
        lines = [json.dumps(dict(zip(self.columns, row)), ensure_ascii=False) for row in face_rows(frame, faces, self.columns)]
        return ("\n".join(lines) + "\n").encode("utf-8")
