"""One writer per output: an OS-level lock on ``OUTDIR/.<name>.lock`` while an input runs.

Two ``agender analyze`` runs into one folder must not both write ``.<name>.csv.partial``
(rows of both end up in one table). The runner takes this lock before it looks at, resumes
or writes anything of an input; a second run finds it taken and refuses that input in one line
(``output OUT/clip.csv is being written by another agender run (pid N)``).

The lock is ``flock`` (``LockFileEx`` via ``msvcrt`` on Windows) on an open file, so the OS
drops it when the process ends in any way — ``kill -9`` leaves the file but never a lock that
blocks the next run. The holder writes its pid into the file (only for the message) and
deletes the file on release, while still holding the lock; an acquirer that locked a file
which was deleted meanwhile (its inode is no longer the one at the path) tries again.
"""
from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

from agender.errors import OutputBusy

log = logging.getLogger("agender.outlock")

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
    import msvcrt


# a filesystem without locks (some network mounts): run unguarded rather than not at all
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _try_lock(fd: int, path: Path) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            return False
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                raise
            log.warning("%s: this filesystem has no file locks (%s); another run into this folder "
                        "would not be noticed", path, exc.strerror)
        return True
    try:  # pragma: no cover - Windows
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _read_pid(path: Path) -> int | None:
    for _ in range(20):  # the holder writes its pid right after locking
        try:
            text = path.read_text().strip()
        except OSError:
            return None
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None


class OutputLock:
    """``with OutputLock(path):`` — raises :class:`~agender.errors.OutputBusy` when another
    process holds it, :class:`OSError` when the lock file cannot be made (read-only folder)."""

    def __init__(self, path: str | Path, *, output: str | Path | None = None):
        self.path = Path(path)
        self.output = output if output is not None else self.path  # named in the busy message
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(50):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not _try_lock(fd, self.path):
                    raise OutputBusy(self.output, _read_pid(self.path))
                try:
                    st = os.stat(self.path)
                    same = (st.st_ino, st.st_dev) == (os.fstat(fd).st_ino, os.fstat(fd).st_dev)
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if not same:  # the previous holder deleted this file as we locked it: lock the new one
                os.close(fd)
                continue
            self._fd = fd
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError:  # a full disk: the lock holds without the pid
                pass
            return
        raise OutputBusy(self.output, None)  # pragma: no cover - 50 holders in a row

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()  # while still holding it (see the module docstring)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
