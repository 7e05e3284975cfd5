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

    for key in ("capture_fps", "process_fps", "displayed_fps", "dropped", "latency_ms", "ms_per_frame", "device",
                "frames_captured", "frames_processed", "frames_displayed", "mode", "mode_changes"):
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


# -- Qt-free parts ----------------------------------------------------------------------------

def test_frame_slot_with_room_for_jitter_drops_the_oldest_only_when_full():
    from agender.gui.capture import Captured, FrameSlot
    from agender.io.sources import Frame

    slot = FrameSlot(capacity=2)
    img = np.zeros((4, 4, 3), np.uint8)
    items = [Captured(Frame(i, i / 30, img), 0.0, 0) for i in range(3)]
    slot.put(items[0])
    slot.put(items[1])
    assert slot.dropped == 0 and len(slot) == 2
    slot.put(items[2])
    assert slot.dropped == 1 and list(slot.dropped_indices) == [0]
    assert slot.get(0) is items[1] and slot.get(0) is items[2] and slot.get(0) is None  # in order, no copies
    one = FrameSlot()
    one.put(items[0])
    one.put(items[1])
    assert one.get(0) is items[1] and one.dropped == 1  # one slot: latest wins, as before


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _feed(gov, clock, seconds, busy_s, interval=1 / 30):
    for _ in range(int(seconds / interval)):
        clock.t += interval
        gov.update({"detect": busy_s, "worker": busy_s / 2}, interval)


def test_governor_degrades_in_the_stated_order_and_recovers_with_a_growing_hold():
    from agender.gui.adapt import MODES, Governor

    clock = _Clock()
    gov = Governor(clock=clock, warmup_frames=0)
    _feed(gov, clock, 3, 0.020)  # 60 % of a 30 fps frame time: keeps up
    assert gov.level == 0
    _feed(gov, clock, 1.5, 0.040)  # 120 %: cannot keep up
    assert MODES[gov.level].name == "detect/2"
    _feed(gov, clock, 1.5, 0.040)
    assert MODES[gov.level].name == "detect/4"
    _feed(gov, clock, 3, 0.040)
    assert gov.level == len(MODES) - 1, "no mode beyond the last"
    assert [MODES[lv].name for _, lv, _ in gov.history] == ["detect/2", "detect/4"]
    _feed(gov, clock, 2, 0.010)  # headroom again: one step up after the hold
    assert MODES[gov.level].name == "detect/2"
    hold = gov.hold_s
    _feed(gov, clock, 2.5, 0.040)  # the step up did not hold: back down, and wait longer next time
    assert MODES[gov.level].name == "detect/4" and gov.hold_s == 2 * hold


def test_governor_ignores_the_first_frames_after_a_reset():
    from agender.gui.adapt import Governor

    clock = _Clock()
    gov = Governor(clock=clock, warmup_frames=8, min_frames=8, window_s=0.2)
    for _ in range(8):  # first inferences: slow, not counted
        clock.t += 0.5
        gov.update({"detect": 0.5}, 1 / 30)
    assert gov.level == 0
    gov.reset()
    assert gov.level == 0


def test_synthetic_camera_is_a_live_fixed_rate_source_of_the_asked_size():
    from agender.io.sources import SyntheticCamera, open_source, parse_synthetic

    assert parse_synthetic("synthetic:1280x720@30") == (1280, 720, 30.0, None)
    assert parse_synthetic(f"synthetic:640x360@12.5:{WALKING}") == (640, 360, 12.5, str(WALKING))
    assert parse_synthetic("cam:0") is None
    cam = open_source(f"synthetic:320x180@200:{WALKING}")
    assert isinstance(cam, SyntheticCamera) and cam.is_live and cam.fps == 200
    try:
        frames = [f for _, f in zip(range(5), cam)]
    finally:
        cam.close()
    assert [f.image.shape for f in frames] == [(180, 320, 3)] * 5
    assert [f.index for f in frames] == sorted({f.index for f in frames}), "indices count the clock's ticks"
    pattern = open_source("synthetic:64x48@100")
    assert next(iter(pattern)).image.shape == (48, 64, 3)


# -- the window -------------------------------------------------------------------------------

pytest.importorskip("PyQt5.QtWidgets")
pytest.importorskip("pytestqt")

from PyQt5.QtCore import QSettings  # noqa: E402

from agender.gui.adapt import MODES  # noqa: E402
from agender.gui.settings import Settings  # noqa: E402
from agender.gui.worker import ModelConfig  # noqa: E402
from _gui import window_factory  # noqa: E402

FAST = ModelConfig(detector="yunet", estimator="ssrnet:wiki", device="cpu")


@pytest.fixture
def window(qtbot, tmp_path):
    settings = Settings(QSettings(str(tmp_path / "gui.ini"), QSettings.IniFormat))
    yield from window_factory(qtbot, settings=settings, config=FAST, probe_cameras=False)


def _recording_factory(calls, wrap=None):
    """A real Analyzer whose detector and estimator note the thread that calls them."""
    import threading

    from agender.analyzer import Analyzer

    def factory(**kw):
        an = Analyzer(**kw)
        det, est = an.detector, an.estimator
        inner_detect, inner_estimate = det.detect, est.estimate

        def detect(img):
            calls.append(("detect", threading.current_thread().name))
            return (wrap or (lambda f, x: f(x)))(inner_detect, img)

        def estimate(crops, lms=None):
            calls.append(("estimate", threading.current_thread().name))
            return inner_estimate(crops, lms)

        det.detect, est.estimate = detect, estimate
        return an

    return factory


class _RecordingSource:
    """The real file source, keeping the image arrays it produced (to check nothing copies them)."""

    def __init__(self, src):
        self.src, self.images = src, {}
        for k in ("name", "fps", "frame_count", "is_live"):
            setattr(self, k, getattr(src, k, None))

    def seek(self, i):
        self.src.seek(i)

    def __iter__(self):
        for fr in self.src:
            self.images[fr.index] = fr.image
            yield fr

    def close(self):
        self.src.close()


def test_detection_runs_ahead_in_its_own_thread_and_frames_arrive_uncopied(qtbot, window):
    from agender.io.sources import open_source

    calls: list = []
    made: list = []

    def opener(spec):
        made.append(_RecordingSource(open_source(spec)))
        return made[-1]

    win = window(source=str(WALKING), analyzer_factory=_recording_factory(calls), opener=opener)
    win.worker.governor.enabled = False  # full mode whatever the machine's load: this checks its threads
    qtbot.waitUntil(lambda: win.worker.run_processed >= 20, timeout=60000)
    det_threads = {t for k, t in calls[-40:] if k == "detect"}
    est_threads = {t for k, t in calls[-40:] if k == "estimate"}
    assert det_threads == {"agender-detect-ahead"}, det_threads
    assert est_threads and not (est_threads & det_threads), "estimation runs on the worker, beside detection"
    res = win.last_result
    assert res.captured.frame.image is made[-1].images[res.captured.frame.index], "the decoded array itself"
    # the picture on screen is drawn at the view's size: painting only blits it (no scaling per paint)
    assert res.display.size() == win.view.image_rect().size()


def test_a_deliberately_slowed_detector_makes_the_monitor_degrade_in_order_and_say_so(qtbot, window, tmp_path):
    """The fault is caused on purpose: a CPU-burning wrapper makes every detection cost 70 ms
    of real CPU (native code, the GIL released, like a slow machine's detector) on a 30 fps
    synthetic camera, where a frame has 33 ms."""
    import cv2

    burn_img = np.random.default_rng(0).integers(0, 255, (240, 320, 3), np.uint8)

    def cpu_burning(f, img):
        t_end = time.perf_counter() + 0.070
        while time.perf_counter() < t_end:
            cv2.GaussianBlur(burn_img, (9, 9), 2.0)
        return f(img)

    calls: list = []
    stats = tmp_path / "stats.json"
    win = window(source=f"synthetic:640x360@30:{WALKING}", stats_json=str(stats),
                 analyzer_factory=_recording_factory(calls, wrap=cpu_burning))
    qtbot.waitUntil(lambda: win.worker.level == len(MODES) - 1, timeout=60000)
    names = [MODES[lv].name for _, lv, _ in win.worker.governor.history]
    assert names[:2] == ["detect/2", "detect/4"], names
    qtbot.waitUntil(lambda: win.last_result is not None and win.last_result.mode == "detect/4", timeout=20000)
    qtbot.waitUntil(lambda: MODES[-1].text in win.status_label.text(), timeout=10000)
    win.finish()
    s = json.loads(stats.read_text())
    assert s["mode"] == "detect/4" and [c["mode"] for c in s["mode_changes"]][:2] == ["detect/2", "detect/4"]
    assert s["modes"].get("detect/4", 0) > 0
    in_flight = s["frames_captured"] - s["frames_processed"] - s["dropped"]
    assert 0 <= in_flight <= 4, s
