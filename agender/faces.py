"""The one result type that flows from detector to sinks.

:class:`Faces` holds every face of one frame as parallel arrays (the way
``supervision.Detections`` does), so the estimator can score them in one batch and sinks can
write them without a Python loop per attribute. Iterating yields :class:`Face` records, which
is what most callers (the GUI overlay, the CSV writer) want.

Unknown values are ``NaN`` (floats) or ``-1`` (``track_id``), never a dropped face.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Iterator

import numpy as np


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan, dtype=np.float32)


def _gender(p: float) -> str:
    if p != p:  # NaN
        return ""
    return "male" if p >= 0.5 else "female"


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
        return _gender(self.p_male)

    @property
    def gender_avg(self) -> str:
        """Gender from the track's smoothed P(male) (``""`` when not tracking)."""
        return _gender(self.p_male_avg)

    @property
    def label(self) -> str:
        """Short overlay label such as ``"F 27"`` or ``"M 41±6"`` (smoothed when tracked)."""
        from agender.annotate import face_label

        return face_label(self)


@dataclass
class Faces:
    """All faces of one frame, as parallel arrays of length N.

    ``xyxy`` is in the pixel coordinates of the full-resolution frame the faces came from.
    """

    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    det_conf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    landmarks: np.ndarray | None = None  # (N, 5, 2) or None when the detector gives none
    age: np.ndarray | None = None
    age_std: np.ndarray | None = None
    p_male: np.ndarray | None = None
    track_id: np.ndarray | None = None
    age_label: list[str] | None = None  # e.g. Levi–Hassner bucket "(25-32)"
    # Filled by the tracker (agender.tracking): per-track smoothed estimates; NaN otherwise.
    track_conf: np.ndarray | None = None
    age_avg: np.ndarray | None = None
    p_male_avg: np.ndarray | None = None
    age_std_avg: np.ndarray | None = None
    person_id: np.ndarray | None = None  # agender.reid: -1 = not identified

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.det_conf = np.asarray(self.det_conf, dtype=np.float32).reshape(n)
        if self.landmarks is not None:
            lm = np.asarray(self.landmarks, dtype=np.float32)
            # n == 0: reshape(0, -1, 2) is ambiguous for numpy, so keep the point count explicitly
            self.landmarks = lm.reshape(n, -1, 2) if n else lm.reshape(0, lm.shape[1] if lm.ndim == 3 else 0, 2)
        for name in ("age", "age_std", "p_male", "track_conf", "age_avg", "p_male_avg", "age_std_avg"):
            v = getattr(self, name)
            setattr(self, name, _nan(n) if v is None else np.asarray(v, np.float32).reshape(n))
        if self.track_id is None:
            self.track_id = np.full(n, -1, dtype=np.int64)
        else:
            self.track_id = np.asarray(self.track_id, dtype=np.int64).reshape(n)
        if self.person_id is None:
            self.person_id = np.full(n, -1, dtype=np.int64)
        else:
            self.person_id = np.asarray(self.person_id, dtype=np.int64).reshape(n)
        if self.age_label is None:
            self.age_label = [""] * n

    @classmethod
    def empty(cls) -> "Faces":
        return cls()

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> "Faces":
        """Select faces by a boolean mask, an index array or a slice (always a ``Faces``)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        idx = np.arange(len(self))[index]
        return Faces(
            xyxy=self.xyxy[idx],
            det_conf=self.det_conf[idx],
            landmarks=None if self.landmarks is None else self.landmarks[idx],
            age=self.age[idx],
            age_std=self.age_std[idx],
            p_male=self.p_male[idx],
            track_id=self.track_id[idx],
            age_label=[self.age_label[i] for i in idx],
            track_conf=self.track_conf[idx],
            age_avg=self.age_avg[idx],
            p_male_avg=self.p_male_avg[idx],
            age_std_avg=self.age_std_avg[idx],
            person_id=self.person_id[idx],
        )

    def __iter__(self) -> Iterator[Face]:
        for i in range(len(self)):
            yield Face(
                xyxy=tuple(float(v) for v in self.xyxy[i]),
                det_conf=float(self.det_conf[i]),
                landmarks=None if self.landmarks is None else self.landmarks[i],
                age=float(self.age[i]),
                age_std=float(self.age_std[i]),
                p_male=float(self.p_male[i]),
                track_id=int(self.track_id[i]),
                age_label=self.age_label[i],
                track_conf=float(self.track_conf[i]),
                age_avg=float(self.age_avg[i]),
                p_male_avg=float(self.p_male_avg[i]),
                age_std_avg=float(self.age_std_avg[i]),
                person_id=int(self.person_id[i]),
            )

    @property
    def gender(self) -> list[str]:
        return [f.gender for f in self]

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

    @staticmethod
    def concat(items: list["Faces"]) -> "Faces":
        items = [f for f in items if len(f)]
        if not items:
            return Faces()
        lm = None
        if all(f.landmarks is not None for f in items):
            lm = np.concatenate([f.landmarks for f in items])
        return Faces(
            xyxy=np.concatenate([f.xyxy for f in items]),
            det_conf=np.concatenate([f.det_conf for f in items]),
            landmarks=lm,
            age=np.concatenate([f.age for f in items]),
            age_std=np.concatenate([f.age_std for f in items]),
            p_male=np.concatenate([f.p_male for f in items]),
            track_id=np.concatenate([f.track_id for f in items]),
            age_label=sum((f.age_label for f in items), []),
            track_conf=np.concatenate([f.track_conf for f in items]),
            age_avg=np.concatenate([f.age_avg for f in items]),
            p_male_avg=np.concatenate([f.p_male_avg for f in items]),
            age_std_avg=np.concatenate([f.age_std_avg for f in items]),
            person_id=np.concatenate([f.person_id for f in items]),
        )


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


__all__ = ["Face", "Faces", "Estimates", "fields"]
