"""The one way GUI tests open windows: shown, registered with qtbot, closed after the test."""
from __future__ import annotations

from typing import Any, Callable, Iterator


def window_factory(qtbot, fresh: dict[str, Callable[[], Any]] | None = None,
                   **defaults: Any) -> Iterator[Callable[..., Any]]:
    """A generator for a pytest fixture: yields ``make(**kw)`` (``defaults`` fill what ``kw``
    leaves out; ``fresh`` values are made anew for each window), then closes every window it
    made (which stops their threads)."""
    from agender.gui.main_window import MainWindow

    made: list[MainWindow] = []

    def make(**kw) -> MainWindow:
        for k, v in defaults.items():
            kw.setdefault(k, v)
        for k, new in (fresh or {}).items():
            if k not in kw:
                kw[k] = new()
        win = MainWindow(**kw)
        qtbot.addWidget(win)
        made.append(win)
        win.show()
        return win

    yield make
    for w in made:
        w.close()
