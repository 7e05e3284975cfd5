"""SSR-Net (age + gender nets, wiki variant) latency per face at batch 1 and batch 32, on real
faces-dev crops, through the public ``estimate`` (preprocessing included).

Run with ``python -m pytest tests/test_bench_ssrnet.py --benchmark-enable``; ms/face is the
mean time divided by the batch size (also stored in ``extra_info``). Peer: the original Keras
models took 22.3 ms/face at batch 1 and 3.2 ms/face at batch 32.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import FACES_DEV

from agender.estimators.ssrnet import SSRNetEstimator


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    files = sorted(FACES_DEV.glob("*.jpg"))[::40][:32]
    if len(files) < 32:
        pytest.skip(f"faces-dev not present at {FACES_DEV}")
    return [cv2.imread(str(f)) for f in files]


@pytest.fixture
def estimator() -> SSRNetEstimator:
    return SSRNetEstimator(device="cpu", variant="wiki")


@pytest.mark.parametrize("batch", [1, 32])
def test_bench_ssrnet_latency_per_face(benchmark, estimator, crops, batch):
    chunk = crops[:batch]
    estimator.estimate(chunk)  # warm-up: first run allocates onnxruntime's buffers
    benchmark.group = "ssrnet wiki (age+gender)"
    benchmark.extra_info["batch"] = batch
    out = benchmark(estimator.estimate, chunk)
    assert len(out) == batch and ((out.age >= 0) & (out.age <= 101)).all() and ((out.p_male >= 0) & (out.p_male <= 1)).all()
    if batch > 1:  # batching changes no answer: the first face scores as it does alone
        one = estimator.estimate(chunk[:1])
        assert abs(float(out.age[0]) - float(one.age[0])) < 0.5 and abs(float(out.p_male[0]) - float(one.p_male[0])) < 0.02
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["ms_per_face"] = 1000.0 * stats.stats.mean / batch
