"""``<name>.json`` sidecar: what ran on which input, how long it took, and with what models.

Written atomically *after* every output of an input is in place, so its presence (with
``"complete": true``) is what marks an input as finished for the next run's resume; its
``fingerprint`` (a hash of ``run``: the input's identity, models, options, stages, version)
says *what* finished, so only a run with the same fingerprint skips it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agender.io.sinks.base import atomic_write_text


def write_sidecar(path: str | Path, record: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The sidecar's record, or None when it is missing or unreadable (= not finished)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
