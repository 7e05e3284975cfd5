"""Start the window from a :class:`~agender.gui.config.GuiConfig` (``python app.py`` / ``agender gui``)."""
from __future__ import annotations

import logging
import signal
import sys
from dataclasses import replace

from PyQt5.QtCore import QtDebugMsg, QTimer, qInstallMessageHandler
from PyQt5.QtWidgets import QApplication

from agender.gui.config import GuiConfig

log = logging.getLogger(__name__)

EXIT_AFTER_WATCHDOG_S = 120.0  # --exit-after never hangs CI: give up (exit 1) after this long


def make_window(cfg: GuiConfig, settings=None, **kwargs):
    """The window for ``cfg``: remembered settings, overridden by the command line for this run."""
    from agender.gui.main_window import MainWindow
    from agender.gui.settings import Settings

    settings = settings or Settings()
    models = settings.model_config()
    over = {k: getattr(cfg, k) for k in ("detector", "estimator", "device", "models", "runtime", "threads",
                                         "detect_width") if getattr(cfg, k)}
    models = replace(models, **over)
    overlay = settings.overlay()
    if cfg.privacy:
        overlay = replace(overlay, privacy=True)
    source = cfg.source or (settings.source if cfg.kiosk else None)
    return MainWindow(settings=settings, config=models, overlay=overlay, source=source or None, kiosk=cfg.kiosk,
                      realtime=not cfg.max_speed, exit_after=cfg.exit_after, screenshot=cfg.screenshot,
                      stats_json=cfg.stats_json, **kwargs)


_QT_NOISE = ("propagateSizeHints", "XDG_RUNTIME_DIR")  # harmless platform chatter


def _qt_message(mode, context, message: str) -> None:
    """Qt's own warnings go through logging (one line each), minus known harmless noise."""
    if any(n in message for n in _QT_NOISE):
        return
    (log.debug if mode == QtDebugMsg else log.warning)("Qt: %s", message)


def run_gui(cfg: GuiConfig) -> int:
    qInstallMessageHandler(_qt_message)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("agender")
    app.setOrganizationName("agender")
    win = make_window(cfg)
    win.show()
    # Ctrl+C in the terminal closes the window cleanly (Python only sees signals between Qt events).
    signal.signal(signal.SIGINT, lambda *_: win.close())
    tick = QTimer()
    tick.start(200)
    tick.timeout.connect(lambda: None)
    if cfg.exit_after is not None:
        def give_up() -> None:
            log.error("--exit-after %d: only %d frame(s) shown after %.0f s; giving up",
                      cfg.exit_after, win.view.frames_shown, EXIT_AFTER_WATCHDOG_S)
            win.exit_code = 1
            win.finish()

        QTimer.singleShot(int(EXIT_AFTER_WATCHDOG_S * 1000), give_up)
    dog = None
    if cfg.watchdog is not None:
        from agender.kiosk.watchdog import Watchdog, attach

        dog = Watchdog(cfg.watchdog).start()
        win._watchdog_timer = attach(win, dog)
    app.exec_()
    if dog is not None:
        dog.stop()
    return win.exit_code
