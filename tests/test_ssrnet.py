"""SSR-Net without TensorFlow: the ONNX conversion reproduces the original Keras models on
every face of faces-dev, every variant reports P(male), conversions are cached by sha256, and
damaged checkpoints give one-line errors.

All weights are the real upstream checkpoints in ../shared/models/ssrnet; the golden outputs
are the original Keras models' (reference_faces_dev.csv).
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import FACES_DEV, MODELS

from agender.errors import AgenderError, ModelError
from agender.estimators import create_estimator
from agender.estimators import ssrnet_onnx
from agender.estimators.base import Estimator
from agender.estimators.ssrnet import VARIANTS, SSRNetEstimator, preprocess
from agender.models import ModelStore, sha256_file

SSRNET = MODELS / "ssrnet"
REFERENCE = SSRNET / "reference_faces_dev.csv"
AGE_TOL = 0.05  # years
GENDER_TOL = 0.001

pytestmark = pytest.mark.skipif(not REFERENCE.is_file(), reason=f"{REFERENCE} not present")


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, float]]:
    """model ("wiki_age", …) → file → the original Keras model's output."""
    out: dict[str, dict[str, float]] = {}
    with open(REFERENCE, newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["model"], {})[row["file"]] = float(row["output"])
    return out


@pytest.fixture(scope="module")
def faces_dev(reference) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """All faces-dev files that have golden outputs: names, BGR crops, is-male labels."""
    files = sorted(reference["wiki_age"])
    with open(FACES_DEV / "labels.csv", newline="") as fh:
        male = {r["file"]: r["gender"] == "male" for r in csv.DictReader(fh)}
    crops = [cv2.imread(str(FACES_DEV / f)) for f in files]
    assert all(c is not None for c in crops)
    return files, crops, np.array([male[f] for f in files])


@pytest.fixture(scope="module")
def estimators(tmp_path_factory) -> dict[str, SSRNetEstimator]:
    """One estimator per variant (module scope: the autouse env fixture is not active yet, so
    the model dir and the conversion cache are set here explicitly)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENDER_CACHE", str(tmp_path_factory.mktemp("ssrnet-cache")))
        store = ModelStore([MODELS])
        return {v: SSRNetEstimator(models=store, device="cpu", variant=v) for v in VARIANTS}


@pytest.fixture(scope="module")
def results(estimators, faces_dev) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """variant → (raw age, raw gender score, normalised P(male)) over all of faces-dev, from
    one batched pass per net (the estimate() wiring is checked against these on a subset)."""
    _, crops, _ = faces_dev
    batch, ok = preprocess(crops)
    assert ok.all()
    out = {}
    for variant, est in estimators.items():
        age, score = est.run_nets(batch)
        out[variant] = (age, score, est.p_male(score))
    return out


# -- parity with the original Keras models --------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ssrnet_onnx_age_net_matches_keras_on_every_faces_dev_face(variant, results, reference, faces_dev):
    files, _, _ = faces_dev
    net = Path(VARIANTS[variant].age_file).stem  # e.g. "morph2_age"
    want = np.array([reference[net][f] for f in files])
    age, _, _ = results[variant]
    err = np.abs(age - want)
    assert len(age) == len(files) == 1504
    assert err.max() <= AGE_TOL, f"{net}: max |Δ| {err.max():.4f} years at {files[int(err.argmax())]}"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ssrnet_onnx_gender_net_raw_score_matches_keras_on_every_faces_dev_face(variant, results, reference, faces_dev):
    files, _, _ = faces_dev
    net = Path(VARIANTS[variant].gender_file).stem  # e.g. "morph_gender"
    want = np.array([reference[net][f] for f in files])
    _, score, _ = results[variant]
    err = np.abs(score - want)
    assert err.max() <= GENDER_TOL, f"{net}: max |Δ| {err.max():.5f} at {files[int(err.argmax())]}"


def test_every_ssrnet_variant_reports_p_male_polarity(results, faces_dev):
    _, _, is_male = faces_dev
    for variant, (_, score, p) in results.items():
        assert np.all((p >= 0) & (p <= 1)), variant
        acc = float(np.mean((p >= 0.5) == is_male))
        assert acc > 0.5, f"ssrnet:{variant} gender accuracy {acc:.3f} after normalisation"
        raw_acc = float(np.mean((score >= 0.5) == is_male))
        # the flag says exactly which checkpoints are inverted: the raw score of a flipped one
        # is worse than chance, that of every other one better
        assert (raw_acc < 0.5) == VARIANTS[variant].gender_is_female, (variant, raw_acc)


# -- the estimator as the pipeline sees it ----------------------------------------------------

@pytest.mark.parametrize("spec, name", [("ssrnet", "ssrnet:wiki"), ("ssrnet:imdb", "ssrnet:imdb"),
                                        ("ssrnet:morph2", "ssrnet:morph"), ("SSRNet:Morph", "ssrnet:morph")])
def test_create_estimator_builds_ssrnet_variants_by_name(spec, name):
    est = create_estimator(spec, device="cpu")
    assert isinstance(est, Estimator)
    assert est.name == name
    assert est.default_padding == pytest.approx(0.4)
    assert est.wants_landmarks is False
    assert est.device_used.startswith("CPU")


def test_unknown_ssrnet_variant_is_a_one_line_error():
    with pytest.raises(AgenderError, match=r"unknown ssrnet variant 'utk'.*wiki, imdb, morph") as err:
        SSRNetEstimator(variant="utk")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ssrnet_estimate_returns_raw_age_and_normalised_p_male_in_face_order(variant, estimators, faces_dev, results):
    _, crops, _ = faces_dev
    pick = np.r_[0:40:3, 700:760:7, 1460:1504:5][::-1]  # all age decades, reversed order
    out = estimators[variant].estimate([crops[i] for i in pick])
    age, _, p_male = results[variant]
    np.testing.assert_allclose(out.age, age[pick], rtol=0, atol=1e-4)
    np.testing.assert_allclose(out.p_male, p_male[pick], rtol=0, atol=1e-5)
    assert np.isnan(out.age_std).all()


def test_ssrnet_batch_of_one_equals_the_same_face_in_a_big_batch(estimators, faces_dev, results):
    _, crops, _ = faces_dev
    est = estimators["wiki"]
    for i in (0, 700, 1503):
        one = est.estimate([crops[i]])
        assert one.age[0] == pytest.approx(results["wiki"][0][i], abs=1e-3)
        assert one.p_male[0] == pytest.approx(results["wiki"][2][i], abs=1e-5)


def test_ssrnet_empty_batch_and_empty_crop(estimators, faces_dev):
    _, crops, _ = faces_dev
    est = estimators["wiki"]
    assert len(est.estimate([])) == 0
    out = est.estimate([crops[0], np.zeros((0, 0, 3), np.uint8), crops[1]])
    assert np.isfinite(out.age[[0, 2]]).all() and np.isnan(out.age[1]) and np.isnan(out.p_male[1])


def test_ssrnet_accepts_grayscale_and_bgra_crops(estimators, faces_dev):
    _, crops, _ = faces_dev
    gray = cv2.cvtColor(crops[3], cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(crops[3], cv2.COLOR_BGR2BGRA)
    out = estimators["wiki"].estimate([gray, bgra, crops[3]])
    assert np.isfinite(out.age).all()
    assert out.age[1] == pytest.approx(out.age[2], abs=1e-4)


def test_preprocess_equals_per_image_cv2_resize_and_normalize_minmax(faces_dev):
    _, crops, _ = faces_dev
    flat = np.full((30, 20, 3), 77, np.uint8)  # max == min: OpenCV gives all zeros
    sample = [crops[0], crops[100], crops[1000][20:150, 40:120], flat]
    batch, ok = preprocess(sample)
    assert batch.shape == (4, 64, 64, 3) and batch.dtype == np.float32 and ok.all()
    for got, crop in zip(batch, sample):
        chip = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        want = cv2.normalize(chip, None, 0, 255, cv2.NORM_MINMAX)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


def test_converted_ssrnet_onnx_has_dynamic_batch_and_nhwc_input():
    model = ssrnet_onnx.build_ssrnet(ssrnet_onnx.read_keras_weights(SSRNET / "wiki_gender.h5"))
    (inp,) = model.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [64, 64, 3]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["ssrnet.kind"] == "gender"
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # folded


# -- conversion cache -------------------------------------------------------------------------

def _count_builds(monkeypatch) -> list[str]:
    """Record every real conversion (the real converter still runs)."""
    calls: list[str] = []
    real = ssrnet_onnx.build_ssrnet

    def counting(weights, *a, **k):
        calls.append(weights.path.name)
        return real(weights, *a, **k)

    monkeypatch.setattr(ssrnet_onnx, "build_ssrnet", counting)
    return calls


def test_ssrnet_conversion_is_cached_by_sha256_and_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENDER_CACHE", str(tmp_path / "cache"))
    builds = _count_builds(monkeypatch)
    first = SSRNetEstimator(device="cpu", variant="wiki")
    assert sorted(builds) == ["wiki_age.h5", "wiki_gender.h5"]
    onnx_dir = tmp_path / "cache" / "onnx"
    expected = {f"{sha256_file(SSRNET / f)}.onnx" for f in ("wiki_age.h5", "wiki_gender.h5")}
    assert {p.name for p in onnx_dir.iterdir()} == expected  # nothing else: no temp files left behind
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in onnx_dir.iterdir()}

    second = SSRNetEstimator(device="cpu", variant="wiki")
    assert len(builds) == 2  # not converted again
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in onnx_dir.iterdir()} == stamps
    chip = np.random.default_rng(0).integers(0, 255, (80, 70, 3), dtype=np.uint8)
    assert first.estimate([chip]).age[0] == second.estimate([chip]).age[0]


def test_truncated_onnx_cache_is_rebuilt_not_trusted(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENDER_CACHE", str(tmp_path / "cache"))
    h5 = SSRNET / "imdb_age.h5"
    path = ssrnet_onnx.cached_onnx(h5)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])
    builds = _count_builds(monkeypatch)
    assert ssrnet_onnx.cached_onnx(h5) == path
    assert builds == ["imdb_age.h5"]
    assert onnx.load(str(path)).metadata_props  # a complete model again


def _model_dir_with(tmp_path: Path, damaged_age: bytes) -> Path:
    d = tmp_path / "models" / "ssrnet"
    d.mkdir(parents=True)
    (d / "wiki_age.h5").write_bytes(damaged_age)
    shutil.copy(SSRNET / "wiki_gender.h5", d / "wiki_gender.h5")
    return d.parent


def test_corrupt_ssrnet_h5_gives_one_line_model_error_naming_the_file(tmp_path):
    data = (SSRNET / "wiki_age.h5").read_bytes()
    models = _model_dir_with(tmp_path, data[:4096] + b"\0" * 1000)
    bad = models / "ssrnet" / "wiki_age.h5"
    # with verification (the default): the sha256 check catches it
    with pytest.raises(ModelError) as err:
        SSRNetEstimator(models=ModelStore([models]), device="cpu")
    msg = str(err.value)
    assert str(bad) in msg and "corrupt" in msg and "\n" not in msg
    # without verification (a user's own checkpoint): the HDF5 reader catches it
    with pytest.raises(ModelError) as err:
        SSRNetEstimator(models=ModelStore([models], verify=False), device="cpu")
    msg = str(err.value)
    assert str(bad) in msg and "corrupt" in msg and "\n" not in msg


def test_hdf5_that_is_not_an_ssrnet_checkpoint_gives_one_line_model_error(tmp_path):
    import h5py

    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["layer_names"] = [b"dense_1"]
        g = h5.create_group("dense_1")
        g.attrs["weight_names"] = [b"dense_1/kernel:0"]
        g.create_dataset("dense_1/kernel:0", data=np.zeros((4, 2), np.float32))
    with pytest.raises(ModelError) as err:
        ssrnet_onnx.cached_onnx(path)
    assert str(path) in str(err.value) and "not an SSR-Net" in str(err.value) and "\n" not in str(err.value)
