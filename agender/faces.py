"""The one result type that flows from detector to sinks.

:class:`Faces` holds every face of one frame as parallel arrays (the way
``supervision.Detections`` does), so the estimator can score them in one batch and sinks can
write them without a Python loop per attribute. Iterating yields :class:`Face` records, which
is what most callers (the GUI overlay, the CSV writer) want.

Unknown values are ``NaN`` (floats) or ``-1`` (``track_id``), never a dropped face.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:
    import supervision as sv


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan, dtype=np.float32)


def gender_of(p_male: float) -> str:
    """``"male"``/``"female"`` from P(male) (the one threshold: 0.5 is male), ``""`` when
    unknown (NaN or None)."""
    if p_male is None or p_male != p_male:
        return ""
    return "male" if p_male >= 0.5 else "female"


_gender = gender_of  # the name this module used first


@dataclass(frozen=True)
class Face:
    """One face, as a plain record (a row of :class:`Faces`)."""

    xyxy: tuple[float, float, float, float]
    det_conf: float
    landmarks: np.ndarray | None  # (5, 2) in frame pixels, or None
    age: float
    age_std: float
    p_male: float
    track_id: int = -1
    age_label: str = ""
    track_conf: float = float("nan")
    age_avg: float = float("nan")  # per-track smoothed values (NaN when not tracking)
    p_male_avg: float = float("nan")
    age_std_avg: float = float("nan")  # the track's mean of the model's own age spread
    person_id: int = -1  # re-identification (agender.reid): one id for all tracks of a person

    @property
    def gender(self) -> str:
        """``"male"``/``"female"``, or ``""`` when P(male) is unknown."""
        return gender_of(self.p_male)

    @property
    def gender_avg(self) -> str:
        """Gender from the track's smoothed P(male) (``""`` when not tracking)."""
        return gender_of(self.p_male_avg)

    @property
    def label(self) -> str:
        """Short overlay label such as ``"F 27"`` or ``"M 41±6"`` (smoothed when tracked)."""
        from agender.annotate import face_label

        return face_label(self)


# What kind of per-face column a Faces field is (its ``metadata["kind"]``): the one place
# that says so. Every conversion below (normalising, indexing, rows, state, supervision) is
# derived from it, so a new column is one field here and nothing else.
FLOAT, ID, TEXT, BOXES, POINTS = "float", "id", "text", "boxes", "points"


def _column(kind: str):
    return field(default=None, metadata={"kind": kind})


@dataclass
class Faces:
    """All faces of one frame, as parallel arrays of length N.

    ``xyxy`` is in the pixel coordinates of the full-resolution frame the faces came from.
    Unknown values are NaN (``float`` columns) or -1 (``id`` columns); every field is one
    column, listed by :func:`columns`.
    """

    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32), metadata={"kind": BOXES})
    det_conf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), metadata={"kind": FLOAT})
    landmarks: np.ndarray | None = _column(POINTS)  # (N, 5, 2) or None when the detector gives none
    age: np.ndarray | None = _column(FLOAT)
    age_std: np.ndarray | None = _column(FLOAT)
    p_male: np.ndarray | None = _column(FLOAT)
    track_id: np.ndarray | None = _column(ID)
    age_label: list[str] | None = _column(TEXT)  # e.g. Levi–Hassner bucket "(25-32)"
    # Filled by the tracker (agender.tracking): per-track smoothed estimates; NaN otherwise.
    track_conf: np.ndarray | None = _column(FLOAT)
    age_avg: np.ndarray | None = _column(FLOAT)
    p_male_avg: np.ndarray | None = _column(FLOAT)
    age_std_avg: np.ndarray | None = _column(FLOAT)
    person_id: np.ndarray | None = _column(ID)  # agender.reid: -1 = not identified

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        for name, kind in _KINDS.items():
            v = getattr(self, name)
            if kind == FLOAT:
                v = _nan(n) if v is None else np.asarray(v, np.float32).reshape(n)
            elif kind == ID:
                v = np.full(n, -1, np.int64) if v is None else np.asarray(v, np.int64).reshape(n)
            elif kind == TEXT:
                v = [""] * n if v is None else v
            elif kind == POINTS and v is not None:
                lm = np.asarray(v, dtype=np.float32)
                # n == 0: reshape(0, -1, 2) is ambiguous for numpy, so keep the point count explicitly
                v = lm.reshape(n, -1, 2) if n else lm.reshape(0, lm.shape[1] if lm.ndim == 3 else 0, 2)
            setattr(self, name, v)

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> "Faces":
        """Select faces by an int, a boolean mask, an index array or a slice (always a ``Faces``)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        idx = np.arange(len(self))[index]
        out = {}
        for name, kind in _KINDS.items():
            v = getattr(self, name)
            out[name] = [v[i] for i in idx] if kind == TEXT else (None if v is None else v[idx])
        return Faces(**out)

    def __iter__(self) -> Iterator[Face]:
        for i in range(len(self)):
            yield Face(**{name: _cell(kind, getattr(self, name), i) for name, kind in _KINDS.items()})

    @property
    def gender(self) -> list[str]:
        return [gender_of(float(p)) for p in self.p_male]

    def tracked(self) -> Iterator[tuple[int, int]]:
        """``(row, track_id)`` of each face that belongs to a track, in row order: what every
        per-track accumulator (tracker, tracks and people tables) walks."""
        for i, tid in enumerate(self.track_id):
            if tid >= 0:
                yield i, int(tid)

    @property
    def area(self) -> np.ndarray:
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]

    def with_estimates(self, est: "Estimates") -> "Faces":
        """A copy carrying the estimator's outputs (same faces, same order)."""
        if len(est) != len(self):
            raise ValueError(f"{len(est)} estimates for {len(self)} faces")
        return replace(
            self,
            age=est.age,
            age_std=est.age_std,
            p_male=est.p_male,
            age_label=list(est.age_label) if est.age_label is not None else None,
        )

    # -- JSON state (resume checkpoints) ---------------------------------------------------------
    def to_state(self) -> dict:
        """Every column as JSON-able lists (NaN → None), for a checkpoint; see :meth:`from_state`."""
        out: dict = {}
        for name, kind in _KINDS.items():
            v = getattr(self, name)
            if kind == TEXT:
                out[name] = list(v)
            elif kind == ID:
                out[name] = [int(x) for x in v]
            elif v is None:
                out[name] = None
            else:
                out[name] = [None if x != x else float(x) for x in np.asarray(v, np.float64).ravel()]
        return out

    @classmethod
    def from_state(cls, state: dict) -> "Faces":
        """The faces :meth:`to_state` wrote (a column it lacks: unknown)."""
        n = len(state["xyxy"]) // 4
        out: dict = {}
        for name, kind in _KINDS.items():
            v = state.get(name)
            if v is None or kind in (TEXT, ID):
                out[name] = v
                continue
            arr = np.array([np.nan if x is None else x for x in v], np.float32)
            out[name] = arr.reshape(n, -1, 2) if kind == POINTS else arr
        return cls(**out)

    # -- supervision -------------------------------------------------------------------------------
    def to_sv(self) -> "sv.Detections":
        """These faces as a ``supervision.Detections``: boxes, ``confidence`` (det_conf),
        ``tracker_id`` (track_id, None when no face is tracked) and every other column in
        ``data``, so a round trip through :meth:`from_sv` keeps all of them, row for row,
        whatever a supervision tool reorders or filters."""
        import supervision as sv

        data = {name: np.asarray(getattr(self, name)) for name, kind in _KINDS.items()
                if kind not in (BOXES, POINTS) and name not in ("det_conf", "track_id")}
        if self.landmarks is not None:
            data["landmarks"] = self.landmarks
        tracked = bool(len(self)) and bool((self.track_id >= 0).any())
        return sv.Detections(xyxy=self.xyxy.copy(), confidence=self.det_conf.copy(),
                             class_id=np.zeros(len(self), int), tracker_id=self.track_id.copy() if tracked else None,
                             data=data)

    @classmethod
    def from_sv(cls, det: "sv.Detections") -> "Faces":
        """Faces from a ``supervision.Detections`` (e.g. :meth:`to_sv` after a tracker or a
        filter): columns found in ``data`` are kept; ``tracker_id`` becomes ``track_id``."""
        n = len(det)
        out = {name: det.data[name] for name in _KINDS if name in det.data}
        out["xyxy"] = det.xyxy
        out["det_conf"] = det.confidence if det.confidence is not None else _nan(n)
        out["track_id"] = None if det.tracker_id is None else np.asarray(det.tracker_id, np.int64).reshape(n)
        if "age_label" in out:
            out["age_label"] = [str(x) for x in out["age_label"]]
        return cls(**out)


#: field name -> column kind, in field order: the one list of Faces' columns.
_KINDS: dict[str, str] = {f.name: f.metadata["kind"] for f in fields(Faces)}


def columns() -> tuple[str, ...]:
    """The names of Faces' per-face columns, in field order."""
    return tuple(_KINDS)


def _cell(kind: str, column, i: int):
    """Face ``i``'s value of a column, as the plain Python type :class:`Face` holds."""
    if kind == BOXES:
        return tuple(float(v) for v in column[i])
    if kind == POINTS:
        return None if column is None else column[i]
    if kind == FLOAT:
        return float(column[i])
    if kind == ID:
        return int(column[i])
    return column[i]


@dataclass
class Estimates:
    """What an estimator returns for a batch of N face chips.

    ``age`` in years; ``age_std`` a spread in years where the model has a distribution
    (NaN otherwise); ``p_male`` the probability of male in 0..1 (every estimator is
    normalised to this polarity); ``age_label`` optional per-face text such as an age bucket.
    """

    age: np.ndarray
    p_male: np.ndarray
    age_std: np.ndarray | None = None
    age_label: list[str] | None = None

    def __post_init__(self) -> None:
        self.age = np.asarray(self.age, np.float32).reshape(-1)
        n = len(self.age)
        self.p_male = np.asarray(self.p_male, np.float32).reshape(n)
        self.age_std = _nan(n) if self.age_std is None else np.asarray(self.age_std, np.float32).reshape(n)

    def __len__(self) -> int:
        return len(self.age)

    @classmethod
    def empty(cls) -> "Estimates":
        return cls(age=np.zeros(0, np.float32), p_male=np.zeros(0, np.float32))


__all__ = ["Face", "Faces", "Estimates", "columns", "gender_of", "fields"]
