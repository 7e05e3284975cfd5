"""The one worker pattern of the GUI (agender.gui.workers): real QThreads, offscreen, fast."""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("PyQt5.QtWidgets")
pytest.importorskip("pytestqt")

from agender.errors import SourceError  # noqa: E402
from agender.gui.workers import Worker, create_worker, error_message  # noqa: E402


def _record(w: Worker) -> dict[str, list]:
    got: dict[str, list] = {k: [] for k in ("started", "yielded", "returned", "errored", "finished")}
    w.started.connect(lambda: got["started"].append(True))
    w.yielded.connect(got["yielded"].append)
    w.returned.connect(got["returned"].append)
    w.errored.connect(got["errored"].append)
    w.finished.connect(lambda: got["finished"].append(True))
    return got


def test_a_generator_yields_on_the_ui_thread_then_returns_then_finishes(qtbot):
    seen_threads: list[str] = []

    def count(n):
        seen_threads.append(threading.current_thread().name)
        for i in range(n):
            yield i
        return "done"

    w = create_worker(count, 3, name="counting")
    got = _record(w)
    on_ui: list[bool] = []
    w.yielded.connect(lambda v: on_ui.append(threading.current_thread() is threading.main_thread()))
    with qtbot.waitSignal(w.finished, timeout=5000):
        w.start()
    assert w.wait(2000) and w.isFinished() and not w.isRunning()
    assert got["started"] == [True] and got["yielded"] == [0, 1, 2]
    assert got["returned"] == ["done"] and got["errored"] == [] and got["finished"] == [True]
    assert on_ui and all(on_ui), "signals are delivered on the receiver's (UI) thread"
    assert seen_threads == ["counting"], "the job runs on its own, named thread"


def test_the_exception_object_itself_reaches_errored_and_finished_still_comes(qtbot):
    boom = SourceError("cam:7: not there")

    def fail():
        raise boom

    w = create_worker(fail)
    got = _record(w)
    with qtbot.waitSignal(w.finished, timeout=5000):
        w.start()
    assert got["errored"] == [boom] and got["errored"][0] is boom
    assert got["returned"] == [] and got["finished"] == [True]
    assert error_message(boom, "cam:7") == "cam:7: not there", "our own errors already say where"
    assert error_message(ValueError("bad"), "x.mp4") == "x.mp4: ValueError: bad"


def test_quit_stops_a_running_loop_body_mid_sleep(qtbot):
    class Loop(Worker):
        def __init__(self):
            super().__init__(name="loop")
            self.turns = 0

        def work(self):
            while not self.should_quit:
                self.turns += 1
                self.sleep(30.0)  # quit must cut this short
            return self.turns

    w = Loop()
    got = _record(w)
    with qtbot.waitSignal(w.started, timeout=5000):
        w.start()
    qtbot.waitUntil(lambda: w.turns >= 1, timeout=5000)
    assert w.isRunning()
    with qtbot.waitSignal(w.finished, timeout=2000):
        w.quit()
    assert w.wait(1000) and w.turns == 1
    assert got["errored"] == [] and got["returned"] == [], "a job asked to quit returns nothing"


def test_quit_closes_an_endless_generator_at_its_next_yield(qtbot):
    closed = threading.Event()

    def forever():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    w = create_worker(forever)
    got = _record(w)
    w.start()
    qtbot.waitUntil(lambda: len(got["yielded"]) >= 3, timeout=5000)
    with qtbot.waitSignal(w.finished, timeout=2000):
        w.quit()
    assert w.wait(1000) and closed.is_set(), "the generator's finally ran"
    assert got["errored"] == [] and got["returned"] == []


def test_sleep_returns_false_once_quit_was_asked():
    w = Worker(lambda: None)
    assert w.sleep(0.0) is True
    w.quit()
    assert w.sleep(10.0) is False and w.should_quit


def test_the_capture_worker_reports_the_exception_object_and_the_window_wording_is_unchanged(qtbot):
    from agender.gui.capture import CaptureThread, FrameSlot

    def opener(spec):
        raise OSError("device busy")

    cap = CaptureThread("clip.mp4", FrameSlot(), opener=opener, reconnect=False)
    got: list = []
    cap.failed.connect(lambda exc, delay: got.append((exc, delay)))
    with qtbot.waitSignal(cap.finished, timeout=5000):
        cap.start()
    assert cap.wait(1000)
    (exc, delay), = got
    assert isinstance(exc, OSError) and delay == -1.0
    assert error_message(exc, cap.spec) == "clip.mp4: OSError: device busy"
