"""Tracking and export options → the runner's stage and sink factories.

What ``agender analyze`` plugs into :class:`agender.runner.Runner` (and a library user can
too)::

    track = TrackOptions(detect_every=5)
    exports = ExportOptions(mp4=True, ass=True)
    Runner(an, "out/", RunOptions(), stage_factories=[track.stage_factory()],
           sink_factories=track.sink_factories() + exports.sink_factories())

When tracking is on (the default for videos, streams and cameras; off for image sets and
``--no-detect``) every frame passes through :class:`~agender.tracked_analyzer.TrackingStage`,
the table gets the ``face_id,track_conf,age_avg,p_male_avg,gender_avg`` columns (the stage's
``columns``, which the runner appends for that input only) and
``<name>.tracks.csv`` is written (``<name>.tracks.jsonl`` with ``format="jsonl"``). Output
names: ``<name>.annotated.mp4``, ``<name>.ass``, ``<name>.chips.tar`` + ``<name>.chips.tsv``
(trifle/face's layout, TSV whatever the format), ``<name>.tracks.csv``/``.jsonl``, and with
re-identification (on with tracking; ``reid=False`` is ``--no-reid``) a ``person_id`` column
(appended after ``gender_avg``) and ``<name>.people.csv``/``.jsonl`` (agender.io.sinks.people).

Resume: the runner checkpoints the tracking stage's state, and the tracks file is
resumable, so a tracked run resumes where it stopped. The MP4, ASS and chips exports cannot be
appended to: an interrupted input with any of them is redone from its first frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from agender.tracking import BETWEEN_MODES

VIDEO_KINDS = ("video", "stream", "camera")


def _tracks(ctx) -> bool:
    return ctx.item.kind in VIDEO_KINDS and not ctx.options.no_detect


def _analysis_fps(ctx) -> float:
    src_fps = float(getattr(ctx.source, "fps", 0.0) or 25.0)
    want = ctx.options.fps
    return min(src_fps, float(want)) if want else src_fps


@dataclass
class TrackOptions:
    """``enabled=False`` is ``--no-track``. See :class:`~agender.tracked_analyzer.TrackingStage`."""

    enabled: bool = True
    detect_every: int = 1
    reestimate_every: int | None = None
    skip_similar: float = 0.0
    between: str = "kalman"
    cuts: bool = True
    tracks_file: bool = True
    reid: bool = True  # re-identification: person_id + <name>.people.csv (agender.reid)
    reid_threshold: float | None = None
    privacy: bool = False  # no face descriptor or crop ever leaves memory (the run is then not resumable)

    def __post_init__(self) -> None:
        if self.between not in BETWEEN_MODES:
            raise ValueError(f"between must be one of {BETWEEN_MODES}")

    def stage_factory(self) -> Callable[[Any], Any]:
        def make(ctx):
            if not (self.enabled and _tracks(ctx)):
                return None
            from agender.tracked_analyzer import TrackingStage

            return TrackingStage(_analysis_fps(ctx), detect_every=self.detect_every,
                                 reestimate_every=self.reestimate_every, skip_similar=self.skip_similar,
                                 cuts=self.cuts, between=self.between, reid=self.reid,
                                 reid_threshold=self.reid_threshold, privacy=self.privacy)

        return make

    def sink_factories(self) -> list[Callable[[Any], Any]]:
        """``<name>.tracks.csv`` (or ``.jsonl``: the table's format) and, with
        re-identification, ``<name>.people.csv``."""

        def tracks(ctx):
            if not (self.enabled and self.tracks_file and _tracks(ctx)):
                return None
            from agender.io.sinks.tracks import TracksSink

            fmt = "jsonl" if ctx.options.format == "jsonl" else "csv"
            return TracksSink(ctx.outdir / f"{ctx.item.name}.tracks.{fmt}", stem=ctx.item.name, format=fmt)

        def people(ctx):
            if not (self.enabled and self.reid and _tracks(ctx)):
                return None
            from agender.io.sinks.people import PeopleSink
            from agender.reid import FaceEmbedder

            from agender.tracked_analyzer import TrackingStage

            stage = next((st for st in ctx.stages if isinstance(st, TrackingStage)), None)
            if stage is None or stage.reid is None:
                return None
            fmt = "jsonl" if ctx.options.format == "jsonl" else "csv"
            info = {"model": FaceEmbedder.name, "threshold": stage.reid.threshold, "privacy": stage.reid.privacy}
            return PeopleSink(ctx.outdir / f"{ctx.item.name}.people.{fmt}", person_map=stage.person_map,
                              fps=_analysis_fps(ctx), format=fmt, reid_info=info)

        return [tracks, people]


@dataclass
class ExportOptions:
    mp4: bool = False
    ass: bool = False
    chips: bool = False
    mp4_codec: str = "auto"
    chips_every_s: float = 1.0

    def sink_factories(self) -> list[Callable[[Any], Any]]:
        out = []
        if self.mp4:
            out.append(self._mp4)
        if self.ass:
            out.append(self._ass)
        if self.chips:
            out.append(self._chips)
        return out

    def _mp4(self, ctx):
        if ctx.item.kind not in VIDEO_KINDS:
            return None
        from agender.io.sinks.mp4 import Mp4Sink

        o, src = ctx.options, ctx.source
        is_file = ctx.item.kind == "video"
        end_index = None
        n = getattr(src, "frame_count", None)
        if is_file and o.end_s is not None:
            end_index = int(math.ceil(o.end_s * src.fps))
            if n:
                end_index = min(end_index, n)
        return Mp4Sink(ctx.outdir / f"{ctx.item.name}.annotated.mp4", fps=src.fps,
                       source=ctx.item.spec if is_file else None, codec=self.mp4_codec, end_index=end_index,
                       fill_to_end=o.max_frames is None)

    def _ass(self, ctx):
        if ctx.item.kind not in VIDEO_KINDS:
            return None
        from agender.io.sinks.ass import AssSink

        src = ctx.source
        return AssSink(ctx.outdir / f"{ctx.item.name}.ass", fps=src.fps, width=getattr(src, "width", 0) or 0,
                       height=getattr(src, "height", 0) or 0)

    def _chips(self, ctx):
        from agender.io.sinks.chips import ChipsSink

        return ChipsSink(ctx.outdir / f"{ctx.item.name}.chips.tar", stem=ctx.item.name, every_s=self.chips_every_s,
                         per_image=ctx.item.kind == "images")
