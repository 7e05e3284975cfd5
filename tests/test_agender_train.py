"""agender.train: export parity and the estimator's reading of an exported net (needs torch:
the [train] extra; skipped without it), plus the torch-free data helpers."""
import numpy as np
import pytest

from agender.train.data import aaf_holdout


def test_aaf_holdout_is_fixed_and_about_ten_percent():
    files = [f"{i:05d}A{i % 80:02d}.jpg" for i in range(5000)]
    m = aaf_holdout(files)
    assert 0.08 < m.mean() < 0.12
    assert (aaf_holdout(files[::-1])[::-1] == m).all()  # order-independent


def test_export_parity_and_estimator(tmp_path):
    torch = pytest.importorskip("torch")
    from agender.estimators.agender_net import AgenderEstimator
    from agender.train.model import AGES, AgenderNet, export_onnx
    from agender.train.train import predict_chips, sample_weights

    torch.manual_seed(0)
    net = AgenderNet().eval()
    with torch.no_grad():
        net.gender.weight.normal_(0, 0.05)
    path = export_onnx(net, tmp_path / "n.onnx", std_scale=1.25)
    assert path.stat().st_size < 10e6
    chips = np.random.default_rng(0).integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)
    est = AgenderEstimator(model_path=path, device="cpu", variant="fp32", flip=False)
    a1, s1, p1 = est.run_chips(chips)
    a0, s0, p0 = predict_chips(net, chips)
    assert np.abs(a1 - a0).max() < 0.1 and np.abs(p1 - p0).max() < 1e-3
    assert np.allclose(s1, 1.25 * s0, atol=0.1)
    flipped = AgenderEstimator(model_path=path, device="cpu", variant="fp32")  # the default: flip on
    a2, _, p2 = flipped.run_chips(chips)
    a3, _, p3 = predict_chips(net, chips, flip=True)
    assert np.abs(a2 - a3).max() < 0.1 and np.abs(p2 - p3).max() < 1e-3
    assert len(est.meta["ages"]) == len(AGES)
    crops = [np.full((80, 80, 3), 128, np.uint8)]
    e = est.estimate(crops, [np.array([[25, 30], [55, 30], [40, 45], [28, 60], [52, 60]], np.float32)])
    assert np.isfinite(e.age).all() and np.isfinite(e.p_male).all() and np.isfinite(e.age_std).all()
    age = np.array([5, 5, 5, 25, 25, 65], np.float32)
    w = sample_weights(age, np.array([1, 1, 1, 1, 0, 0], bool), np.array(["a", "a", "b", "a", "a", "a"]))
    assert np.isclose(w.sum(), 1) and np.isclose(w[:3].sum(), w[3])  # each decade x gender cell equal
