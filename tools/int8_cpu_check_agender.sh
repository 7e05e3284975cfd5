#!/usr/bin/env bash
# Does agender:int8 (the default estimator) give the float net's answers on an AVX2-only x86?
# Quantizes the shipped net natively (the estimator's own recipe), then runs the float and int8
# nets (both flip passes) on every Nth faces-dev chip natively and under
# `qemu-x86_64 -cpu Haswell` (AVX2/FMA, no AVX-512, no VNNI), and compares.
# Emulated time means nothing; the ages do. Usage: tools/int8_cpu_check_agender.sh [N=5]
set -euo pipefail
cd "$(dirname "$0")/.."
every="${1:-5}"
py="${PYTHON:-python3}"
work="${INT8_CHECK_DIR:-/tmp/agender-int8-check-agender}"
shared="$(cd .. && pwd)/shared"
mkdir -p "$work"
"$py" - "$work" "$shared/data/faces-dev" "$every" <<'PY'
import csv, shutil, sys
from pathlib import Path
import cv2, numpy as np
from agender.estimators import cydral_int8 as q
from agender.estimators.agender_net import AgenderEstimator, packaged_model
from agender.models.store import sha256_file
w, fd, every = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
rows = list(csv.DictReader(open(fd / "labels.csv")))[::every]
est = AgenderEstimator(device="cpu", variant="fp32", threads=1)
chips, _ = est.chips_batch([cv2.imread(str(fd / r["file"])) for r in rows])
np.save(w / "x.npy", est.tensor(np.concatenate([chips, chips[:, :, ::-1]])))
np.save(w / "ages.npy", np.array([float(r["age"]) for r in rows]))
np.save(w / "male.npy", np.array([r["gender"] == "male" for r in rows]))
np.save(w / "agew.npy", est.meta["ages"])
cal = q._normalise(q.calibration_chips(), est.meta["means"], est.meta["scale"], True)
(w / "int8.onnx").write_bytes(q.quantize_age_net(packaged_model(), cal, sha256_file(packaged_model())))
shutil.copy(packaged_model(), w / "fp32.onnx")
PY
run='
import sys, numpy as np, onnxruntime as ort
from pathlib import Path
w, tag = Path(sys.argv[1]), sys.argv[2]
x = np.load(w / "x.npy")
for name, lvl in (("fp32", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED), ("int8", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.graph_optimization_level = lvl
    s = ort.InferenceSession(str(w / f"{name}.onnx"), so, providers=["CPUExecutionProvider"])
    out = [s.run(None, {s.get_inputs()[0].name: x[i:i + 32]}) for i in range(0, len(x), 32)]
    np.save(w / f"{tag}-{name}-p.npy", np.concatenate([o[0] for o in out]))
    np.save(w / f"{tag}-{name}-m.npy", np.concatenate([o[1].reshape(-1) for o in out]))
'
"$py" -c "$run" "$work" native
echo "== emulated Haswell (slow)"
qemu-x86_64 -cpu Haswell "$(command -v "$py")" -c "$run" "$work" haswell 2>/dev/null
"$py" - "$work" <<'PY'
import sys
from pathlib import Path
import numpy as np
w = Path(sys.argv[1]); wt = np.load(w / "agew.npy"); ages = np.load(w / "ages.npy"); male = np.load(w / "male.npy"); n = len(ages)
def res(tag, name):
    p = np.load(w / f"{tag}-{name}-p.npy").astype(np.float64); m = np.load(w / f"{tag}-{name}-m.npy").astype(np.float64)
    return (0.5 * (p[:n] + p[n:])) @ wt, 0.5 * (m[:n] + m[n:])
a0, m0 = res("native", "fp32")
for tag in ("native", "haswell"):
    for name in ("fp32", "int8"):
        a, m = res(tag, name); d = np.abs(a - a0)
        print(f"{tag:8s} {name}: MAE {np.abs(a - ages).mean():.3f} gender {((m >= 0.5) == male).mean():.4f} | vs native fp32: "
              f"|dage| mean {d.mean():.3f} p90 {np.percentile(d, 90):.3f} max {d.max():.2f}, |dp_male| mean "
              f"{np.abs(m - m0).mean():.4f}, gender flips {int(((m >= 0.5) != (m0 >= 0.5)).sum())} of {n}")
PY
