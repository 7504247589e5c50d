"""One writer at a time on a folder (a workspace, a training run): an exclusive flock on a lock file.

flock is released by the kernel when the holder dies (even by kill -9), so a
crashed writer never leaves a stale lock behind. The lock file holds who has
it (command, pid, host, since), so a refused writer can say who is in the way.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import CuratorError


class Locked(CuratorError):
    """The folder is held by another writer."""


@contextmanager
def exclusive(lock_file: Path, command: str, what: str, error: type[Exception] = Locked) -> Iterator[None]:
    """Hold `lock_file`, or raise `error` saying that `what` is in use by its holder (each owner of a lock raises
    its own kind: WorkspaceLocked, TrainError)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise error(
                f"{what} is in use by `{holder.get('command', '?')}` "
                f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}); "
                "wait for it to finish") from None
        since = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        info = json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(), "since": since})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holder(lock_file: Path) -> dict:
    """Who holds `lock_file` now ({} when nobody does or it cannot be read)."""
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:
        return {}
    try:
        return _read_holder(fd)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}
