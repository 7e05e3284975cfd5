"""The driver of a cluster run: plans segments, hands them to Ray actors, stitches, finishes.

It reuses :class:`agender.runner.Runner` for everything an input's outputs share with a
single-machine run: paths, the output lock, the "finished?" verdict and the fingerprint, the
sinks' columns and header, the sidecar record. Local video files are cut into time segments and
image sets into runs of consecutive images; other inputs (URLs, cameras) run on the driver with
the Runner itself.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agender.cluster import Cluster
from agender.cluster.plan import analysed_indices, keyframes, plan_fingerprint, plan_image_chunks, plan_segments
from agender.cluster.replay import dump_path, replay
from agender.cluster.stitch import merge_people, merge_tracks, reconcile, rewrite_ids, tracks_file_bytes
from agender.cluster.worker import meta_path, part_path
from agender.errors import AgenderError, OutputBusy, OutputError
from agender.inputs import InputItem
from agender.io.outlock import OutputLock
from agender.io.sinks.base import atomic_write_bytes, remove_quietly, writing
from agender.io.sinks.people import PeopleSink
from agender.io.sinks.tracks import TracksSink
from agender.io.sinks.sidecar import read_sidecar, write_sidecar
from agender.io.sinks.table import FACE_COLUMNS, IMAGE_KEY, VIDEO_KEY, rewrite_person_ids
from agender.pipeline import RunStats
from agender.runner import InputResult, JobContext, Runner, remove_stale_temps

log = logging.getLogger("agender.cluster")


@dataclass
class _Job:
    item: InputItem
    lock: OutputLock
    segdir: Path
    spec: dict
    segments: list[dict]
    header: bytes
    face_id_col: int | None
    tracks_path: Path | None
    people: Any  # the PeopleSink of a run with re-identification (None without)
    exports: list  # the --export-* sinks, replayed by the driver once ids are global (agender.cluster.replay)
    fp: str
    desc: dict
    video: dict
    metas: dict[int, dict] = field(default_factory=dict)
    pending: set[int] = field(default_factory=set)
    error: str = ""
    resumed: int = 0
    t0: float = field(default_factory=time.perf_counter)


@dataclass
class _Dispatch:
    """The state of one batch's dispatch loop (:meth:`ClusterRunner._run_jobs`)."""

    queue: list[tuple[int, dict]]  # (job, segment) not handed out yet
    free: list[int]  # idle actors
    done_frames: int  # frames written by finished segments
    futures: dict[Any, tuple[int, int, int]] = field(default_factory=dict)  # ref -> (job, segment, actor)
    pings: dict[int, tuple[Any, float]] = field(default_factory=dict)  # actor -> (status ref, asked at)
    alive_at: dict[int, float] = field(default_factory=dict)  # actor -> last status answer
    inflight_frames: dict[int, int] = field(default_factory=dict)  # actor -> frames of its running segment


class ClusterRunner:
    """``Runner``'s outputs, computed by the workers of ``cluster``.

    ``track``: the :class:`~agender.exports.TrackOptions` as a dict (None = ``--no-track``);
    ``segments``: segments per video (default: :meth:`_segment_count`); ``overlap_s``: tracking
    warm-up before each boundary.
    """

    def __init__(self, runner: Runner, cluster: Cluster, *, track: dict | None, segments: int | None = None,
                 overlap_s: float = 2.0, progress=None):
        self.runner, self.cluster = runner, cluster
        self.track = track
        self.segments = segments
        self.overlap_s = overlap_s
        self.progress = progress
        self.stitch_s = 0.0

    # -- planning ------------------------------------------------------------------------
    def _segment_count(self, n_frames: int, fps: float) -> int:
        """Two segments per worker (a slow one does not leave the others idle at the end), none
        shorter than ~10 s of video, none longer than ~10 min (a lost worker redoes little)."""
        if self.segments:
            return self.segments
        spread = min(2 * self.cluster.workers, max(1, int(n_frames / max(1.0, fps * 10))))
        return max(spread, math.ceil(n_frames / max(1.0, fps * 600)))

    def _prepare(self, item: InputItem) -> _Job | InputResult:
        r = self.runner
        table = r.table_path(item)
        lock = OutputLock(r.lock_path(item), output=table)
        try:
            lock.acquire()
        except OutputBusy as exc:
            return InputResult(item, "failed", f"{item.spec}: {exc}")
        except OSError as exc:
            return InputResult(item, "failed", f"{item.spec}: {OutputError(exc.filename or r.lock_path(item), exc)}")
        try:
            res = self._prepare_locked(item, lock)
        except AgenderError as exc:
            res = InputResult(item, "failed", str(exc) if item.spec in str(exc) else f"{item.spec}: {exc}")
        except OSError as exc:
            res = InputResult(item, "failed", f"{item.spec}: {OutputError(exc.filename or table, exc)}")
        if isinstance(res, InputResult):
            lock.release()
        return res

    def _prepare_locked(self, item: InputItem, lock: OutputLock) -> _Job | InputResult:
        r, o = self.runner, self.runner.options
        table, sidecar = r.table_path(item), r.sidecar_path(item)
        rec = None if o.overwrite else read_sidecar(sidecar)
        if rec is not None and rec.get("complete"):
            verdict, line = r._finished(item, rec)
            if verdict == "skip":
                return InputResult(item, "skipped", outputs=[table, sidecar])
            if verdict == "refuse":
                return InputResult(item, "failed", line)
            log.info("%s", line)
        images = item.kind == "images"
        video, stages, sinks = self._stages_and_sinks(item)
        people = next((s for s in sinks if isinstance(s, PeopleSink)), None)
        exports = [s for s in sinks[1:] if s is not people and not isinstance(s, TracksSink)]
        extra = [p for s in sinks[1:] if s is not people and s not in exports for p in s.paths]
        desc = r.describe_run(item, stages)
        fp = r.fingerprint(item, stages, desc)
        tracked = bool(stages)
        if images:  # runs of consecutive images, whole estimator batches each
            idx = list(range(len(item.paths)))
            segs = plan_image_chunks(len(idx), chunks=self.segments or 2 * self.cluster.workers,
                                     group_frames=o.group_frames)
            seg_dicts = [sg.to_dict() for sg in segs]
        else:
            idx, segs, seg_dicts = self._plan(item, video, tracked)
        pfp = plan_fingerprint(fp, segs)
        segdir = self._plan_dir(item, pfp, seg_dicts)
        remove_stale_temps([table, sidecar, *extra, *([people.path] if people else []),
                            *(p for s in exports for p in s.paths)])
        columns = sinks[0].columns
        tracks_path = extra[0] if tracked and extra else None
        job = _Job(item=item, lock=lock, segdir=segdir, spec={
            "name": item.name, "spec": os.path.abspath(item.spec), "segdir": str(segdir.resolve()), "format": o.format, "plan": pfp,
            "columns": [c for c in columns if c not in (*VIDEO_KEY, *IMAGE_KEY, *FACE_COLUMNS)],
            "first_frame": idx[0] if idx else 0,
            "options": {k: v for k, v in asdict(o).items() if k != "extra_columns"},
            "track": self.track if tracked else None,
            "exports": bool(exports),
            "kind": item.kind, "paths": [os.path.abspath(p) for p in item.paths] if images else None,
        }, segments=seg_dicts, header=sinks[0].header(),
            face_id_col=columns.index("face_id") if "face_id" in columns else None, tracks_path=tracks_path,
            people=people if tracked else None, exports=exports, fp=fp, desc=desc, video=video)
        self._resume(job)
        return job

    def _stages_and_sinks(self, item: InputItem) -> tuple[dict, list, list]:
        """``(video info, stages, sinks)`` a single-machine run of ``item`` would make (the
        source is opened for them only: the workers decode)."""
        r, o = self.runner, self.runner.options
        images = item.kind == "images"
        src = r.open_source(item, lambda p, e: None)  # the workers read the images: failures are theirs to report
        try:
            video = {} if images else {k: getattr(src, k, None) for k in ("fps", "frame_count", "width", "height")}
            ctx = JobContext(item=item, source=src, outdir=r.outdir, options=o)
            stages, sinks = r._run_stages_and_sinks(ctx, "file" if images else "frame")
        finally:
            src.close()
        return video, stages, sinks

    def _resume(self, job: _Job) -> None:
        """Keep the segments a previous run of the same plan finished (meta, part of the
        recorded size and, with exports, the faces dump all there)."""
        fmt, pfp = self.runner.options.format, job.spec["plan"]
        for s in job.segments:
            m = read_sidecar(meta_path(job.segdir, s["index"]))
            p = part_path(job.segdir, s["index"], fmt)
            if m and m.get("plan") == pfp and p.is_file() and p.stat().st_size == m.get("bytes") and (
                    not job.exports or dump_path(job.segdir, s["index"]).is_file()):
                job.metas[s["index"]] = m
        job.resumed = len(job.metas)
        if job.metas:
            log.info("%s: resuming: %d of %d segments already done", job.item.spec, len(job.metas), len(job.segments))

    def _plan(self, item: InputItem, video: dict, tracked: bool) -> tuple[list[int], list, list[dict]]:
        """The frames to analyse and their segments (cut at keyframes; overlapping when
        tracked, so tracks can be stitched across the cuts)."""
        o = self.runner.options
        fps = video["fps"]
        idx = analysed_indices(video["frame_count"] or 0, fps, start_s=o.start_s, end_s=o.end_s, rate=o.fps,
                               max_frames=o.max_frames)
        overlap = int(round(self.overlap_s * (min(fps, o.fps) if o.fps else fps))) if tracked else 0
        segs = plan_segments(idx, keyframes(item.spec, fps), segments=self._segment_count(len(idx), fps),
                             group_frames=o.group_frames, overlap=overlap, open_end=o.max_frames is None)
        seg_dicts = [s.to_dict() for s in segs]
        for a, b in zip(seg_dicts, seg_dicts[1:]):
            a["next_warm"] = b["warm"] if tracked else None
        return idx, segs, seg_dicts

    def _plan_dir(self, item: InputItem, pfp: str, seg_dicts: list[dict]) -> Path:
        """The input's segment folder: kept for the same plan (minus a killed worker's
        half-written part), started afresh for another plan or ``overwrite``."""
        segdir = self.runner.outdir / f".{item.name}.cluster"
        plan_file = segdir / "plan.json"
        old = read_sidecar(plan_file)
        if old is None or old.get("plan") != pfp or self.runner.options.overwrite:
            if segdir.exists():
                shutil.rmtree(segdir, ignore_errors=True)
            segdir.mkdir(parents=True, exist_ok=True)
            write_sidecar(plan_file, {"plan": pfp, "input": item.spec, "segments": seg_dicts})
        else:
            for q in segdir.glob(".seg-*.partial"):  # a killed worker's half-written part
                remove_quietly(q)
        return segdir

    # -- the batch -----------------------------------------------------------------------
    def run(self, items: list[InputItem]) -> list[InputResult]:
        results: dict[int, InputResult] = {}
        jobs: dict[int, _Job] = {}
        for k, item in enumerate(items):
            if (item.kind == "video" and Path(item.spec).is_file()) or (
                    item.kind == "images" and len(item.paths) > self.runner.options.group_frames):
                res = self._prepare(item)
                if isinstance(res, InputResult):
                    results[k] = res
                else:
                    jobs[k] = res
        try:
            self._run_jobs(jobs, results)
        finally:
            for job in jobs.values():
                job.lock.release()
        for k, item in enumerate(items):  # everything else runs here, as without a cluster
            if k not in results:
                results[k] = self.runner.run_input(item)
        return [results[k] for k in range(len(items))]

    def _run_jobs(self, jobs: dict[int, _Job], results: dict[int, InputResult]) -> None:
        """Hand every segment still to do to a free actor, collect what comes back, finish each
        input as its last segment arrives, and report progress until nothing is left."""
        import ray

        total = sum(s["frames"] for j in jobs.values() for s in j.segments)
        disp = _Dispatch(
            queue=[(k, s) for k, j in jobs.items() for s in j.segments if s["index"] not in j.metas],
            free=list(range(self.cluster.workers)),
            done_frames=sum(j.metas[i]["frames_written"] for j in jobs.values() for i in j.metas))
        prog = self.progress
        if prog is not None:
            prog.start_cluster(total, disp.done_frames, self.cluster.workers)
        for k, j in jobs.items():  # resumed inputs with every segment already done
            if not j.pending and not [s for s in j.segments if s["index"] not in j.metas]:
                results[k] = self._finish(j)
        while disp.queue or disp.futures:
            self._submit(jobs, disp)
            ready, _ = ray.wait(list(disp.futures), num_returns=1, timeout=0.5)
            for ref in ready:
                self._collect(ref, jobs, results, disp)
            for k, job in jobs.items():
                if job.error and not job.pending and k not in results:
                    results[k] = InputResult(job.item, "failed", job.error)
            alive = self._poll_workers(disp)
            if prog is not None:
                prog.update(disp.done_frames + sum(disp.inflight_frames.values()), alive)
        if prog is not None:
            prog.finish()

    def _submit(self, jobs: dict[int, _Job], disp: _Dispatch) -> None:
        """Queued segments to free actors, in plan order, one segment per actor."""
        while disp.queue and disp.free:
            k, s = disp.queue.pop(0)
            a = disp.free.pop(0)
            ref = self.cluster.actors[a].run.remote(jobs[k].spec, s)
            disp.futures[ref] = (k, s["index"], a)
            jobs[k].pending.add(s["index"])

    def _collect(self, ref: Any, jobs: dict[int, _Job], results: dict[int, InputResult], disp: _Dispatch) -> None:
        """A finished segment: its actor is free again; its meta is kept (and the input stitched
        when it was the last one), or its input is marked failed and its queued segments dropped."""
        import ray

        k, si, a = disp.futures.pop(ref)
        disp.free.append(a)
        disp.inflight_frames.pop(a, None)
        job = jobs[k]
        job.pending.discard(si)
        try:
            meta = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - the segment failed for good (not a lost worker: those are retried)
            job.error = job.error or _remote_error_line(job.item, exc)
            disp.queue = [(kk, s) for kk, s in disp.queue if kk != k]
            return
        job.metas[si] = meta
        disp.done_frames += meta["frames_written"]
        if not job.pending and len(job.metas) == len(job.segments) and not job.error:
            results[k] = self._finish(job)

    def _poll_workers(self, disp: _Dispatch) -> int:
        """Read the workers' status answers, ask again where none is out, and return how many
        workers answered within the last 5 s. Progress: each worker's status answers from its
        second thread, also mid-segment."""
        import ray

        now = time.monotonic()
        for a, (ref, t) in list(disp.pings.items()):
            got, _ = ray.wait([ref], timeout=0)
            if got:
                try:
                    st = ray.get(got[0])
                    disp.alive_at[a] = now
                    if st.get("segment") is not None and any(v[2] == a for v in disp.futures.values()):
                        disp.inflight_frames[a] = int(st.get("frames", 0))
                except Exception:  # noqa: BLE001 - a dead worker
                    pass
                del disp.pings[a]
            elif now - t > 10:
                del disp.pings[a]
        for a in range(self.cluster.workers):
            if a not in disp.pings:
                disp.pings[a] = (self.cluster.actors[a].status.remote(), now)
        return sum(1 for a in range(self.cluster.workers) if now - disp.alive_at.get(a, -1e9) < 5)

    # -- stitching -----------------------------------------------------------------------
    def _finish(self, job: _Job) -> InputResult:
        r, item = self.runner, job.item
        t0 = time.perf_counter()
        table, sidecar = r.table_path(item), r.sidecar_path(item)
        metas = [job.metas[s["index"]] for s in job.segments]
        maps = reconcile(metas) if job.face_id_col is not None else None
        failed = [tuple(f) for m in metas for f in m.get("failed_files", [])]  # unreadable images, in order
        outputs = [table]
        try:
            if sidecar.exists():
                with writing(sidecar):
                    sidecar.unlink()
            self._publish(job, metas, maps, outputs)
            stitch_s = time.perf_counter() - t0
            self.stitch_s += stitch_s
            stats = RunStats(frames_read=max(m["last_frame"] for m in metas) + 1 if metas else 0,
                             frames_analysed=sum(m["frames_written"] for m in metas),
                             frames_detected=sum(m["frames_detected"] for m in metas),
                             faces=sum(m["faces"] for m in metas), wall_s=time.perf_counter() - job.t0,
                             ms_per_frame=_mean_ms(metas))
            rec = r._record(item, SimpleNamespace(**job.video), stats, outputs, None, failed,
                            SimpleNamespace(dropped=0), "")
            rec["fingerprint"], rec["run"] = job.fp, job.desc
            if job.people is not None:
                rec.update(job.people.sidecar_fields())
            rec["cluster"] = self._cluster_record(metas, stitch_s)
            rec["cluster"]["segments_resumed"] = job.resumed
            rec["cluster"]["boundaries"] = [int(seg["first"]) for seg in job.segments[1:]]  # where rows may differ
            write_sidecar(sidecar, rec)
        except (AgenderError, OSError) as exc:  # OutputError is an AgenderError
            for p in outputs:
                remove_quietly(p)
            return InputResult(item, "failed", f"{item.spec}: {exc}")
        shutil.rmtree(job.segdir, ignore_errors=True)
        return InputResult(item, "done", outputs=[*outputs, sidecar], stats=stats, failed_files=failed)

    def _publish(self, job: _Job, metas: list[dict], maps: list[dict[int, int]] | None, outputs: list[Path]) -> None:
        """The stitched table (ids global; with re-identification its person ids set before it
        is published), then the tracks file, people file and exports; each path is added to
        ``outputs`` as it is written (so a failure removes what was written)."""
        o, item = self.runner.options, job.item
        table = outputs[0]
        parts = [part_path(job.segdir, s["index"], o.format) for s in job.segments]

        def chunks():
            yield job.header
            for i, p in enumerate(parts):
                data = p.read_bytes()
                yield data if maps is None else rewrite_ids(data, o.format, job.face_id_col, maps[i])

        if job.people is not None:  # person ids need the whole run: stitch, relabel, then publish
            stitched = job.segdir / f"stitched.{o.format}"
            atomic_write_bytes(stitched, chunks())
            rewrite_person_ids(stitched, o.format, merge_people(job.people, metas, maps))
            os.replace(stitched, table)
        else:
            atomic_write_bytes(table, chunks())
        if job.tracks_path is not None:
            fmt = "jsonl" if o.format == "jsonl" else "csv"
            atomic_write_bytes(job.tracks_path, tracks_file_bytes(merge_tracks(metas, maps, item.name), fmt, item.name))
            outputs.append(job.tracks_path)
        if job.people is not None:
            job.people.close()
            outputs.append(job.people.path)
        if job.exports:
            self._replay_exports(job, maps)
            outputs += [p for s in job.exports for p in s.paths]

    def _replay_exports(self, job: _Job, maps: list[dict[int, int]] | None) -> None:
        """The --export-* files: the video decoded once more on the driver, each analysed frame
        handed with its segment's faces (global ids) to the single-machine export sinks."""
        src = self.runner.open_source(job.item, lambda p, e: None)  # the same frames the run analysed
        dumps = [(dump_path(job.segdir, s["index"]), maps[k] if maps else {}) for k, s in enumerate(job.segments)]
        try:
            replay(job.exports, src, dumps)
        finally:
            src.close()

    def _cluster_record(self, metas: list[dict], stitch_s: float) -> dict:
        per: dict[str, dict] = {}
        for m in metas:
            w = per.setdefault(m["worker"], {"worker": m["worker"], "segments": 0, "frames": 0, "wall_s": 0.0,
                                             "cpu_s": 0.0, "cores": m.get("cores")})
            w["segments"] += 1
            w["frames"] += m["frames_analysed"]
            w["wall_s"] += m["wall_s"]
            w["cpu_s"] += m.get("cpu_s", 0.0)
        for w in per.values():
            w["wall_s"], w["cpu_s"] = round(w["wall_s"], 3), round(w["cpu_s"], 3)
            w["fps"] = round(w["frames"] / w["wall_s"], 2) if w["wall_s"] > 0 else 0.0
            w["frames_per_cpu_s"] = round(w["frames"] / w["cpu_s"], 2) if w["cpu_s"] > 0 else 0.0
        n = max(1, len(metas))
        return {
            "address": self.cluster.address, "workers": self.cluster.workers, "nodes": self.cluster.nodes,
            "cpus_per_worker": self.cluster.cpus_per_worker, "segments": len(metas),
            "overlap_frames": sum(m["frames_analysed"] - m["frames_written"] for m in metas),
            "per_worker": sorted(per.values(), key=lambda w: w["worker"]),
            "per_segment_overhead_s": {
                "model_load": round(sum(m["model_load_s"] for m in metas) / n, 4),
                "seek": round(sum(m["seek_s"] for m in metas) / n, 4),
                "stitch": round(stitch_s / n, 4),
            },
        }


def _mean_ms(metas: list[dict]) -> dict[str, float]:
    tot = sum(m["frames_analysed"] for m in metas) or 1
    keys = {k for m in metas for k in m.get("ms_per_frame", {})}
    return {k: round(sum(m["ms_per_frame"].get(k, 0.0) * m["frames_analysed"] for m in metas) / tot, 3)
            for k in sorted(keys)}


def _remote_error_line(item: InputItem, exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    line = text[-1] if text else type(cause).__name__
    return line if item.spec in line else f"{item.spec}: {line}"
