"""Tracking, smoothing, shot cuts and frame skipping on the real clips in ../shared/data/videos.

The expected counts were checked by eye on annotated frames of ``tv_scene_720p.mp4``:
frames 0–117 are one dolly shot of a dinner table with five faces (a boy, a girl, a man and a
woman seated, and a man seen from behind at the start; a few one-to-seven-frame detections on
background objects come and go); then one face per shot until the two-shot at 249–280 (a
woman and a boy) and one man from 281. Cuts at 118, 146, 176, 210, 249, 281 (checked on
before/after frames). The estimator is SSR-Net (fast on CPU); the tracker does not depend on it.
"""
from __future__ import annotations

import math

import collections
import json

import numpy as np
import supervision as sv
import pytest

from agender.analyzer import Analyzer
from agender.faces import Faces
from agender.io.sources import Frame, read_frames
from agender.shots import ShotCutDetector, SimilarFrameFilter
from agender.tracked_analyzer import TrackedAnalyzer, TrackingStage
from agender.tracking import Tracker
from _fakes import whole_and_resumed
from conftest import VIDEOS

TV = VIDEOS / "tv_scene_720p.mp4"
WALKING = VIDEOS / "walking_and_pause_270p.mp4"
CUTS_0_300 = [118, 146, 176, 210, 249, 281]
# shot start -> (min, max) persistent tracks (>= 10 frames), by eye: see the module docstring
PEOPLE_PER_SHOT = {0: (4, 6), 118: (1, 1), 146: (1, 1), 176: (1, 1), 210: (1, 1), 249: (2, 2), 281: (1, 1)}


def _frames(path, start: int = 0, count: int | None = None) -> list[Frame]:
    return read_frames(path, start, count)


@pytest.fixture(scope="module")
def analyzer(yunet_ssrnet) -> Analyzer:
    if not TV.is_file():
        pytest.skip(f"{TV} not present")
    return yunet_ssrnet


@pytest.fixture(scope="module")
def tv_frames() -> list[Frame]:
    return _frames(TV, 0, 300)


@pytest.fixture(scope="module")
def tv_run(analyzer, tv_frames):
    """Frames 0–299 analysed with tracking on every frame: (analyzer, {index: Faces})."""
    ta = TrackedAnalyzer(analyzer, fps=23.976)
    faces = {fr.index: ta.process(fr) for fr in tv_frames}
    return ta, faces


def _tracks(faces: dict[int, Faces]) -> dict[int, list[tuple[int, int]]]:
    out = collections.defaultdict(list)
    for idx, f in faces.items():
        for i, tid in enumerate(f.track_id):
            out[int(tid)].append((idx, i))
    return out


def test_shot_cuts_found_at_the_cuts_seen_by_eye(tv_run):
    ta, _ = tv_run
    assert ta.shot_starts == CUTS_0_300


def test_shot_cut_detector_ignores_a_pan_and_a_passing_occlusion():
    """Frames 1380–1559: cuts at 1390, 1407, 1472, 1511, 1557; a pan at 1490–1510 and a person
    crossing right in front of the camera at 1533–1547 are not cuts."""
    det = ShotCutDetector()
    cuts = [fr.index for fr in _frames(TV, 1380, 180) if det.update(fr.image)]
    assert cuts == [1390, 1407, 1472, 1511, 1557]


def test_track_counts_per_shot_match_the_faces_counted_by_eye(tv_run):
    ta, faces = tv_run
    starts = [0, *ta.shot_starts, 300]
    for a, b in zip(starts, starts[1:]):
        frames_per_track = collections.Counter(int(t) for i in range(a, b) for t in faces[i].track_id)
        persistent = sum(1 for n in frames_per_track.values() if n >= 10)
        lo, hi = PEOPLE_PER_SHOT[a]
        assert lo <= persistent <= hi, (a, b, frames_per_track)


def test_every_face_gets_a_track_id_and_no_id_spans_a_cut(tv_run):
    ta, faces = tv_run
    starts = [0, *ta.shot_starts, 300]
    shot_of = {i: k for k, (a, b) in enumerate(zip(starts, starts[1:])) for i in range(a, b)}
    for tid, where in _tracks(faces).items():
        assert tid >= 0
        assert len({shot_of[idx] for idx, _ in where}) == 1, f"track {tid} crosses a cut"


def test_smoothed_age_jitter_is_far_below_the_raw_one(tv_run):
    """Mean |Δage| between consecutive frames of one track, pooled over tracks of ≥ 20 frames."""
    _, faces = tv_run
    raw, smooth = [], []
    for tid, where in _tracks(faces).items():
        if len(where) < 20:
            continue
        a = np.array([faces[idx].age[i] for idx, i in where])
        s = np.array([faces[idx].age_avg[i] for idx, i in where])
        raw += list(np.abs(np.diff(a)))
        smooth += list(np.abs(np.diff(s)))
    raw_j, smooth_j = float(np.mean(raw)), float(np.mean(smooth))
    print(f"age jitter per frame: raw {raw_j:.3f} y, smoothed {smooth_j:.3f} y")
    assert len(raw) > 300
    assert smooth_j < 0.5 * raw_j


def test_smoothed_values_are_the_tracks_weighted_means(tv_run):
    ta, faces = tv_run
    last = {}
    for idx in sorted(faces):
        for i, tid in enumerate(faces[idx].track_id):
            last[int(tid)] = (faces[idx].age_avg[i], faces[idx].p_male_avg[i])
    for s in ta.tracker.summaries():
        age, p = last[s.face_id]
        assert age == pytest.approx(s.age_mean, abs=1e-3)
        assert p == pytest.approx(s.p_male_mean, abs=1e-4)
        assert 0.0 <= s.p_male_mean <= 1.0
        assert s.frames == sum(int(s.face_id in f.track_id) for f in faces.values())
        assert s.first_frame <= s.best_frame <= s.last_frame


def test_gender_avg_follows_the_smoothed_p_male(tv_run):
    _, faces = tv_run
    for f in faces.values():
        for face in f:
            assert face.gender_avg == ("male" if face.p_male_avg >= 0.5 else "female")


def test_detect_every_5_detects_one_frame_in_5_and_follows_the_faces(analyzer, tv_frames, tv_run):
    _, every = tv_run
    ta = TrackedAnalyzer(analyzer, fps=23.976, detect_every=5)
    shot = tv_frames[:118]
    got = {fr.index: ta.process(fr) for fr in shot}
    assert ta.counts == {"detect": 24, "track": 94, "skip": 0}
    # the same people are followed: ≥ 4 tracks of ≥ 10 frames, as with detection on every frame
    per = collections.Counter(int(t) for f in got.values() for t in f.track_id)
    assert 4 <= sum(1 for n in per.values() if n >= 10) <= 6
    # moved boxes stay on the faces found by detecting on every frame
    ious = []
    for idx, f in got.items():
        if idx % 5 == 0:
            continue
        for box in f.xyxy:
            ref = every[idx].xyxy
            if len(ref):
                ious.append(max(_iou(box, r) for r in ref))
    assert np.median(ious) > 0.6
    # estimates are refreshed at most every 5 frames per track (plus bigger/sharper faces)
    fresh = sum(int(np.isfinite(f.age).sum()) for f in got.values())
    total = sum(len(f) for f in got.values())
    assert fresh < 0.5 * total
    assert all(np.isfinite(f.age_avg).all() for f in got.values())


def test_kalman_mode_moves_boxes_without_opencv_trackers(analyzer, tv_frames):
    ta = TrackedAnalyzer(analyzer, fps=23.976, detect_every=3, between="kalman")
    got = [ta.process(fr) for fr in tv_frames[200:240]]
    assert ta.counts["track"] > 20
    assert all(len(f) >= 1 for f in got)


def test_skip_similar_skips_a_repeated_frame_and_carries_its_faces(analyzer, tv_frames):
    ta = TrackedAnalyzer(analyzer, fps=23.976, skip_similar=2.0)
    fr = tv_frames[300 - 1]
    first = ta.process(fr)
    again = ta.process(Frame(fr.index + 1, fr.time_s + 0.04, fr.image.copy()))
    assert ta.last_kind == "skip"
    assert np.array_equal(again.track_id, first.track_id)
    assert np.allclose(again.xyxy, first.xyxy)
    assert np.isnan(again.age).all() and np.isfinite(again.age_avg).all()


def test_skip_similar_threshold_is_a_mean_abs_difference_in_gray_levels():
    img = np.full((90, 160, 3), 100, np.uint8)
    f = SimilarFrameFilter(3.0)
    f.mark_analysed(img)
    assert f.should_skip(img + 2)  # 2 gray levels < 3
    assert not f.should_skip(img + 4)
    assert f.last_mad == pytest.approx(4.0)
    assert not SimilarFrameFilter(0).should_skip(img)  # 0 = off


def test_skip_similar_on_the_tv_clip_skips_still_frames_only(analyzer, tv_frames):
    ta = TrackedAnalyzer(analyzer, fps=23.976, skip_similar=4.0)
    for fr in tv_frames[210:249]:  # a talking-head shot
        ta.process(fr)
    assert 0 < ta.counts["skip"] < 39
    assert ta.counts["detect"] >= 1


def test_tracking_resumes_from_a_json_checkpoint_with_the_same_ids_and_means(analyzer, tv_frames, tv_run):
    _, full = tv_run
    first = TrackingStage(23.976)
    ta = TrackedAnalyzer(analyzer, fps=23.976)
    ta.stage = first
    for fr in tv_frames[:60]:
        ta.process(fr)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = TrackedAnalyzer(analyzer, fps=23.976)
    resumed.stage.load_state_dict(state)
    for fr in tv_frames[60:130]:
        got = resumed.process(fr)
        ref = full[fr.index]
        assert np.array_equal(got.track_id, ref.track_id), fr.index
        assert np.allclose(got.age_avg, ref.age_avg, atol=1e-4, equal_nan=True)
    assert resumed.shot_starts == [118]


def test_two_trackers_number_their_tracks_independently(analyzer, tv_frames):
    a, b = Tracker(fps=24), Tracker(fps=24)
    dets = analyzer.detect(tv_frames[250].image)
    ids_a = a.associate(tv_frames[250].image, dets).track_id
    ids_b = b.associate(tv_frames[250].image, dets).track_id
    assert list(ids_a) == list(range(len(dets))) == list(ids_b)


def test_new_shot_ends_tracks_and_ids_keep_counting(analyzer, tv_frames):
    t = Tracker(fps=24)
    img = tv_frames[250].image
    dets = analyzer.detect(img)
    first = t.associate(img, dets).track_id
    assert list(t.associate(img, dets).track_id) == list(first)  # same boxes, same ids
    t.new_shot()
    again = t.associate(img, dets).track_id
    assert set(again).isdisjoint(first) and min(again) == max(first) + 1


def test_walking_clip_has_one_track_per_person(analyzer):
    frames = _frames(WALKING)
    ta = TrackedAnalyzer(analyzer, fps=12)
    for fr in frames:
        ta.process(fr)
    summaries = ta.tracker.summaries()
    assert [s.frames for s in summaries] == [len(frames)] * 3  # three people, seen throughout
    assert ta.shot_starts == []


def _iou(a, b) -> float:
    return float(sv.box_iou_batch(np.asarray([a], np.float64), np.asarray([b], np.float64))[0, 0])




@pytest.mark.parametrize("between", ["kalman", "hold"])
def test_interrupted_tracked_run_resumes_to_the_same_table_and_tracks_file(analyzer, tmp_path, between):
    from agender.exports import TrackOptions
    from agender.runner import RunOptions

    opts = RunOptions(max_frames=72, checkpoint_s=0.0, group_frames=8)
    res = whole_and_resumed(analyzer, tmp_path, TrackOptions(detect_every=3, between=between), opts, str(TV),
                            stop_after=40)
    assert res.status == "done" and 0 < res.resumed_from <= 40
    for name in ("tv_scene_720p.csv", "tv_scene_720p.tracks.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_stage_is_resumable_unless_an_opencv_tracker_moves_boxes_between_detections():
    assert TrackingStage(24).resumable  # detect on every frame: nothing unsaved
    assert TrackingStage(24, detect_every=3, between="kalman").resumable
    assert TrackingStage(24, detect_every=3, between="hold").resumable
    assert not TrackingStage(24, detect_every=3, between="kcf").resumable  # the runner redoes the input


def test_track_label_spread_is_the_mean_of_the_models_spreads():
    from agender.tracking import TrackSummary

    s = TrackSummary(0, 0, 0.0, 0, 0.0)
    s.add_estimate(30.0, 0.9, 1.0, 4.0)
    s.add_estimate(34.0, 0.8, 3.0, 8.0)
    assert s.spread_mean == pytest.approx((4.0 + 3 * 8.0) / 4)
    assert s.age_mean == pytest.approx((30.0 + 3 * 34.0) / 4)
    # age_std: the documented tracks.csv spread, unweighted RMS of the raw ages around age_mean (33)
    assert s.age_std == pytest.approx(math.sqrt(((30.0 - 33.0) ** 2 + (34.0 - 33.0) ** 2) / 2))
