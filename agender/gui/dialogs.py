"""Every question and message the window puts to the user, in one replaceable object.

Messages are non-blocking (``show()``, never ``exec_()``): a dialog must not stop frames from
flowing, and tests can look at :attr:`Dialogs.messages` instead of clicking. Tests pass a
subclass that answers file choosers without opening them.
"""
from __future__ import annotations

import logging
import re
from typing import Callable

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtWidgets import QFileDialog, QInputDialog, QMessageBox, QProgressDialog, QWidget

from agender.errors import FetchError
from agender.gui.workers import Worker, error_message

log = logging.getLogger(__name__)

VIDEO_FILTER = ("Videos and images (*.mp4 *.avi *.mov *.mkv *.webm *.m4v *.mpg *.mpeg *.wmv *.ts *.gif "
                "*.jpg *.jpeg *.png *.bmp *.webp);;All files (*)")


def fetch_name(message: str) -> str | None:
    """The ``agender models fetch NAME`` hint a :class:`ModelError` carries, if any."""
    m = re.search(r"agender models fetch ([\w:.\-]+)", message)
    return m.group(1) if m else None


class Dialogs:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []  # (title, text) of every message shown
        self._open: list[QWidget] = []  # keep non-modal boxes alive

    # -- messages ---------------------------------------------------------------------------
    def error(self, parent: QWidget | None, title: str, text: str) -> QMessageBox:
        """Non-blocking error box naming the problem (the one-line AgenderError text)."""
        log.warning("%s: %s", title, text)
        self.messages.append((title, text))
        box = QMessageBox(QMessageBox.Warning, title, text, QMessageBox.Ok, parent)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.setWindowModality(Qt.NonModal)
        box.finished.connect(lambda _=0, b=box: self._forget(b))
        self._open.append(box)
        box.show()
        return box

    def _forget(self, w: QWidget) -> None:
        if w in self._open:
            self._open.remove(w)

    def missing_model(self, parent: QWidget | None, text: str, on_fetch: Callable[[], None] | None,
                      on_pick: Callable[[], None]) -> QMessageBox:
        """'Model X is missing': Fetch it (when we know what to fetch) / Choose another / Cancel."""
        self.messages.append(("Model not available", text))
        box = QMessageBox(QMessageBox.Warning, "Model not available", text, QMessageBox.NoButton, parent)
        fetch_btn = box.addButton("Fetch model", QMessageBox.AcceptRole) if on_fetch else None
        pick_btn = box.addButton("Choose another model", QMessageBox.ActionRole)
        box.addButton(QMessageBox.Cancel)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.setWindowModality(Qt.NonModal)

        def clicked(btn) -> None:
            if fetch_btn is not None and btn is fetch_btn:
                on_fetch()
            elif btn is pick_btn:
                on_pick()

        box.buttonClicked.connect(clicked)
        box.finished.connect(lambda _=0, b=box: self._forget(b))
        self._open.append(box)
        box.show()
        return box

    # -- questions (blocking by nature: the user is choosing) --------------------------------
    def open_file(self, parent: QWidget | None, start_dir: str = "") -> str | None:
        path, _ = QFileDialog.getOpenFileName(parent, "Open video or image", start_dir, VIDEO_FILTER)
        return path or None

    def open_url(self, parent: QWidget | None) -> str | None:
        url, ok = QInputDialog.getText(parent, "Open URL", "Stream URL (http://, https://, rtsp://):")
        return url.strip() if ok and url.strip() else None

    def confirm(self, parent: QWidget | None, title: str, text: str, accept: str = "Quit") -> bool:
        """Ask before something that cannot be undone (quitting, stopping a recording).
        ``accept`` is the default button; Esc or closing the box answers no."""
        self.messages.append((title, text))
        box = QMessageBox(QMessageBox.Question, title, text, QMessageBox.NoButton, parent)
        yes = box.addButton(accept, QMessageBox.AcceptRole)
        box.addButton(QMessageBox.Cancel)
        box.setDefaultButton(yes)
        box.exec_()  # frames keep flowing: the nested event loop still delivers them
        return box.clickedButton() is yes

    def save_file(self, parent: QWidget | None, title: str, suggested: str, filt: str) -> str | None:
        path, _ = QFileDialog.getSaveFileName(parent, title, suggested, filt)
        return path or None


class FetchWorker(Worker):
    """Runs ``agender models fetch NAME`` off the UI thread; ``progress(done, total, file)``;
    ``returned(str)`` the success message, ``errored(Exception)`` the first failure."""

    progress = pyqtSignal(int, int, str)

    def __init__(self, name: str, dest: str | None = None, parent=None):
        super().__init__(name="agender-fetch", parent=parent)
        self.model = name
        self.dest = dest

    def work(self) -> str:
        from agender.models.fetch import fetch_all
        from agender.models.store import ModelStore

        entries = ModelStore().entries(self.model)
        if not entries:
            raise FetchError(f"no model called {self.model!r} in the manifest")
        total = len(entries)
        self.progress.emit(0, total, entries[0].file)
        count = [0]

        def step(res) -> None:
            count[0] += 1
            nxt = entries[count[0]].file if count[0] < total else ""
            self.progress.emit(count[0], total, nxt)

        results, errors = fetch_all(entries, self.dest, on_result=step, on_error=lambda e: step(None),
                                    progress=False)
        if errors:
            raise errors[0]
        return f"{self.model}: {len(results)} file(s) ready"


def start_fetch(parent: QWidget, name: str, on_done: Callable[[bool, str], None]) -> FetchWorker:
    """Fetch ``name`` with a progress dialog; ``on_done(ok, message)`` on the UI thread."""
    dlg = QProgressDialog(f"Fetching {name}…", "Hide", 0, 0, parent)
    dlg.setWindowTitle("Fetching model")
    dlg.setWindowModality(Qt.NonModal)
    dlg.setMinimumDuration(0)
    th = FetchWorker(name, parent=parent)  # the window keeps it (and its thread) alive

    def progress(i: int, n: int, file: str) -> None:
        dlg.setMaximum(n)
        dlg.setValue(i)
        dlg.setLabelText(f"Fetching {name}: file {min(i + 1, n)} of {n}\n{file}" if file else f"Fetched {name}")

    def finished(ok: bool, msg: str) -> None:
        dlg.close()
        on_done(ok, msg)

    th.progress.connect(progress)
    th.returned.connect(lambda msg: finished(True, str(msg)))
    th.errored.connect(lambda exc: finished(False, error_message(exc)))
    dlg.show()
    th.start()
    return th
