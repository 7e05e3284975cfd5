"""Face detector latency per frame on a real 1280x720 TV frame (two faces), at the Analyzer's
default 640 px detection width (640x360) and at full 720p.

Run with ``python -m pytest tests/test_bench_detectors.py --benchmark-enable``; without
``--benchmark-enable`` (the default addopts) each case runs once as a plain test. Peers on a
1280x720 frame: Haar 297 ms, the res10 DNN 30 ms. The recall side of the comparison is in
``benchmarks/detectors.py`` / ``face_net/README.md``.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import MODELS, VIDEOS

from agender.detectors import create_detector
from agender.imageops import resize_for_detection
from agender.models import ModelStore


@pytest.fixture(scope="module")
def frames() -> dict[str, np.ndarray]:
    cap = cv2.VideoCapture(str(VIDEOS / "tv_scene_720p.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 492)  # two boys at a dinner table
    ok, frame = cap.read()
    cap.release()
    if not ok:
        pytest.skip(f"cannot read {VIDEOS / 'tv_scene_720p.mp4'}")
    return {"640x360": resize_for_detection(frame, 640)[0], "1280x720": frame}


@pytest.fixture(scope="module")
def detectors() -> dict:
    store = ModelStore(MODELS)
    return {name: create_detector(name, models=store, device="cpu") for name in ("haar", "dnn", "yunet", "mtcnn")}


@pytest.mark.parametrize("size", ["640x360", "1280x720"])
@pytest.mark.parametrize("name", ["haar", "dnn", "yunet", "mtcnn"])
def test_bench_detector_ms_per_frame(benchmark, detectors, frames, name, size):
    det, frame = detectors[name], frames[size]
    det.detect(frame)  # warm-up: YuNet re-plans for a new input size, onnxruntime allocates
    benchmark.group = f"detect {size}"
    benchmark.extra_info["detector"] = name
    faces = benchmark(det.detect, frame)
    assert len(faces) >= (1 if name == "haar" else 2)  # haar misses the boy in profile
