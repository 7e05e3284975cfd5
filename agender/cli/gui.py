"""``agender gui`` (and ``python app.py``): open the live monitor.

The options are defined here once and shared by both entry points. PyQt5 is imported only
when the window is actually opened, so ``agender --help`` works without Qt installed.
"""
from __future__ import annotations

import argparse
import sys

from agender.errors import AgenderError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", metavar="SPEC",
                   help="what to show: a video or image file, a URL (http/rtsp), or cam:N (default: last used)")
    p.add_argument("--kiosk", action="store_true",
                   help="fullscreen, no menus or controls; reconnects to a camera that disappears")
    p.add_argument("--exit-after", type=int, metavar="N", dest="exit_after",
                   help="quit after N frames have been shown (with --screenshot: for docs and CI)")
    p.add_argument("--screenshot", metavar="PNG", help="save a PNG of the whole window before quitting")
    p.add_argument("--stats-json", metavar="JSON", dest="stats_json",
                   help="when quitting, write the run's figures (capture/process/displayed fps, dropped, latency "
                        "median and p95, ms per stage, device) as JSON")
    from agender.cli.common import detector_help, detector_spec, estimator_help, estimator_spec

    p.add_argument("--detector", metavar="NAME", type=detector_spec, help=f"face detector: {detector_help()}")
    p.add_argument("--estimator", metavar="NAME[:VARIANT]", type=estimator_spec,
                   help=f"age/gender estimator: {estimator_help()}")
    p.add_argument("--device", metavar="DEV", help="auto, cpu, cuda[:N], openvino, ... (default auto)")
    p.add_argument("--models", metavar="DIR", help="extra directory searched first for model files")
    p.add_argument("--privacy", action="store_true",
                   help="blur faces on screen and store nothing (snapshot and record disabled)")
    p.add_argument("--max-speed", action="store_true", dest="max_speed",
                   help="play files as fast as they decode instead of at their native frame rate")
    from agender.cli.common import add_runtime_options, positive_float, positive_int

    add_runtime_options(p)
    p.add_argument("--detect-width", type=positive_int, metavar="PX", dest="detect_width",
                   help="detect on a copy whose long side is at most PX (default: remembered, 640)")
    p.add_argument("--watchdog", type=positive_float, metavar="S",
                   help="exit (status 75, for the kiosk service to restart) when no new frame reached the screen "
                        "for S seconds: a frozen camera or display loop")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("gui", help="open the live monitor window (needs PyQt5)",
                              description="Open the live monitor: video with age/gender overlays.")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from agender.gui.config import GuiConfig

    if args.exit_after is not None and args.exit_after < 1:
        raise AgenderError(f"--exit-after must be at least 1 (got {args.exit_after})")
    try:
        import PyQt5.QtWidgets  # noqa: F401
    except ImportError as exc:
        raise AgenderError(f"the GUI needs PyQt5 ({exc}); install it with: pip install 'agender[gui]'") from None
    from agender.gui.app import run_gui
    from agender.profiles import apply_profile

    return run_gui(GuiConfig.from_args(apply_profile(args)))


def main(argv: list[str] | None = None) -> int:
    """``python app.py``: the same options as ``agender gui``, errors as one line."""
    import logging

    p = argparse.ArgumentParser(prog="app.py", description="agender live monitor: face age & gender on video.")
    add_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="agender: %(message)s", stream=sys.stderr)
    try:
        return run(args)
    except AgenderError as exc:
        print(f"agender: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
