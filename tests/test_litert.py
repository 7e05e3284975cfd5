"""LiteRT (TensorFlow Lite + XNNPACK) runtime: the shipped .tflite conversions of YuNet and
Cydral against onnxruntime, on real faces-dev chips and real video frames; ``auto`` choosing
by its own measurement; the flags as a contract. Skips, saying why, without ai-edge-litert."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from conftest import FACES_DEV, VIDEOS
from agender.cli.main import main
from agender.runtimes import AutoSession, check_runtime, litert_available, open_session
from agender.runtimes.tflite_store import PACKAGE_DIR, find_tflite

needs_litert = pytest.mark.skipif(not litert_available(),
                                  reason="ai-edge-litert not installed (pip install 'agender[litert]')")


@pytest.fixture(scope="module")
def dev_chips() -> list[np.ndarray]:
    """~150 faces-dev images across all ages (every 10th row)."""
    with open(FACES_DEV / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))[::10]
    return [cv2.imread(str(FACES_DEV / r["file"])) for r in rows]


@pytest.mark.arm64_smoke
@needs_litert
def test_litert_cydral_matches_onnxruntime_on_faces_dev_chips(dev_chips):
    from agender.estimators.cydral import CydralEstimator

    ort = CydralEstimator(device="cpu", variant="fp32", threads=1, crop_padding=0)
    lite = CydralEstimator(device="cpu", variant="fp32", threads=1, crop_padding=0, runtime="litert")
    a, b = ort.estimate(dev_chips), lite.estimate(dev_chips)
    # measured: every 10th chip max |Δage| 0.071 y, all 1504 chips 0.105 y (float16 age weights); p_male 2e-6
    assert np.nanmax(np.abs(a.age - b.age)) < 0.1
    assert np.nanmax(np.abs(a.p_male - b.p_male)) < 1e-4
    assert ((a.p_male >= 0.5) == (b.p_male >= 0.5)).all()
    assert lite._age.runtime == "litert" and "LiteRT" in lite.device_used


@needs_litert
def test_litert_agender_the_default_net_matches_onnxruntime_on_faces_dev_chips(dev_chips):
    from agender.estimators.agender_net import AgenderEstimator

    ort = AgenderEstimator(device="cpu", variant="fp32", threads=1)
    lite = AgenderEstimator(device="cpu", variant="fp32", threads=1, runtime="litert")
    a, b = ort.estimate(dev_chips), lite.estimate(dev_chips)
    # measured at conversion: max |Δ| of every output 1.6e-4; eval MAE 5.743 on both runtimes
    assert np.nanmax(np.abs(a.age - b.age)) < 0.1
    assert np.nanmax(np.abs(a.p_male - b.p_male)) < 1e-3
    assert ((a.p_male >= 0.5) == (b.p_male >= 0.5)).all()
    assert lite._net.runtime == "litert" and "LiteRT" in lite.device_used


@pytest.mark.arm64_smoke
@needs_litert
def test_litert_yunet_finds_the_same_faces_as_onnxruntime_on_a_video_frame():
    from agender.detectors.yunet import YuNetDetector

    cap = cv2.VideoCapture(str(VIDEOS / "tv_scene_720p.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, frame = cap.read()
    cap.release()
    assert ok
    small = cv2.resize(frame, (480, 270), interpolation=cv2.INTER_AREA)
    a = YuNetDetector(device="cpu").detect(small)
    b = YuNetDetector(device="cpu", runtime="litert").detect(small)
    assert len(a) == len(b) > 0
    assert np.abs(a.xyxy - b.xyxy).max() < 0.5  # pixels
    assert np.abs(a.det_conf - b.det_conf).max() < 1e-3
    assert np.abs(a.landmarks - b.landmarks).max() < 0.5


def test_shipped_tflite_files_are_conversions_of_the_installed_onnx_nets():
    from agender.estimators.cydral import CydralBundle
    from agender.detectors.yunet import MODEL
    from agender.models import ModelStore

    b = CydralBundle.load(verify=False)
    for key, src in (("cydral-age-v1", b.age.path), ("cydral-gender-v1", b.gender.path),
                     ("yunet", ModelStore().resolve(MODEL))):
        path = find_tflite(key, src)
        assert path.parent == PACKAGE_DIR and path.stat().st_size <= 10_000_000
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["license"] in ("CC0-1.0", "MIT") and meta["check"]["max_abs_diff"] < 0.02
    card = (PACKAGE_DIR / "MODEL_CARD.md").read_text()
    assert "agender models convert --to tflite" in card and "CC0" in card and "MIT" in card


@needs_litert
def test_auto_runtime_keeps_the_one_it_measured_faster():
    from agender.estimators.cydral import CydralBundle

    path = CydralBundle.load(verify=False).gender.path
    sess = open_session(path, runtime="auto", device="cpu", threads=1, tflite_key="cydral-gender-v1")
    assert isinstance(sess, AutoSession) and sess.chosen is None
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    out = sess.run({sess.input_names[0]: x})
    assert set(sess.timings_ms) == {"onnxruntime", "litert"}
    faster = min(sess.timings_ms, key=sess.timings_ms.get)
    assert sess.runtime == f"auto→{faster}" and sess.chosen.runtime == faster
    assert np.allclose(out[0], sess.run({sess.input_names[0]: x})[0], atol=1e-5)


@needs_litert
def test_cli_analyze_with_runtime_litert_writes_the_same_rows(tmp_path):
    clip = VIDEOS / "walking_and_pause_270p.mp4"
    for rt in ("onnxruntime", "litert"):
        assert main(["analyze", str(clip), "-o", str(tmp_path / rt), "--fps", "3", "--estimator", "cydral",
                     "--runtime", rt, "--threads", "1"]) == 0
    rows = [list(csv.DictReader(open(tmp_path / rt / "walking_and_pause_270p.csv"))) for rt in ("onnxruntime", "litert")]
    assert len(rows[0]) == len(rows[1]) > 0
    assert max(abs(float(x["age"]) - float(y["age"])) for x, y in zip(*rows)) < 0.1


def test_unknown_runtime_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "x.csv", "--runtime", "tensorflow"])
    assert exc.value.code == 2
    assert "unknown runtime 'tensorflow': use onnxruntime, litert, auto" in capsys.readouterr().err
    assert check_runtime("tflite") == "litert"


@needs_litert
def test_runtime_litert_with_an_estimator_that_has_none_is_one_line(tmp_path, capsys):
    clip = VIDEOS / "walking_and_pause_270p.mp4"
    assert main(["analyze", str(clip), "-o", str(tmp_path), "--estimator", "ssrnet", "--runtime", "litert"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert any("estimator ssrnet has no LiteRT runtime" in ln for ln in err)


def test_profile_pi_fills_only_what_the_command_line_left_at_its_default():
    import argparse

    from agender.cli.main import build_parser
    from agender.profiles import apply_profile

    p = build_parser()
    args = p.parse_args(["analyze", "x.mp4", "-o", "o", "--profile", "pi", "--detect-width", "480"])
    apply_profile(args, args._parser)
    assert (args.runtime, args.threads, args.detect_width, args.detect_every) == ("auto", 4, 480, 3)
    with pytest.raises(SystemExit):
        p.parse_args(["analyze", "x.mp4", "-o", "o", "--profile", "toaster"])
    assert isinstance(args, argparse.Namespace)


def test_convert_without_the_converter_extra_names_it(tmp_path, capsys):
    try:
        import onnx2tf  # noqa: F401
        pytest.skip("onnx2tf is installed here: the conversion itself is exercised by tools and docs")
    except ImportError:
        pass
    assert main(["models", "convert", "--to", "tflite", "cydral", "--dest", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "pip install 'agender[convert]'" in err and len(err.strip().splitlines()) == 1
