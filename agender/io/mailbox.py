"""The one "newest frame wins" mailbox between two threads.

A live source must never queue up frames while a slower consumer works: the consumer wants the
newest picture, and memory must stay bounded whatever the speeds. The GUI's capture → worker
hand-over, the worker → window hand-over and the offline reader of a live source
(:class:`~agender.io.sources.ThreadedReader` with ``latest_only``) all use this one class.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any


class Mailbox:
    """A small latest-wins mailbox between two threads (``capacity`` items, default one).

    ``put`` never blocks: when the mailbox is full, the oldest unread item is dropped (counted
    in :attr:`dropped`), so memory stays bounded at ``capacity`` items whatever the speeds on
    either side; ``get`` takes the oldest waiting item (with one slot: the newest). A capacity
    of two absorbs one frame of jitter, so frames are dropped only when the consumer really
    falls behind.
    """

    def __init__(self, capacity: int = 1) -> None:
        self._cond = threading.Condition()
        self._items: deque = deque()
        self.capacity = max(1, int(capacity))
        self.dropped = 0
        self.dropped_indices: deque[int] = deque(maxlen=50)  # frame indices of the last items dropped
        self.dropped_seqs: deque[int] = deque(maxlen=1_000_000)  # their capture sequence numbers

    def put(self, item: Any) -> None:
        with self._cond:
            if len(self._items) >= self.capacity:
                old = self._items.popleft()
                self.dropped += 1
                fr = getattr(old, "frame", None)
                if fr is not None:
                    self.dropped_indices.append(int(fr.index))
                if getattr(old, "seq", 0):
                    self.dropped_seqs.append(int(old.seq))
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The oldest waiting item (taking it out), or ``None`` after ``timeout`` seconds."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def reset(self) -> None:
        """Empty, and count drops afresh (a new source)."""
        with self._cond:
            self._items.clear()
            self.dropped = 0
            self.dropped_indices.clear()
            self.dropped_seqs.clear()
