#!/usr/bin/env bash
# Retrain the shipped agender net (age_gender_net/agender.md) from ../shared/data/train:
# two runs from Cydral's CC0 age net (seed 0), then their 2:1 weight average, exported to
# OUT/agender-net-v1.onnx with ONNX-vs-torch parity and OUT/eval-best.json.
# Needs the [train] extra (CPU torch: `pip install torch==2.13.0`). ~70 min on 2 idle cores;
# every step resumes where it stopped (rerun the same command).
#   tools/train_agender.sh OUT [DATA]
set -euo pipefail
out=${1:?usage: tools/train_agender.sh OUT [DATA]}
data=${2:-../shared/data/train}
py=${PYTHON:-python3}
mkdir -p "$out"
"$py" -m agender.train --out "$out/run3" --data "$data" --cache "$out" --epochs 8 --epoch-size 20000 --seed 0 --no-eval
"$py" -m agender.train --out "$out/run4" --data "$data" --cache "$out" --epochs 20 --epoch-size 20000 --seed 0 --no-eval
"$py" -m agender.train --out "$out" --data "$data" --cache "$out" --average "$out/run3/best.pt:2" "$out/run4/best.pt:1"
echo "wrote $out/agender-net-v1.onnx (copy it to agender/models/weights/ to ship it)"
# the gender net (agender:g150): dlib's CC0 face ResNet fine-tuned for gender (~15 min more)
"$py" -m agender.train.gender_net --out "$out/gender" --data "$data" --chips "$out/c150"
echo "wrote $out/gender/agender-gender-v1.onnx (copy it to agender/models/weights/ to ship it)"
