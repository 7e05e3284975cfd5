"""`agender bench`: one process, decode-only vs pipeline on the same clip, stages, RSS, ratios.

Only the report's shape and consistency are checked here: speed itself is read from the
command's output (README), never asserted in a timed test.
"""
from __future__ import annotations

import json

import pytest

from agender.cli.main import main
from conftest import VIDEOS

WALKING = VIDEOS / "walking_and_pause_270p.mp4"  # 41 frames @ 12 fps (3.4 s)


def test_bench_json_reports_decode_and_pipeline_fps_stages_faces_rss_device_and_ratio(capsys):
    assert main(["bench", str(WALKING), "--max-frames", "12", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["frames"] == 12 and r["resolution"] == "480x270"
    assert r["decode_fps"] > 0 and r["pipeline_fps"] > 0
    assert r["pipeline_vs_decode"] == round(r["pipeline_fps"] / r["decode_fps"], 4) or \
        abs(r["pipeline_vs_decode"] - r["pipeline_fps"] / r["decode_fps"]) < 1e-3
    assert set(r["ms_per_frame"]) >= {"decode", "resize", "detect", "crop+preprocess", "estimate", "output"}
    assert all(v >= 0 for v in r["ms_per_frame"].values())
    assert r["faces"] > 0 and r["faces_per_s"] > 0
    assert 50 < r["peak_rss_mb"] < 4000
    assert r["device"].startswith("CPU") and r["detector"] == "yunet" and r["estimator"] == "agender:g150"


def test_bench_loops_a_short_clip_to_the_minimum_duration(capsys):
    assert main(["bench", str(WALKING), "--min-seconds", "4", "--json", "--detect-width", "240"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["frames"] == 48  # 4 s at 12 fps: the 41-frame clip once, then 7 frames of a second pass


def test_bench_prints_a_table_for_people(capsys):
    assert main(["bench", str(WALKING), "--max-frames", "6", "--estimator", "ssrnet:wiki"]) == 0
    out = capsys.readouterr().out
    for text in ("decode only", "full pipeline", "faces/s", "peak RSS", "ms per frame", "estimate", "ssrnet"):
        assert text in out


def test_bench_of_a_file_that_is_not_a_video_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "x.mp4"
    bad.write_text("nope")
    assert main(["bench", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "x.mp4" in err and "Traceback" not in err


def test_bench_measures_the_default_tracked_pipeline_unless_told_not_to(capsys):
    assert main(["bench", str(WALKING), "--max-frames", "12", "--json"]) == 0
    tracked = json.loads(capsys.readouterr().out)
    assert tracked["tracking"] == {"detect_every": 1, "between": "kalman", "skip_similar": 0.0}
    assert tracked["ms_per_frame"]["track"] > 0
    assert main(["bench", str(WALKING), "--max-frames", "12", "--json", "--no-track"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["tracking"] is None and plain["ms_per_frame"].get("track", 0) < tracked["ms_per_frame"]["track"]


def test_bench_detect_every_without_tracking_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(WALKING), "--no-track", "--detect-every", "5"])
    assert exc.value.code == 2


def test_bench_vs_seed_runs_the_seed_approach_in_the_same_process_and_reports_the_speedup(capsys):
    assert main(["bench", str(WALKING), "--max-frames", "10", "--json", "--vs-seed"]) == 0
    r = json.loads(capsys.readouterr().out)
    s = r["seed"]
    assert (s["detector"], s["estimator"], s["frames"]) == ("dnn", "ssrnet:wiki", 10)
    assert r["speedup_vs_seed"] == round(r["pipeline_fps"] / s["pipeline_fps"], 2)
    assert len(s["runs_pipeline_fps"]) == 2, "seed measured before and after (A-B-A)"
    assert abs(s["pipeline_fps"] - sum(s["runs_pipeline_fps"]) / 2) < 0.06
    assert set(r["load_avg_1m"]) == {"before", "after"}
    assert main(["bench", str(WALKING), "--max-frames", "4", "--vs-seed"]) == 0
    assert "speed-up" in capsys.readouterr().out


def test_default_detect_width_is_the_detectors_own_and_an_explicit_one_wins(capsys):
    from agender.analyzer import Analyzer

    assert Analyzer(detector="yunet", estimator="ssrnet:wiki", device="cpu").detect_width == 480
    assert Analyzer(detector="haar", estimator="ssrnet:wiki", device="cpu").detect_width == 640
    assert Analyzer(detector="yunet", estimator="ssrnet:wiki", device="cpu", detect_width=320).detect_width == 320
    assert Analyzer(detector="yunet", estimator="ssrnet:wiki", device="cpu", detect_width=None).detect_width is None
    assert main(["bench", str(WALKING), "--max-frames", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["detect_width"] == 480
    assert main(["bench", str(WALKING), "--max-frames", "4", "--json", "--detect-width", "640"]) == 0
    assert json.loads(capsys.readouterr().out)["detect_width"] == 640


def test_detection_downscale_at_a_non_integer_ratio_matches_a_box_filter():
    """720p → 480 px goes through a 2×2 box average (INTER_AREA's fast path) and a bilinear rest:
    close to the one-step INTER_AREA picture, so detectors see the same faces."""
    import cv2
    import numpy as np

    from agender.imageops import resize_for_detection

    cap = cv2.VideoCapture(str(VIDEOS / "tv_scene_720p.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok
    small, s = resize_for_detection(frame, 480, fast=True)
    ref = cv2.resize(frame, (480, 270), interpolation=cv2.INTER_AREA)
    assert small.shape == ref.shape and s == 480 / 1280
    assert np.abs(small.astype(int) - ref).mean() < 2.0
    same, s2 = resize_for_detection(frame, 640, fast=True)  # an integer ratio: INTER_AREA as before
    assert np.array_equal(same, cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA))
    assert np.array_equal(resize_for_detection(frame, 480)[0], ref), "detectors that do not ask: unchanged"
