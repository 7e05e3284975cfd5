"""`agender models convert --to tflite [NAME...]` — LiteRT conversions of the ONNX nets.

Writes ``KEY.tflite`` + ``KEY.json`` into the user cache (default) or ``--dest``; each is
checked against onnxruntime before it is kept (:mod:`agender.runtimes.convert`). Needs the
``[convert]`` extra; the Cydral and YuNet conversions also ship inside agender, so a Pi never
runs this. The shipped files were made with::

    agender models convert --to tflite --dest agender/models/tflite
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_convert_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from agender.runtimes.tflite_store import cache_tflite_dir

    c = sub.add_parser("convert", parents=[common], help="convert nets for another runtime (--to tflite)",
                       description="Convert the ONNX nets to .tflite for --runtime litert (needs the "
                                   "[convert] extra: onnx2tf + tensorflow-cpu), checked against onnxruntime.")
    c.add_argument("names", nargs="*", metavar="NAME", help="cydral, yunet (default: all convertible nets)")
    c.add_argument("--to", required=True, choices=("tflite",), help="target format (tflite = LiteRT)")
    c.add_argument("--dest", type=Path, default=None, metavar="DIR",
                   help=f"output folder (default: {cache_tflite_dir()})")
    c.add_argument("--weights", choices=("auto", "float32", "float16"), default="auto",
                   help="weight storage; computation is float32 either way (default auto: float32, float16 "
                        "for a net whose float32 file exceeds 10 MB, i.e. Cydral's age net)")
    return c


def run_convert(args: argparse.Namespace) -> int:
    from agender.runtimes.convert import convert, keys_for
    from agender.runtimes.tflite_store import cache_tflite_dir

    from agender.models import ModelStore

    models = ModelStore(args.models or [])
    dest = args.dest or cache_tflite_dir()
    for key in keys_for(args.names):
        out = convert(key, dest, weights=args.weights, models=models)
        print(f"{out}  ({out.stat().st_size / 1e6:.2f} MB)")
    return 0
