"""benchmarks/video_gender.py: gender on real video faces, scored against the cast
established by looking (benchmarks/people_truth.json). Checks what it counts, never a speed
or an accuracy target (those are reported in age_gender_net/agender.md)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import VIDEOS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import video_gender  # noqa: E402

WALK = VIDEOS / "walking_and_pause_270p.mp4"


def test_video_gender_scores_every_face_of_the_three_walkers(tmp_path):
    if not WALK.is_file():
        pytest.skip(f"{WALK} not present")
    from agender.cli.main import main

    assert main(["analyze", str(WALK), "-o", str(tmp_path), "-q", "--no-reid"]) == 0
    truth = json.loads(video_gender.bench.TRUTH.read_text())["walking_and_pause_270p.mp4"]
    r = video_gender.score(tmp_path, WALK.stem, truth)
    assert set(r["per_actor"]) == set(truth["cast"])  # each walker's track found its actor
    n = [v[0] for v in r["per_actor"].values()]
    # raw: the faces whose gender was measured (the default measures a track's gender on its
    # first estimates and then now and then); smoothed: every frame of each walker's track
    assert r["faces"] == sum(n) and min(n) >= 3
    assert r["faces_shown"] >= 3 * 30 and r["faces_shown"] >= r["faces"]
    assert r["small_lt80px"][0] == r["faces"]  # 270p: every face is under 80 px wide
    assert 0.0 <= r["gender_pct"] <= 100.0
    # the bald man in the middle is an easy case for any estimator worth shipping
    assert r["per_actor"]["middle_bald_glasses"][1] >= 90.0
