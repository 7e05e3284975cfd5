"""The live monitor keeps up: --stats-json, the synthetic camera, detection ahead, cheap drawing,
and the degraded modes when the machine cannot keep up (offscreen Qt, real models and clips).

No test here asserts a speed: the figures are measured by ``--stats-json`` runs (docs/gui.md).
What is asserted is what can fail on any machine: keys, counts that add up, modes entered in
the stated order when a stage is *deliberately* slowed (a CPU-burning wrapper, named so).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, VIDEOS

WALKING = VIDEOS / "walking_and_pause_270p.mp4"
TV = VIDEOS / "tv_scene_720p.mp4"

pytestmark = pytest.mark.skipif(not WALKING.is_file(), reason=f"{WALKING} not present")


def _finite_numbers(d, path="") -> list[str]:
    """Paths of values in ``d`` that are numbers but not finite."""
    bad = []
    for k, v in d.items():
        if isinstance(v, dict):
            bad += _finite_numbers(v, f"{path}{k}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
            bad.append(path + k)
    return bad


def test_app_stats_json_reports_rates_latency_stages_and_device_and_drops_add_up(tmp_path):
    out = tmp_path / "stats.json"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path / "cfg"), HOME=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, str(REPO / "app.py"), "--source", str(WALKING), "--exit-after", "40",
         "--stats-json", str(out), "--detector", "yunet", "--estimator", "ssrnet:wiki", "--device", "cpu"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(out.read_text())
    print(s)
    for key in ("capture_fps", "process_fps", "displayed_fps", "dropped", "latency_ms", "ms_per_frame", "device",
                "frames_captured", "frames_processed", "frames_displayed"):
        assert key in s, key
    assert set(s["latency_ms"]) == {"median", "p95"}
    for k in ("detect", "estimate", "track", "draw", "paint"):
        assert s["ms_per_frame"][k] is not None and s["ms_per_frame"][k] >= 0, k
    assert not _finite_numbers(s), _finite_numbers(s)
    assert s["device"].startswith("CPU")
    assert s["frames_displayed"] >= 40
    assert 0 < s["latency_ms"]["median"] <= s["latency_ms"]["p95"]
    assert s["capture_fps"] > 0 and s["process_fps"] > 0 and s["displayed_fps"] > 0
    # every frame read is analysed, dropped, or still in the pipeline when the window closed
    in_flight = s["frames_captured"] - s["frames_processed"] - s["dropped"]
    assert 0 <= in_flight <= 4, s
