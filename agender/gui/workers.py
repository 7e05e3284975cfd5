"""One worker pattern for every background job of the window.

Why: the capture loop, the inference loop, detect-ahead, the camera probe and the model fetch
each had their own QThread subclass or raw thread with its own stop flag, wake-up condition and
"error as a string" signal. :class:`Worker` owns all of that once (in the style of superqt's
``thread_worker``): a job is a function — or a generator, whose yields are progress — run on a
QThread of its own; what it yields, returns or raises arrives on the UI thread as signals.
Stopping is cooperative: :meth:`Worker.quit` sets a flag and wakes :meth:`Worker.sleep`; a loop
body checks :attr:`Worker.should_quit`, a generator is closed at its next yield.

Signals (queued to the receivers' thread):
``started()``; ``yielded(object)`` each value a generator yields; ``returned(object)`` the
function's return value; ``errored(Exception)`` the exception object itself (the window turns it
into its one-line message with :func:`error_message`); ``finished()`` always, last.
"""
from __future__ import annotations

import inspect
import logging
import threading
from typing import Any, Callable

from PyQt5.QtCore import QObject, QThread, pyqtSignal

from agender.errors import AgenderError

log = logging.getLogger(__name__)


def error_message(exc: BaseException, context: str = "") -> str:
    """The one line a user sees for ``exc``: our own errors already say what and where; anything
    else gets its type (and ``context``, e.g. the source it came from) so it can be reported."""
    if isinstance(exc, AgenderError):
        return str(exc)
    text = f"{type(exc).__name__}: {exc}"
    return f"{context}: {text}" if context else text


class _Runner(QThread):
    """The QThread that runs one :class:`Worker` (kept private: callers talk to the worker)."""

    def __init__(self, worker: "Worker"):
        super().__init__()
        self._worker = worker

    def run(self) -> None:  # noqa: D401 - QThread entry point
        self._worker._run()


class Worker(QObject):
    """Runs :meth:`work` (``func(*args, **kwargs)`` unless overridden) on its own QThread.

    Subclasses that are long-running loops override :meth:`work` and use :attr:`should_quit`
    and :meth:`sleep`; one-off jobs pass ``func``. ``name`` names the thread (logs, tests).
    """

    started = pyqtSignal()
    yielded = pyqtSignal(object)
    returned = pyqtSignal(object)
    errored = pyqtSignal(object)  # the Exception instance (PyQt passes it untouched)
    finished = pyqtSignal()

    def __init__(self, func: Callable[..., Any] | None = None, *args: Any, name: str = "",
                 parent: QObject | None = None, **kwargs: Any):
        super().__init__(parent)
        self._func, self._args, self._kwargs = func, args, kwargs
        self.name = name or type(self).__name__
        self._quit = threading.Event()
        self._wake = threading.Condition()
        self._thread = _Runner(self)
        self._thread.setObjectName(self.name)

    # -- control (any thread) -------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def quit(self) -> None:
        """Ask the job to stop at its next check (a generator: at its next yield)."""
        self._quit.set()
        self.wake()

    def wake(self) -> None:
        """Cut a :meth:`sleep` short (a command arrived: seek, step, stop...)."""
        with self._wake:
            self._wake.notify_all()

    def wait(self, msecs: int = -1) -> bool:
        """True once the thread has ended (within ``msecs``; -1: however long it takes)."""
        return self._thread.wait() if msecs < 0 else self._thread.wait(int(msecs))

    def isRunning(self) -> bool:  # noqa: N802 - the QThread spelling the callers know
        return self._thread.isRunning()

    def isFinished(self) -> bool:  # noqa: N802
        return self._thread.isFinished()

    @property
    def should_quit(self) -> bool:
        return self._quit.is_set()

    # -- inside the job -------------------------------------------------------------------
    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` or until woken; False when the job was asked to quit."""
        with self._wake:
            if not self._quit.is_set():
                self._wake.wait(max(0.0, seconds))
        return not self._quit.is_set()

    def work(self) -> Any:
        """The job; the default calls the function given to the constructor."""
        if self._func is None:
            raise NotImplementedError("pass func or override work()")
        return self._func(*self._args, **self._kwargs)

    def _run(self) -> None:
        threading.current_thread().name = self.name  # QThreads show up as "Dummy-N" otherwise
        self.started.emit()
        try:
            result = self.work()
            if inspect.isgenerator(result):
                result = self._drain(result)
            if not self.should_quit:
                self.returned.emit(result)
        except Exception as exc:  # noqa: BLE001 - every failure reaches errored, none is lost
            log.debug("%s failed", self.name, exc_info=True)
            self.errored.emit(exc)
        finally:
            self.finished.emit()

    def _drain(self, gen) -> Any:
        """Forward what ``gen`` yields until it ends (its return value) or we are asked to quit."""
        while True:
            if self.should_quit:
                gen.close()
                return None
            try:
                value = next(gen)
            except StopIteration as stop:
                return stop.value
            self.yielded.emit(value)


def create_worker(func: Callable[..., Any], *args: Any, name: str = "", start: bool = False,
                  **kwargs: Any) -> Worker:
    """A :class:`Worker` for ``func(*args, **kwargs)``; connect its signals, then :meth:`Worker.start`."""
    w = Worker(func, *args, name=name, **kwargs)
    if start:
        w.start()
    return w
