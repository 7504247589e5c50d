"""The workspace: a folder that every stage reads and writes.

Layout (the contract is documented in docs/workspace.md):

    WS/workspace.json     format version, models, settings, sources, consent
    WS/faces.parquet      one row per face
    WS/embeddings.npy     float32 [rows, dim]; row i belongs to table row i
    WS/crops/             aligned face crops, paths in the `crop_path` column
    WS/staging/           extract's checkpoints not yet merged into the table
    WS/.lock              held by the one command that may write

Invariants that make crashes harmless:
- the table and the embeddings are only replaced by atomic renames;
- stages add or change columns but never reorder or drop rows, so the
  embeddings file only grows by appending and `embeddings[:len(table)]` is
  always the table's embeddings, even if a crash fell between the two renames;
- extract's staged parts carry deterministic face ids, so merging them twice
  adds nothing the second time.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .atomic import atomic_path, write_json

FORMAT_NAME = "curator-workspace"
FORMAT_VERSION = 1

META = "workspace.json"
TABLE = "faces.parquet"
EMBEDDINGS = "embeddings.npy"
CROPS = "crops"
STAGING = "staging"
LOCK = ".lock"


class WorkspaceError(Exception):
    """A workspace problem the user can act on; the message says what and where."""


class WorkspaceLocked(WorkspaceError):
    pass


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def meta_path(self) -> Path:
        return self.root / META

    @property
    def table_path(self) -> Path:
        return self.root / TABLE

    @property
    def embeddings_path(self) -> Path:
        return self.root / EMBEDDINGS

    @property
    def crops_dir(self) -> Path:
        return self.root / CROPS

    @property
    def staging_dir(self) -> Path:
        return self.root / STAGING

    def exists(self) -> bool:
        return self.meta_path.is_file()


def new_meta() -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "created": now(),
        "updated": now(),
        "models": None,
        "settings": {},
        "consent": [],
        "sources": {},
        "rows": 0,
        "embeddings": {"file": EMBEDDINGS, "dim": None, "dtype": "float32"},
    }


def open_workspace(path: str | os.PathLike, *, create: bool = False) -> Workspace:
    """Open (or with `create`, make) a workspace; refuse one this version cannot read."""
    ws = Workspace(Path(path).expanduser().resolve())
    if ws.exists():
        read_meta(ws)  # validates the version
        return ws
    if not create:
        if ws.root.is_dir() and any(ws.root.iterdir()):
            raise WorkspaceError(f"{ws.root} is not a curator workspace (no {META})")
        raise WorkspaceError(f"no workspace at {ws.root}: run `curator extract FOOTAGE --workspace {path}` first")
    try:
        ws.root.mkdir(parents=True, exist_ok=True)
        write_json(ws.meta_path, new_meta())
    except OSError as e:
        raise WorkspaceError(f"cannot create workspace at {ws.root}: {e.strerror or e}") from e
    return ws


def read_meta(ws: Workspace) -> dict:
    try:
        meta = json.loads(ws.meta_path.read_text())
    except FileNotFoundError:
        raise WorkspaceError(f"no workspace at {ws.root} ({META} missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorkspaceError(f"{ws.meta_path} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT_NAME:
        raise WorkspaceError(f"{ws.meta_path} is not a curator workspace file")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WorkspaceError(
            f"{ws.root} was written by a newer curator (workspace format {version}, "
            f"this curator {__version__} reads up to {FORMAT_VERSION}); upgrade curator"
        )
    return meta


def write_meta(ws: Workspace, meta: dict) -> None:
    meta["updated"] = now()
    meta["tool_version"] = __version__
    write_json(ws.meta_path, meta)


# --- the lock -----------------------------------------------------------------

@contextmanager
def locked(ws: Workspace, command: str) -> Iterator[None]:
    """Hold the workspace's write lock, or refuse naming who holds it.

    flock is released by the kernel when the holder dies (even by kill -9), so
    a crashed run never leaves a stale lock behind.
    """
    ws.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(ws.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise WorkspaceLocked(
                f"workspace {ws.root} is in use by `{holder.get('command', '?')}` "
                f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}); "
                "wait for it to finish"
            ) from None
        info = json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(), "since": now()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}


# --- table and embeddings -----------------------------------------------------

def read_table(ws: Workspace, columns: list[str] | None = None) -> pd.DataFrame:
    if not ws.table_path.exists():
        return pd.DataFrame()
    try:
        return pq.read_table(ws.table_path, columns=columns).to_pandas()
    except (pa.ArrowException, OSError) as e:
        raise WorkspaceError(f"{ws.table_path} cannot be read: {e}") from None


def read_embeddings(ws: Workspace, rows: int | None = None) -> np.ndarray:
    """The embeddings of the table's rows (memory-mapped, read-only)."""
    if rows is None:
        rows = len(read_table(ws, columns=["face_id"]))
    if rows == 0:
        dim = (read_meta(ws).get("embeddings") or {}).get("dim") or 0
        return np.zeros((0, dim), np.float32)
    try:
        emb = np.load(ws.embeddings_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise WorkspaceError(f"{ws.embeddings_path} cannot be read: {e}") from None
    if emb.ndim != 2 or emb.shape[0] < rows:
        raise WorkspaceError(
            f"{ws.embeddings_path} holds {emb.shape[0] if emb.ndim else 0} rows but the table has {rows}; "
            "run `curator verify --repair`"
        )
    return emb[:rows]


def write_table(ws: Workspace, table: pd.DataFrame) -> None:
    """Replace the table atomically. Callers must keep row order and count (see module doc)."""
    with atomic_path(ws.table_path) as tmp:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp, compression="zstd")


def write_embeddings(ws: Workspace, emb: np.ndarray) -> None:
    with atomic_path(ws.embeddings_path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(emb, dtype=np.float32), allow_pickle=False)


def update_columns(ws: Workspace, columns: pd.DataFrame) -> pd.DataFrame:
    """Set (add or overwrite) columns on the table, row-aligned by face_id; returns the new table."""
    table = read_table(ws)
    if "face_id" not in columns:
        raise ValueError("columns must carry face_id")
    if len(columns) != len(table) or not (columns["face_id"].to_numpy() == table["face_id"].to_numpy()).all():
        raise WorkspaceError("table changed while the command ran; re-run it")
    for name in columns.columns:
        if name != "face_id":
            table[name] = columns[name].to_numpy()
    write_table(ws, table)
    meta = read_meta(ws)
    write_meta(ws, meta)
    return table
