"""Cluster throughput with 1 and 2 workers, and the per-segment overhead, in one run.

What it runs: ``agender analyze VIDEO --cluster local:W --no-track`` (in this process, the CLI's
own code path) for each W, into a fresh folder each time, plus the single-machine run of the
same video for reference; reads each sidecar. Reported per run: wall seconds of the whole
command (Ray start included), the job's seconds (plan → stitched, models loading in the actors
included), cluster frames/s (frames / job seconds), each worker's frames/s (frames / its
segment seconds), and the mean per-segment overhead: model load (once per worker, shown per
segment), keyframe seek + grab to the boundary, stitch; and each worker's frames per CPU-second
(all its threads), which other jobs on a shared machine barely move. ``local:W`` pins worker k
to its own core, so W workers are W cores' worth. The tables are compared byte for byte
with the single-machine one.

    python benchmarks/cluster.py                        # tv_scene_720p.mp4, all 1972 frames, W = 1, 2
    python benchmarks/cluster.py --max-frames 600 --workers 1 2 --json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def run(video: Path, out: Path, extra: list[str]) -> dict:
    from agender.cli.main import main

    t0 = time.perf_counter()
    rc = main(["analyze", str(video), "-o", str(out), "--no-track", "-q", *extra])
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"agender analyze {' '.join(extra)} failed ({rc})")
    side = json.loads((out / f"{video.stem}.json").read_text())
    return {"wall_s": round(wall, 2), "job_s": side["wall_s"], "frames": side["frames_analysed"],
            "fps": round(side["frames_analysed"] / side["wall_s"], 2) if side["wall_s"] else 0.0,
            "cluster": side.get("cluster"), "table": (out / f"{video.stem}.csv").read_bytes()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=REPO.parent / "shared/data/videos/tv_scene_720p.mp4")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--segments", type=int, default=None, help="segments per video (default: agender's)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    os.environ.setdefault("AGENDER_MODELS", str(REPO.parent / "shared/models"))
    extra = ["--max-frames", str(a.max_frames)] if a.max_frames else []
    seg = ["--cluster-segments", str(a.segments)] if a.segments else []
    results = {}
    with tempfile.TemporaryDirectory(prefix="agender-bench-cluster-") as tmp:
        results["single"] = run(a.video, Path(tmp) / "single", extra)
        for w in a.workers:
            results[f"workers={w}"] = run(a.video, Path(tmp) / f"w{w}", [*extra, "--cluster", f"local:{w}", *seg])
    ref = results["single"].pop("table")
    for k, r in results.items():
        if k != "single":
            r["byte_identical"] = r.pop("table") == ref
    if a.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{a.video.name}: {results['single']['frames']} frames, --no-track, {os.cpu_count()} CPUs")
    print(f"{'run':<11}{'wall s':>8}{'job s':>8}{'fps':>8}  {'per-worker fps (/cpu-s)':<26}{'load s':>7}{'seek s':>7}"
          f"{'stitch s':>9}  segs  identical")
    for k, r in results.items():
        c = r.get("cluster") or {}
        ov = c.get("per_segment_overhead_s", {})
        pw = ", ".join(f"{w['fps']:.1f} ({w['frames_per_cpu_s']:.1f})" for w in c.get("per_worker", [])) or "-"
        print(f"{k:<11}{r['wall_s']:>8.1f}{r['job_s']:>8.1f}{r['fps']:>8.1f}  {pw:<26}"
              f"{ov.get('model_load', float('nan')):>7.2f}{ov.get('seek', float('nan')):>7.3f}"
              f"{ov.get('stitch', float('nan')):>9.4f}  {c.get('segments', '-'):>4}  {r.get('byte_identical', '-')}")
    one, two = results.get("workers=1"), results.get("workers=2")
    if one and two and one["fps"]:
        print(f"speed-up 2 vs 1 workers: {two['fps'] / one['fps']:.2f}x (job), "
              f"{one['wall_s'] / two['wall_s']:.2f}x (wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
