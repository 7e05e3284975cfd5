"""Throughput of the offline pipeline on one clip, measured in one process (``agender bench``).

Why one process and ratios: on a shared or throttled machine absolute frames/s drift from run
to run, but decode-only and full-pipeline figures taken back to back on the same clip drift
together, so ``pipeline_fps / decode_fps`` (and the per-stage milliseconds) compare across runs.
Short clips are looped to ``min_seconds`` of video so the figures are not start-up noise.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from agender import __version__
from agender.io.sinks.csv_sink import CsvSink
from agender.io.sources import Frame, VideoSource


class LoopedVideo:
    """``spec`` decoded ``total`` frames long, starting over at its end (indices keep counting)."""

    def __init__(self, spec: str, total: int, **kwargs):
        self.spec, self.total, self.kwargs = spec, int(total), kwargs
        self.name = Path(spec).stem
        self._src: VideoSource | None = None

    def __iter__(self) -> Iterator[Frame]:
        emitted, offset = 0, 0
        while emitted < self.total:
            self._src = VideoSource(self.spec, max_frames=self.total - emitted, **self.kwargs)
            n = 0
            for fr in self._src:
                fr.index += offset
                fr.time_s = fr.index / self._src.fps
                n += 1
                yield fr
            self._src.close()
            if n == 0:
                return
            emitted += n
            offset += n

    def close(self) -> None:
        if self._src is not None:
            self._src.close()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
    except ImportError:  # Windows
        import psutil

        return psutil.Process().memory_info().peak_wset / (1024.0 * 1024.0)


def bench(video: str | Path, analyzer, *, min_seconds: float = 10.0, max_frames: int | None = None,
          group_frames: int = 8, warmup: int = 8, track: Any = None) -> dict[str, Any]:
    """Decode-only and full-pipeline frames/s on ``video``, ms per stage, faces/s, peak RSS.

    ``track`` (a :class:`~agender.exports.TrackOptions`) adds the tracking stage exactly as
    ``agender analyze`` runs it by default, so the figure is the one a user gets."""
    video = str(video)
    load_before = _loadavg()
    probe = VideoSource(video)
    fps, count, size = probe.fps, probe.frame_count or 0, f"{probe.width}x{probe.height}"
    probe.close()
    total = max(count, int(round(min_seconds * fps)))
    if max_frames:
        total = min(total, max_frames)

    # warm-up: first inference allocates and JIT-plans; keep it out of the timings
    warm = list(LoopedVideo(video, min(warmup, total)))
    if warm:
        analyzer.analyze_frames([f.image for f in warm])

    # 1) decode only, as the pipeline's reader does it (OpenCV/FFmpeg, BGR frames)
    t0 = time.perf_counter()
    n_dec = sum(1 for _ in LoopedVideo(video, total))
    decode_s = time.perf_counter() - t0

    # 2) the full pipeline: reader thread → detect → crop → batched estimate → CSV
    stages = _tracking_stages(track, fps)
    pipe, stats = _run_pipeline(analyzer, stages, group_frames, LoopedVideo(video, total))
    decode_fps = n_dec / decode_s if decode_s > 0 else 0.0
    return {
        "video": video,
        "resolution": size,
        "video_fps": round(fps, 3),
        **_throughput(stats, fps, decode_fps),
        "ms_per_frame": pipe.ms_per_frame(),
        "ms_per_frame_wall": round(1000.0 * stats.wall_s / max(1, stats.frames_analysed), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **_setup_of(analyzer, pipe, group_frames),
        "tracking": ({"detect_every": track.detect_every, "between": track.between, "skip_similar": track.skip_similar}
                     if stages else None),
        "threads": _threads(),
        "agender_version": __version__,
        "load_avg_1m": {"before": load_before, "after": _loadavg()},  # other jobs on the machine
    }


def _tracking_stages(track: Any, fps: float) -> list:
    """The tracking stage ``agender analyze`` would run with ``track`` (none when it is off)."""
    if track is None or not track.enabled:
        return []
    from agender.tracked_analyzer import TrackingStage

    return [TrackingStage(fps, detect_every=track.detect_every, reestimate_every=track.reestimate_every,
                          skip_similar=track.skip_similar, cuts=track.cuts, between=track.between,
                          reid=getattr(track, "reid", True))]


def _run_pipeline(analyzer, stages: list, group_frames: int, frames: LoopedVideo):
    """The offline pipeline over ``frames`` into a throw-away CSV: the pipeline and its stats."""
    from agender.pipeline import FramePipeline

    pipe = FramePipeline(analyzer, stages=stages, group_frames=group_frames)
    with tempfile.TemporaryDirectory(prefix="agender-bench-") as tmp:
        sink = CsvSink(Path(tmp) / "bench.csv")
        sink.begin(None)
        reader = pipe.read(frames, maxsize=8)
        try:
            stats = pipe.run(reader, [sink])
        finally:
            reader.close()
        sink.close()
    return pipe, stats


def _throughput(stats, fps: float, decode_fps: float) -> dict[str, Any]:
    wall = stats.wall_s
    pipeline_fps = stats.frames_analysed / wall if wall > 0 else 0.0
    return {
        "frames": stats.frames_analysed,
        "decode_fps": round(decode_fps, 1),
        "pipeline_fps": round(pipeline_fps, 1),
        "pipeline_vs_decode": round(pipeline_fps / decode_fps, 4) if decode_fps else None,
        "realtime_factor": round(pipeline_fps / fps, 2) if fps else None,
        "faces": stats.faces,
        "faces_per_frame": round(stats.faces / max(1, stats.frames_analysed), 2),
        "faces_per_s": round(stats.faces / wall, 1) if wall > 0 else 0.0,
    }


def _setup_of(analyzer, pipe, group_frames: int) -> dict[str, Any]:
    return {
        "device": analyzer.device_used,
        "detector": getattr(analyzer.detector, "name", None),
        "estimator": analyzer.estimator.name,
        "detect_width": analyzer.detect_width,
        "group_frames": group_frames,
        "detect_ahead": pipe.detect_ahead,
    }


def _threads() -> dict[str, Any]:
    import cv2

    from agender.devices import default_threads

    return {"onnxruntime_intra_op": default_threads(), "opencv": cv2.getNumThreads(), "cpus": os.cpu_count()}


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):  # Windows
        return None


def format_table(r: dict[str, Any]) -> str:
    ms = r["ms_per_frame"]
    lines = [
        f"{r['video']} ({r['resolution']}, {r['video_fps']:g} fps), {r['frames']} frames",
        f"detector {r['detector']} @ {r['detect_width']} px, estimator {r['estimator']}, device {r['device']}, "
        f"{r['threads']['onnxruntime_intra_op']} onnxruntime threads, {r['threads']['cpus']} CPUs",
        "tracking: " + (f"on, detect every {r['tracking']['detect_every']} frame(s)"
                        + (f", {r['tracking']['between']} between" if r['tracking']['detect_every'] > 1 else "")
                        if r.get("tracking") else "off"),
        "",
        f"{'decode only':<22}{r['decode_fps']:>9.1f} frames/s",
        f"{'full pipeline':<22}{r['pipeline_fps']:>9.1f} frames/s   ({100 * (r['pipeline_vs_decode'] or 0):.1f} % of "
        f"decode, {r['realtime_factor']}x real time)",
        f"{'faces':<22}{r['faces_per_s']:>9.1f} faces/s    ({r['faces_per_frame']} per frame)",
        f"{'peak RSS':<22}{r['peak_rss_mb']:>9.1f} MB",
        "",
        "ms per frame (decode" + (" and resize+detect run in their own threads" if r.get("detect_ahead") else
                                  " runs in its own thread") + ", overlapped):",
    ]
    for k, v in ms.items():
        lines.append(f"  {k:<20}{v:>8.2f}")
    lines.append(f"  {'= wall':<20}{r['ms_per_frame_wall']:>8.2f}")
    if r.get("seed"):
        s = r["seed"]
        lines += ["", f"seed approach ({s['detector']} + {s['estimator']}), same clip and options, same process:",
                  f"{'  full pipeline':<22}{s['pipeline_fps']:>9.1f} frames/s   (mean of the runs before and after: "
                  f"{' / '.join(f'{v:.1f}' for v in s.get('runs_pipeline_fps', []))})",
                  f"{'  speed-up':<22}{r['speedup_vs_seed']:>9.2f}x"]
    return "\n".join(lines)
