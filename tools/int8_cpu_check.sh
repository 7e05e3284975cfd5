#!/usr/bin/env bash
# Does cydral:int8 give the float net's ages on other CPUs? Runs the int8 age net (the shipped
# 7-bit recipe "r2" and the old 8-bit one "r1") on faces-dev chips under user-mode emulation:
#   x86-64 Haswell (AVX2, no AVX-512/VNNI)   qemu-x86_64 -cpu Haswell, this venv's onnxruntime
#   arm64 (Cortex-A72 = Raspberry Pi 4; max) qemu-aarch64 with Debian 12's arm64 python3.11 and
#                                            the registry's aarch64 numpy/onnxruntime wheels
# and compares each with the float net run natively. Emulated *time* means nothing; the ages do.
# Usage: tools/int8_cpu_check.sh [EVERY_NTH_FACE=5]   (needs qemu-user; about 20 min at 5)
# Found here: onnxruntime 1.30's aarch64 wheel crashes at import under qemu-user 7.2, so the
# arm64 runs use onnxruntime 1.20.1 (the newest that imports there).
set -euo pipefail
cd "$(dirname "$0")/.."
every="${1:-5}"
py="${PYTHON:-python3}"
work="${INT8_CHECK_DIR:-/tmp/agender-int8-check}"
shared="$(cd .. && pwd)/shared"
mkdir -p "$work"
export AGENDER_MODELS="$shared/models" AGENDER_CACHE="$work/cache"

echo "== native: chips, models, float reference"
"$py" - "$work" "$shared/data/faces-dev" "$every" <<'EOF'
import csv, shutil, sys
from pathlib import Path
import cv2, numpy as np
from agender.estimators import cydral_int8 as q
from agender.estimators.cydral import CydralEstimator
from agender.models.store import sha256_file
work, fd, every = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
rows = list(csv.DictReader(open(fd / "labels.csv")))[::every]
est = CydralEstimator(device="cpu", threads=1)
spec = est.bundle.age
x = est._tensor(np.stack([est.chips(cv2.imread(str(fd / r["file"])))[0] for r in rows]), spec)
np.save(work / "x.npy", x)
np.save(work / "ages.npy", np.array([float(r["age"]) for r in rows]))
np.save(work / "w.npy", est.bundle.age_weights)
cal = q._normalise(q.calibration_chips(), spec.means, spec.scale, spec.rgb)
sha = sha256_file(spec.path)
(work / "r1.onnx").write_bytes(q.quantize_age_net(spec.path, cal, sha, reduce_range=False))
(work / "r2.onnx").write_bytes(q.quantize_age_net(spec.path, cal, sha, reduce_range=True))
shutil.copy(spec.path, work / "fp32.onnx")
print(f"{len(rows)} faces")
EOF

cat > "$work/run.py" <<'EOF'
import platform, sys
import numpy as np, onnxruntime as ort
work, tag, names = sys.argv[1], sys.argv[2], sys.argv[3:]
x, w, ages = (np.load(f"{work}/{n}.npy") for n in ("x", "w", "ages"))
ref = np.load(f"{work}/age_native_fp32.npy") if "fp32" not in names else None
for n in names:
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if n == "fp32"
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    s = ort.InferenceSession(f"{work}/{n}.onnx", so, providers=["CPUExecutionProvider"])
    a = np.concatenate([s.run(None, {s.get_inputs()[0].name: x[i:i + 32]})[0]
                        for i in range(0, len(x), 32)]).astype(np.float64) @ w
    np.save(f"{work}/age_{tag}_{n}.npy", a)
    line = f"{tag:10s} {platform.machine():8s} onnxruntime {ort.__version__:7s} {n:5s} MAE {np.abs(a - ages).mean():6.3f}"
    if ref is not None:
        d = np.abs(a - ref)
        line += f"  |Δ vs float| mean {d.mean():.2f} p90 {np.percentile(d, 90):.2f} max {d.max():.1f}"
    print(line, flush=True)
EOF
"$py" "$work/run.py" "$work" native fp32
"$py" "$work/run.py" "$work" native r2 r1

echo "== x86-64 Haswell (AVX2 only)"
qemu-x86_64 -cpu Haswell "$(command -v "$py")" "$work/run.py" "$work" haswell r2 r1 2> >(grep -v 'TCG doesn' >&2)

echo "== arm64 (Debian 12 python3.11 + registry wheels)"
root="$work/arm64"
if [ ! -x "$root/sysroot/usr/bin/python3.11" ]; then
  mkdir -p "$root/lists/partial" "$root/cache/archives/partial" "$root/debs" "$root/sysroot"
  o=(-oAPT::Architecture=arm64 -oAPT::Architectures=arm64 -oDir::State::Lists="$root/lists" -oDir::Cache="$root/cache")
  apt-get "${o[@]}" update -qq
  (cd "$root/debs" && apt-get "${o[@]}" download python3.11-minimal libpython3.11-minimal libpython3.11-stdlib \
     libc6 libexpat1 zlib1g libffi8 libssl3 libgcc-s1 libstdc++6 libbz2-1.0 liblzma5 libsqlite3-0 libuuid1 \
     libncursesw6 libtinfo6 libreadline8 libcrypt1 libdb5.3 libgomp1 >/dev/null)
  for f in "$root"/debs/*.deb; do dpkg -x "$f" "$root/sysroot"; done
  plat=(--only-binary=:all: --no-deps --python-version 3.11 --implementation cp --platform manylinux_2_28_aarch64
        --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64)
  "$py" -m pip download -q "${plat[@]}" -d "$root/whl" numpy==2.4.6 onnxruntime==1.20.1 flatbuffers packaging protobuf
  for whl in "$root"/whl/*.whl; do "$py" -m zipfile -e "$whl" "$root/site"; done
fi
for cpu in cortex-a72 max; do
  PYTHONPATH="$root/site" qemu-aarch64 -cpu "$cpu" -L "$root/sysroot" "$root/sysroot/usr/bin/python3.11" \
    "$work/run.py" "$work" "arm-$cpu" r2 r1
done
