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
# onnxruntime runs first and last (A-B-C-A): load that drifts during the run weighs on it both
# ways, and the spread of its two runs says how far the machine's load moved the figures
RUN_ORDER = ("onnxruntime", "litert", "auto", "onnxruntime")


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
    for k in ("_age", "_gender", "_net"):  # cydral's two nets; agender's one (age + gender)
        if hasattr(est, k):
            out[{"_net": "age+gender"}.get(k, k.strip("_"))] = runtime_label(getattr(est, k))
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
    from agender.estimators.agender_net import AgenderEstimator

    if isinstance(est, AgenderEstimator):
        chips = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
        if est.gender is None:  # the age net alone, both flip passes
            out["estimator_nets_ms_per_face"] = round(_median_ms(lambda: est.run_chips(chips)) / 8, 3)
        else:  # the default: the age net once (no mirror beside the age head) + the 150-px gender net
            g_chips = rng.integers(0, 256, (8, 150, 150, 3), dtype=np.uint8)
            once = np.zeros(8, bool) if est.gender.has_age else None
            out["estimator_nets_ms_per_face"] = round(_median_ms(
                lambda: (est.run_chips(chips, once), est.gender.run_chips_all(g_chips))) / 8, 3)
    det = getattr(analyzer, "detector", None)
    if det is not None and hasattr(det, "sess") and detect_shape:
        h, w = detect_shape
        ph, pw = (h - 1) // 32 * 32 + 32, (w - 1) // 32 * 32 + 32
        x = (rng.random((1, 3, ph, pw)) * 255).astype(np.float32)
        out["detector_net_ms_per_frame"] = _median_ms(lambda: det.sess.run({det.sess.input_names[0]: x}))
        out["detector_input"] = f"{pw}x{ph}"
    return out


def compare(video: str, make_analyzer: Callable[[str], Any], bench_fn: Callable[..., dict], *,
            runtimes: tuple[str, ...] = RUN_ORDER, **opts) -> dict[str, Any]:
    """One bench per runtime; ``make_analyzer(runtime)`` builds the analyzer for it."""
    from agender.io.sources import VideoSource
    from agender.runtimes import litert_available

    probe = VideoSource(video)
    size = (probe.height, probe.width)
    probe.close()
    per: dict[str, Any] = {}
    runs: dict[str, list[dict]] = {}
    for rt in runtimes:
        if rt != "onnxruntime" and not litert_available():
            per[rt] = {"skipped": "ai-edge-litert not installed (pip install 'agender[litert]')"}
            continue
        if rt == "onnxruntime" and rt in per and len(runtimes) > 1 and not litert_available():
            continue  # nothing to compare against: one onnxruntime run is enough
        an = make_analyzer(rt)
        res = bench_fn(video, an, **opts)
        dw = an.detect_width
        scale = min(1.0, dw / max(size)) if dw else 1.0
        det_shape = (round(size[0] * scale), round(size[1] * scale))
        fpf = res["faces_per_frame"] or 0.0
        res["estimate_ms_per_face"] = round(res["ms_per_frame"]["estimate"] / fpf, 3) if fpf else None
        res["runtimes"] = session_labels(an)
        res.update(nets_only(an, det_shape))
        runs.setdefault(rt, []).append(res)
        per[rt] = _mean_runs(runs[rt])
    keys = ("runs_pipeline_fps", "load_avg_1m", "pipeline_fps", "decode_fps", "faces_per_frame", "estimate_ms_per_face", "estimator_nets_ms_per_face",
            "detector_net_ms_per_frame", "detector_input", "runtimes")
    return {"video": video, "compare_runtimes": {rt: ({k: r.get(k) for k in keys} | {"ms_per_frame": r["ms_per_frame"]}
                                                      if "skipped" not in r else r) for rt, r in per.items()},
            "full": per}


def _mean_runs(rs: list[dict]) -> dict:
    """The first run's record with the figures averaged over the runs (A-B-C-A)."""
    if len(rs) == 1:
        return {**rs[0], "runs_pipeline_fps": [rs[0]["pipeline_fps"]], "load_avg_1m": [rs[0]["load_avg_1m"]]}
    out = dict(rs[0])
    for k in ("pipeline_fps", "decode_fps", "estimate_ms_per_face", "estimator_nets_ms_per_face",
              "detector_net_ms_per_frame"):
        vals = [r[k] for r in rs if r.get(k) is not None]
        out[k] = round(sum(vals) / len(vals), 3) if vals else None
    out["ms_per_frame"] = {k: round(sum(r["ms_per_frame"][k] for r in rs) / len(rs), 3) for k in rs[0]["ms_per_frame"]}
    out["runs_pipeline_fps"] = [r["pipeline_fps"] for r in rs]
    out["load_avg_1m"] = [r["load_avg_1m"] for r in rs]
    return out


def format_compare(res: dict[str, Any]) -> str:
    rows = res["compare_runtimes"]
    head = f"{'':34}" + "".join(f"{rt:>18}" for rt in rows)
    lines = [f"{res['video']}: runtimes side by side (same process, back to back; onnxruntime first and last, "
             "its figures the mean of both)", head]

    def row(label: str, key: str, fmt: str = "{:>18.2f}") -> None:
        cells = []
        for r in rows.values():
            v = r.get(key)
            cells.append(f"{'-':>18}" if v is None else (fmt.format(v) if not isinstance(v, str) else f"{v:>18}"))
        lines.append(f"{label:34}" + "".join(cells))

    row("pipeline frames/s", "pipeline_fps", "{:>18.1f}")
    lines.append(f"{'  (each run)':34}" + "".join(
        f"{' / '.join(f'{v:.1f}' for v in r.get('runs_pipeline_fps', [])) or '-':>18}" for r in rows.values()))
    row("decode-only frames/s", "decode_fps", "{:>18.1f}")
    row("faces per frame", "faces_per_frame")
    row("estimate ms/face (in pipeline)", "estimate_ms_per_face", "{:>18.3f}")
    row("estimator nets ms/face (batch 8)", "estimator_nets_ms_per_face", "{:>18.3f}")
    row("detector net ms/frame", "detector_net_ms_per_frame", "{:>18.3f}")
    row("detector input", "detector_input")
    nets = ["detector", "age", "gender"]
    if any("age+gender" in r.get("runtimes", {}) for r in rows.values()):
        nets = ["detector", "age+gender"]
    for net in nets:
        cells = "".join(f"{r.get('runtimes', {}).get(net, r.get('skipped', '-'))[:17]:>18}" for r in rows.values())
        lines.append(f"{'runs on: ' + net:34}" + cells)
    return "\n".join(lines)
