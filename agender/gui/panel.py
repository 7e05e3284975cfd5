"""The side panel: source, model pickers and knobs, live readouts, and the "who was seen" chart.

It only turns widget state into a :class:`ModelConfig` / :class:`OverlayOptions` (and back);
the window decides what to do with them.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QColor, QFont, QPalette
from PyQt5.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QLabel,
                             QPushButton, QSpinBox, QVBoxLayout, QWidget)

from agender.detectors import detector_names
from agender.estimators import ESTIMATORS, estimator_names
from agender.gui.overlay import OverlayOptions
from agender.gui.worker import ModelConfig


def estimator_variants(name: str) -> list[str]:
    """Variants an estimator offers: its class's ``VARIANTS`` if it declares them, else the
    ``name:variant`` entries of the model manifest (e.g. ssrnet → wiki, imdb, morph2)."""
    spec = ESTIMATORS.get(name)
    if spec:
        module, _, cls = spec.partition(":")
        try:
            klass = getattr(importlib.import_module(module), cls)
            declared = getattr(klass, "VARIANTS", None) or getattr(klass, "variants", None)
            if declared:
                return [str(v) for v in declared]
        except Exception:  # noqa: BLE001 - not importable yet: fall back to the manifest
            pass
    from agender.models.store import load_manifest

    out: list[str] = []
    for e in load_manifest():
        base, _, var = e.name.partition(":")
        if base == name and var and var not in out:
            out.append(var)
    return out


def device_choices() -> list[str]:
    """``auto``, ``cpu`` and the accelerators onnxruntime offers on this machine."""
    from agender.devices import available_providers, device_label

    out = ["auto", "cpu"]
    try:
        for prov in available_providers():
            dev = device_label(prov).lower()
            if prov == "CPUExecutionProvider" or dev == prov.lower():  # CPU, or a provider we don't map
                continue
            if dev not in out:
                out.append(dev)
    except Exception:  # noqa: BLE001 - onnxruntime missing providers list: CPU only
        pass
    return out


def _luminance(c: QColor) -> float:
    def lin(v: float) -> float:
        v /= 255.0
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    return 0.2126 * lin(c.red()) + 0.7152 * lin(c.green()) + 0.0722 * lin(c.blue())


def contrast_ratio(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio of two colours (1 … 21; 4.5 is the minimum for body text)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def muted_text(pal: QPalette, min_contrast: float = 7.0) -> QColor:
    """The text colour moved towards the background, but no further than ``min_contrast``
    allows: a quieter title that stays readable (a disabled label's grey is not)."""
    fg, bg = pal.color(QPalette.WindowText), pal.color(QPalette.Window)
    best = fg
    for t in (0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1):
        c = QColor(int(fg.red() + (bg.red() - fg.red()) * t), int(fg.green() + (bg.green() - fg.green()) * t),
                   int(fg.blue() + (bg.blue() - fg.blue()) * t))
        if contrast_ratio(c, bg) >= min_contrast:
            best = c
            break
    return best


def _set_combo(combo: QComboBox, text: str) -> None:
    i = combo.findText(text)
    if i < 0:
        combo.addItem(text)
        i = combo.count() - 1
    combo.setCurrentIndex(i)


class ControlPanel(QWidget):
    """Signals: ``models_changed(object)`` a ModelConfig, ``overlay_changed(object)``,
    ``open_file()``, ``open_url()``, ``camera_chosen(int)``, ``rescan()``."""

    models_changed = pyqtSignal(object)
    overlay_changed = pyqtSignal(object)
    open_file = pyqtSignal()
    open_url = pyqtSignal()
    camera_chosen = pyqtSignal(int)
    rescan = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.models_dir: str | None = None
        self._quiet = False
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self._source_box())
        lay.addWidget(self._models_box())
        lay.addWidget(self._live_box())
        lay.addStretch(1)
        self.setMinimumWidth(280)
        self.setMaximumWidth(360)

    # -- construction -----------------------------------------------------------------------
    def _source_box(self) -> QGroupBox:
        box = QGroupBox("Source")
        v = QVBoxLayout(box)
        self.source_label = QLabel("–")
        self.source_label.setMinimumWidth(10)  # long paths are elided, not widening the panel
        self.source_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        v.addWidget(self.source_label)
        row = QHBoxLayout()
        b1, b2 = QPushButton("Open file…"), QPushButton("Open URL…")
        b1.clicked.connect(self.open_file)
        b2.clicked.connect(self.open_url)
        row.addWidget(b1)
        row.addWidget(b2)
        v.addLayout(row)
        row = QHBoxLayout()
        self.camera_combo = QComboBox()
        self.camera_combo.setPlaceholderText("none found")
        self.camera_combo.setEnabled(False)
        self.camera_combo.activated.connect(self._camera_activated)
        rescan = QPushButton("Rescan")
        rescan.setToolTip("Look for cameras again")
        rescan.clicked.connect(self.rescan)
        row.addWidget(QLabel("Camera"))
        row.addWidget(self.camera_combo, 1)
        row.addWidget(rescan)
        v.addLayout(row)
        return box

    def _models_box(self) -> QGroupBox:
        box = QGroupBox("Models")
        f = QFormLayout(box)
        f.setLabelAlignment(Qt.AlignRight)
        self.detector = QComboBox()
        self.detector.addItems(["auto", *detector_names()])
        self.estimator = QComboBox()
        self.estimator.addItems(estimator_names())
        self.variant = QComboBox()
        self.device = QComboBox()
        self.device.addItems(device_choices())
        self.detect_width = QSpinBox()
        self.detect_width.setRange(0, 3840)
        self.detect_width.setSingleStep(32)
        self.detect_width.setSpecialValueText("full frame")
        self.detect_width.setSuffix(" px")
        self.conf = QDoubleSpinBox()
        self.conf.setRange(0.0, 1.0)
        self.conf.setSingleStep(0.05)
        self.conf.setSpecialValueText("model default")
        self.padding = QDoubleSpinBox()
        self.padding.setRange(-0.05, 1.0)
        self.padding.setSingleStep(0.05)
        self.padding.setSpecialValueText("model default")
        self.variant.setToolTip("Estimator variant (e.g. the data set SSR-Net was trained on)")
        est_row = QHBoxLayout()
        est_row.addWidget(self.estimator, 3)
        est_row.addWidget(self.variant, 2)
        f.addRow("Detector", self.detector)
        f.addRow("Estimator", est_row)
        f.addRow("Device", self.device)
        f.addRow("Detect width", self.detect_width)
        f.addRow("Confidence", self.conf)
        f.addRow("Padding", self.padding)
        self.tracking = QCheckBox("Track faces")
        self.tracking.setToolTip("Follow each face across frames: steadier labels (smoothed age and gender), people counted once")
        f.addRow(self.tracking)
        self.landmarks = QCheckBox("Landmarks")
        self.confidence = QCheckBox("Scores")
        self.confidence.setToolTip("Show the detector's confidence next to each label")
        self.privacy = QCheckBox("Privacy")
        self.privacy.setToolTip("Blur faces on screen; snapshot and record are disabled")
        row = QHBoxLayout()
        for w in (self.landmarks, self.confidence, self.privacy):
            row.addWidget(w)
        f.addRow(row)
        self.estimator.currentTextChanged.connect(self._fill_variants)
        for w in (self.detector, self.estimator, self.variant, self.device):
            w.activated.connect(self._emit_models)
        for w in (self.detect_width, self.conf, self.padding):
            w.setKeyboardTracking(False)
            w.valueChanged.connect(self._emit_models)
        for w in (self.landmarks, self.confidence, self.privacy):
            w.toggled.connect(self._emit_overlay)
        self.tracking.toggled.connect(self._emit_models)
        self._fill_variants(self.estimator.currentText())
        return box

    def _live_box(self) -> QGroupBox:
        box = QGroupBox("Live")
        g = QGridLayout(box)
        g.setHorizontalSpacing(8)
        g.setVerticalSpacing(2)
        self.readouts: dict[str, QLabel] = {}
        self.readout_titles: dict[str, QLabel] = {}
        # (key, title, row, column, column span of the value)
        cells = (("capture", "Capture", 0, 0, 1), ("process", "Process", 0, 2, 1),
                 ("latency", "Latency", 1, 0, 1), ("faces", "Faces", 1, 2, 1),
                 ("dropped", "Dropped", 2, 0, 1), ("stages", "ms", 3, 0, 3), ("device", "Device", 4, 0, 3))
        title_pal = QPalette(box.palette())
        title_pal.setColor(QPalette.WindowText, muted_text(title_pal))  # quieter, still >= 7:1
        value_font = QFont(box.font())
        value_font.setBold(True)
        for key, title, r, c, span in cells:
            t = QLabel(title)
            t.setPalette(title_pal)
            self.readout_titles[key] = t
            lbl = QLabel("–")
            lbl.setFont(value_font)
            lbl.setWordWrap(span > 1)
            lbl.setTextInteractionFlags(Qt.TextSelectableByMouse)
            self.readouts[key] = lbl
            g.addWidget(t, r, c, Qt.AlignRight | Qt.AlignTop)
            g.addWidget(lbl, r, c + 1, 1, span)
        g.setColumnStretch(1, 1)
        g.setColumnStretch(3, 1)
        return box

    # -- state <-> widgets ------------------------------------------------------------------
    def _fill_variants(self, name: str) -> None:
        cur = self.variant.currentText()
        self.variant.blockSignals(True)
        self.variant.clear()
        variants = estimator_variants(name)
        self.variant.addItems(["default", *variants])
        self.variant.setEnabled(bool(variants))
        if cur in variants:
            _set_combo(self.variant, cur)
        self.variant.blockSignals(False)

    def model_config(self) -> ModelConfig:
        est = self.estimator.currentText()
        var = self.variant.currentText()
        if var and var != "default":
            est = f"{est}:{var}"
        conf = self.conf.value()
        pad = self.padding.value()
        return ModelConfig(
            detector=self.detector.currentText(), estimator=est, device=self.device.currentText(),
            models=self.models_dir, detect_width=int(self.detect_width.value()) or 0,
            conf=None if conf <= self.conf.minimum() else round(conf, 3),
            padding=None if pad <= self.padding.minimum() + 1e-9 else round(pad, 3),
            tracking=self.tracking.isChecked(),
        )

    def set_model_config(self, cfg: ModelConfig) -> None:
        """Show ``cfg`` without emitting ``models_changed``."""
        self._quiet = True
        try:
            self.models_dir = cfg.models
            _set_combo(self.detector, cfg.detector)
            name, _, var = cfg.estimator.partition(":")
            _set_combo(self.estimator, name)
            self._fill_variants(name)
            _set_combo(self.variant, var or "default")
            _set_combo(self.device, cfg.device)
            self.detect_width.setValue(int(cfg.detect_width or 0))
            self.conf.setValue(self.conf.minimum() if cfg.conf is None else cfg.conf)
            self.padding.setValue(self.padding.minimum() if cfg.padding is None else cfg.padding)
            self.tracking.setChecked(cfg.tracking)
        finally:
            self._quiet = False

    def overlay(self) -> OverlayOptions:
        return OverlayOptions(self.landmarks.isChecked(), self.confidence.isChecked(), self.privacy.isChecked())

    def set_overlay(self, o: OverlayOptions) -> None:
        self._quiet = True
        try:
            self.landmarks.setChecked(o.landmarks)
            self.confidence.setChecked(o.confidence)
            self.privacy.setChecked(o.privacy)
        finally:
            self._quiet = False

    def set_cameras(self, indices: list[int]) -> None:
        self.camera_combo.clear()
        for i in indices:
            self.camera_combo.addItem(f"Camera {i}", i)
        self.camera_combo.setEnabled(bool(indices))

    def _camera_activated(self, row: int) -> None:
        idx = self.camera_combo.itemData(row)
        if idx is not None:
            self.camera_chosen.emit(int(idx))

    def _emit_models(self, *_) -> None:
        if not self._quiet:
            self.models_changed.emit(self.model_config())

    def _emit_overlay(self, *_) -> None:
        if not self._quiet:
            self.overlay_changed.emit(self.overlay())

    def set_source(self, spec: str, detail: str = "") -> None:
        """Show the source's file name (full spec in the tooltip) and a detail line."""
        short = spec if "://" in spec or spec.startswith("cam") else (Path(spec).name or spec)
        fm = self.source_label.fontMetrics()
        width = max(120, self.source_label.width() or 240)
        self.source_label.setText(fm.elidedText(short, Qt.ElideMiddle, width) + (f"\n{detail}" if detail else ""))
        self.source_label.setToolTip(spec)

    def reset_readouts(self, keep: tuple[str, ...] = ("device",)) -> None:
        """A new source: its numbers start afresh (``keep``: what does not depend on it)."""
        for key, lbl in self.readouts.items():
            if key not in keep:
                lbl.setText("0" if key == "dropped" else "–")

    def set_readout(self, key: str, text: str) -> None:
        lbl = self.readouts.get(key)
        if lbl is not None and lbl.text() != text:
            lbl.setText(text)
