"""Settings remembered between runs (QSettings): models, knobs, overlay options, last source,
window geometry. Command-line options override them for one run without being saved over them
unless the user changes something in the window.

Tests pass their own ``QSettings`` (an INI file in a temp dir) so they never touch the user's.
"""
from __future__ import annotations

from dataclasses import asdict

from PyQt5.QtCore import QByteArray, QSettings

from agender.gui.overlay import OverlayOptions
from agender.gui.worker import ModelConfig

ORG, APP = "agender", "agender"


def _opt_float(v) -> float | None:
    if v in (None, "", "None"):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _bool(v, default: bool) -> bool:
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    return str(v).lower() in ("1", "true", "yes", "on")


class Settings:
    """``read_only``: reads as usual, writes nothing (automated ``--exit-after`` runs must not
    overwrite what the user's own sessions remembered)."""

    def __init__(self, qsettings: QSettings | None = None, read_only: bool = False):
        self.q = qsettings if qsettings is not None else QSettings(ORG, APP)
        self.read_only = read_only

    def _set(self, key: str, value) -> None:
        if not self.read_only:
            self.q.setValue(key, value)

    # -- models -----------------------------------------------------------------------------
    def model_config(self) -> ModelConfig:
        d = ModelConfig()
        q = self.q
        try:
            width = int(q.value("models/detect_width", d.detect_width))
        except (TypeError, ValueError):
            width = d.detect_width
        return ModelConfig(
            detector=str(q.value("models/detector", d.detector) or d.detector),
            estimator=str(q.value("models/estimator", d.estimator) or d.estimator),
            device=str(q.value("models/device", d.device) or d.device),
            models=(str(q.value("models/dir", "")) or None),
            detect_width=width,
            conf=_opt_float(q.value("models/conf", "")),
            padding=_opt_float(q.value("models/padding", "")),
            tracking=_bool(q.value("models/tracking"), d.tracking),
        )

    def set_model_config(self, cfg: ModelConfig) -> None:
        for k, v in asdict(cfg).items():
            key = "models/dir" if k == "models" else f"models/{k}"
            self._set(key, "" if v is None else v)

    # -- overlay ----------------------------------------------------------------------------
    def overlay(self) -> OverlayOptions:
        return OverlayOptions(
            landmarks=_bool(self.q.value("view/landmarks"), False),
            confidence=_bool(self.q.value("view/confidence"), False),
            privacy=_bool(self.q.value("view/privacy"), False),
        )

    def set_overlay(self, o: OverlayOptions) -> None:
        self._set("view/landmarks", o.landmarks)
        self._set("view/confidence", o.confidence)
        self._set("view/privacy", o.privacy)

    # -- source and player ----------------------------------------------------------------
    @property
    def source(self) -> str:
        return str(self.q.value("source/last", "") or "")

    @source.setter
    def source(self, spec: str) -> None:
        self._set("source/last", spec)

    @property
    def loop(self) -> bool:
        return _bool(self.q.value("source/loop"), True)

    @loop.setter
    def loop(self, v: bool) -> None:
        self._set("source/loop", bool(v))

    @property
    def last_dir(self) -> str:
        return str(self.q.value("source/last_dir", "") or "")

    @last_dir.setter
    def last_dir(self, d: str) -> None:
        self._set("source/last_dir", d)

    @property
    def show_panel(self) -> bool:
        return _bool(self.q.value("window/panel"), True)

    @show_panel.setter
    def show_panel(self, v: bool) -> None:
        self._set("window/panel", bool(v))

    # -- window -----------------------------------------------------------------------------
    def geometry(self) -> QByteArray | None:
        g = self.q.value("window/geometry")
        return g if isinstance(g, QByteArray) and not g.isEmpty() else None

    def set_geometry(self, g: QByteArray) -> None:
        self._set("window/geometry", g)

    def sync(self) -> None:
        if not self.read_only:
            self.q.sync()
