"""The workspace's write lock: one writer at a time; the first writer upgrades an old format."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ..fs.atomic import half_written
from ..fs.lock import exclusive
from .meta import LOCK, Workspace, WorkspaceLocked
from .upgrade import remove_leftovers
from .write import ensure_current


@contextmanager
def locked(ws: Workspace, command: str) -> Iterator[None]:
    """Hold the workspace's write lock, or refuse naming who holds it (WorkspaceLocked).

    One command takes it once for all its work: `curator run` holds it from
    extract to export, so no other writer gets in between its stages. The
    lock is released by the kernel when the holder dies (curator.fs.lock).
    """
    with exclusive(ws.root / LOCK, command, f"workspace {ws.root}", error=WorkspaceLocked):
        if ws.exists():  # the first writer upgrades a format-1 workspace; a crash's leftovers go
            ensure_current(ws)
            remove_leftovers(ws)
            remove_half_written(ws)
        yield


def remove_half_written(ws: Workspace) -> None:
    """Remove the files a killed writer was writing under a temporary name (never read: only a rename makes
    them part of the workspace). Crops are left alone: their folders can hold millions of files, and a crop's
    temporary name (`.NAME.jpg.tmp`) is never read either."""
    for folder in (ws.root, ws.staging_dir, ws.faces_dir, ws.embeddings_dir, ws.columns_dir):
        for path in half_written(folder):
            path.unlink(missing_ok=True)
