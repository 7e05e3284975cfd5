"""agender:g150's gender net runs only now and then per track (a person's gender does not change
within a track), the age on every estimate: the schedule, the means it feeds, resume, and what an
estimator whose gender is free still gets. Real clip, real nets."""
from __future__ import annotations

import collections
import json

import cv2
import numpy as np
import pytest

from agender.analyzer import Analyzer
from agender.estimators.base import SplitGender
from agender.io.sources import read_frames
from agender.tracked_analyzer import GENDER_EVERY_S, GENDER_FIRST, TrackedAnalyzer

FPS = 23.976
EVERY = round(GENDER_EVERY_S * FPS)  # frames a gender period lasts on this clip
from agender.tracking import TrackSummary
from conftest import FACES_DEV, VIDEOS

TV = VIDEOS / "tv_scene_720p.mp4"


@pytest.fixture(scope="module")
def g150() -> Analyzer:
    if not TV.is_file():
        pytest.skip(f"{TV} not present")
    return Analyzer(detector="yunet", estimator="agender:g150", device="cpu")


@pytest.fixture(scope="module")
def dinner():
    """Frames 0-117 of the TV scene: one dolly shot of a dinner table, four to five faces."""
    return read_frames(TV, 0, 118)


class GenderNetCount:
    """Counts the chips the gender net is given (wraps the real net, changes nothing)."""

    def __init__(self, net):
        self.net, self.chips = net, 0
        self._run = net.run_chips_all

    def __enter__(self):
        def run(chips):
            self.chips += len(chips)
            return self._run(chips)
        self.net.run_chips_all = run
        return self

    def __exit__(self, *exc):
        del self.net.run_chips_all  # back to the class's method


def _run_recording_the_schedule(analyzer, frames):
    """Run ``frames`` through a TrackedAnalyzer; per track, per frame: (age measured, gender
    measured) from the real Tracker.plan_gender's answer (wrapped, not replaced)."""
    ta = TrackedAnalyzer(analyzer, fps=23.976)
    plan = ta.tracker.plan_gender
    asked: dict[int, bool] = {}

    def recording(faces, due, quality, period, *a, **k):
        want = plan(faces, due, quality, period, *a, **k)
        asked.clear()
        asked.update({int(t): bool(w) for t, w in zip(faces.track_id, want)})
        return want

    ta.tracker.plan_gender = recording
    ages, genders, shown = collections.defaultdict(list), collections.defaultdict(list), []
    for fr in frames:
        faces = ta.process(fr)
        shown.append(faces)
        for i, tid in faces.tracked():
            ages[tid].append(bool(np.isfinite(faces.age[i])))
            genders[tid].append(asked.get(tid, False))
    return ta, ages, genders, shown


def test_a_tracks_gender_is_measured_on_its_first_estimates_then_once_a_second_of_video_and_the_age_every_frame(g150, dinner):
    assert isinstance(g150.estimator, SplitGender) and g150.estimator.gender is not None
    with GenderNetCount(g150.estimator.gender) as seen:
        ta, ages, genders, shown = _run_recording_the_schedule(g150, dinner)
    for faces in shown:
        for i, _ in faces.tracked():
            assert 0.0 <= faces.p_male_avg[i] <= 1.0  # every shown face has its track's gender
            assert 0.0 <= faces.p_male[i] <= 1.0  # and a raw one (the age net's own on refreshes)
    long = [t for t in ages if len(ages[t]) >= 50]
    assert len(long) >= 3
    for t in long:
        assert all(ages[t])  # the age: every frame (detect_every 1)
        assert all(genders[t][:GENDER_FIRST])  # the gender: the track's first estimates
        n = sum(genders[t])
        assert GENDER_FIRST + len(ages[t]) // EVERY - 2 <= n <= 0.3 * len(ages[t]), (t, n, len(ages[t]))
    faces_estimated = sum(sum(v) for v in ages.values())
    assert seen.chips == sum(sum(v) for v in genders.values())  # the 150-px net sees exactly those
    assert 0 < seen.chips <= 0.3 * faces_estimated


def test_the_track_gender_folds_only_the_gender_nets_measurements(g150, dinner):
    ta, ages, genders, shown = _run_recording_the_schedule(g150, dinner[:80])
    summaries = {s.face_id: s for s in ta.tracker.summaries()}
    for t in [t for t in ages if len(ages[t]) >= 40]:
        s = summaries[t]
        assert s.estimates == sum(ages[t])
        assert s.p_w < s.w_sum  # fewer gender weights than age weights: refreshes do not count
        assert 0.0 <= s.p_male_mean <= 1.0


def test_the_gender_schedule_resumes_from_a_checkpoint_to_the_same_means(g150, dinner):
    whole = TrackedAnalyzer(g150, fps=23.976)
    ref = {fr.index: whole.process(fr) for fr in dinner[:90]}
    first = TrackedAnalyzer(g150, fps=23.976)
    for fr in dinner[:45]:
        first.process(fr)
    resumed = TrackedAnalyzer(g150, fps=23.976)
    resumed.stage.load_state_dict(json.loads(json.dumps(first.stage.state_dict())))
    for fr in dinner[45:90]:
        got = resumed.process(fr)
        np.testing.assert_allclose(got.p_male, ref[fr.index].p_male, atol=1e-5)
        np.testing.assert_allclose(got.age, ref[fr.index].age, atol=1e-4)
        np.testing.assert_allclose(got.p_male_avg, ref[fr.index].p_male_avg, atol=1e-4)


def test_a_tracker_started_mid_shot_measures_the_same_frames_after_one_period(g150, dinner):
    """What a cluster segment's fresh tracker does (2 s of overlap before its boundary)."""
    _, _, _, whole = _run_recording_the_schedule(g150, dinner)
    start = 30
    _, _, _, late = _run_recording_the_schedule(g150, dinner[start:])
    for k, faces in enumerate(late):
        if k < 2 * EVERY:
            continue
        ref = whole[start + k]
        assert len(faces) == len(ref)
        np.testing.assert_allclose(faces.age, ref.age, atol=1e-4)
        np.testing.assert_allclose(faces.p_male, ref.p_male, atol=1e-5)


def test_an_estimator_whose_gender_is_free_gets_a_gender_on_every_estimate(yunet_ssrnet, dinner):
    assert not isinstance(yunet_ssrnet.estimator, SplitGender)
    ta = TrackedAnalyzer(yunet_ssrnet, fps=23.976)
    for fr in dinner[:40]:
        faces = ta.process(fr)
        assert np.isfinite(faces.p_male[faces.track_id >= 0]).all()
    for s in ta.tracker.summaries():
        assert s.p_w == pytest.approx(s.w_sum)  # every estimate's gender counts


def test_asked_for_no_gender_g150_returns_the_age_nets_own_unmirrored_estimate(g150, dev_rows):
    crops = [cv2.imread(str(FACES_DEV / r["file"])) for r in dev_rows[::200]]
    want = np.arange(len(crops)) % 2 == 0
    part = g150.estimate(crops, gender=want)
    full = g150.estimate(crops)
    from agender.estimators.agender_net import AgenderEstimator

    plain = AgenderEstimator(device="cpu", variant="int8", flip=False).estimate(crops)
    np.testing.assert_allclose(part.age[want], full.age[want])  # asked for: the full estimate
    np.testing.assert_allclose(part.p_male[want], full.p_male[want])
    # a refresh: no gender net, the age net's own P(male) and its age without the mirror pass
    np.testing.assert_allclose(part.p_male[~want], plain.p_male[~want], atol=1e-4)
    np.testing.assert_allclose(part.age[~want], plain.age[~want], atol=1e-4)
    np.testing.assert_allclose(part.age_std[~want], plain.age_std[~want], atol=1e-4)


def test_a_track_summary_from_an_older_checkpoint_keeps_its_gender_mean():
    old = {"face_id": 3, "first_frame": 0, "first_s": 0.0, "last_frame": 9, "last_s": 0.4, "estimates": 2,
           "w_sum": 2.0, "age_wsum": 60.0, "p_wsum": 1.6}  # written before p_w existed
    s = TrackSummary.from_state(old)
    assert s.p_male_mean == pytest.approx(0.8) and s.age_mean == pytest.approx(30.0)
