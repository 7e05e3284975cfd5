"""``--profile NAME``: named presets of runtime, threads, detect width and detect-every.

A profile fills in only what the command line (or ``AGENDER_THREADS``, for threads) leaves at
its default, so
``--profile pi --detect-width 480`` is the Pi preset with a wider detector. The figures
behind each preset are in docs/pi.md; none of them is a measured Raspberry Pi speed.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass

from agender.errors import AgenderError


@dataclass(frozen=True)
class Profile:
    """One preset. ``None`` leaves the option to the command line / the model's default."""

    name: str
    runtime: str | None = None
    threads: int | None = None
    detect_width: int | None = None
    detect_every: int | None = None
    why: str = ""


PROFILES = {
    p.name: p
    for p in (
        Profile(
            "pi",
            # auto: both runtimes are timed on the first real input on the Pi itself (the only
            # honest way to choose there: Pi speed is not measured here); LiteRT's XNNPACK is
            # the expected winner on Cortex-A, and the shipped .tflite needs no TensorFlow.
            runtime="auto",
            threads=4,  # Raspberry Pi 4 and 5 have 4 cores, no SMT
            # op counts (docs/pi.md): YuNet at 320 px is 0.44 of the 480 px work; on the shared
            # clips it keeps every face of 30 px and more, loses 11-14 px ones (classroom_270p)
            detect_width=320,
            # detect every 3rd frame, Kalman boxes between (agender analyze's tracking stage):
            # per-person labels on the shared clips match every-frame detection (docs/pi.md)
            detect_every=3,
            why="Raspberry Pi 4/5 (4 Cortex-A cores): LiteRT/auto, 4 threads, 320 px, detect every 3rd frame",
        ),
    )
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name.strip().lower()]
    except KeyError:
        raise AgenderError(f"unknown profile {name!r}: use {', '.join(PROFILES)}") from None


def profile_name(text: str) -> str:
    """argparse ``type=``: a usage error (exit 2) for an unknown profile."""
    try:
        return get_profile(text).name
    except AgenderError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def apply_profile(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Fill ``args`` from ``args.profile`` where an option is absent or at its parser default."""
    name = getattr(args, "profile", None)
    if not name:
        return args
    prof = get_profile(name)
    for key, value in asdict(prof).items():
        if key in ("name", "why") or value is None or not hasattr(args, key):
            continue
        if key == "threads" and os.environ.get("AGENDER_THREADS"):
            continue  # the user's thread budget, as explicit as --threads
        default = parser.get_default(key) if parser is not None else None
        if getattr(args, key) in (None, default):
            setattr(args, key, value)
    return args
