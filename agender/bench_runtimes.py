"""``agender bench VIDEO --compare-runtimes``: onnxruntime, LiteRT and ``auto`` side by side.

Same clip, same options, same process, back to back (as ``--vs-seed`` does for the seed), so
the figures compare even on a loaded machine. Per runtime: pipeline frames/s, ms per stage,
estimator ms per face in the pipeline (chip alignment included, the same for both), and
net-only ms per face (age + gender nets on a batch of 8 chips) and ms per detector frame —
the part a runtime actually changes. ``auto`` reports what it picked and the timings it
picked on.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

RUNTIME_ORDER = ("onnxruntime", "litert", "auto")


def _median_ms(fn: Callable[[], Any], repeats: int = 15) -> float:
    fn()  # warm-up: allocation, XNNPACK packing
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000.0 * float(np.median(times)), 3)


def session_labels(analyzer) -> dict[str, str]:
    """Which runtime each net runs on (``auto→litert`` once auto has chosen)."""
    from agender.runtimes import runtime_label

    out = {}
    det = getattr(analyzer, "detector", None)
    if det is not None and hasattr(det, "sess"):
        out["detector"] = runtime_label(det.sess)
    est = analyzer.estimator
    for k in ("_age", "_gender"):
        if hasattr(est, k):
            out[k.strip("_")] = runtime_label(getattr(est, k))
    return out


def nets_only(analyzer, detect_shape: tuple[int, int] | None) -> dict[str, float]:
    """ms per face of the estimator nets (batch of 8) and ms per frame of the detector net."""
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    est = analyzer.estimator
    if hasattr(est, "_age") and hasattr(est, "_gender"):
        b = est.bundle
        xa = rng.standard_normal((8, 3, b.age.chip, b.age.chip)).astype(np.float32)
        xg = rng.standard_normal((8, 3, b.gender.chip, b.gender.chip)).astype(np.float32)
        out["estimator_nets_ms_per_face"] = round(
            _median_ms(lambda: (est._age.run({est._age.input_names[0]: xa}),
                                est._gender.run({est._gender.input_names[0]: xg}))) / 8, 3)
    det = getattr(analyzer, "detector", None)
    if det is not None and hasattr(det, "sess") and detect_shape:
        h, w = detect_shape
        ph, pw = (h - 1) // 32 * 32 + 32, (w - 1) // 32 * 32 + 32
        x = (rng.random((1, 3, ph, pw)) * 255).astype(np.float32)
        out["detector_net_ms_per_frame"] = _median_ms(lambda: det.sess.run({det.sess.input_names[0]: x}))
        out["detector_input"] = f"{pw}x{ph}"
    return out


def compare(video: str, make_analyzer: Callable[[str], Any], bench_fn: Callable[..., dict], *,
            runtimes: tuple[str, ...] = RUNTIME_ORDER, **opts) -> dict[str, Any]:
    """One bench per runtime; ``make_analyzer(runtime)`` builds the analyzer for it."""
    from agender.io.sources import VideoSource
    from agender.runtimes import litert_available

    probe = VideoSource(video)
    size = (probe.height, probe.width)
    probe.close()
    per: dict[str, Any] = {}
    for rt in runtimes:
        if rt != "onnxruntime" and not litert_available():
            per[rt] = {"skipped": "ai-edge-litert not installed (pip install 'agender[litert]')"}
            continue
        an = make_analyzer(rt)
        res = bench_fn(video, an, **opts)
        dw = an.detect_width
        scale = min(1.0, dw / max(size)) if dw else 1.0
        det_shape = (round(size[0] * scale), round(size[1] * scale))
        fpf = res["faces_per_frame"] or 0.0
        res["estimate_ms_per_face"] = round(res["ms_per_frame"]["estimate"] / fpf, 3) if fpf else None
        res["runtimes"] = session_labels(an)
        res.update(nets_only(an, det_shape))
        per[rt] = res
    keys = ("pipeline_fps", "decode_fps", "faces_per_frame", "estimate_ms_per_face", "estimator_nets_ms_per_face",
            "detector_net_ms_per_frame", "detector_input", "runtimes")
    return {"video": video, "compare_runtimes": {rt: ({k: r.get(k) for k in keys} | {"ms_per_frame": r["ms_per_frame"]}
                                                      if "skipped" not in r else r) for rt, r in per.items()},
            "full": per}


def format_compare(res: dict[str, Any]) -> str:
    rows = res["compare_runtimes"]
    head = f"{'':34}" + "".join(f"{rt:>16}" for rt in rows)
    lines = [f"{res['video']}: runtimes side by side (same process, back to back)", head]

    def row(label: str, key: str, fmt: str = "{:>16.2f}") -> None:
        cells = []
        for r in rows.values():
            v = r.get(key)
            cells.append(f"{'-':>16}" if v is None else (fmt.format(v) if not isinstance(v, str) else f"{v:>16}"))
        lines.append(f"{label:34}" + "".join(cells))

    row("pipeline frames/s", "pipeline_fps", "{:>16.1f}")
    row("decode-only frames/s", "decode_fps", "{:>16.1f}")
    row("faces per frame", "faces_per_frame")
    row("estimate ms/face (in pipeline)", "estimate_ms_per_face", "{:>16.3f}")
    row("estimator nets ms/face (batch 8)", "estimator_nets_ms_per_face", "{:>16.3f}")
    row("detector net ms/frame", "detector_net_ms_per_frame", "{:>16.3f}")
    row("detector input", "detector_input")
    for net in ("detector", "age", "gender"):
        cells = "".join(f"{r.get('runtimes', {}).get(net, r.get('skipped', '-'))[:15]:>16}" for r in rows.values())
        lines.append(f"{'runs on: ' + net:34}" + cells)
    return "\n".join(lines)
