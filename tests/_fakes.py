"""Stand-ins the runner tests share."""
from __future__ import annotations


class StopAfter:
    """A progress hook that presses Ctrl-C after ``n`` frames (the runner keeps its checkpoint)."""

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def start(self, name, total):
        pass

    def advance(self, frames, faces):
        self.seen += frames
        if self.seen >= self.n:
            raise KeyboardInterrupt

    def finish(self):
        pass


def whole_and_resumed(analyzer, out, track, opts, spec: str, stop_after: int):
    """``spec`` analysed with tracking (``track``: TrackOptions) whole into ``out/a``, and
    into ``out/b`` interrupted after ``stop_after`` frames, then run again (resuming): the
    resumed run's result. What a resume test compares: ``a`` against ``b``."""
    import pytest

    from agender.inputs import expand_inputs
    from agender.runner import Runner

    def runner(folder, progress=None):
        return Runner(analyzer, folder, opts, stage_factories=[track.stage_factory()],
                      sink_factories=track.sink_factories(), progress=progress)

    items = expand_inputs([spec])
    assert runner(out / "a").run(items)[0].status == "done"
    with pytest.raises(KeyboardInterrupt):
        runner(out / "b", StopAfter(stop_after)).run(items)
    return runner(out / "b").run(items)[0]
