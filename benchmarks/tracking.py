"""Pipeline frames/s with ``--detect-every N`` versus detecting on every frame, same clip, same run.

What it runs: the runner's :class:`~agender.runner.FramePipeline` (detect → estimator batches
over 8-frame groups → tracking stage), on frames decoded beforehand (so decoding is not in the
figure), once per setting, in one process, with the same Analyzer. Reported per setting: wall
frames/s, CPU frames/s (frames per second of process CPU time: barely moved by other jobs on a
shared machine), detections, estimated faces, and each ratio against ``--detect-every 1``.

    python benchmarks/tracking.py                       # tv_scene_720p.mp4 frames 0-239, N = 1, 5
    python benchmarks/tracking.py --frames 480 --every 1 3 5 10 --between kalman
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agender.pipeline import FramePipeline  # noqa: E402
from agender.tracked_analyzer import TrackingStage  # noqa: E402

SHARED = Path(os.environ.get("AGENDER_SHARED", REPO.parent / "shared")).resolve()
TV = SHARED / "data" / "videos" / "tv_scene_720p.mp4"


def load_frames(path: Path = TV, count: int = 240, start: int = 0) -> list:
    from agender.io.sources import read_frames

    return read_frames(path, start, count)


def run_once(analyzer, frames: list, fps: float, detect_every: int, between: str = "kcf") -> dict:
    """One pass of the pipeline over ``frames``; returns its figures."""
    stage = TrackingStage(fps, detect_every=detect_every, between=between)
    pipe = FramePipeline(analyzer, stages=[stage])
    faces0 = analyzer.times.faces
    w0, c0 = time.perf_counter(), time.process_time()
    stats = pipe.run(frames, [])
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n = stats.frames_analysed
    return {"detect_every": detect_every, "between": between, "frames": n, "detections": stats.frames_detected,
            "estimated_faces": analyzer.times.faces - faces0, "faces": stats.faces,
            "wall_fps": n / wall, "cpu_fps": n / cpu if cpu > 0 else float("nan")}


def compare(analyzer, frames: list, fps: float, every=(1, 5), between: str = "kcf") -> list[dict]:
    """Every setting on the same frames, in this run; adds ``*_ratio`` against the first."""
    rows = [run_once(analyzer, frames, fps, n, between) for n in every]
    for r in rows:
        r["wall_ratio"] = r["wall_fps"] / rows[0]["wall_fps"]
        r["cpu_ratio"] = r["cpu_fps"] / rows[0]["cpu_fps"]
    return rows


def table(rows: list[dict]) -> str:
    out = ["| --detect-every | between | frames | detections | faces estimated | wall fps | CPU fps | wall × | CPU × |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['detect_every']} | {r['between']} | {r['frames']} | {r['detections']} | "
                   f"{r['estimated_faces']}/{r['faces']} | {r['wall_fps']:.1f} | {r['cpu_fps']:.1f} | "
                   f"{r['wall_ratio']:.2f} | {r['cpu_ratio']:.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from agender.analyzer import Analyzer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--every", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--between", default="kcf")
    ap.add_argument("--estimator", default="cydral")
    ap.add_argument("--detector", default="auto")
    args = ap.parse_args(argv)
    os.environ.setdefault("AGENDER_MODELS", str(SHARED / "models"))
    an = Analyzer(detector=args.detector, estimator=args.estimator, device="cpu")
    frames = load_frames(count=args.frames)
    run_once(an, frames[:8], 23.976, 1)  # warm-up: sessions, caches
    print(f"{TV.name} frames 0-{len(frames) - 1}, detector {an.describe()['detector']}, estimator {args.estimator}")
    print(table(compare(an, frames, 23.976, args.every, args.between)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
