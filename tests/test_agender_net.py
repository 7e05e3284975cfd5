"""``agender`` (our own net, shipped as package data): found without configuration, int8 only
after it agreed with the float net on this CPU (ages *and* P(male)), flip-averaged, and ahead of
Cydral on faces-dev. Real shipped weights, real faces-dev images."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from conftest import FACES_DEV, faces_dev_subset
from agender.analyzer import Analyzer
from agender.estimators import create_estimator, cydral_int8
from agender.estimators.agender_net import MODEL_FILE, AgenderEstimator, packaged_model
from agender.eval import evaluate


@pytest.fixture(scope="module")
def int8() -> AgenderEstimator:
    return AgenderEstimator(device="cpu", threads=1, variant="int8")



def test_the_shipped_agender_net_is_found_without_configuration_and_is_under_10_mb(monkeypatch):
    monkeypatch.delenv("AGENDER_NET", raising=False)
    est = AgenderEstimator(device="cpu", variant="fp32")
    assert est.model_path == packaged_model() and est.model_path.name == MODEL_FILE
    assert est.model_path.stat().st_size <= 10_000_000
    assert est.meta["std_scale_flip"] > 0 and len(est.meta["ages"]) == 101


def test_agender_is_reachable_through_the_registry_with_its_variants():
    assert create_estimator("agender:fp32", device="cpu").name == "agender"
    assert create_estimator("agender:int8", device="cpu").name == "agender:int8"
    assert create_estimator("agender:g150", device="cpu").name == "agender:g150"
    assert create_estimator("agender", device="cpu").name == "agender:g150"  # the default: + the gender net


def test_agender_int8_verdict_bounds_ages_and_p_male_on_this_cpu(int8):
    from agender.models.store import sha256_file

    path = cydral_int8.int8_cache_path(sha256_file(int8.model_path))
    verdict = json.loads(cydral_int8.check_path(path).read_text())
    assert verdict["passed"] is True and verdict["stats"]["n"] == cydral_int8.CHECK_SIZE
    assert verdict["stats"]["p_male_mean"] <= cydral_int8.AGREEMENT.p_male_mean
    assert verdict["bound"]["p_male_p90"] == cydral_int8.AGREEMENT.p_male_p90


def test_an_int8_net_whose_p_male_drifts_fails_the_agreement_check_even_with_right_ages():
    ok_ages = {"n": 48, "mean": 0.9, "p90": 1.9, "max": 4.0}
    assert cydral_int8.AGREEMENT.holds(ok_ages)  # a one-output net (Cydral's) is judged on ages alone
    assert cydral_int8.AGREEMENT.holds({**ok_ages, "p_male_mean": 0.013, "p_male_p90": 0.031})
    assert not cydral_int8.AGREEMENT.holds({**ok_ages, "p_male_mean": 0.2, "p_male_p90": 0.45})


def test_agender_int8_agrees_with_fp32_on_faces_dev_faces(int8, dev_rows):
    fp32 = AgenderEstimator(device="cpu", variant="fp32", threads=1)
    rows = dev_rows[::15]
    crops = [cv2.imread(str(FACES_DEV / r["file"])) for r in rows]
    a, b = int8.estimate(crops), fp32.estimate(crops)
    assert np.abs(a.age - b.age).mean() < 1.0 and np.abs(a.age - b.age).max() < 5.0
    assert ((a.p_male >= 0.5) != (b.p_male >= 0.5)).sum() <= 2
    assert np.abs(a.p_male - b.p_male).mean() < 0.03


def test_a_mirrored_chip_gets_the_same_answer_with_flip_averaging(int8, dev_rows):
    chips, ok = int8.chips_batch([cv2.imread(str(FACES_DEV / r["file"])) for r in dev_rows[:: 150]])
    assert ok.all()
    a = int8.run_chips(chips)
    b = int8.run_chips(np.ascontiguousarray(chips[:, :, ::-1]))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-4)


def test_agender_gives_a_face_the_same_answer_in_any_batch(int8, dev_rows):
    crops = [cv2.imread(str(FACES_DEV / r["file"])) for r in dev_rows[::200]]
    together = int8.estimate(crops)
    alone = [int8.estimate([c]) for c in crops]
    np.testing.assert_allclose(together.age, [e.age[0] for e in alone], atol=1e-4)
    np.testing.assert_allclose(together.p_male, [e.p_male[0] for e in alone], atol=1e-5)


def test_agender_beats_cydral_on_a_balanced_faces_dev_subset(dev_rows):
    """Every 6th face of the balanced set (251 faces, all decades and races), --no-detect."""
    sub = faces_dev_subset(6)
    ours = evaluate(Analyzer(detector="none", estimator="agender", device="cpu"), sub, no_detect=True)
    theirs = evaluate(Analyzer(detector="none", estimator="cydral:int8", device="cpu"), sub, no_detect=True)
    assert ours["age_mae"] < theirs["age_mae"] - 0.8
    assert ours["gender_acc"] > theirs["gender_acc"]
    assert ours["age_mae"] < 6.6 and ours["gender_acc"] > 0.89


def test_agender_falls_back_to_fp32_with_one_warning_when_the_cache_is_unwritable(tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    monkeypatch.setenv("AGENDER_CACHE", str(blocked))
    with caplog.at_level(logging.WARNING):
        est = AgenderEstimator(device="cpu", variant="int8")
    assert est.name == "agender"
    assert [r for r in caplog.records if "agender:int8" in r.getMessage() and "using fp32" in r.getMessage()]
    e = est.estimate([np.full((90, 90, 3), 120, np.uint8)])
    assert np.isfinite(e.age).all()
