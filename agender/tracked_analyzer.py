"""The video loop with tracking: what to do with each frame, one frame at a time.

:class:`TrackingStage` is the per-frame logic, shaped as a runner *frame stage*
(``should_detect`` → detector → ``prepare`` → estimator → ``update``; see
:mod:`agender.runner`), so ``agender analyze`` can batch the estimator over several frames.
:class:`TrackedAnalyzer` drives the same stage frame by frame with an Analyzer (the GUI's
live loop, tests, benchmarks). Per frame:

1. A shot cut (:class:`~agender.shots.ShotCutDetector`) ends every track and forces a detection.
2. ``--skip-similar T``: a frame within ``T`` gray levels of the last analysed one is *skipped*:
   the last faces are carried (nothing detected or estimated).
3. Every ``detect_every``-th remaining frame is a *detect* frame (detector + ByteTrack); the
   frames between are *track* frames (boxes moved by the tracker, nothing detected).
4. Only faces that are due are estimated (new tracks, tracks whose estimate is
   ``reestimate_every`` frames old, faces that got bigger/sharper); their raw ``age``/``p_male``
   are set, the others' are NaN (not measured on this frame); every tracked face gets its
   track's running means in ``age_avg``/``p_male_avg``.

:attr:`TrackingStage.kinds` maps frame index → ``"detect"``/``"track"``/``"skip"`` for the
frames of the current batch.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from agender.faces import Faces
from agender.io.sinks.table import TRACK_COLUMNS
from agender.pipeline import FramePipeline, FrameStage
from agender.shots import ShotCutDetector, SimilarFrameFilter
from agender.tracking import Tracker

KINDS = ("detect", "track", "skip")
# Where the estimator's gender costs a second net (agender:g150's 150-px gender net), a track's
# gender is measured on its first GENDER_FIRST estimates, then once per GENDER_EVERY_S seconds of
# video or when its face is clearly clearer than when last measured (Tracker.plan_gender); the
# age on every estimate.
GENDER_FIRST = 3
GENDER_EVERY_S = 1.0


class TrackingStage(FrameStage):
    """Tracking, frame skipping and shot cuts for one video (see the module docstring).

    ``fps``: rate of the frames this stage sees; ``detect_every``: detect on every Nth of them;
    ``reestimate_every``: refresh a track's estimate at least every K frames (default
    ``detect_every``: with ``detect_every=1`` every face is estimated on every frame);
    ``skip_similar``: the ``--skip-similar`` threshold in gray levels (0 = off); ``cuts``:
    reset tracks at shot cuts; ``between``: how boxes move between detections
    (:data:`agender.tracking.BETWEEN_MODES`).

    Resumable: the runner stores :meth:`state_dict` (the JSON state of the tracker, cut
    detector and skip filter) with its resume point and hands it back to
    :meth:`load_state_dict`, so a resumed run continues the same tracks with the same ids and
    writes the same rows. OpenCV trackers cannot be saved, so with
    ``detect_every > 1`` and ``between`` an OpenCV tracker the stage says it is not
    :attr:`resumable` (the runner then redoes the input from its start); ``between="kalman"``
    or ``"hold"`` resume exactly.
    """

    name = "tracking"
    columns = TRACK_COLUMNS  # what the runner adds to the table for a tracked input

    def __init__(self, fps: float = 25.0, *, detect_every: int = 1, reestimate_every: int | None = None,
                 skip_similar: float = 0.0, cuts: bool = True, between: str = "kalman", lost_after_s: float = 1.0,
                 reid: bool = True, reid_threshold: float | None = None, privacy: bool = False, embedder=None,
                 gender_first: int = GENDER_FIRST, gender_every_s: float = GENDER_EVERY_S):
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.detect_every = max(1, int(detect_every))
        self.reestimate_every = self.detect_every if reestimate_every is None else max(1, int(reestimate_every))
        self.skip_similar = float(skip_similar)
        self.gender_first, self.gender_every_s = max(1, int(gender_first)), max(1e-3, float(gender_every_s))
        self.between = between
        self.lost_after_s = float(lost_after_s)
        self.tracker = Tracker(fps=self.fps, detect_every=self.detect_every, lost_after_s=lost_after_s, between=between)
        self.cuts = ShotCutDetector() if cuts else None
        self.similar = SimilarFrameFilter(skip_similar)
        self._since_detect: int | None = None  # frames since the last detection (None: detect next)
        self._last = Faces()
        self.kinds: dict[int, str] = {}
        self.last_kind = ""  # the kind of the last frame :meth:`should_detect` saw
        self._due: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.shot_starts: list[int] = []  # frame indices where a cut was found
        self.counts = dict.fromkeys(KINDS, 0)
        # re-identification (agender.reid): one person_id for all tracks of a person
        self.reid = None
        self.columns = TRACK_COLUMNS if reid else tuple(c for c in TRACK_COLUMNS if c != "person_id")
        if reid:
            from agender.reid import DEFAULT_THRESHOLD, ReidStage

            self.reid = ReidStage(DEFAULT_THRESHOLD if reid_threshold is None else reid_threshold,
                                  privacy=privacy, embedder=embedder)

    @property
    def resumable(self) -> bool:
        """True when a run resumed from :meth:`checkpoint` writes exactly the rows of an
        uninterrupted one (everything but a live OpenCV tracker can be saved)."""
        if self.reid is not None and self.reid.privacy:
            return False  # --privacy: face descriptors and crops are never written, not even to a checkpoint
        return self.detect_every == 1 or self.between not in ("kcf", "csrt", "mil")

    @property
    def detects_every_frame(self) -> bool:
        """Every frame goes to the detector (so the runner may detect ahead in its own thread)."""
        return self.detect_every == 1 and not self.similar.enabled

    @property
    def fingerprint(self) -> str:
        return (f"de={self.detect_every},re={self.reestimate_every},skip={self.skip_similar},"
                f"cuts={self.cuts is not None},between={self.between},lost={self.lost_after_s}"
                f",gender={self.gender_first}/{self.gender_every_s}s"
                + ("" if self.reid is None else
                   f",reid={self.reid.assigner.threshold},privacy={self.reid.privacy}"))

    # -- the frame-stage protocol -------------------------------------------------------------
    def should_detect(self, frame, want: bool | None = None) -> bool:
        """Decide this frame's kind (cut → detect; similar → skip; else detect every N).
        ``want`` (the live monitor, which schedules detection ahead in its own thread): detect
        when ``want`` is true, and on the first frame and after a cut whatever it says."""
        image = frame.image
        if self.cuts is not None and self.cuts.update(image):
            self.shot_starts.append(int(frame.index))
            self.tracker.new_shot()
            if self.reid is not None:
                self.reid.end_tracks()
            self.similar.reset()
            self._since_detect = None
            self._last = Faces()
        if self.similar.should_skip(image):
            kind = "skip"
        else:
            self.similar.mark_analysed(image)
            if want is not None:
                if want or self._since_detect is None:
                    kind, self._since_detect = "detect", 0
                else:
                    kind, self._since_detect = "track", self._since_detect + 1
            elif self._since_detect is None or self._since_detect + 1 >= self.detect_every:
                kind, self._since_detect = "detect", 0
            else:
                kind, self._since_detect = "track", self._since_detect + 1
        self.kinds[int(frame.index)] = kind
        self.last_kind = kind
        self.counts[kind] += 1
        return kind == "detect"

    def prepare(self, frame, faces: Faces | None) -> Faces:
        """Ids (detect), moved boxes (track) or the last faces (skip); faces that need no
        estimate get their track's means as placeholders so the estimator skips them."""
        image, idx = frame.image, int(frame.index)
        kind = self.kinds.get(idx) or ("detect" if faces is not None else "track")
        if kind == "detect":
            out = self.tracker.associate(image, faces if faces is not None else Faces())
        elif kind == "track":
            out = self.tracker.propagate(image)
        else:
            out = replace(self._last, det_conf=np.full(len(self._last), np.nan, np.float32))
        quality = self.tracker.qualities(image, out)
        due = self.tracker.plan_estimates(out, quality, self.reestimate_every) if kind != "skip" else np.zeros(len(out), bool)
        period = int(np.floor(float(frame.time_s) / self.gender_every_s + 1e-6))  # video time: as in any segment
        gender = self.tracker.plan_gender(out, due, quality, period, self.gender_first) if self.split_gender else due
        self._due[idx] = (due, quality, gender)
        self._last = out
        # the FrameStage contract: NaN age = estimate this face; NaN P(male) too = its gender is
        # wanted (with a SplitGender estimator, only on the faces plan_gender picks); finite
        # values are placeholders (the track's means, or -1 when it has none)
        age, p = out.age_avg.copy(), out.p_male_avg.copy()
        age[due] = np.nan
        age[~due & ~np.isfinite(age)] = -1.0
        p[gender] = np.nan
        p[~gender & ~np.isfinite(p)] = -1.0
        return replace(out, age=age, p_male=p)

    def update(self, frame, faces: Faces, detected: bool = True) -> Faces:
        """Fold the fresh estimates into the tracks; raw values of faces not estimated → NaN."""
        idx = int(frame.index)
        n = len(faces)
        due, quality, gender = self._due.pop(idx, (np.ones(n, bool), np.zeros(n, np.float32), np.ones(n, bool)))
        self.kinds.pop(idx, None)
        if len(due) != n:
            due, quality, gender = np.ones(n, bool), np.zeros(n, np.float32), np.ones(n, bool)
        # a refresh estimate's P(male) (the age net's own, where the gender net was not asked) is
        # shown in the row but not folded into the track's gender
        out = self.tracker.absorb(faces, due, quality, idx, float(frame.time_s), gender=gender)
        if self.reid is not None and len(out):
            out = replace(out, person_id=self.reid.process(frame.image, out, quality))
        self._last = out
        return out

    # -- people (re-identification) -------------------------------------------------------------
    def person_map(self) -> dict[int, int]:
        """face_id → person_id at the end of the run (empty without re-identification)."""
        return {} if self.reid is None else self.reid.final_map()

    def finalize_table(self, partial, fmt: str) -> None:
        """Rewrite the ``person_id`` cells of the finished per-frame table with :meth:`person_map`
        (the rows carry the provisional online ids until then)."""
        from agender.io.sinks.table import rewrite_person_ids

        if self.reid is not None:
            rewrite_person_ids(partial, fmt, self.person_map())

    # -- resume -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"tracker": self.tracker.state_dict(),
                "cuts": None if self.cuts is None else self.cuts.state_dict(),
                "similar": self.similar.state_dict(), "since_detect": self._since_detect,
                "shot_starts": list(self.shot_starts), "counts": dict(self.counts),
                "last": self._last.to_state(),
                "reid": None if self.reid is None else self.reid.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state["tracker"])
        if self.cuts is not None and state.get("cuts") is not None:
            self.cuts.load_state_dict(state["cuts"])
        self.similar.load_state_dict(state["similar"])
        self._since_detect = state["since_detect"]
        self.shot_starts = [int(v) for v in state["shot_starts"]]
        self.counts = {k: int(state["counts"].get(k, 0)) for k in KINDS}
        self._last = Faces.from_state(state["last"])
        if self.reid is not None and state.get("reid") is not None:
            self.reid.load_state_dict(state["reid"])


class TrackedAnalyzer:
    """An :class:`~agender.analyzer.Analyzer` plus a :class:`TrackingStage`, one frame at a time.

    >>> ta = TrackedAnalyzer(Analyzer(), fps=source.fps, detect_every=5)
    >>> for frame in source:
    ...     faces = ta.process(frame)      # track_id, age_avg, p_male_avg filled
    """

    def __init__(self, analyzer, fps: float = 25.0, **stage_options):
        self.analyzer = analyzer
        self.pipeline = FramePipeline(analyzer, stages=[TrackingStage(fps, **stage_options)], group_frames=1,
                                      detect_ahead=False)
        self.last_kind = ""

    @property
    def stage(self) -> TrackingStage:
        return self.pipeline.stages[0]

    @stage.setter
    def stage(self, stage: TrackingStage) -> None:
        self.pipeline.stages = [stage]

    @property
    def tracker(self) -> Tracker:
        return self.stage.tracker

    @property
    def shot_starts(self) -> list[int]:
        return self.stage.shot_starts

    @property
    def counts(self) -> dict[str, int]:
        return self.stage.counts

    def process(self, frame, detected: Faces | None = None, want: bool | None = None) -> Faces:
        """``frame``: an :class:`~agender.io.sources.Frame` (``index``, ``time_s``, ``image``).
        ``detected``: this frame's detections made ahead (used if the stage detects on it);
        ``want``: whether detection was scheduled for it (see :meth:`TrackingStage.should_detect`)."""
        faces = self.pipeline.process_frame(frame, detected, want)
        self.last_kind = self.stage.last_kind
        return faces

    @property
    def sync_detect_s(self) -> float:
        """Detector seconds spent inside the last :meth:`process` call (not detected ahead)."""
        return self.pipeline.sync_detect_s
