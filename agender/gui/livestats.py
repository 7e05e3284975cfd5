"""Whole-run figures of the live monitor, for ``--stats-json`` (Qt-free).

The panel shows rates over the last two seconds; this keeps what a run as a whole did, so the
figures can be checked from outside: frames captured / analysed / shown per second over the
run, frames dropped, capture→display latency (median and p95), milliseconds per stage and the
device. Fed on the UI thread, one call per displayed result.
"""
from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Any

STAGES = ("detect", "estimate", "track", "draw", "paint")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class RunStats:
    """Counts and timings since :meth:`reset` (a new source)."""

    def __init__(self, keep: int = 100_000):
        self.keep = keep
        self.reset()

    def reset(self) -> None:
        self.displayed = 0
        self.t_first_shown: float | None = None
        self.t_last_shown: float | None = None
        self.latency_ms: deque[float] = deque(maxlen=self.keep)
        self.stage_sum: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.stage_n: dict[str, int] = dict.fromkeys(STAGES, 0)
        self.modes: dict[str, int] = {}

    def shown(self, t_capture: float, now: float, stage_ms: dict[str, float], mode: str = "") -> None:
        self.displayed += 1
        if self.t_first_shown is None:
            self.t_first_shown = now
        self.t_last_shown = now
        self.latency_ms.append(1000.0 * (now - t_capture))
        for k, v in stage_ms.items():
            if k in self.stage_sum and v == v:
                self.stage_sum[k] += float(v)
                self.stage_n[k] += 1
        if mode:
            self.modes[mode] = self.modes.get(mode, 0) + 1

    def painted(self, ms: float) -> None:
        self.stage_sum["paint"] += ms
        self.stage_n["paint"] += 1

    def to_dict(self, *, captured: int, capture_span_s: float, processed: int, process_span_s: float,
                dropped: int, device: str, **extra: Any) -> dict[str, Any]:
        lat = list(self.latency_ms)
        shown_span = (self.t_last_shown - self.t_first_shown) if self.displayed > 1 else 0.0
        rate = lambda n, s: round((n - 1) / s, 2) if n > 1 and s > 0 else 0.0  # noqa: E731
        d = {
            "frames_captured": int(captured),
            "frames_processed": int(processed),
            "frames_displayed": int(self.displayed),
            "capture_fps": rate(captured, capture_span_s),
            "process_fps": rate(processed, process_span_s),
            "displayed_fps": rate(self.displayed, shown_span),
            "dropped": int(dropped),
            "latency_ms": {"median": round(_pct(lat, 0.5), 2) if lat else None,
                           "p95": round(_pct(lat, 0.95), 2) if lat else None},
            "ms_per_frame": {k: round(self.stage_sum[k] / self.stage_n[k], 3) if self.stage_n[k] else None
                             for k in STAGES},
            "modes": dict(self.modes),
            "device": device,
        }
        d.update(extra)
        return d


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    from agender.io.sinks.base import atomic_write_bytes

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())
