"""`agender analyze INPUT... -o OUTDIR` — headless analysis into one table per video.

Thin shell over :class:`agender.runner.Runner`: parses options, builds the Analyzer, expands the
inputs, prints one line per input (and one line per failure), and sets the exit status
(0 all inputs succeeded or were already done, 1 some failed, 2 usage error).
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agender.cli.common import (add_model_options, build_analyzer, non_negative_float, offline_threads,
                                positive_float, positive_int, stderr_is_tty)

log = logging.getLogger("agender")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "analyze", help="analyse videos, images, folders, URLs or cameras into CSV/JSONL tables",
        description="Analyse each INPUT (video, image, folder, glob, http(s)/rtsp URL, cam:N) and write "
                    "OUTDIR/<name>.csv (one row per face per analysed frame; all still images go to "
                    "OUTDIR/images.csv) plus a <name>.json sidecar. Inputs finished with the same settings are "
                    "skipped and interrupted ones resume on the next run; one run writes a folder's "
                    "output of an input at a time.")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", "--outdir", dest="outdir", required=True, metavar="OUTDIR", type=Path,
                   help="output folder (created if missing)")
    add_model_options(p)
    g = p.add_argument_group("what to analyse")
    g.add_argument("--fps", type=positive_float, default=None, metavar="N",
                   help="analyse N frames per second of video time (default: every frame)")
    g.add_argument("--max-frames", type=positive_int, default=None, metavar="N", help="analyse at most N frames per input")
    g.add_argument("--start", type=non_negative_float, default=0.0, metavar="S", help="start at S seconds")
    g.add_argument("--end", type=positive_float, default=None, metavar="S", help="stop at S seconds")
    g.add_argument("--no-detect", action="store_true",
                   help="each image (or frame) is one already-cropped face, as in face-chip folders")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="table format (default csv)")
    o.add_argument("--overwrite", action="store_true", help="redo finished inputs and discard interrupted ones (needed to replace outputs "
                        "made from another file of the same name or with other settings)")
    o.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    o.add_argument("--timeout", type=positive_float, default=10.0, metavar="S",
                   help="network timeout for URLs, in seconds (default 10)")
    o.add_argument("--checkpoint-every", type=non_negative_float, default=1.0, metavar="S",
                   help="seconds between resume checkpoints of a running video (default 1; 0 = every group)")
    o.add_argument("--group-frames", type=positive_int, default=8, metavar="N",
                   help="frames whose faces share one estimator batch (default 8)")
    add_extension_options(p)
    c = p.add_argument_group("cluster (Ray: pip install 'agender[cluster]'; see docs/cluster.md)")
    c.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="run on a Ray cluster: ray://HOST:PORT, HOST:PORT, auto ($RAY_ADDRESS) or local:N (start "
                        "N workers here); videos are cut into segments analysed in parallel, same outputs")
    c.add_argument("--cluster-workers", type=positive_int, default=None, metavar="N",
                   help="worker actors (default: the cluster's CPUs / --cluster-cpus)")
    c.add_argument("--cluster-cpus", type=positive_int, default=1, metavar="N", help="CPUs per worker (default 1)")
    c.add_argument("--cluster-segments", type=positive_int, default=None, metavar="N",
                   help="segments per video (default: 2 per worker, 10 s to 10 min each)")
    p.set_defaults(func=run, _parser=p)
    return p


# ------------------------------------------------------------------------------------------
# extension point: per-frame stages (tracking) and extra sinks (exports) register here
# ------------------------------------------------------------------------------------------
@dataclass
class Plugins:
    stage_factories: list[Any] = field(default_factory=list)
    sink_factories: list[Any] = field(default_factory=list)
    track: Any = None  # the TrackOptions (tracking on or off)


def add_extension_options(p: argparse.ArgumentParser) -> None:
    """Options of stages/sinks that plug into the runner (tracking, exports) go here."""
    from agender.tracking import BETWEEN_MODES

    t = p.add_argument_group("tracking (on by default for videos, streams and cameras)")
    t.add_argument("--track", dest="track", action="store_true", default=True,
                   help="give each face a face_id across frames and smoothed age_avg/p_male_avg/gender_avg "
                        "columns; write OUTDIR/<name>.tracks.csv (the default)")
    t.add_argument("--no-track", dest="track", action="store_false", help="per-frame estimates only")
    t.add_argument("--detect-every", type=positive_int, default=1, metavar="N",
                   help="run the detector on every Nth analysed frame and track boxes in between (default 1)")
    t.add_argument("--reestimate-every", type=positive_int, default=None, metavar="K",
                   help="re-estimate a tracked face at least every K analysed frames, or sooner when it "
                        "gets bigger or sharper (default: same as --detect-every)")
    t.add_argument("--skip-similar", type=non_negative_float, default=0.0, metavar="T",
                   help="skip frames whose 64-px gray thumbnail differs from the last analysed one by a "
                        "mean absolute difference below T gray levels (0-255); their faces are carried over "
                        "(default 0 = off; 2-5 skips still and talking-head frames)")
    t.add_argument("--track-between", choices=BETWEEN_MODES, default="kalman",
                   help="how boxes move between detections with --detect-every: an OpenCV tracker (kcf, "
                        "csrt, mil), the ByteTrack Kalman prediction (kalman), or not at all (hold); default kalman (fastest; kcf loses fewer boxes at ~5 ms a face). "
                        "An interrupted run resumes exactly with kalman/hold; with an OpenCV tracker it restarts")
    r = p.add_argument_group("people (re-identification, on with tracking)")
    r.add_argument("--no-reid", dest="reid", action="store_false", default=True,
                   help="no person_id column and no OUTDIR/<name>.people.csv (tracks are not joined into people)")
    r.add_argument("--reid-threshold", type=positive_float, default=None, metavar="D",
                   help="face-descriptor distance under which two tracks are one person (default 0.6, dlib's own; "
                        "lower splits more, higher merges more)")
    r.add_argument("--privacy", action="store_true",
                   help="face descriptors (identity data) and face crops stay in memory only, never in a "
                        "checkpoint: an interrupted run starts over instead of resuming")
    e = p.add_argument_group("exports")
    e.add_argument("--export-mp4", action="store_true",
                   help="OUTDIR/<name>.annotated.mp4: the video with boxes and labels (H.264 where available), "
                        "every source frame, audio copied")
    e.add_argument("--export-ass", action="store_true",
                   help="OUTDIR/<name>.ass: subtitles drawing each tracked face's box and label (one event per "
                        "track segment)")
    e.add_argument("--export-chips", action="store_true",
                   help="OUTDIR/<name>.chips.tar of face chips (JPEG) + <name>.chips.tsv (chip, frame, box, "
                        "age, P(male), ...; trifle/face's layout)")


def plugins_for(args: argparse.Namespace) -> Plugins:
    """Stage and sink factories the options ask for (see agender.runner's docstring)."""
    from agender.exports import ExportOptions, TrackOptions

    track = getattr(args, "track", True) and not getattr(args, "no_detect", False)
    if not track:
        if getattr(args, "detect_every", 1) > 1 or getattr(args, "skip_similar", 0.0) > 0:
            args._parser.error("--detect-every and --skip-similar need tracking (not with --no-track or --no-detect)")
    reid = getattr(args, "reid", True)
    if reid and track and getattr(args, "cluster", None) and getattr(args, "privacy", False):
        # on a cluster the segments' descriptors travel to the driver through the (shared) output
        # folder, which --privacy forbids; said once the cluster is reached (_run_on_cluster), so a
        # failure stays one line
        args._reid_off_on_cluster = True
        reid = False
    tr = TrackOptions(enabled=track, detect_every=getattr(args, "detect_every", 1),
                      reestimate_every=getattr(args, "reestimate_every", None),
                      skip_similar=getattr(args, "skip_similar", 0.0), between=getattr(args, "track_between", "kalman"),
                      reid=reid, reid_threshold=getattr(args, "reid_threshold", None),
                      privacy=getattr(args, "privacy", False))
    ex = ExportOptions(mp4=getattr(args, "export_mp4", False), ass=getattr(args, "export_ass", False),
                       chips=getattr(args, "export_chips", False))
    # the tracking stage adds its face_id.. columns to the tables of the inputs it tracks (videos)
    return Plugins(stage_factories=[tr.stage_factory()], sink_factories=tr.sink_factories() + ex.sink_factories(),
                   track=tr)


# ------------------------------------------------------------------------------------------
def _progress(args):
    from agender.cli.progress import LogProgress, TqdmProgress
    from agender.pipeline import NoProgress

    if args.quiet:
        return NoProgress()
    return TqdmProgress() if stderr_is_tty() else LogProgress()


def run(args: argparse.Namespace) -> int:
    from agender.inputs import expand_inputs

    if args.end is not None and args.end <= args.start:
        args._parser.error(f"--end ({args.end:g}) must be after --start ({args.start:g})")
    if args.outdir.exists() and not args.outdir.is_dir():
        args._parser.error(f"-o {args.outdir}: exists and is not a folder")
    logger = logging.getLogger("agender")
    level = logger.level
    if args.quiet:
        logger.setLevel(logging.WARNING)
    try:
        with offline_threads():
            return _analyze(args, expand_inputs(args.inputs))
    finally:
        logger.setLevel(level)


def _analyze(args: argparse.Namespace, items) -> int:
    from agender.runner import RunOptions, Runner

    plugins = plugins_for(args)
    opts = RunOptions(fps=args.fps, max_frames=args.max_frames, start_s=args.start, end_s=args.end,
                      no_detect=args.no_detect, format=args.format, overwrite=args.overwrite,
                      group_frames=args.group_frames, timeout_s=args.timeout, checkpoint_s=args.checkpoint_every)
    try:
        args.outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"agender: error: {args.outdir}: cannot create output folder ({exc.strerror or exc})", file=sys.stderr)
        return 1
    runner = Runner(lambda: build_analyzer(args, no_detect=args.no_detect), args.outdir, opts,
                    stage_factories=plugins.stage_factories, sink_factories=plugins.sink_factories,
                    progress=_progress(args))
    if args.cluster:
        try:
            results = _run_on_cluster(args, runner, plugins, items)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - ClusterError and whatever Ray raises: one line
            from agender.cluster import ClusterError
            from agender.errors import one_line

            msg = str(exc) if isinstance(exc, ClusterError) else f"cluster: {one_line(exc)}"
            print(f"agender: error: {msg}", file=sys.stderr)
            return 1
    else:
        results = (runner.run_input(item) for item in items)
    failures: list[str] = []
    for item, res in zip(items, results):
        for _, msg in res.failed_files:
            failures.append(msg)
            print(f"agender: error: {msg}", file=sys.stderr)
        if res.status == "failed":
            if res.error and not res.failed_files:  # a failed image set already listed its files
                failures.append(res.error)
                print(f"agender: error: {res.error}", file=sys.stderr)
            continue
        if res.status == "skipped":
            what = f"{len(item.paths)} images" if item.kind == "images" else item.spec
            log.info("%s: already done (%s), skipped", what, runner.table_path(item))
        elif res.stats is not None:
            st = res.stats
            extra = f", resumed at frame {res.resumed_from}" if res.resumed_from is not None else ""
            what = f"{len(item.paths)} images" if item.kind == "images" else item.spec
            unit = "images" if item.kind == "images" else "frames"
            log.info("%s → %s: %d %s, %d faces, %.1f %s/s%s", what, runner.table_path(item), st.frames_analysed,
                     unit, st.faces, st.fps, unit, extra)
    if not failures:
        return 0
    n_inputs = sum(len(i.paths) if i.kind == "images" else 1 for i in items)
    if n_inputs > 1:  # the list at the end of a batch; a single input already said it in one line
        print(f"agender: {len(failures)} of {n_inputs} inputs failed:", file=sys.stderr)
        for msg in failures:
            print(f"  {msg}", file=sys.stderr)
    return 1


def _run_on_cluster(args: argparse.Namespace, runner, plugins: Plugins, items) -> list:
    """The inputs through :class:`agender.cluster.driver.ClusterRunner` (Ray imported only here)."""
    import os
    from dataclasses import asdict

    from agender.cluster import connect
    from agender.cluster.driver import ClusterRunner
    from agender.cluster.progress import ClusterProgress, NoClusterProgress

    keys = ("detector", "estimator", "device", "models", "detect_width", "conf", "min_face", "padding", "batch_size")
    model_args = {k: getattr(args, k) for k in keys if hasattr(args, k)}
    if model_args.get("models"):
        model_args["models"] = [os.path.abspath(m) for m in model_args["models"]]
    model_args["no_detect"] = args.no_detect
    track = asdict(plugins.track) if plugins.track is not None and plugins.track.enabled else None
    progress = NoClusterProgress() if args.quiet else ClusterProgress(tty=stderr_is_tty())
    with connect(args.cluster, model_args=model_args, workers=args.cluster_workers,
                 cpus_per_worker=args.cluster_cpus) as cl:
        if getattr(args, "_reid_off_on_cluster", False):
            log.warning("--cluster with --privacy: people re-identification (person_id, <name>.people.csv) "
                        "would pass face descriptors between machines; running as with --no-reid")
        return ClusterRunner(runner, cl, track=track, segments=args.cluster_segments, progress=progress).run(list(items))
