"""Where a net's ``.tflite`` conversion is found: the user's cache first, then the package.

Each ``KEY.tflite`` has a ``KEY.json`` beside it (written by :mod:`agender.runtimes.convert`)
naming the ONNX file it was converted from by sha256. A conversion is used only for exactly
those ONNX bytes, so an updated upstream net never runs with a stale ``.tflite``.

- package data, ``agender/models/tflite/`` — nets whose license allows redistribution (Cydral
  CC0, YuNet MIT), so a Raspberry Pi never needs TensorFlow (see that folder's MODEL_CARD.md);
- ``<cache>/tflite/`` — what ``agender models convert --to tflite`` writes (any net, on the
  user's own machine, with the ``[convert]`` extra).
"""
from __future__ import annotations

import json
from pathlib import Path

from agender.errors import ModelError

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "models" / "tflite"


def cache_tflite_dir() -> Path:
    from agender.models.store import cache_dir

    return cache_dir() / "tflite"


def read_meta(tflite: Path) -> dict:
    meta = Path(tflite).with_suffix(".json")
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{meta}: not a readable conversion record ({exc})") from None


def candidates(key: str) -> list[Path]:
    return [d / f"{key}.tflite" for d in (cache_tflite_dir(), PACKAGE_DIR)]


def find_tflite(key: str, onnx_path: Path) -> Path:
    """The ``.tflite`` converted from exactly ``onnx_path``'s bytes; ModelError naming the
    conversion command otherwise."""
    from agender.models.store import sha256_file

    sha = sha256_file(Path(onnx_path))
    stale = []
    for cand in candidates(key):
        if not cand.is_file():
            continue
        try:
            meta = read_meta(cand)
        except ModelError:
            stale.append(str(cand))
            continue
        if meta.get("source_sha256") == sha:
            return cand
        stale.append(str(cand))
    why = f" ({', '.join(stale)} converted from another file)" if stale else ""
    raise ModelError(f"no LiteRT conversion of {onnx_path}{why}: run `agender models convert --to tflite`")
