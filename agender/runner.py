"""Offline analysis of inputs into output files: what ``agender analyze`` and ``agender bench`` run.

Two layers, both library-usable (no argparse here):

* :class:`~agender.pipeline.FramePipeline` — frames in, sinks out (decode and detect ahead in
  their own threads, one estimator batch per group of frames, frame stages such as a tracker).
* :class:`Runner` — one input (:class:`~agender.inputs.InputItem`) → ``OUTDIR/<name>.csv``
  (or ``.jsonl``) + ``OUTDIR/<name>.json`` sidecar, with resume:

  - one run per output at a time: an OS lock on ``OUTDIR/.<name>.lock`` (:mod:`agender.io.outlock`)
    is held while an input is looked at, resumed or written; a second run into the same folder
    refuses that input in one line (the lock dies with its process: ``kill -9`` leaves no stale lock);
  - *finished* inputs are skipped only when the sidecar says ``"complete": true``, every output
    asked for is there, and its ``fingerprint`` (the input's identity — path, size, mtime, a hash
    of its first MiB — plus every setting that changes the rows) is this run's. Same settings
    but a missing export (``--export-mp4`` added): the input is redone. Another input with the
    same name, or other settings: refused in one line naming ``overwrite`` (nothing replaced);
  - while running, after a group and at most every ``checkpoint_s`` seconds, every sink makes
    its data durable and returns a state; the states, the next frame index and the counters go
    atomically into ``OUTDIR/.<name>.resume.json``;
  - a new run (same fingerprint) hands each sink its state back (the CSV cuts its partial file
    to that byte) and the source starts at that frame; a run with other settings, an input
    that changed (replaced, edited: its identity differs), or ``overwrite``, starts over.
  - on failure (a bad frame, a full disk, a read-only folder) the partial outputs are deleted
    and the error is returned as one line naming the file and the problem; on Ctrl-C the
    checkpoint is kept for the next run (a camera is finished normally instead).

Extension points (how tracking and export sinks plug in)
--------------------------------------------------------
``Runner(..., stage_factories=[f], sink_factories=[g])``: each factory is called once per
input with a :class:`JobContext` (the item, the opened source with its fps/size, the output
folder, the options, and for sink factories the input's stages) and returns an object or
``None`` (not for this input).

Both are contracts, not duck typing: a frame stage (the tracker) subclasses
:class:`~agender.pipeline.FrameStage`, an extra sink (MP4/ASS/chips export,
``<name>.tracks.csv``) subclasses :class:`~agender.io.sinks.base.Sink`; every hook has a no-op
default and the runner calls each of them, never probing. Its :attr:`~agender.io.sinks.base.Sink.paths`
are listed in the sidecar. For resume a sink sets ``resumable`` and implements ``begin(state)``
and ``checkpoint()`` (see :class:`~agender.io.sinks.table.PartialFileSink`); a stage sets
``resumable`` and implements ``state_dict()``/``load_state_dict()``, which the runner stores in
the checkpoint itself. An input with any non-resumable sink or stage restarts from frame 0
instead of resuming.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Iterator, Sequence

from agender import __version__
from agender.errors import AgenderError, OutputBusy, OutputError, SourceError, one_line
from agender.inputs import InputItem
from agender.io.outlock import OutputLock
from agender.io.sinks.base import remove_quietly
from agender.io.sinks.csv_sink import CsvSink
from agender.io.sinks.jsonl_sink import JsonlSink
from agender.io.sinks.sidecar import read_sidecar, write_sidecar
from agender.io.sources import CameraSource, Frame, ImageSource, ThreadedReader, VideoSource, parse_camera
from agender.io.sinks.base import Sink
from agender.pipeline import FramePipeline, FrameStage, NoProgress, Progress, RunStats

log = logging.getLogger("agender.runner")

FORMATS = {"csv": CsvSink, "jsonl": JsonlSink}


# ------------------------------------------------------------------------------------------
# options, stats, hooks
# ------------------------------------------------------------------------------------------
@dataclass
class RunOptions:
    """Everything about *how* to run that is not the models (those live in the Analyzer)."""

    fps: float | None = None  # analyse this many frames per second of video time (None = all)
    max_frames: int | None = None  # analyse at most this many frames per input
    start_s: float = 0.0
    end_s: float | None = None
    no_detect: bool = False  # each image/frame is one already-cropped face
    format: str = "csv"  # csv | jsonl
    overwrite: bool = False
    group_frames: int = 8  # frames per estimator batch
    timeout_s: float = 10.0  # network open/read timeout
    checkpoint_s: float = 1.0  # at most one resume checkpoint per this many seconds
    queue_frames: int = 8  # decode-ahead depth (frames in memory: this + 2 groups)
    extra_columns: tuple[str, ...] = ()


@dataclass
class InputResult:
    item: InputItem
    status: str  # done | skipped | failed
    error: str = ""
    outputs: list[Path] = field(default_factory=list)
    stats: RunStats | None = None
    resumed_from: int | None = None
    failed_files: list[tuple[str, str]] = field(default_factory=list)  # images that could not be read


@dataclass
class JobContext:
    """What stage and sink factories get for one input. ``stages``: this input's frame
    stages, filled in before the sink factories run (a sink may report on a stage, as the
    people table does on the tracker's re-identification)."""

    item: InputItem
    source: Any  # VideoSource | ImageSource | CameraSource (fps, frame_count, width, height)
    outdir: Path
    options: RunOptions
    stages: list[FrameStage] = field(default_factory=list)


StageFactory = Callable[[JobContext], "FrameStage | None"]
SinkFactory = Callable[[JobContext], "Sink | None"]


# ------------------------------------------------------------------------------------------
# inputs → files, with resume
# ------------------------------------------------------------------------------------------
def _expected_frames(source, opts: RunOptions, start_index: int) -> int | None:
    n = getattr(source, "frame_count", None)
    if not n:
        return opts.max_frames
    fps = getattr(source, "fps", 0.0) or 0.0
    first, last = 0, n
    if fps > 0:
        first = int(round(opts.start_s * fps))
        if opts.end_s is not None:
            last = min(n, int(math.ceil(opts.end_s * fps)))
    first = max(first, start_index)
    count = max(0, last - first)
    if fps > 0 and opts.fps and opts.fps < fps:
        count = int(math.ceil(count * opts.fps / fps))
    if opts.max_frames is not None:
        count = min(count, opts.max_frames)
    return count


HEAD_BYTES = 1 << 20  # an input's identity hashes its first MiB (images: first 64 KiB each)


def _file_identity(path: Path, head: int) -> dict[str, Any]:
    try:
        st = path.stat()
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read(head)).hexdigest()[:16]
    except OSError:
        return {"path": str(path)}  # opening the input says what is wrong
    return {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha256": digest}


def input_identity(item: InputItem) -> dict[str, Any]:
    """What says "this is the same input": for a local video its real path, size, mtime and
    a hash of its first MiB; for an image set the same for each image; for URLs and cameras
    the spec (their content cannot be checked without reading it)."""
    if item.kind == "images":  # one hash over all of them: the checkpoint stays small
        ids = json.dumps([_file_identity(Path(p), 1 << 16) for p in item.paths], sort_keys=True)
        return {"images": len(item.paths), "sha256": hashlib.sha256(ids.encode()).hexdigest()[:16]}
    if item.kind == "video" and Path(item.spec).exists():
        return _file_identity(Path(item.spec), HEAD_BYTES)
    return {"path": item.spec}


def _short(v: Any) -> str:
    text = "none" if v is None else (v if isinstance(v, str) else json.dumps(v, default=str))
    return text if len(text) <= 40 else text[:37] + "..."


def describe_changes(old: dict | None, new: dict) -> list[str]:
    """What differs between two fingerprint descriptions, as short ``key old → new`` texts."""
    if not isinstance(old, dict):
        return ["settings unknown (written by an older agender)"]
    out = []
    for part in new:
        a, b = old.get(part), new.get(part)
        if a == b:
            continue
        if part == "input":
            out.append("input")
        elif part == "stages" and isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if k not in a or k not in b:
                    out.append(f"{k} {'on → off' if k in a else 'off → on'}")
                elif a[k] != b[k]:
                    out.append(f"{k} {_short(a[k])} → {_short(b[k])}")
        elif isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k} {_short(a.get(k))} → {_short(b.get(k))}"
                    for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(f"{part} {_short(a)} → {_short(b)}")
    return out


def _input_change(old: dict | None, new: dict, spec: str) -> str:
    """Why the ``input`` part of two descriptions differs, in words."""
    a, b = (old or {}).get("input") or {}, new.get("input") or {}
    if "images" in b:
        return "another set of images (or images changed since)"
    if a.get("path") != b.get("path"):
        return f"another input ({a.get('path')})"
    return f"an earlier version of {spec} (its size, time or first MiB changed)"


def remove_stale_temps(paths: Iterable[Path]) -> None:
    """Delete the temp files a killed run left beside ``paths`` (``atomic_write_bytes`` names them
    ``.<name>.XXXXXXXX.tmp``). Only under this input's lock: they are nobody else's."""
    for p in paths:
        pat = re.compile(rf"\.{re.escape(p.name)}\.[a-z0-9_]{{8}}\.tmp")
        try:
            stale = [q for q in p.parent.glob(f".{glob.escape(p.name)}.*.tmp") if pat.fullmatch(q.name)]
        except OSError:
            continue
        for q in stale:
            remove_quietly(q)


@dataclass
class _Job:
    """One opened input on its way through :meth:`Runner._run_opened`: what it runs and where
    it resumes from."""

    item: InputItem
    source: Any
    stages: list[FrameStage]
    sinks: list[Sink]
    ckpt_path: Path
    failed_files: list[tuple[str, str]]
    desc: dict[str, Any]
    fp: str = ""
    resumed: bool = False
    start_index: int = 0
    base: RunStats = field(default_factory=RunStats)  # counters of the interrupted run(s)

    @property
    def can_resume(self) -> bool:
        """Every sink and stage can continue mid-input (a live source never resumes)."""
        return (not self.item.is_live and all(s.resumable for s in self.sinks)
                and all(st.resumable for st in self.stages))

    def resume_from(self, ck: dict, o: RunOptions) -> None:
        """Start the source where checkpoint ``ck`` stopped and carry its counters on."""
        self.resumed = True
        self.start_index = int(ck["next_index"])
        self.base = RunStats(frames_read=int(ck["frames_read"]), frames_analysed=int(ck["frames_analysed"]),
                             frames_detected=int(ck.get("frames_detected", 0)), faces=int(ck["faces"]),
                             wall_s=float(ck.get("wall_s", 0.0)))
        self.failed_files[:0] = [tuple(x) for x in ck.get("failed_files", [])]
        self.source.skip_to = self.start_index
        if o.max_frames is not None and hasattr(self.source, "max_frames"):
            self.source.max_frames = max(0, o.max_frames - self.base.frames_analysed)
        log.info("%s: resuming at frame %d (%d frames already analysed)", self.item.spec, self.start_index,
                 self.base.frames_analysed)


class _CheckpointWriter:
    """``on_group`` of a resumable run: at most every ``every_s`` seconds, every sink makes
    its data durable and every stage hands over its state; they go atomically, with the next
    frame index and the counters, into the input's ``.resume.json``."""

    def __init__(self, job: _Job, pipe: FramePipeline, every_s: float):
        self.job, self.pipe, self.every_s = job, pipe, every_s
        self.t_start = time.perf_counter()
        self.last = time.monotonic()

    def __call__(self, last: Frame) -> None:
        job = self.job
        if not job.can_resume or time.monotonic() - self.last < self.every_s:
            return
        st, base = self.pipe.stats, job.base
        write_sidecar(job.ckpt_path, {
            "fingerprint": job.fp, "run": job.desc, "input": job.item.spec, "next_index": last.index + 1,
            "frames_read": st.frames_read, "frames_analysed": base.frames_analysed + st.frames_analysed,
            "frames_detected": base.frames_detected + st.frames_detected, "faces": base.faces + st.faces,
            "wall_s": base.wall_s + (time.perf_counter() - self.t_start),
            "failed_files": job.failed_files, "sinks": [s.checkpoint() for s in job.sinks],
            "stages": [stage.state_dict() for stage in job.stages],
        })
        self.last = time.monotonic()


class Runner:
    """Analyse inputs into ``outdir``, resuming where an earlier run stopped.

    >>> runner = Runner(Analyzer(), "out/", RunOptions(fps=5))
    >>> results = runner.run(expand_inputs(["clips/"]))

    ``analyzer`` may also be a zero-argument callable that builds one: it is then called when
    the first input has opened, so a batch of bad paths fails fast without loading models.
    """

    def __init__(self, analyzer, outdir: str | Path, options: RunOptions | None = None, *,
                 stage_factories: Sequence[StageFactory] = (), sink_factories: Sequence[SinkFactory] = (),
                 progress: Progress | None = None):
        self._analyzer = analyzer
        self.outdir = Path(outdir)
        self.options = options or RunOptions()
        if self.options.format not in FORMATS:
            raise AgenderError(f"unknown format {self.options.format!r}; choose one of: {', '.join(FORMATS)}")
        self.stage_factories = list(stage_factories)
        self.sink_factories = list(sink_factories)
        self.progress = progress or NoProgress()

    @property
    def analyzer(self):
        if callable(self._analyzer) and not hasattr(self._analyzer, "analyze_frames"):
            self._analyzer = self._analyzer()
        return self._analyzer

    # -- paths ---------------------------------------------------------------------------
    def table_path(self, item: InputItem) -> Path:
        return self.outdir / f"{item.name}.{self.options.format}"

    def sidecar_path(self, item: InputItem) -> Path:
        return self.outdir / f"{item.name}.json"

    def checkpoint_path(self, item: InputItem) -> Path:
        return self.outdir / f".{item.name}.resume.json"

    def lock_path(self, item: InputItem) -> Path:
        return self.outdir / f".{item.name}.lock"

    def is_done(self, item: InputItem) -> bool:
        """The sidecar says finished and the table is there (whatever settings made it; the
        runner itself also checks the fingerprint, see :meth:`run_input`)."""
        rec = read_sidecar(self.sidecar_path(item))
        return bool(rec and rec.get("complete") and self.table_path(item).is_file())

    # -- settings fingerprint ------------------------------------------------------------
    def describe_run(self, item: InputItem, stages: Sequence[FrameStage]) -> dict[str, Any]:
        """Everything that changes the rows of ``item``, JSON-able: the input's identity
        (:func:`input_identity`), models, run options, frame stages, agender's version."""
        o = self.options
        models = dict(self.analyzer.describe())
        models.pop("device", None)
        models["conf"], models["batch_size"] = self.analyzer.conf, self.analyzer.batch_size
        return json.loads(json.dumps({
            "input": input_identity(item),
            "models": models,
            "options": {k: getattr(o, k) for k in ("fps", "max_frames", "start_s", "end_s", "no_detect", "format",
                                                  "group_frames", "extra_columns")
                        # an image set has no time and no frame limit: those options do not change it
                        if not (item.kind == "images" and k in ("fps", "max_frames", "start_s", "end_s"))},
            "stages": {s.name: s.fingerprint for s in stages},
            "version": __version__,
        }, default=str))

    def fingerprint(self, item: InputItem, stages: Sequence[FrameStage], desc: dict | None = None) -> str:
        desc = self.describe_run(item, stages) if desc is None else desc
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]

    # -- sources -------------------------------------------------------------------------
    def open_source(self, item: InputItem, on_image_error: Callable[[Path, SourceError], None]):
        o = self.options
        if item.kind == "images":
            return ImageSource(item.paths, name=item.name, on_error=on_image_error)
        if item.kind == "camera":
            return CameraSource(parse_camera(item.spec))
        return VideoSource(item.spec, start_s=o.start_s, end_s=o.end_s, rate=o.fps, max_frames=o.max_frames,
                           open_timeout_s=o.timeout_s, check_length=not item.is_live)

    # -- the batch -----------------------------------------------------------------------
    def run(self, items: Sequence[InputItem]) -> list[InputResult]:
        """Every input in turn; one failing never stops the others."""
        return [self.run_input(it) for it in items]

    def run_input(self, item: InputItem) -> InputResult:
        if item.kind == "error":
            return InputResult(item, "failed", item.error)
        lock = OutputLock(self.lock_path(item), output=self.table_path(item))
        cannot_write = ""
        try:
            lock.acquire()
        except OutputBusy as exc:
            return InputResult(item, "failed", f"{item.spec}: {exc}")
        except OSError as exc:  # a read-only folder: a finished input can still be skipped
            cannot_write = f"{item.spec}: {OutputError(exc.filename or self.lock_path(item), exc)}"
        try:
            return self._run_locked(item, cannot_write)
        finally:
            lock.release()

    def _run_stages_and_sinks(self, ctx: JobContext, key: str) -> tuple[list[FrameStage], list[Sink]]:
        """This input's stages (made first: sink factories see them in ``ctx.stages``), then the
        table sink and the extra sinks."""
        ctx.stages = [s for s in (f(ctx) for f in self.stage_factories) if s is not None]
        extra_sinks = [s for s in (f(ctx) for f in self.sink_factories) if s is not None]
        o, stages = self.options, ctx.stages
        columns = list(o.extra_columns)  # + the columns this input's stages fill (the tracker's, on videos)
        columns += [c for st in stages for c in st.columns if c not in columns]
        table_sink = FORMATS[o.format](self.table_path(ctx.item), key=key, extra_columns=columns)
        if stages:  # a stage may revise a column at the end (re-identification's person_id)
            table_sink.finalize = lambda path, fmt=o.format: [st.finalize_table(path, fmt) for st in stages]
        return stages, [table_sink, *extra_sinks]

    def _finished(self, item: InputItem, rec: dict) -> tuple[str, str]:
        """Is the finished run ``rec`` (a complete sidecar) what this run would write?

        ``("skip", "")``: same input, same settings, every output there. ``("redo", why)``:
        same rows but an output is missing (an export added): run the input again.
        ``("refuse", line)``: another input or other settings; replacing it needs ``overwrite``.
        """
        # the sinks and stages this run would make, for their paths and fingerprints only
        # (the source is not opened: a finished URL is skipped offline too)
        video = rec.get("video") or {}
        src = SimpleNamespace(fps=video.get("fps") or 0.0, frame_count=video.get("frame_count"),
                              width=video.get("width") or 0, height=video.get("height") or 0)
        ctx = JobContext(item=item, source=src, outdir=self.outdir, options=self.options)
        stages, sinks = self._run_stages_and_sinks(ctx, "file" if item.kind == "images" else "frame")
        desc = self.describe_run(item, stages)
        table = self.table_path(item)
        if rec.get("fingerprint") != self.fingerprint(item, stages, desc):
            old = rec.get("run")
            if not isinstance(old, dict):
                what = "was made by an older agender (its settings are not recorded)"
            elif old.get("input") != desc["input"]:
                what = f"was made from {_input_change(old, desc, item.spec)}"
            else:
                what = f"was made with other settings ({'; '.join(describe_changes(old, desc)[:4])})"
            return "refuse", f"{item.spec}: {table} {what}; not replaced: use --overwrite to redo it"
        wanted = [p for s in sinks for p in s.paths]
        listed = set(rec.get("outputs") or [])
        missing = [p.name for p in wanted if p.name not in listed or not p.is_file()]
        if missing:
            return "redo", f"{item.spec}: {', '.join(missing)} not in the finished output; redoing the input"
        return "skip", ""

    def _run_locked(self, item: InputItem, cannot_write: str) -> InputResult:
        table, sidecar, ckpt_path = self.table_path(item), self.sidecar_path(item), self.checkpoint_path(item)
        rec = None if self.options.overwrite else read_sidecar(sidecar)
        if rec is not None and rec.get("complete"):
            try:
                verdict, line = self._finished(item, rec)
            except AgenderError as exc:
                return InputResult(item, "failed", f"{item.spec}: {exc}")
            if verdict == "skip":
                if ckpt_path.exists():
                    remove_quietly(ckpt_path)  # left by a run killed after its sidecar was written
                if not cannot_write:
                    remove_stale_temps([table, sidecar, ckpt_path])
                failed = [tuple(x) for x in rec.get("failed_files", [])]
                return InputResult(item, "skipped", outputs=[table, sidecar], failed_files=failed)
            if verdict == "refuse":
                return InputResult(item, "failed", line)
            log.info("%s", line)
        if cannot_write:
            return InputResult(item, "failed", cannot_write)

        failed_files: list[tuple[str, str]] = []
        try:
            source = self.open_source(item, lambda p, e: failed_files.append((str(p), str(e))))
        except AgenderError as exc:
            return InputResult(item, "failed", str(exc))
        try:
            return self._run_opened(item, source, table, sidecar, ckpt_path, failed_files)
        finally:
            source.close()

    def _run_opened(self, item, source, table: Path, sidecar: Path, ckpt_path: Path,
                    failed_files: list[tuple[str, str]]) -> InputResult:
        ctx = JobContext(item=item, source=source, outdir=self.outdir, options=self.options)
        try:
            stages, sinks = self._run_stages_and_sinks(ctx, "file" if item.kind == "images" else "frame")
        except AgenderError as exc:
            return InputResult(item, "failed", f"{item.spec}: {exc}")
        remove_stale_temps([sidecar, ckpt_path, *(p for s in sinks for p in s.paths)])
        job = _Job(item, source, stages, sinks, ckpt_path, failed_files, desc=self.describe_run(item, stages))
        job.fp = self.fingerprint(item, stages, job.desc)
        try:
            self._negotiate_resume(job)
        except (OutputError, OSError) as exc:
            return self._fail(item, sinks, ckpt_path, _error_line(item, exc), failed_files)
        pipe, reader, error = self._analyse(job)
        error = error or self._nothing_analysed(job, pipe)
        if error and not item.is_live:
            return self._fail(item, sinks, ckpt_path, error, failed_files)
        return self._finish(job, pipe, reader, sidecar, error)

    def _negotiate_resume(self, job: "_Job") -> None:
        """Find this input's checkpoint and continue every sink and stage from it, or start
        them all afresh (no checkpoint, other settings, a changed input, a lost partial)."""
        item, sinks, ckpt_path, o = job.item, job.sinks, job.ckpt_path, self.options
        ck = None if (o.overwrite or not job.can_resume) else read_sidecar(ckpt_path)
        if ck is not None and (ck.get("fingerprint") != job.fp or len(ck.get("sinks", [])) != len(sinks)
                               or len(ck.get("stages", [])) != len(job.stages)):
            old = ck.get("run")
            if isinstance(old, dict) and old.get("input") != job.desc["input"]:
                log.info("%s: the input changed since the interrupted run (%s); starting over from frame 0",
                         item.spec, _input_change(old, job.desc, item.spec))
            else:
                log.info("%s: settings changed since the interrupted run; starting over", item.spec)
            ck = None
        if ck is not None:
            if all(s.begin(st) for s, st in zip(sinks, ck["sinks"])):
                for stage, state in zip(job.stages, ck["stages"]):
                    stage.load_state_dict(state)
                job.resume_from(ck, self.options)
                return
            log.info("%s: partial output of the interrupted run is gone; starting over", item.spec)
            for s in sinks:
                s.abort()
        if ckpt_path.exists() or ckpt_path.is_symlink():
            with_output(ckpt_path, ckpt_path.unlink)
        for s in sinks:
            s.begin(None)

    def _analyse(self, job: "_Job") -> tuple[FramePipeline, ThreadedReader, str]:
        """Run the frames through the pipeline into the sinks, checkpointing between groups.
        Returns the pipeline (its stats), the reader (its drop count) and an error line."""
        item, o = job.item, self.options
        pipe = FramePipeline(self.analyzer, stages=job.stages, group_frames=o.group_frames, no_detect=o.no_detect)
        reader = pipe.read(job.source, maxsize=o.queue_frames, latest_only=item.is_live)
        total = _expected_frames(job.source, o, job.start_index) if item.kind != "camera" else o.max_frames
        self.progress.start(item.name, total)
        writer = _CheckpointWriter(job, pipe, o.checkpoint_s)
        frames: Iterable[Frame] = _bounded_live(reader, o) if item.kind == "camera" else reader
        error = ""
        try:
            pipe.run(frames, job.sinks, on_group=writer, progress=self.progress)
        except KeyboardInterrupt:
            if not item.is_live:  # keep the partial and the last checkpoint (taken between groups) for a resume
                for s in job.sinks:
                    s.suspend()
                raise
            log.info("%s: stopped by the user", item.spec)
        except Exception as exc:  # noqa: BLE001 - a decoder/model/disk failure on one input must not end the batch
            log.debug("%s failed", item.spec, exc_info=True)
            error = _error_line(item, exc)
        finally:
            reader.close()
            self.progress.finish()
            for st in job.stages:
                st.close()
        return pipe, reader, error

    def _nothing_analysed(self, job: "_Job", pipe: FramePipeline) -> str:
        """Why an input gave no frame at all (past its end, undecodable, unreadable images)."""
        item, source, o = job.item, job.source, self.options
        if job.base.frames_analysed + pipe.stats.frames_analysed:
            return ""
        if item.kind in ("video", "stream"):
            dur = (source.frame_count or 0) / source.fps if source.fps else 0
            return (f"{item.spec}: --start {o.start_s:g} s is past the end of the video ({dur:.1f} s)"
                    if dur and o.start_s >= dur else f"{item.spec}: no frame could be decoded")
        if item.kind == "images":
            ff = job.failed_files
            return ff[0][1] if len(ff) == 1 else f"none of {len(item.paths)} images could be read"
        return ""

    def _finish(self, job: "_Job", pipe: FramePipeline, reader: ThreadedReader, sidecar: Path,
                error: str) -> InputResult:
        """Close every sink (moving its output into place), then write the sidecar that
        vouches for them; a failure here leaves nothing that looks finished."""
        item, sinks, base = job.item, job.sinks, job.base
        stats = RunStats(
            frames_read=pipe.stats.frames_read or base.frames_read,
            frames_analysed=base.frames_analysed + pipe.stats.frames_analysed,
            frames_detected=base.frames_detected + pipe.stats.frames_detected,
            faces=base.faces + pipe.stats.faces,
            wall_s=base.wall_s + pipe.stats.wall_s,
            ms_per_frame=pipe.ms_per_frame(),
        )
        outputs = [p for s in sinks for p in s.paths]
        resumed_from = job.start_index if job.resumed else None
        closed: list[Sink] = []
        try:
            # the old record must not vouch for outputs about to be replaced, should this fail
            if sidecar.exists():
                with_output(sidecar, sidecar.unlink)
            for s in sinks:
                s.close()
                closed.append(s)
            rec = self._record(item, job.source, stats, outputs, resumed_from, job.failed_files, reader, error)
            rec["fingerprint"], rec["run"] = job.fp, job.desc
            for s in sinks:  # e.g. the people summary (agender.io.sinks.people)
                rec.update(s.sidecar_fields())
            write_sidecar(sidecar, rec)
        except Exception as exc:  # noqa: BLE001 - e.g. the disk filled up while finishing
            log.debug("%s failed", item.spec, exc_info=True)
            for s in closed:  # complete, but with no sidecar saying so: not left looking finished
                for p in s.paths:
                    remove_quietly(p)
            return self._fail(item, [s for s in sinks if s not in closed], job.ckpt_path, _error_line(item, exc),
                              job.failed_files)
        if job.ckpt_path.exists():
            remove_quietly(job.ckpt_path)
        return InputResult(item, "failed" if error else "done", error, outputs=[*outputs, sidecar], stats=stats,
                           resumed_from=resumed_from, failed_files=job.failed_files)

    @staticmethod
    def _fail(item: InputItem, sinks: Sequence[Sink], ckpt_path: Path, error: str,
              failed_files: list[tuple[str, str]]) -> InputResult:
        """Discard this input's partial outputs and checkpoint; the one-line error."""
        for s in sinks:
            try:
                s.abort()
            except Exception:  # noqa: BLE001 - cleaning up must not hide the error
                log.debug("%s: abort failed", item.spec, exc_info=True)
        remove_quietly(ckpt_path)
        return InputResult(item, "failed", error, failed_files=failed_files)

    # -- the sidecar ---------------------------------------------------------------------
    def _record(self, item: InputItem, source, stats: RunStats, outputs: list[Path], resumed_from: int | None,
                failed_files, reader: ThreadedReader, error: str) -> dict:
        an = self.analyzer
        rec: dict[str, Any] = {
            "complete": not error,
            "agender_version": __version__,
            "input": item.sources if item.kind == "images" else item.spec,
            "kind": item.kind,
            "outputs": [p.name for p in outputs],
            "frames_read": stats.frames_read,
            "frames_analysed": stats.frames_analysed,
            "faces": stats.faces,
            "wall_s": round(stats.wall_s, 3),
            "fps": round(stats.fps, 2),
            "device": an.device_used,
            "detector": None if self.options.no_detect or an.detector is None else an.detector.name,
            "estimator": an.estimator.name,
            "models": model_files(an),
            "settings": {**an.describe(), **{k: v for k, v in asdict(self.options).items()
                                            if k not in ("overwrite", "checkpoint_s", "queue_frames")}},
            "ms_per_frame": stats.ms_per_frame,
            "resumed_from_frame": resumed_from,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        rec["settings"].pop("device", None)
        if item.kind in ("video", "stream", "camera"):
            rec["video"] = {k: getattr(source, k, None) for k in ("fps", "frame_count", "width", "height")}
        if item.kind == "images":
            rec["images"] = len(item.paths)
            rec["failed_files"] = [list(x) for x in failed_files]
        if reader.dropped:
            rec["frames_dropped"] = reader.dropped
        if error:
            rec["error"] = error
        return rec


def with_output(path: Path, fn: Callable[[], Any]) -> Any:
    """``fn()``, with an OS error turned into an :class:`OutputError` naming ``path``."""
    try:
        return fn()
    except OSError as exc:
        raise OutputError(path, exc) from exc


def _error_line(item: InputItem, exc: BaseException) -> str:
    """One line for an input that failed: the input, then what went wrong (and where)."""
    if isinstance(exc, OutputError):
        return f"{item.spec}: {exc}"
    if isinstance(exc, AgenderError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{item.spec}: {exc.filename}: {exc.strerror or exc}"
    return f"{item.spec}: {one_line(exc, last=True)}"


def _bounded_live(frames: Iterable[Frame], o: RunOptions) -> Iterator[Frame]:
    """A camera has no end: stop at ``max_frames`` or ``end_s`` seconds."""
    n = 0
    for fr in frames:
        if o.max_frames is not None and n >= o.max_frames:
            return
        if o.end_s is not None and fr.time_s >= o.end_s:
            return
        if fr.time_s < o.start_s:
            continue
        n += 1
        yield fr


def model_files(analyzer) -> list[dict[str, str]]:
    """The analyzer's model files (:meth:`~agender.analyzer.Analyzer.model_files`) with their sha256."""
    from agender.models.store import sha256_file

    return [{"file": str(p), "sha256": sha256_file(p)} for p in analyzer.model_files()]
