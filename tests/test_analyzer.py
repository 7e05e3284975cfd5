"""Analyzer: detect on a downscaled copy, map back, crop full-res, estimate in one batch.

Real detectors (YuNet from ../shared/models, MTCNN from its wheel) and the real Cydral
estimator on the shared photos and the TV clip.
"""
from __future__ import annotations

import cv2
import numpy as np
import supervision as sv
import pytest

from agender.analyzer import Analyzer
from agender.models import ModelStore

from conftest import MODELS, PHOTOS, VIDEOS

GROUP = PHOTOS / "1328360239_e56cc26d26_o.jpg"  # 7 faces, 640x480
INDIA = PHOTOS / "800px-India_(236650352).jpg"  # 5 faces, 800x533
KNUTH = PHOTOS / "dknuth.jpg"  # 1 face, 427x505
PORTRAIT = PHOTOS / "Europa21_-_2.jpg"  # 1 face, 1152x2048 (long side vertical)


def _read(path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, path
    return img


def _tv_frame(index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(VIDEOS / "tv_scene_720p.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (720, 1280, 3)
    return frame


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a (N, 4) and b (M, 4)."""
    return sv.box_iou_batch(np.asarray(a, np.float64), np.asarray(b, np.float64))


@pytest.fixture(scope="module")
def store() -> ModelStore:
    return ModelStore(MODELS)


@pytest.fixture(scope="module")
def analyzer(store) -> Analyzer:
    """YuNet at the default 640 px detection width, Cydral estimator, CPU."""
    return Analyzer(detector="yunet", estimator="cydral", device="cpu", models=store)


@pytest.fixture(scope="module")
def full_res(store, analyzer) -> Analyzer:
    """Same detector and estimator objects, but detecting on the full-resolution frame."""
    return Analyzer(detector=analyzer.detector, estimator=analyzer.estimator, device="cpu", models=store,
                    detect_width=None)


@pytest.mark.parametrize("index", [492, 1148, 1312])
def test_boxes_found_on_the_640px_copy_land_on_the_same_faces_at_full_720p(analyzer, full_res, index):
    frame = _tv_frame(index)
    small = analyzer.detect(frame)
    full = full_res.detect(frame)
    assert len(small) == len(full) >= 1
    iou = _iou(small.xyxy, full.xyxy)
    assert np.all(iou.max(axis=1) > 0.8), iou.round(2)
    # landmarks scale with the boxes
    j = iou.argmax(axis=1)
    size = full.xyxy[j, 2] - full.xyxy[j, 0]
    err = np.linalg.norm(small.landmarks - full.landmarks[j], axis=2).max(axis=1)
    assert np.all(err < 0.12 * size), (err, size)


def test_portrait_photo_is_detected_on_its_long_side_and_mapped_back(analyzer):
    img = _read(PORTRAIT)  # 1152x2048: the long side is the height, scale 640/2048
    faces = analyzer.detect(img)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces.xyxy[0]
    # the face is in the upper middle of the full-size picture (by eye: x 540-880, y 270-780)
    assert 450 < (x1 + x2) / 2 < 950 and 250 < (y1 + y2) / 2 < 800 and 250 < x2 - x1 < 500


def test_face_cut_by_the_frame_border_is_clipped_not_lost(analyzer):
    img = _read(KNUTH)
    x1, y1, x2, y2 = analyzer.detect(img).xyxy[0]
    # shift the picture left and down so the face loses a quarter of its width and sits on
    # the bottom-left corner's left edge
    cut = np.ascontiguousarray(img[:, int(x1 + 0.25 * (x2 - x1)) :])
    faces = analyzer(cut)
    assert len(faces) == 1
    bx1, by1, bx2, by2 = faces.xyxy[0]
    assert 0.0 <= bx1 < 3 and bx2 <= cut.shape[1] and by2 <= cut.shape[0]
    assert np.isfinite(faces.age[0]) and 0 <= faces.p_male[0] <= 1


def test_face_on_the_bottom_edge_is_clipped_not_lost(analyzer):
    img = _read(KNUTH)
    x1, y1, x2, y2 = analyzer.detect(img).xyxy[0]
    cut = np.ascontiguousarray(img[: int(y2 - 0.2 * (y2 - y1))])  # chin below the frame
    faces = analyzer(cut)
    assert len(faces) == 1 and faces.xyxy[0, 3] <= cut.shape[0]
    assert np.isfinite(faces.age[0])


def test_empty_frame_gives_no_faces(analyzer):
    for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 640), np.uint8)):
        assert len(analyzer.detect(empty)) == 0
        assert len(analyzer(empty)) == 0


@pytest.mark.parametrize("kind", ["grayscale", "grayscale_hw1", "bgra", "uint16", "float01"])
def test_unusual_frame_formats_give_the_faces_a_bgr_frame_gives(analyzer, kind):
    bgr = _read(INDIA)
    frame = {
        "grayscale": lambda: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
        "grayscale_hw1": lambda: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[:, :, None],
        "bgra": lambda: cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
        "uint16": lambda: bgr.astype(np.uint16) * 257,
        "float01": lambda: bgr.astype(np.float32) / 255.0,
    }[kind]()
    ref = analyzer(bgr)
    got = analyzer(frame)
    assert len(got) == len(ref) == 5
    assert np.all(_iou(got.xyxy, ref.xyxy).max(axis=1) > 0.8)
    assert np.all(np.isfinite(got.age)) and np.all((got.p_male >= 0) & (got.p_male <= 1))


def test_faces_smaller_than_min_face_are_skipped(store, analyzer):
    img = _read(GROUP)  # faces 40-60 px wide
    everyone = analyzer.detect(img)
    assert len(everyone) == 7
    sides = (everyone.xyxy[:, 2:] - everyone.xyxy[:, :2]).min(axis=1)
    min_face = int(np.median(sides)) + 1  # splits the group
    big_only = Analyzer(detector=analyzer.detector, estimator=analyzer.estimator, models=store, min_face=min_face)
    kept = big_only(img)
    assert len(kept) == int((sides >= min_face).sum())
    assert 0 < len(kept) < 7
    assert np.all((kept.xyxy[:, 2:] - kept.xyxy[:, :2]).min(axis=1) >= min_face)


def test_min_face_is_one_rule_in_full_frame_pixels_whatever_the_detect_width(store, analyzer):
    """The Analyzer's detector applies no minimum of its own (it would count pixels of the
    downscaled copy): the same min_face keeps the same faces on a 320 px copy as on 640."""
    assert analyzer.detector.min_face == 0
    img = _read(GROUP)  # faces 40-60 px wide at 640 px, 20-30 on the 320 px copy
    sides = (analyzer.detect(img).xyxy[:, 2:] - analyzer.detect(img).xyxy[:, :2]).min(axis=1)
    min_face = int(np.median(sides)) + 1
    for width in (640, 320):
        an = Analyzer(detector=analyzer.detector, estimator=analyzer.estimator, models=store, detect_width=width,
                      min_face=min_face)
        kept = an.detect(img)
        assert 0 < len(kept) < 7, width
        assert np.all((kept.xyxy[:, 2:] - kept.xyxy[:, :2]).min(axis=1) >= min_face), width


def test_analyze_frames_batch_equals_per_frame_results(analyzer):
    frames = [_read(GROUP), _read(KNUTH), np.full((360, 640, 3), 90, np.uint8), _read(INDIA), _tv_frame(656)]
    batch = analyzer.analyze_frames(frames)
    single = [analyzer(f) for f in frames]
    assert [len(b) for b in batch] == [len(s) for s in single] == [7, 1, 0, 5, 2]
    for b, s in zip(batch, single):
        np.testing.assert_allclose(b.xyxy, s.xyxy, atol=1e-3)
        np.testing.assert_allclose(b.age, s.age, atol=1e-3)
        np.testing.assert_allclose(b.p_male, s.p_male, atol=1e-4)


def test_batch_larger_than_batch_size_is_split_and_still_matches(store, analyzer):
    small_batches = Analyzer(detector=analyzer.detector, estimator=analyzer.estimator, models=store, batch_size=3)
    frames = [_read(GROUP), _read(INDIA)]  # 12 faces -> 4 estimator calls of at most 3
    a = small_batches.analyze_frames(frames)
    b = analyzer.analyze_frames(frames)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.age, y.age, atol=1e-3)
        np.testing.assert_allclose(x.p_male, y.p_male, atol=1e-4)


def test_zero_download_analyzer_estimates_every_face_in_the_group_photo(tmp_path, monkeypatch):
    """Straight after `pip install` (no fetched weights) `auto` is MTCNN, which finds all 7."""
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("AGENDER_MODELS", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if ModelStore().find("yunet/face_detection_yunet.onnx") is not None:
        pytest.skip("a YuNet file sits in the repository's face_net/ folder")
    an = Analyzer(estimator="cydral", device="cpu")
    assert an.describe()["detector"] == "mtcnn"
    faces = an(_read(GROUP))
    assert len(faces) == 7
    assert faces.landmarks is not None and np.all(np.isfinite(faces.age))


def test_stage_times_count_frames_and_faces(store, analyzer):
    an = Analyzer(detector=analyzer.detector, estimator=analyzer.estimator, models=store)
    an.analyze_frames([_read(GROUP), _read(KNUTH)])
    assert an.times.frames == 2 and an.times.faces == 8
    assert an.times.detect > 0 and an.times.estimate > 0
