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
    assert r["device"].startswith("CPU") and r["detector"] == "yunet" and r["estimator"] == "cydral:int8"


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
