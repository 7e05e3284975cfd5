"""Levi–Hassner Caffe nets through cv2.dnn, with the real prototxt from ../shared and a real
.caffemodel file this test writes (seeded random weights: the upstream weights are not in the
shared store). The estimator loads them exactly as it loads a user's downloaded files."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from caffe_weights import upstream_gender_prototxt, write_caffemodel
from conftest import FACES_DEV, MODELS, PHOTOS
from agender.analyzer import Analyzer
from agender.errors import AgenderError, ModelError
from agender.estimators import create_estimator
from agender.estimators.levi_hassner import AGE_LABELS, LeviHassnerEstimator, age_from_probs
from agender.models import ModelStore

SHARED_LH = MODELS / "levi_hassner"


@pytest.fixture(scope="module")
def lh_models(tmp_path_factory) -> Path:
    """models/levi_hassner/ with the real age prototxt and a written age_net.caffemodel;
    gender/ with upstream's gender deploy net (the age net with 2 outputs) and its weights."""
    root = tmp_path_factory.mktemp("lh")
    age_dir = root / "models" / "levi_hassner"
    age_dir.mkdir(parents=True)
    shutil.copyfile(SHARED_LH / "age_deploy.prototxt", age_dir / "age_deploy.prototxt")
    write_caffemodel(age_dir / "age_deploy.prototxt", age_dir / "age_net.caffemodel", seed=0)
    gender_dir = root / "gender"
    gender_dir.mkdir()
    (gender_dir / "gender_deploy.prototxt").write_text(upstream_gender_prototxt(SHARED_LH / "age_deploy.prototxt"))
    write_caffemodel(gender_dir / "gender_deploy.prototxt", gender_dir / "gender_net.caffemodel", seed=1)
    return root


@pytest.fixture(scope="module")
def est(lh_models) -> LeviHassnerEstimator:
    # age: through the model store (sha256-verified real prototxt); gender: an explicit path
    return LeviHassnerEstimator(
        models=ModelStore(lh_models / "models"), device="cpu",
        gender_model=lh_models / "gender" / "gender_net.caffemodel",
    )


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    files = sorted(FACES_DEV.glob("*.jpg"))[::150]
    return [cv2.imread(str(f)) for f in files]


def test_levi_hassner_loads_a_written_caffemodel_with_the_real_prototxt(est):
    assert est.name == "levi-hassner" and not est.wants_landmarks and est.default_padding == 0.4
    assert est.device_used == "CPU"


def test_levi_hassner_batch_gives_the_same_results_as_one_face_at_a_time(est, faces):
    crops = [cv2.resize(f, (s, s)) for f, s in zip(faces[:6], [200, 64, 300, 227, 120, 90])]
    batch = est.estimate(crops)
    for i, c in enumerate(crops):
        one = est.estimate([c])
        np.testing.assert_allclose(one.age, batch.age[i : i + 1], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(one.age_std, batch.age_std[i : i + 1], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(one.p_male, batch.p_male[i : i + 1], atol=1e-5)
        assert one.age_label == batch.age_label[i : i + 1]


def test_levi_hassner_outputs_are_distributions_and_labels_are_buckets(est, faces):
    faces = faces[:6]
    pa, pg = est.probabilities(faces)
    assert pa.shape == (len(faces), 8) and pg.shape == (len(faces), 2)
    for p in (pa, pg):
        assert (p >= 0).all() and np.allclose(p.sum(axis=1), 1.0, atol=1e-4)
    assert np.ptp(pa, axis=0).max() > 1e-3  # the written weights make faces differ
    out = est.estimate(faces)
    assert set(out.age_label) <= set(AGE_LABELS)
    assert np.all((out.age >= 1) & (out.age <= 80)) and np.all(out.age_std > 0)
    np.testing.assert_allclose(out.p_male, pg[:, 0], atol=1e-6)  # gender classes are (male, female)
    assert out.age_label == [AGE_LABELS[i] for i in pa.argmax(axis=1)]


def test_expected_age_and_spread_come_from_bucket_midpoints_and_widths():
    one_hot = np.eye(8)[[4]]  # certain of (25-32)
    age, std, label = age_from_probs(one_hot)
    assert label == ["(25-32)"] and age[0] == pytest.approx(28.5) and std[0] == pytest.approx(7 / 12**0.5)
    age, std, label = age_from_probs(np.array([[0.5, 0, 0, 0, 0, 0, 0, 0.5]]))  # (0-2) or (60-100)
    assert age[0] == pytest.approx((1 + 80) / 2) and std[0] > 39


def test_levi_hassner_missing_caffemodel_is_a_one_line_error_with_the_fetch_command(tmp_path):
    only_protos = tmp_path / "levi_hassner"
    only_protos.mkdir()
    shutil.copyfile(SHARED_LH / "age_deploy.prototxt", only_protos / "age_deploy.prototxt")
    with pytest.raises(ModelError) as err:
        LeviHassnerEstimator(models=ModelStore(tmp_path), device="cpu")
    msg = str(err.value)
    assert "\n" not in msg
    assert "age_net.caffemodel" in msg and "agender models fetch levi-hassner" in msg


def test_levi_hassner_explicit_weights_path_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(ModelError, match="nowhere.caffemodel"):
        LeviHassnerEstimator(device="cpu", age_model=tmp_path / "nowhere.caffemodel")


def test_levi_hassner_weights_that_do_not_fit_the_prototxt_are_a_one_line_error(lh_models):
    gender_weights = lh_models / "gender" / "gender_net.caffemodel"  # fc8: 2 outputs, age prototxt: 8
    with pytest.raises(ModelError) as err:
        LeviHassnerEstimator(
            device="cpu", age_model=gender_weights, age_proto=lh_models / "models/levi_hassner/age_deploy.prototxt",
            gender_model=gender_weights,
        )
    msg = str(err.value)
    assert "\n" not in msg and "gender_net.caffemodel" in msg and "age_deploy.prototxt" in msg


def test_levi_hassner_shared_gender_prototxt_is_rejected_by_opencv_with_a_one_line_error(tmp_path, lh_models):
    """The shared gender_deploy.prototxt is an edited copy (LRN local_size 8): even with weights
    of its own shapes OpenCV refuses it, and the user gets one line naming the file."""
    d = tmp_path / "levi_hassner"
    d.mkdir()
    shutil.copyfile(SHARED_LH / "gender_deploy.prototxt", d / "gender_deploy.prototxt")
    write_caffemodel(d / "gender_deploy.prototxt", d / "gender_net.caffemodel", seed=2)
    with pytest.raises(ModelError) as err:
        LeviHassnerEstimator(
            models=ModelStore(d.parent), device="cpu",
            age_model=lh_models / "models/levi_hassner/age_net.caffemodel",
        )
    msg = str(err.value)
    assert "\n" not in msg and "gender_deploy.prototxt" in msg and "local_size" in msg


def test_levi_hassner_through_the_registry_finds_files_on_the_search_path(lh_models, tmp_path):
    d = tmp_path / "levi_hassner"
    shutil.copytree(lh_models / "models" / "levi_hassner", d)
    for f in (lh_models / "gender").iterdir():
        shutil.copyfile(f, d / f.name)
    # verify=False: the upstream gender prototxt is not the (edited) one the manifest pins
    est = create_estimator("levi-hassner", models=ModelStore(tmp_path, verify=False), device="cpu")
    assert isinstance(est, LeviHassnerEstimator)
    with pytest.raises(AgenderError):
        create_estimator("levi-hassner:big", models=ModelStore(tmp_path, verify=False), device="cpu")


def test_levi_hassner_grayscale_tiny_and_empty_crops_do_not_crash(est):
    rng = np.random.default_rng(0)
    crops = [
        rng.integers(0, 255, (80, 60), dtype=np.uint8),
        rng.integers(0, 255, (30, 30, 4), dtype=np.uint8),
        np.full((1, 1, 3), 99, np.uint8),
        np.zeros((0, 0, 3), np.uint8),
    ]
    out = est.estimate(crops)
    assert np.isfinite(out.age[:3]).all() and np.isfinite(out.p_male[:3]).all()
    assert np.isnan(out.age[3]) and out.age_label[3] == ""
    assert len(est.estimate([])) == 0


def test_analyzer_with_levi_hassner_labels_every_face_with_a_bucket(est):
    an = Analyzer(detector="haar", estimator=est, device="cpu")
    faces = an(cv2.imread(str(PHOTOS / "800px-India_(236650352).jpg")))
    assert len(faces) >= 3 and an.padding == 0.4
    assert all(label in AGE_LABELS for label in faces.age_label)
