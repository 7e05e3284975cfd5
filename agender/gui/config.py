"""What the GUI is asked to do at start-up (Qt-free, so the CLI can build it without PyQt5)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GuiConfig:
    """Command-line options of ``python app.py`` / ``agender gui``.

    ``None`` means "not given": the remembered setting (QSettings) or the default applies.
    """

    source: str | None = None
    kiosk: bool = False
    exit_after: int | None = None  # frames to display before taking the screenshot and quitting
    screenshot: str | None = None
    detector: str | None = None
    estimator: str | None = None
    device: str | None = None
    models: str | None = None
    privacy: bool = False
    stats_json: str | None = None  # write the run's live figures here when the window closes
    max_speed: bool = False  # files: decode as fast as possible instead of at their native fps
    runtime: str | None = None  # agender.runtimes: onnxruntime | litert | auto
    threads: int | None = None
    detect_width: int | None = None
    watchdog: float | None = None  # seconds without a new frame on screen before exiting (agender.kiosk)

    @classmethod
    def from_args(cls, args) -> "GuiConfig":
        return cls(**{k: getattr(args, k, None) for k in cls.__dataclass_fields__ if getattr(args, k, None) is not None})
