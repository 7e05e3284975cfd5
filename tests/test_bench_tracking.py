"""Pipeline frames/s with ``--detect-every 5`` versus every frame, same clip, same run.

``python -m pytest tests/test_bench_tracking.py --benchmark-enable`` times the detect-every-5
pass with pytest-benchmark; both passes' frames/s and their ratio are in ``extra_info`` (and
printed with ``-s``). Without ``--benchmark-enable`` it runs once as a plain test, checking
only what each pass did (never its speed). ``python benchmarks/tracking.py`` prints the same
comparison as a table, with the default estimator, on more frames.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import MODELS, VIDEOS
from agender.analyzer import Analyzer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tracking as bench_tracking  # noqa: E402

TV = VIDEOS / "tv_scene_720p.mp4"


@pytest.fixture(scope="module")
def frames() -> list:
    if not TV.is_file():
        pytest.skip(f"{TV} not present")
    return bench_tracking.load_frames(TV, count=96)  # shot 1: five faces at a dinner table


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(detector="yunet", estimator="ssrnet", device="cpu", models=str(MODELS))


def test_bench_detect_every_5_versus_every_frame(benchmark, analyzer, frames):
    bench_tracking.run_once(analyzer, frames[:8], 23.976, 1)  # warm-up
    every = bench_tracking.run_once(analyzer, frames, 23.976, 1)
    fifth = benchmark.pedantic(bench_tracking.run_once, args=(analyzer, frames, 23.976, 5), rounds=1, iterations=1)
    ratio = {"wall": fifth["wall_fps"] / every["wall_fps"], "cpu": fifth["cpu_fps"] / every["cpu_fps"]}
    benchmark.extra_info.update({"every_frame": every, "detect_every_5": fifth, "fps_ratio": ratio})
    print(f"\nfps every frame {every['wall_fps']:.1f} (CPU {every['cpu_fps']:.1f}), detect-every 5 "
          f"{fifth['wall_fps']:.1f} (CPU {fifth['cpu_fps']:.1f}): ×{ratio['wall']:.2f} wall, ×{ratio['cpu']:.2f} CPU")
    assert every["detections"] == 96 and fifth["detections"] == 20
    assert fifth["estimated_faces"] < 0.5 * every["estimated_faces"]
    assert fifth["faces"] >= 0.9 * every["faces"]  # tracked frames still carry the faces
