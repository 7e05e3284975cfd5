"""``<name>.people.csv`` (``.people.jsonl`` with ``--format jsonl``): one row per person.

A *person* is one or more tracks joined by re-identification (:mod:`agender.reid`); the
``person_id`` of a row is the one of the finished per-frame table. Columns (:data:`COLUMNS`):
``person_id``; ``first_s``/``last_s`` (first and last time on screen); ``on_screen_s`` (frames
shown × the analysed frame interval: two faces of one person never overlap, so this is that
person's screen time); ``tracks`` (how many tracks joined) and ``face_ids`` (them, ``;``-separated);
``age_mean`` and ``age_std`` (the confidence-weighted mean of all of that person's fresh age
estimates and their weighted spread); ``gender``, ``p_male`` (weighted mean P(male) of all the
person's faces) and ``gender_conf`` (``max(p_male, 1 − p_male)``); ``age_group``.

Weights: detector confidence × face size (short side / 160 px, ≤ 1), so a big, clear face counts
more than a small blurred one. Decided once, at the end, from all the person's faces: a counted
person never changes sides in this file.

The sidecar gets :meth:`PeopleSink.sidecar_fields`: ``people`` (count), ``people_by_group``
(age group × gender), ``on_screen_s_by_gender``, ``tracks``, ``tracks_unidentified`` (tracks
shorter than :data:`agender.reid.MIN_FRAMES` frames: no descriptor, no person) and
``reid`` (model, threshold). A person counts when seen for at least :data:`MIN_PERSON_S`.

Built from the written frames (per-track sums, JSON, checkpointed) plus the tracking stage's
final person map, so a resumed run writes the same bytes.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from agender.faces import gender_of
from agender.io.sinks.base import Sink, write_table

COLUMNS = ("person_id", "first_s", "last_s", "on_screen_s", "tracks", "face_ids", "age_mean", "age_std",
           "age_group", "gender", "p_male", "gender_conf")
AGE_GROUPS = ((0, "0-12"), (13, "13-17"), (18, "18-29"), (30, "30-44"), (45, "45-64"), (65, "65+"))
MIN_PERSON_S = 1.0


def age_group(age: float) -> str:
    if not math.isfinite(age):
        return ""
    label = AGE_GROUPS[0][1]
    for lo, name in AGE_GROUPS:
        if age >= lo:
            label = name
    return label


@dataclass
class _Track:
    first_s: float
    last_s: float
    frames: int = 0
    w: float = 0.0  # age weights
    wa: float = 0.0
    wa2: float = 0.0
    pw: float = 0.0  # p_male weights
    wp: float = 0.0


def face_weight(faces, i: int) -> float:
    x1, y1, x2, y2 = (float(v) for v in faces.xyxy[i])
    conf = float(faces.det_conf[i])
    conf = conf if math.isfinite(conf) else 1.0
    return max(conf, 0.0) * min(1.0, max(0.0, min(x2 - x1, y2 - y1)) / 160.0)


@dataclass
class Person:
    person_id: int
    face_ids: list[int]
    first_s: float
    last_s: float
    frames: int
    on_screen_s: float
    age_mean: float
    age_std: float
    p_male: float

    @property
    def gender(self) -> str:
        return gender_of(self.p_male)

    @property
    def gender_conf(self) -> float:
        return max(self.p_male, 1 - self.p_male) if math.isfinite(self.p_male) else float("nan")

    @property
    def age_group(self) -> str:
        return age_group(self.age_mean)


def people_from_tracks(tracks: dict[int, _Track], person_of: dict[int, int], frame_s: float) -> list[Person]:
    groups: dict[int, list[int]] = {}
    for fid in sorted(tracks):
        pid = person_of.get(fid)
        if pid is not None:
            groups.setdefault(pid, []).append(fid)
    out = []
    for pid in sorted(groups):
        ts = [tracks[f] for f in groups[pid]]
        w, wa, wa2 = sum(t.w for t in ts), sum(t.wa for t in ts), sum(t.wa2 for t in ts)
        pw, wp = sum(t.pw for t in ts), sum(t.wp for t in ts)
        mean = wa / w if w > 0 else float("nan")
        std = math.sqrt(max(wa2 / w - mean * mean, 0.0)) if w > 0 else float("nan")
        frames = sum(t.frames for t in ts)
        out.append(Person(pid, groups[pid], min(t.first_s for t in ts), max(t.last_s for t in ts), frames,
                          frames * frame_s, mean, std, wp / pw if pw > 0 else float("nan")))
    return out


def summarize(people: list[Person], min_s: float = MIN_PERSON_S) -> dict:
    """The sidecar's summary: counted people by age group × gender, screen time by gender."""
    counted = [p for p in people if p.on_screen_s >= min_s]
    by = {g: {"female": 0, "male": 0, "unknown": 0} for _, g in AGE_GROUPS}
    by["unknown"] = {"female": 0, "male": 0, "unknown": 0}
    secs = {"female": 0.0, "male": 0.0, "unknown": 0.0}
    for p in counted:
        g = p.gender or "unknown"
        by[p.age_group or "unknown"][g] += 1
        secs[g] += p.on_screen_s
    return {"people": len(counted), "people_min_on_screen_s": min_s,
            "people_by_group": by, "on_screen_s_by_gender": {k: round(v, 3) for k, v in secs.items()},
            "people_by_gender": {g: sum(by[a][g] for a in by) for g in ("female", "male", "unknown")}}


def _num(v: float, nd: int) -> str:
    return "" if not math.isfinite(v) else f"{v:.{nd}f}"


class PeopleSink(Sink):
    """Collects per-track sums from the written frames; on close joins them by the tracking
    stage's final person map (``person_map``: a callable → ``{face_id: person_id}``)."""

    resumable = True

    def __init__(self, path: str | Path, *, person_map, fps: float, format: str = "csv", reid_info: dict | None = None):
        if format not in ("csv", "jsonl"):
            raise ValueError(f"format must be csv or jsonl, not {format!r}")
        self.path = Path(path)
        self.format = format
        self.person_map = person_map
        self.frame_s = 1.0 / fps if fps and fps > 0 else 0.04
        self.reid_info = reid_info or {}
        self._tracks: dict[int, _Track] = {}
        self._people: list[Person] | None = None

    def write(self, frame, faces) -> None:
        t = float(frame.time_s)
        for i, fid in faces.tracked():
            a = self._tracks.get(fid)
            if a is None:
                a = self._tracks[fid] = _Track(t, t)
            a.last_s = t
            a.frames += 1
            w = face_weight(faces, i)
            age, p = float(faces.age[i]), float(faces.p_male[i])
            if math.isfinite(age) and w > 0:
                a.w += w
                a.wa += w * age
                a.wa2 += w * age * age
            if math.isfinite(p) and 0 <= p <= 1 and w > 0:
                a.pw += w
                a.wp += w * p

    def people(self) -> list[Person]:
        if self._people is None:
            self._people = people_from_tracks(self._tracks, dict(self.person_map()), self.frame_s)
        return self._people

    def rows(self) -> list[list[str]]:
        return [[str(p.person_id), f"{p.first_s:.3f}", f"{p.last_s:.3f}", f"{p.on_screen_s:.3f}", str(len(p.face_ids)),
                 ";".join(str(f) for f in p.face_ids), _num(p.age_mean, 2), _num(p.age_std, 2), p.age_group,
                 p.gender, _num(p.p_male, 4), _num(p.gender_conf, 4)] for p in self.people()]

    def records(self) -> list[dict]:
        def num(v, nd):
            return None if not math.isfinite(v) else round(v, nd)

        return [dict(zip(COLUMNS, [p.person_id, round(p.first_s, 3), round(p.last_s, 3), round(p.on_screen_s, 3),
                                   len(p.face_ids), p.face_ids, num(p.age_mean, 2), num(p.age_std, 2),
                                   p.age_group or None, p.gender or None, num(p.p_male, 4), num(p.gender_conf, 4)]))
                for p in self.people()]

    def sidecar_fields(self) -> dict:
        people = self.people()
        joined = {f for p in people for f in p.face_ids}
        out = summarize(people)
        out.update({"people_all": len(people), "tracks": len(self._tracks),
                    "tracks_unidentified": len([f for f in self._tracks if f not in joined]),
                    "reid": dict(self.reid_info)})
        return {"people_summary": out}

    def close(self) -> None:
        write_table(self.path, self.format, COLUMNS, self.rows(), self.records())

    def begin(self, state: dict | None = None) -> bool:
        self._tracks, self._people = {}, None
        if state is not None:
            for fid, d in state.get("tracks", []):
                self._tracks[int(fid)] = _Track(**d)
        return True

    def checkpoint(self) -> dict:
        return {"tracks": [[f, asdict(t)] for f, t in sorted(self._tracks.items())]}
