"""LiteRT vs onnxruntime on faces-dev chips: max |Δage| and |Δp_male| of Cydral's float nets.

Usage: python benchmarks/litert_parity.py [EVERY_NTH=1] [--json]
Both estimators get the same chips (the faces-dev images, dlib landmarks, no detector), so any
difference is the runtime/conversion alone. Figures are recorded in docs/runtimes.md.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from agender.estimators.cydral import CydralEstimator

FACES_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces-dev"


def main(argv: list[str]) -> int:
    every = int(argv[0]) if argv and argv[0].isdigit() else 1
    with open(FACES_DEV / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))[::every]
    ort = CydralEstimator(device="cpu", variant="fp32", threads=1, crop_padding=0)
    lite = CydralEstimator(device="cpu", variant="fp32", threads=1, crop_padding=0, runtime="litert")
    da, dp, flips = [], [], 0
    for i in range(0, len(rows), 32):
        crops = [cv2.imread(str(FACES_DEV / r["file"])) for r in rows[i:i + 32]]
        a, b = ort.estimate(crops), lite.estimate(crops)
        da.append(np.abs(a.age - b.age))
        dp.append(np.abs(a.p_male - b.p_male))
        flips += int(((a.p_male >= 0.5) != (b.p_male >= 0.5)).sum())
    da, dp = np.concatenate(da), np.concatenate(dp)
    res = {"faces": int(len(da)), "max_abs_d_age": round(float(np.nanmax(da)), 5),
           "mean_abs_d_age": round(float(np.nanmean(da)), 5), "max_abs_d_p_male": round(float(np.nanmax(dp)), 6),
           "gender_flips": flips}
    print(json.dumps(res) if "--json" in argv else
          f"{res['faces']} faces-dev chips: max |Δage| {res['max_abs_d_age']} y (mean {res['mean_abs_d_age']}), "
          f"max |Δp_male| {res['max_abs_d_p_male']}, {flips} gender flips")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
