"""Face identities across frames, and per-person smoothed estimates.

Why: a per-frame guess flickers ("M 34", "M 41", "F 29" on one face). The tracker gives every
face a ``track_id`` (the ``face_id`` column) and keeps, per track, a confidence-weighted
running mean of the estimator's age and P(male); ``age_avg``/``p_male_avg`` (and
``Face.gender_avg``) are those means, the raw per-frame values stay beside them.

Association is ByteTrack from Roboflow's ``trackers`` package (Kalman prediction + Hungarian
matching on IoU); we only own the id numbering (per :class:`Tracker`, not the library's
process-wide counter) and the smoothing. Between two detections (``--detect-every N``)
boxes move with an OpenCV tracker (KCF by default, on a ≤320-px copy) or the ByteTrack
Kalman prediction (``between="kalman"``, free), or stay put (``"hold"``).

Everything is frame by frame (the GUI calls it from a live loop); memory is bounded by the
number of tracks, not the video length. :meth:`Tracker.new_shot` ends every track (call it on
a shot cut: a face in the next shot is someone else even when the boxes overlap).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

import cv2
import numpy as np

from agender.faces import Faces, gender_of
from agender.imageops import box_iou, clip_boxes

BETWEEN_MODES = ("kcf", "csrt", "mil", "kalman", "hold")
_OCV = {"kcf": "TrackerKCF_create", "csrt": "TrackerCSRT_create", "mil": "TrackerMIL_create"}


def face_quality(image: np.ndarray, xyxy, det_conf: float = float("nan")) -> tuple[float, float]:
    """``(quality, sharpness)`` of one face box: how much to trust an estimate made on it.

    quality = detector confidence × size factor (short side / 160 px, ≤ 1) × sharpness factor
    (variance of the Laplacian on a 64×64 gray copy, s/(s+100)). Used as the weight of the
    running means, to pick the best chip of a track, and to re-estimate a track whose face
    got bigger or sharper.
    """
    x1, y1, x2, y2 = (int(round(float(v))) for v in xyxy)
    h, w = image.shape[:2]
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return 0.0, 0.0
    crop = image[y1:y2, x1:x2]
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    gray = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA)
    sharp = float(cv2.Laplacian(gray, cv2.CV_32F).var())
    conf = det_conf if det_conf == det_conf else 1.0  # NaN → 1
    size = min(x2 - x1, y2 - y1) / 160.0
    return float(max(conf, 0.0) * min(size, 1.0) * sharp / (sharp + 100.0)), sharp


@dataclass
class TrackSummary:
    """What a track amounts to: the one per-track accumulator (the tracker's summaries and
    ``<name>.tracks.csv``, which the cluster stitcher merges per segment).

    Two writers feed it, each with what it can see: the :class:`Tracker` folds in every fresh
    estimate with its quality weight (:meth:`add_estimate`: ``w_sum``/``age_wsum``/... give
    the confidence-weighted means it shows as ``age_avg``/``p_male_avg``); the tracks sink sees
    only written frames, so it records the raw ages (:meth:`add_raw_age`) and the means as
    shown (``age_avg``/``p_male_avg``), which keeps the file equal to the table.

    ``age_std`` has one definition, the one ``tracks.csv`` documents: the RMS distance of the
    track's raw fresh ages (unweighted: ``n``/``age_sum``/``age_sq``) from :attr:`age_mean`.
    The model's own per-frame spread is a different thing, :attr:`spread_mean`.
    """

    face_id: int
    first_frame: int
    first_s: float
    last_frame: int
    last_s: float
    frames: int = 0  # frames the track was shown in
    # raw fresh ages, unweighted (age_std)
    n: int = 0
    age_sum: float = 0.0
    age_sq: float = 0.0
    # the tracker's quality-weighted sums (the running means)
    estimates: int = 0  # frames with a fresh estimate
    w_sum: float = 0.0  # weights of the fresh ages
    age_wsum: float = 0.0
    p_wsum: float = 0.0
    # weights of the fresh P(male)s: fewer than the ages where the gender net runs only on some
    # of a track's estimates (Tracker.plan_gender); -1 = a checkpoint from before, when both were one
    p_w: float = -1.0
    spread_wsum: float = 0.0  # the model's own age spread (age_std), weighted like the ages
    spread_w: float = 0.0
    best_quality: float = -1.0
    best_frame: int = -1
    # the means as last shown in the table (the sink's view; None until one is shown)
    age_avg: float | None = None
    p_male_avg: float | None = None
    best_score: float = -1.0  # the sink's best chip (chip_score) and its name
    best_chip: str = ""

    @classmethod
    def from_state(cls, d: dict) -> "TrackSummary":
        """From a checkpoint's dict: unknown (retired) keys are dropped, ``None`` floats are
        NaN, and a sink checkpoint written before the classes were one (no frame numbers) loads
        with frame numbers -1."""
        known = {k: v for k, v in d.items() if k in _SUMMARY_FIELDS}
        for k, v in known.items():
            if v is None and k not in ("age_avg", "p_male_avg"):
                known[k] = float("nan")
        known.setdefault("first_frame", -1)
        known.setdefault("last_frame", -1)
        if float(known.get("p_w", -1.0)) < 0:  # every estimate had a P(male) then
            known["p_w"] = float(known.get("w_sum", 0.0))
        return cls(**known)

    def add_raw_age(self, age: float) -> None:
        """One fresh raw age, unweighted (what ``age_std`` is the spread of)."""
        if age == age:
            self.n += 1
            self.age_sum += age
            self.age_sq += age * age

    def add_estimate(self, age: float, p_male: float, weight: float, spread: float = float("nan")) -> None:
        w = max(float(weight), 1e-3)  # a blurry estimate still counts a little
        if spread == spread:
            self.spread_wsum += w * spread
            self.spread_w += w
        if age == age:
            self.age_wsum += w * age
            self.w_sum += w
        self.add_raw_age(age)
        if p_male == p_male:
            self.p_wsum += w * p_male
            self.p_w = max(self.p_w, 0.0) + w
        self.estimates += 1

    @property
    def age_mean(self) -> float:
        """The confidence-weighted mean age: computed where the weights were seen (the tracker),
        else the last one shown (the sink: the tracker's value, as the table has it)."""
        if self.w_sum > 0:
            return self.age_wsum / self.w_sum
        return float("nan") if self.age_avg is None else self.age_avg

    @property
    def age_std(self) -> float:
        """RMS distance of the raw fresh ages from :attr:`age_mean` (years); NaN without any."""
        m = self.age_mean
        if not self.n or m != m:
            return float("nan")
        return math.sqrt(max((self.age_sq - 2 * m * self.age_sum + self.n * m * m) / self.n, 0.0))

    @property
    def spread_mean(self) -> float:
        """Weighted mean of the model's per-frame age spread: the ± a steady label shows."""
        return self.spread_wsum / self.spread_w if self.spread_w > 0 else float("nan")

    @property
    def p_male_mean(self) -> float:
        if self.p_w > 0:
            return self.p_wsum / self.p_w
        return float("nan") if self.p_male_avg is None else self.p_male_avg

    @property
    def gender(self) -> str:
        return gender_of(self.p_male_mean)


_SUMMARY_FIELDS = frozenset(f.name for f in fields(TrackSummary))  # a checkpoint may hold retired ones


@dataclass
class _Live:
    """Per-track working state (not part of the summary)."""

    box: np.ndarray  # last shown box, full-res xyxy
    det_conf: float = float("nan")
    landmarks: np.ndarray | None = None  # at ``box``
    ocv: object | None = None  # OpenCV tracker, re-created at every detection
    steps_since_estimate: int = 10**9
    est_quality: float = -1.0
    genders: int = 0  # estimates with a gender measured (Tracker.plan_gender)
    gender_period: int = -1  # the plan_gender period of the last one
    gender_quality: float = -1.0  # the face quality it was measured at
    steps_since_detect: int = 0
    followed: bool = False  # box moved by the OpenCV tracker since the last detection


@dataclass
class Tracker:
    """Assigns ``track_id`` and smooths estimates. See the module docstring.

    ``fps`` is the rate of frames the tracker sees and ``detect_every`` how many of them make
    one detection (one :meth:`associate` call); together they say how many detections a lost
    track is kept for (``lost_after_s``) before its id is retired.
    """

    fps: float = 25.0
    detect_every: int = 1  # source frames per detection; scales the Kalman step between them
    lost_after_s: float = 1.0
    iou_threshold: float = 0.1
    between: str = "kalman"
    work_width: int = 320
    _next_id: int = 0
    _bt: object | None = None
    _live: dict = field(default_factory=dict)  # face_id -> _Live (visible at the last detection)
    _summary: dict = field(default_factory=dict)  # face_id -> TrackSummary (all tracks ever)

    def __post_init__(self) -> None:
        if self.between not in BETWEEN_MODES:
            raise ValueError(f"between must be one of {BETWEEN_MODES}, not {self.between!r}")
        self._bt = self._new_bytetrack()

    def _new_bytetrack(self):
        from trackers import ByteTrackTracker

        lost = max(1, math.ceil(self.lost_after_s * max(self.fps, 1e-3) / max(self.detect_every, 1)))
        # frame_rate=30 makes lost_track_buffer a plain frame count; thresholds 0: the
        # detector already applied its own confidence threshold, so every face may start a track.
        return ByteTrackTracker(lost_track_buffer=lost, frame_rate=30.0, track_activation_threshold=0.0,
                                minimum_consecutive_frames=1, minimum_iou_threshold=self.iou_threshold,
                                high_conf_det_threshold=0.0)

    # -- state -------------------------------------------------------------------------------
    def new_shot(self) -> None:
        """End every track (a shot cut); ids keep counting up."""
        self._bt = self._new_bytetrack()
        self._live.clear()

    def summaries(self) -> list[TrackSummary]:
        return sorted(self._summary.values(), key=lambda s: s.face_id)

    # -- resume checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """JSON-able state: ids, summaries, live tracks and ByteTrack's Kalman tracklets.
        OpenCV trackers cannot be saved: after :meth:`load_state_dict` a track's box is held
        (not followed) until its next detection."""
        return {
            "next_id": self._next_id,
            "summary": [{k: (_f(v) if isinstance(v, float) else v) for k, v in asdict(t).items()}
                        for t in self._summary.values()],
            "live": {str(k): {"box": v.box.tolist(), "det_conf": _f(v.det_conf),
                              "landmarks": None if v.landmarks is None else v.landmarks.tolist(),
                              "steps_since_estimate": v.steps_since_estimate, "est_quality": v.est_quality,
                              "genders": v.genders, "gender_period": v.gender_period,
                              "gender_quality": v.gender_quality, "steps_since_detect": v.steps_since_detect}
                     for k, v in self._live.items()},
            "bytetrack": [{"tracker_id": int(t.tracker_id), "state": t.state.ravel().tolist(),
                           "P": t.P.ravel().tolist(), "hits": int(t.number_of_successful_updates),
                           "since_update": int(t.time_since_update)} for t in self._bt.tracks],
        }

    def load_state_dict(self, state: dict) -> None:
        self._next_id = int(state["next_id"])
        self._summary = {}
        for d in state["summary"]:
            self._summary[int(d["face_id"])] = TrackSummary.from_state(d)
        self._live = {}
        for k, v in state["live"].items():
            lm = v["landmarks"]
            self._live[int(k)] = _Live(box=np.asarray(v["box"], np.float32), det_conf=_unf(v["det_conf"]),
                                       landmarks=None if lm is None else np.asarray(lm, np.float32),
                                       steps_since_estimate=int(v["steps_since_estimate"]),
                                       est_quality=float(v["est_quality"]),
                                       genders=int(v.get("genders", 0)),
                                       gender_period=int(v.get("gender_period", -1)),
                                       gender_quality=float(v.get("gender_quality", -1.0)),
                                       steps_since_detect=int(v["steps_since_detect"]))
        self._bt = self._restored_bytetrack(state["bytetrack"])

    def _restored_bytetrack(self, tracklets: list[dict]):
        """A ByteTrack holding ``tracklets`` (:meth:`state_dict`'s Kalman states), through the
        library's public API only: a fresh tracker spawns one tracklet per box it is shown
        (every box starts a track here), and each is then given its saved state."""
        import supervision as sv

        bt = self._new_bytetrack()
        if not tracklets:
            return bt
        boxes = np.array([d["state"][:4] for d in tracklets], np.float32).reshape(-1, 4)
        bt.update(sv.Detections(xyxy=boxes, confidence=np.ones(len(boxes), np.float32),
                                class_id=np.zeros(len(boxes), int)))
        if len(bt.tracks) != len(tracklets):
            raise ValueError(f"ByteTrack spawned {len(bt.tracks)} tracklets for {len(tracklets)} saved ones")
        for t, d in zip(bt.tracks, tracklets):
            t.state = np.asarray(d["state"], np.float32).reshape(8, 1)
            t.P = np.asarray(d["P"], np.float32).reshape(8, 8)
            t.tracker_id, t.number_of_successful_updates, t.time_since_update = d["tracker_id"], d["hits"], d["since_update"]
        return bt

    # -- detection frames --------------------------------------------------------------------
    def associate(self, image: np.ndarray, dets: Faces) -> Faces:
        """Give each detected face a track id (new tracks get new ids); returns ``dets`` with
        ``track_id`` and ``track_conf`` (IoU between the box the track predicted and the
        detection; NaN on a track's first frame)."""
        n = len(dets)
        sv_dets = dets.to_sv()
        sv_dets.confidence = np.nan_to_num(sv_dets.confidence, nan=1.0)  # a box without a score: sure
        # ByteTrack answers in its own order; the faces keep the detector's (the CSV's face column)
        sv_dets.data["row"] = np.arange(n)
        for t in self._bt.tracks:  # where a box was followed since the last detection, the
            st = self._live.get(int(t.tracker_id))  # Kalman predicts from there, not from its stale state
            if st is not None and st.followed:
                t.state[:4, 0] = st.box - t.state[4:, 0]
        pred = {id(t): (t.state[:4, 0] + t.state[4:, 0]).astype(np.float32) for t in self._bt.tracks}
        out = self._bt.update(sv_dets)
        spawned = [t for t in self._bt.tracks if t.tracker_id == -1]
        for t in spawned:
            t.tracker_id = self._take_id()
        by_id = {int(t.tracker_id): t for t in self._bt.tracks}
        ids = np.full(n, -1, np.int64)
        tconf = np.full(n, np.nan, np.float32)
        tracked = Faces.from_sv(out) if len(out) else Faces()
        rows = out.data["row"] if len(out) else np.zeros(0, int)
        for k, i in enumerate(rows):
            tid = int(tracked.track_id[k])
            box = dets.xyxy[i]
            if tid < 0:  # spawned this frame: its state is exactly the detection box
                match = [t for t in spawned if np.allclose(t.state[:4, 0], box, atol=1e-3)]
                tid = int(match[0].tracker_id) if match else -1
            elif id(by_id.get(tid)) in pred:
                tconf[i] = box_iou(pred[id(by_id[tid])], box)
            ids[i] = tid
        faces = replace(dets, track_id=ids, track_conf=tconf)
        self._refresh_live(image, faces)
        return faces

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _refresh_live(self, image: np.ndarray, faces: Faces) -> None:
        live = {}
        # OpenCV trackers only matter when frames go by without detection; with detection on
        # every frame their init (≈0.5 ms a face) would be pure waste.
        follow = self.between in _OCV and self.detect_every > 1 and len(faces)
        small, scale = self._work_copy(image) if follow else (None, 1.0)
        for i, tid in enumerate(faces.track_id):
            if tid < 0:
                continue
            old = self._live.get(int(tid))
            st = old if old is not None else _Live(box=faces.xyxy[i].copy())
            st.box = faces.xyxy[i].copy()
            st.det_conf = float(faces.det_conf[i])
            st.landmarks = None if faces.landmarks is None else faces.landmarks[i].copy()
            st.steps_since_detect, st.followed = 0, False
            st.ocv = None if small is None else self._start_ocv(small, scale, st.box)
            live[int(tid)] = st
        self._live = live

    def _work_copy(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The ≤ ``work_width`` copy the OpenCV trackers run on (they cost ∝ pixels)."""
        h, w = image.shape[:2]
        s = min(1.0, self.work_width / float(max(w, 1)))
        if s == 1.0:
            return image, 1.0
        return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s

    def _start_ocv(self, small: np.ndarray, s: float, box: np.ndarray):
        h, w = small.shape[:2]
        x1, y1, x2, y2 = (box * s).tolist()
        x1, y1 = max(0.0, x1), max(0.0, y1)
        bw, bh = min(x2, w) - x1, min(y2, h) - y1
        if bw < 8 or bh < 8:  # too small to follow: the box is held until the next detection
            return None
        try:
            tr = getattr(cv2, _OCV[self.between])()
            tr.init(small, (int(x1), int(y1), int(bw), int(bh)))
        except cv2.error:
            return None
        return tr

    # -- frames between detections ------------------------------------------------------------
    def propagate(self, image: np.ndarray) -> Faces:
        """Faces of the tracks seen at the last detection, boxes moved to this frame.
        ``det_conf`` is NaN (nothing was detected); ``track_conf`` is 1 where the OpenCV
        tracker followed the face, 0 where it lost it (box held), 0.5 for Kalman/hold."""
        if not self._live:
            return Faces()
        ids = sorted(self._live)
        boxes, tconf, lms = [], [], []
        small, scale = None, 1.0
        bt = {int(t.tracker_id): t for t in self._bt.tracks}
        for tid in ids:
            st = self._live[tid]
            st.steps_since_detect += 1
            new, c = st.box, 0.5
            if st.ocv is not None:
                if small is None:
                    small, scale = self._work_copy(image)
                try:
                    ok, b = st.ocv.update(small)
                except cv2.error:
                    ok, b = False, None
                if ok:
                    x, y, bw, bh = (v / scale for v in b)
                    new, c = np.array([x, y, x + bw, y + bh], np.float32), 1.0
                    st.followed = True
                else:
                    c = 0.0
            elif self.between == "kalman" and tid in bt:
                t = bt[tid]
                new = (t.state[:4, 0] + t.state[4:, 0] * min(st.steps_since_detect / max(self.detect_every, 1), 1.0)).astype(np.float32)
            new = clip_boxes(new, image.shape)[0]
            if st.landmarks is not None:
                st.landmarks = _move_points(st.landmarks, st.box, new)
            st.box = new
            boxes.append(new)
            tconf.append(c)
            lms.append(st.landmarks)
        landmarks = np.stack(lms) if all(l is not None for l in lms) else None
        n = len(ids)
        return Faces(xyxy=np.stack(boxes), det_conf=np.full(n, np.nan, np.float32), landmarks=landmarks,
                     track_id=np.array(ids, np.int64), track_conf=np.array(tconf, np.float32))

    # -- estimates ----------------------------------------------------------------------------
    def qualities(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """:func:`face_quality` of each face (a propagated face uses its track's last
        detector confidence)."""
        q = np.zeros(len(faces), np.float32)
        for i, tid in enumerate(faces.track_id):
            conf = float(faces.det_conf[i])
            st = self._live.get(int(tid))
            if conf != conf and st is not None:
                conf = st.det_conf
            q[i] = face_quality(image, faces.xyxy[i], conf)[0]
        return q

    def plan_estimates(self, faces: Faces, quality: np.ndarray, every: int = 1, better: float = 1.3) -> np.ndarray:
        """Which faces to (re-)estimate now: untracked faces, new tracks, tracks whose last
        estimate is ``every`` tracker steps old, and tracks whose face quality (size ×
        sharpness × confidence, :meth:`qualities`) rose by ``better``× since their last
        estimate. Call once per frame: it books the chosen faces as estimated (so a caller
        that batches estimation over several frames plans the next frame correctly)."""
        due = np.ones(len(faces), bool)
        for i, tid in enumerate(faces.track_id):
            st = self._live.get(int(tid))
            if tid < 0 or st is None:
                continue
            if st.est_quality >= 0 and st.steps_since_estimate + 1 < max(1, every):
                due[i] = quality[i] >= better * st.est_quality and quality[i] > 0
            if due[i]:
                st.steps_since_estimate, st.est_quality = 0, float(quality[i])
            else:
                st.steps_since_estimate += 1
        return due

    def plan_gender(self, faces: Faces, due: np.ndarray, quality: np.ndarray, period: int, first: int = 3,
                    better: float = 1.3) -> np.ndarray:
        """Which of the ``due`` faces need a gender measured now, for an estimator whose gender
        costs a second net (:class:`~agender.estimators.base.SplitGender`): a person's gender
        does not change within a track, so after a track's ``first`` estimates it is measured
        once per ``period`` (the caller's clock: the frame's time in whole seconds, say; the
        first estimate of a period it has not been measured in) or when the face is ``better``×
        the quality it was last measured at. Untracked faces always. Periods are absolute, not
        counted from the track's start, so a tracker started mid-video (a cluster segment's)
        measures the same frames as one that saw the whole video once it has seen one period.
        Call right after :meth:`plan_estimates` (it books the chosen faces)."""
        want = np.asarray(due, bool).copy()
        period = int(period)
        for i, tid in enumerate(faces.track_id):
            st = self._live.get(int(tid))
            if tid < 0 or st is None or not want[i]:
                continue
            q = float(quality[i])
            want[i] = (st.genders < first or period != st.gender_period
                       or (q > 0 and q >= better * st.gender_quality))
            if want[i]:
                st.genders += 1
                st.gender_period, st.gender_quality = period, q
        return want

    def absorb(self, faces: Faces, estimated: np.ndarray, quality: np.ndarray, index: int, time_s: float,
               gender: np.ndarray | None = None) -> Faces:
        """Fold this frame's fresh estimates (rows where ``estimated``; raw values elsewhere
        are set to NaN) into the running means; returns ``faces`` with ``age_avg``,
        ``p_male_avg`` filled for tracked faces. ``gender``: the estimated rows whose P(male)
        counts for the track's gender (default: all; :meth:`plan_gender`'s picks for an
        estimator whose other P(male)s come from a weaker net — kept raw in the row)."""
        estimated = np.asarray(estimated, bool).reshape(len(faces))
        fold_p = estimated if gender is None else estimated & np.asarray(gender, bool).reshape(len(faces))
        age, p, std = faces.age.copy(), faces.p_male.copy(), faces.age_std.copy()
        age[~estimated] = np.nan
        p[~estimated] = np.nan
        std[~estimated] = np.nan
        age_avg = np.full(len(faces), np.nan, np.float32)
        p_avg = np.full(len(faces), np.nan, np.float32)
        std_avg = np.full(len(faces), np.nan, np.float32)
        for i, tid in faces.tracked():
            s = self._summary.get(tid)
            if s is None:
                s = self._summary[tid] = TrackSummary(tid, index, time_s, index, time_s)
            s.last_frame, s.last_s = index, time_s
            s.frames += 1
            q = float(quality[i])
            if estimated[i]:
                s.add_estimate(float(age[i]), float(p[i]) if fold_p[i] else float("nan"), q, float(std[i]))
            if q > s.best_quality:
                s.best_quality, s.best_frame = q, index
            age_avg[i], p_avg[i], std_avg[i] = s.age_mean, s.p_male_mean, s.spread_mean
        return replace(faces, age=age, p_male=p, age_std=std, age_avg=age_avg, p_male_avg=p_avg,
                       age_std_avg=std_avg)


def _move_points(pts: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Map points from box ``old`` to box ``new`` (scale + translation)."""
    ow, oh = max(old[2] - old[0], 1e-3), max(old[3] - old[1], 1e-3)
    sx, sy = (new[2] - new[0]) / ow, (new[3] - new[1]) / oh
    out = pts.copy()
    out[:, 0] = new[0] + (pts[:, 0] - old[0]) * sx
    out[:, 1] = new[1] + (pts[:, 1] - old[1]) * sy
    return out


def _f(v: float) -> float | None:
    return None if v != v else float(v)


def _unf(v) -> float:
    return float("nan") if v is None else float(v)
