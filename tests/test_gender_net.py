"""agender's gender net (dlib's CC0 face ResNet fine-tuned for gender, shipped as package data):
found without configuration, under 10 MB, licensed as its training data, its int8-stored
weights folded to exactly what onnxruntime computes, used by ``agender:g150`` for P(male), and
better at gender than the age net's own head. Real shipped weights, real faces."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import FACES_DEV, faces_dev_subset
from agender.analyzer import Analyzer
from agender.errors import ModelError
from agender.estimators.agender_net import AgenderEstimator
from agender.estimators.gender_net import CHIP, MODEL_FILE, GenderNet, find_model, float_model, packaged_model
from agender.eval import evaluate


@pytest.fixture(scope="module")
def net() -> GenderNet:
    return GenderNet(packaged_model(), device="cpu", threads=1)


def test_the_shipped_gender_net_is_found_without_configuration_under_10_mb_with_its_license(monkeypatch):
    monkeypatch.delenv("AGENDER_GENDER_NET", raising=False)
    path = find_model()
    assert path == packaged_model() and path.name == MODEL_FILE
    assert path.stat().st_size <= 10_000_000
    g = GenderNet(path, device="cpu")
    assert "non-commercial" in g.license and "CC0" in g.license


def test_folding_the_int8_stored_weights_gives_what_onnxruntime_computes_from_the_file(net):
    import onnxruntime as ort

    raw = ort.InferenceSession(str(packaged_model()), providers=["CPUExecutionProvider"])
    assert not [n for n in float_model(packaged_model()).graph.node if n.op_type == "DequantizeLinear"]
    chips = np.random.default_rng(0).integers(0, 255, (4, CHIP, CHIP, 3)).astype(np.uint8)
    want = raw.run(None, {"chips": chips.astype(np.float32)})[0].reshape(-1)
    np.testing.assert_allclose(net.run_chips(chips), want, atol=1e-5)


def test_agender_g150_is_the_int8_age_net_with_the_gender_net_and_the_default_keeps_the_age_nets_gender():
    from agender.estimators import create_estimator

    g = create_estimator("agender:g150", device="cpu")
    assert g.name == "agender:g150" and g.gender is not None
    assert create_estimator("agender", device="cpu").gender is None  # the default: the faster pipeline


def test_the_agender_estimator_takes_p_male_from_the_gender_net_and_can_do_without(dev_rows):
    crops = [cv2.imread(str(FACES_DEV / r["file"])) for r in dev_rows[::300]]
    with_net = AgenderEstimator(device="cpu", variant="fp32", threads=1, gender_net=True)
    without = AgenderEstimator(device="cpu", variant="fp32", threads=1, gender_net=False)
    assert with_net.gender is not None and without.gender is None
    assert packaged_model() in with_net.model_files
    with_net.gender_below = 1.01  # every face through the gender net
    a, b = with_net.estimate(crops), without.estimate(crops)
    np.testing.assert_allclose(a.age, b.age)  # the age net is the same
    assert not np.allclose(a.p_male, b.p_male)  # the gender is the other net's
    chips = np.stack([with_net.gender.chip(c) for c in crops])
    np.testing.assert_allclose(a.p_male, with_net.gender.run_chips(chips), atol=1e-6)


def test_the_gender_net_decides_only_where_the_age_nets_gender_is_unsure(dev_rows):
    crops = [cv2.imread(str(FACES_DEV / r["file"])) for r in dev_rows[::40]]
    est = AgenderEstimator(device="cpu", variant="fp32", threads=1, gender_net=True)
    own = AgenderEstimator(device="cpu", variant="fp32", threads=1, gender_net=False).estimate(crops).p_male
    got = est.estimate(crops).p_male
    sure = np.maximum(own, 1 - own) >= est.gender_below
    assert sure.any() and (~sure).any()  # both kinds among these 38 faces
    np.testing.assert_allclose(got[sure], own[sure])
    net = est.gender.p_male([c for c, s in zip(crops, sure) if not s])
    np.testing.assert_allclose(got[~sure], net, atol=1e-6)


def test_the_gender_net_gives_a_face_the_same_answer_in_any_batch(net, dev_rows):
    crops = [cv2.imread(str(FACES_DEV / r["file"])) for r in dev_rows[::250]]
    together = net.p_male(crops)
    np.testing.assert_allclose(together, [net.p_male([c])[0] for c in crops], atol=1e-5)


def test_the_gender_net_beats_the_age_nets_own_gender_on_a_balanced_faces_dev_subset(dev_rows):
    """Every 2nd face of the balanced set (752 faces, all decades and races), --no-detect."""
    sub = faces_dev_subset(2)
    ours = evaluate(Analyzer(detector="none", estimator="agender:g150", device="cpu"), sub, no_detect=True)
    alone = evaluate(Analyzer(detector="none", estimator=AgenderEstimator(device="cpu", gender_net=False)),
                     sub, no_detect=True)
    assert ours["gender_acc"] > alone["gender_acc"] + 0.005
    assert ours["gender_acc"] > 0.92


def test_a_damaged_gender_net_or_a_missing_one_named_by_the_environment_is_a_one_line_error(tmp_path, monkeypatch):
    bad = tmp_path / MODEL_FILE
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match=MODEL_FILE):
        GenderNet(bad, device="cpu")
    monkeypatch.setenv("AGENDER_GENDER_NET", str(tmp_path / "nowhere.onnx"))
    with pytest.raises(ModelError, match="AGENDER_GENDER_NET"):
        find_model()
