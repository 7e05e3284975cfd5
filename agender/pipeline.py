"""Frames in, sinks out: detect → crop → estimate in cross-frame batches → frame stages → sinks.

Decoding runs ahead in a reader thread (:class:`~agender.io.sources.ThreadedReader`); when every
frame is to be detected, detection runs ahead in a second thread; frames are taken in small
groups and the estimator scores all faces of a group in one batch
(:meth:`~agender.analyzer.Analyzer.analyze_frames`), which keeps its batch full when frames hold
one or two faces. Groups are aligned on the count of analysed frames, so a resumed run batches
exactly as an uninterrupted one did (same batches → bit-identical numbers). What to do with
whole inputs (output files, resume) is :mod:`agender.runner`'s job.

Frame stages
------------
A **frame stage** (e.g. the tracker) subclasses :class:`FrameStage`, whose hooks all have
no-op defaults. Per frame, in frame order: ``should_detect`` → detect → ``prepare``; then,
once per group of ``group_frames`` frames, one estimator batch over the faces of the whole
group; then ``update`` for each frame in order, then the sinks. So ``should_detect`` and
``prepare`` of frame k see the ``prepare`` of frame k-1 (track association works), but
``update`` of frame k-1 may come later (estimates arrive per group). Faces returned by
``prepare`` that already carry an estimate (finite ``age`` or ``p_male``, e.g. copied from
their track) are *not* sent to the estimator: that is how a stage skips estimation of a face.
A frame with no detection and no faces from ``prepare`` gets empty ``Faces``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

from agender.faces import Faces
from agender.io.sinks.base import Sink
from agender.io.sources import Frame, ThreadedReader


@dataclass
class Clock:
    """Seconds per stage. ``decode`` is spent in the reader thread (overlapped with the rest);
    ``wait`` is how long the pipeline stood waiting for a decoded frame."""

    decode: float = 0.0
    wait: float = 0.0  # waiting for the next decoded (and, when run ahead, detected) frame
    stage: float = 0.0
    output: float = 0.0


@dataclass
class RunStats:
    frames_read: int = 0  # position reached in the source (frames decoded or skipped)
    frames_analysed: int = 0
    frames_detected: int = 0
    faces: int = 0
    wall_s: float = 0.0
    ms_per_frame: dict[str, float] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames_analysed / self.wall_s if self.wall_s > 0 else 0.0


class Progress(Protocol):
    def start(self, name: str, total: int | None) -> None: ...

    def advance(self, frames: int, faces: int) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    def start(self, name: str, total: int | None) -> None:
        pass

    def advance(self, frames: int, faces: int) -> None:
        pass

    def finish(self) -> None:
        pass


class FrameStage:
    """Per-frame logic between the detector and the sinks (the tracker is one).

    Every hook has a no-op default, so the pipeline and the runner call each one on every
    stage. A stage that can continue an interrupted run sets :attr:`resumable` and returns
    its state from :meth:`state_dict`; the runner stores it with each checkpoint and hands it
    back to :meth:`load_state_dict` on resume.
    """

    #: Part of the resume fingerprint: a run with another name or fingerprint starts over.
    name: str = "stage"
    fingerprint: str = ""
    #: True only if the stage gives the same rows when a run starts mid-video.
    resumable: bool = False
    #: Table columns the stage fills (added after ``extra_columns``; e.g. the tracker's).
    columns: tuple[str, ...] = ()
    #: Set by the pipeline before each group: True when the estimator's gender costs a second
    #: net (:class:`~agender.estimators.base.SplitGender`), so a stage may ask for a gender on
    #: only some faces (see :meth:`prepare`); such an estimator still returns a cheaper P(male)
    #: on the others, which a stage shows but need not trust as much.
    split_gender: bool = False

    @property
    def detects_every_frame(self) -> bool:
        """True when :meth:`should_detect` never says False: lets the pipeline run the
        detector ahead in its own thread."""
        return True

    def should_detect(self, frame: Frame, want: bool | None = None) -> bool:
        """False: no detector on this frame. ``want``: the caller's own schedule (the live
        monitor detects ahead when it can); None offline."""
        return True

    def prepare(self, frame: Frame, faces: Faces | None) -> Faces | None:
        """Right after detection (``None`` when not detected): the faces to estimate and
        write, e.g. with ``track_id`` set, or boxes carried forward on skipped frames.
        A face whose ``age`` is NaN is estimated; if its ``p_male`` is finite (a placeholder)
        its gender is not wanted, which a :class:`~agender.estimators.base.SplitGender`
        estimator uses to skip its gender net. Finite ages are placeholders: not estimated."""
        return faces

    def update(self, frame: Frame, faces: Faces, detected: bool) -> Faces:
        """After estimation: e.g. fill ``age_avg``/``p_male_avg``."""
        return faces

    def close(self) -> None:
        """The input ended."""

    def finalize_table(self, partial: Path, fmt: str) -> None:
        """Revise the finished per-frame table before it is moved into place (re-identification
        rewrites ``person_id``)."""

    def state_dict(self) -> dict:
        """JSON-able state to resume from (only asked of a :attr:`resumable` stage)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict`."""


class TimedSource:
    """Wraps a source so the reader thread accounts its own decode time, and runs ``prepare``
    (e.g. :meth:`FramePipeline.reader_prepare`) on each frame in that thread too."""

    def __init__(self, source, clock: Clock, prepare: Callable[[Frame], None] | None = None):
        self.source, self.clock, self.prepare = source, clock, prepare
        self.name = getattr(source, "name", "source")

    def __iter__(self) -> Iterator[Frame]:
        it = iter(self.source)
        while True:
            t0 = time.perf_counter()
            try:
                fr = next(it)
            except StopIteration:
                return
            self.clock.decode += time.perf_counter() - t0
            if self.prepare is not None:
                self.prepare(fr)
            yield fr

    def close(self) -> None:
        self.source.close()


def _whole_image(image: np.ndarray) -> Faces:
    h, w = image.shape[:2]
    return Faces(xyxy=[[0, 0, w, h]], det_conf=[np.nan])


def merge_estimates(full: Faces, idx: np.ndarray, part: Faces) -> Faces:
    """``full`` with the estimates of faces ``idx`` taken from ``part`` (the estimated subset)."""
    if not len(idx):
        return full
    age, std, pm = full.age.copy(), full.age_std.copy(), full.p_male.copy()
    labels = list(full.age_label)
    age[idx], std[idx], pm[idx] = part.age, part.age_std, part.p_male
    for j, k in enumerate(idx):
        labels[k] = part.age_label[j]
    return replace(full, age=age, age_std=std, p_male=pm, age_label=labels)


class _Detections:
    """A source of ``(frame, faces)``: runs the detector over ``frames`` so that, wrapped in a
    :class:`ThreadedReader`, detection works ahead in its own thread."""

    def __init__(self, frames: Iterable[Frame], analyzer):
        self.frames, self.analyzer = frames, analyzer
        self.name = "detect"

    def __iter__(self):
        for fr in self.frames:
            yield fr, self.analyzer.detect(fr.image, small=fr.small)

    def close(self) -> None:
        pass


class FramePipeline:
    """Frames → (detect → crop → estimate in cross-frame batches → stages) → sinks.

    With ``detect_ahead`` (the default) the detector runs in its own thread, ahead of the
    estimator, whenever every frame is to be detected (no stage, or every stage says
    ``detects_every_frame``): detector and estimator are native code that releases the GIL,
    so on a multi-core CPU they work at the same time, each with one thread (which costs less
    CPU per frame than two threads inside each). Stage methods and sinks are always called from
    the calling thread, in frame order, exactly as without it, so the rows are the same.
    """

    def __init__(self, analyzer, *, stages: Sequence[FrameStage] = (), group_frames: int = 8, no_detect: bool = False,
                 detect_ahead: bool = True):
        self.analyzer = analyzer
        self.stages: list[FrameStage] = list(stages)
        self.group_frames = max(1, int(group_frames))
        self.no_detect = no_detect
        self.detect_ahead = (detect_ahead and not no_detect and getattr(analyzer, "detector", None) is not None
                             and all(st.detects_every_frame for st in self.stages))
        self.clock = Clock()
        self.stats = RunStats()
        self._times0 = replace(analyzer.times)  # the analyzer's clock is cumulative across inputs
        self.sync_detect_s = 0.0  # detector seconds spent in the last group (not detected ahead)

    @property
    def reader_prepare(self) -> Callable[[Frame], None] | None:
        """What the reader thread should do to each frame besides decoding: with detection
        run ahead, make the detector's downscaled copy there, so the resize (≈1.5 ms on 720p)
        overlaps detection instead of lengthening the detector thread, the pipeline's longest."""
        if not self.detect_ahead:
            return None

        def prepare(fr: Frame) -> None:
            fr.small = self.analyzer.downscale(fr.image)

        return prepare

    def read(self, source, *, maxsize: int = 8, latest_only: bool = False) -> ThreadedReader:
        """``source`` decoded ahead in a reader thread that accounts its decode time in
        :attr:`clock` and, with detection run ahead, makes the detector's copy there too: the
        one way every offline caller (runner, bench, cluster worker) feeds :meth:`run`."""
        return ThreadedReader(TimedSource(source, self.clock, self.reader_prepare), maxsize=maxsize,
                              latest_only=latest_only)

    def _should_detect(self, frame: Frame, want: bool | None = None) -> bool:
        flags = [st.should_detect(frame, want) for st in self.stages]  # every stage sees every frame
        return all(flags)

    def _detect_and_prepare(self, frame: Frame, ahead: Faces | None, want: bool | None) -> tuple[bool, Faces]:
        """One frame's should_detect → detect → prepare: whether it was detected, its faces."""
        t0 = time.perf_counter()
        flag = self._should_detect(frame, want)
        self.clock.stage += time.perf_counter() - t0
        faces: Faces | None
        if not flag:
            faces = None
        elif ahead is not None:
            faces = ahead
        elif self.no_detect:
            faces = _whole_image(frame.image)
        else:
            t0 = time.perf_counter()
            faces = self.analyzer.detect(frame.image, small=frame.small)
            self.sync_detect_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        for st in self.stages:
            faces = st.prepare(frame, faces)
        self.clock.stage += time.perf_counter() - t0
        return flag, faces if faces is not None else Faces()

    def process_group(self, group: list[Frame], sinks: Sequence[Sink],
                      detected: Sequence[Faces | None] | None = None,
                      want: Sequence[bool | None] | None = None) -> list[Faces]:
        """should_detect → detect → prepare per frame; one estimator batch for the group's
        faces that carry no estimate yet; update → sinks per frame. ``detected``: detections
        made ahead (used where ``should_detect`` agrees); ``want``: per frame, the caller's
        detection schedule (see :meth:`FrameStage.should_detect`). Returns each frame's faces."""
        self.sync_detect_s = 0.0
        from agender.estimators.base import SplitGender

        split = isinstance(getattr(self.analyzer, "estimator", None), SplitGender)
        for st in self.stages:
            st.split_gender = split
        flags, dets = [], []
        for k, fr in enumerate(group):
            flag, faces = self._detect_and_prepare(fr, None if detected is None else detected[k],
                                                   None if want is None else want[k])
            flags.append(flag)
            dets.append(faces)
        # NaN age: estimate this face; NaN P(male) as well: its gender is wanted (FrameStage.prepare)
        todo = [np.flatnonzero(~np.isfinite(d.age)) for d in dets]
        wanted = {"gender": [~np.isfinite(d.p_male[i]) for d, i in zip(dets, todo)]} if split else {}
        part = self.analyzer.analyze_frames([fr.image for fr in group], detections=[d[i] for d, i in zip(dets, todo)],
                                            **wanted)
        results = [p if len(i) == len(d) else merge_estimates(d, i, p) for d, i, p in zip(dets, todo, part)]
        t0 = time.perf_counter()
        for i, fr in enumerate(group):
            for st in self.stages:
                results[i] = st.update(fr, results[i], flags[i])
        t1 = time.perf_counter()
        for fr, faces in zip(group, results):
            for s in sinks:
                s.write(fr, faces)
        t2 = time.perf_counter()
        self.clock.stage += t1 - t0
        self.clock.output += t2 - t1
        self.stats.frames_analysed += len(group)
        self.stats.frames_detected += sum(flags)
        self.stats.faces += sum(len(r) for r in results)
        self.stats.frames_read = group[-1].index + 1
        return results

    def process_frame(self, frame: Frame, detected: Faces | None = None, want: bool | None = None) -> Faces:
        """One frame through the same steps as :meth:`process_group` (a group of one, no
        sinks): what the live monitor drives frame by frame."""
        return self.process_group([frame], (), [detected], [want])[0]

    def run(self, frames: Iterable[Frame], sinks: Sequence[Sink], *,
            on_group: Callable[[Frame], None] | None = None, progress: Progress | None = None) -> RunStats:
        """Consume ``frames`` (already a reader thread's iterator, ideally) into ``sinks``.
        ``on_group(last_frame)`` runs after each group is written (the runner's checkpoint)."""
        progress = progress or NoProgress()
        t_start = time.perf_counter()
        ahead = ThreadedReader(_Detections(frames, self.analyzer), maxsize=self.group_frames) \
            if self.detect_ahead else None
        items: Iterator[tuple[Frame, Faces | None]] = iter(ahead) if ahead else ((fr, None) for fr in frames)
        try:
            group: list[Frame] = []
            found: list[Faces | None] = []
            while True:
                t0 = time.perf_counter()
                item = next(items, None)
                self.clock.wait += time.perf_counter() - t0
                if item is not None:
                    group.append(item[0])
                    found.append(item[1])
                if group and (item is None or len(group) >= self.group_frames):
                    faces_before = self.stats.faces
                    self.process_group(group, sinks, found)
                    progress.advance(len(group), self.stats.faces - faces_before)
                    if on_group is not None:
                        on_group(group[-1])
                    group, found = [], []
                if item is None:
                    break
        finally:
            if ahead is not None:
                ahead.close()
            self.stats.wall_s += time.perf_counter() - t_start
        return self.stats

    def ms_per_frame(self) -> dict[str, float]:
        """Per analysed frame, in milliseconds: the issue's six stages plus the overlap figures."""
        n = max(1, self.stats.frames_analysed)
        t, t0 = self.analyzer.times, self._times0
        ms = lambda s: round(1000.0 * s / n, 3)  # noqa: E731
        return {
            "decode": ms(self.clock.decode),
            "resize": ms(t.resize - t0.resize),
            "detect": ms(t.detect - t0.detect),
            "crop+preprocess": ms(t.crop - t0.crop),
            "estimate": ms(t.estimate - t0.estimate),
            "track": ms(self.clock.stage),
            "output": ms(self.clock.output),
            "wait_input": ms(self.clock.wait),  # the estimating thread idle, waiting for frames
        }
