"""`agender eval LABELS.csv` — accuracy on a labeled face set (``file,age,gender[,race]``).

Prints a table (overall, per age decade / gender / race, worst-group gaps) or, with ``--json``,
the object :func:`agender.eval.evaluate` returns. Same model options as ``analyze``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agender.cli.common import add_model_options, build_analyzer, positive_int, stderr_is_tty


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="accuracy on a labeled face set (age MAE, CS@5, gender accuracy, per-group gaps)",
        description="Score the models on LABELS.csv (columns file,age,gender[,race]; images beside it or "
                    "in --images DIR). Without --no-detect the detector runs first and missed faces count "
                    "as wrong (age MAE is over detected faces).")
    p.add_argument("labels", type=Path, metavar="LABELS.csv")
    p.add_argument("--images", type=Path, metavar="DIR", help="folder the file column is relative to")
    p.add_argument("--no-detect", action="store_true", help="each image is already a face chip")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the first N labeled rows")
    add_model_options(p)
    p.set_defaults(func=run, _parser=p)
    return p


def run(args: argparse.Namespace) -> int:
    from agender.eval import evaluate, format_table, read_labels

    labels = read_labels(args.labels, args.images, args.limit)
    analyzer = build_analyzer(args, no_detect=args.no_detect, for_eval=True)
    bar = None
    if stderr_is_tty() and not args.json:
        from tqdm import tqdm

        bar = tqdm(total=len(labels.files), unit="face", file=sys.stderr, leave=False)
    try:
        res = evaluate(analyzer, labels, no_detect=args.no_detect, progress=bar.update if bar else None,
                       min_gender_conf=args.min_gender_conf)
    finally:
        if bar:
            bar.close()
    res["labels"] = str(args.labels)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(format_table(res))
    for msg in res.get("unreadable_files", []):
        print(f"agender: warning: {msg}", file=sys.stderr)
    return 0
