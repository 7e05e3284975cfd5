"""Training agender's own age & gender net (optional ``[train]`` extra: torch).

One command, fixed seed, resumable::

    python -m agender.train --out DIR [--data ../shared/data/train] [--cache DIR]

prepares chips (cached, :mod:`agender.train.data`), fine-tunes (:mod:`agender.train.train`),
exports ``DIR/agender-net-v1.onnx`` (:mod:`agender.train.model`), checks ONNX-vs-torch parity
and writes ``DIR/eval.json``. Weights trained on UTKFace / All-Age-Faces are for
non-commercial research use only.
"""
