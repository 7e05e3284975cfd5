"""`agender bench VIDEO` — decode-only vs full-pipeline frames/s, ms per stage, faces/s, peak
RSS, device, in one process on one clip (looped to a minimum duration). ``--json`` for
machines, a table for people. Speed is measured here, never in timed tests."""
from __future__ import annotations

import argparse
import json

from agender.cli.common import add_model_options, build_analyzer, offline_threads, positive_float, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="throughput of the pipeline on a clip (frames/s, ms per stage, RSS)",
                              description="Measure decode-only and full-pipeline frames/s on VIDEO in one "
                                          "process, with ms per stage, faces/s, peak RSS and the device.")
    p.add_argument("video", metavar="VIDEO")
    p.add_argument("--min-seconds", type=positive_float, default=10.0, metavar="S",
                   help="loop the clip until at least S seconds of video are processed (default 10)")
    p.add_argument("--max-frames", type=positive_int, default=None, metavar="N", help="stop after N frames")
    p.add_argument("--group-frames", type=positive_int, default=8, metavar="N",
                   help="frames whose faces share one estimator batch (default 8)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.add_argument("--vs-seed", action="store_true", dest="vs_seed",
                   help="also run the seed approach (res10 `dnn` detector + `ssrnet:wiki`) on the same clip with the "
                        "same options, in this process, before and after this one, and report the speed-up over it")
    p.add_argument("--no-track", dest="track", action="store_false", default=True,
                   help="leave out the tracking stage that `agender analyze` runs by default on videos")
    p.add_argument("--detect-every", type=positive_int, default=1, metavar="N",
                   help="detect on every Nth frame and track in between, as in analyze (default 1)")
    p.add_argument("--track-between", choices=("kcf", "csrt", "mil", "kalman", "hold"), default="kalman",
                   help="how boxes move between detections with --detect-every (default kalman)")
    p.add_argument("--compare-runtimes", action="store_true", dest="compare_runtimes",
                   help="run the bench once per runtime (onnxruntime, litert, auto) in this process and print "
                        "them side by side: pipeline frames/s, ms per face, ms per detector frame")
    add_model_options(p)
    p.set_defaults(func=run, _parser=p)
    return p


def run(args: argparse.Namespace) -> int:
    from agender.bench import bench, format_table
    from agender.io.sources import VideoSource

    VideoSource(args.video).close()  # a bad clip fails here, in one line, before models load
    with offline_threads():
        analyzer = None if args.compare_runtimes else build_analyzer(args)
        from agender.exports import TrackOptions

        if not args.track and args.detect_every > 1:
            args._parser.error("--detect-every needs tracking (not with --no-track)")
        track = TrackOptions(enabled=args.track, detect_every=args.detect_every, between=args.track_between)
        opts = dict(min_seconds=args.min_seconds, max_frames=args.max_frames, group_frames=args.group_frames,
                    track=track)
        if args.compare_runtimes:
            from agender.bench_runtimes import compare, format_compare

            res = compare(args.video, lambda rt: build_analyzer(argparse.Namespace(**{**vars(args), "runtime": rt})),
                          bench, **opts)
            print(json.dumps(res, indent=2) if args.json else format_compare(res))
            return 0
        seeds = []
        if args.vs_seed:
            # seed, this configuration, seed again (A-B-A): a machine whose load drifts during the
            # run weighs on both sides alike; the seed's figure is the mean of its two runs
            from agender.analyzer import Analyzer

            seed_an = Analyzer(detector="dnn", estimator="ssrnet:wiki", device=args.device, models=args.models)
            seeds.append(bench(args.video, seed_an, **opts))
        res = bench(args.video, analyzer, **opts)
        if seeds:
            seeds.append(bench(args.video, seed_an, **opts))
            seed = dict(seeds[0])
            seed["pipeline_fps"] = round(sum(x["pipeline_fps"] for x in seeds) / len(seeds), 1)
            seed["decode_fps"] = round(sum(x["decode_fps"] for x in seeds) / len(seeds), 1)
            res["seed"] = {k: seed[k] for k in ("detector", "estimator", "detect_width", "frames", "decode_fps",
                                                 "pipeline_fps", "faces_per_frame", "ms_per_frame")}
            res["seed"]["runs_pipeline_fps"] = [x["pipeline_fps"] for x in seeds]
            res["seed"]["load_avg_1m"] = [x["load_avg_1m"] for x in seeds]
            res["speedup_vs_seed"] = round(res["pipeline_fps"] / seed["pipeline_fps"], 2) if seed["pipeline_fps"] else None
    print(json.dumps(res, indent=2) if args.json else format_table(res))
    return 0
