"""The workspace: a folder that every stage reads and writes.

This module owns the workspace format; no other module reads or writes the
files below except through it. Layout, format 2 (the contract is
docs/workspace.md):

    WS/workspace.json            format version, models, settings, sources, consent
    WS/faces/000000.parquet      a shard: rows of one extract commit (extract's columns), at most SHARD_ROWS
    WS/embeddings/000000.npy     float32 [rows, dim] of that shard; row i belongs to the shard's row i
    WS/columns/<group>.parquet   face_id + the columns a later stage writes (identify, curate, review,
                                 verify, other), for the table's first rows in order
    WS/crops/                    aligned face crops, paths in the `crop_path` column
    WS/staging/                  extract's checkpoints not yet merged into the table
    WS/.lock                     held by the one command that may write

The table is the shards in order, each joined column-wise with the column
groups; a group shorter than the table (rows extract added since that stage
ran) reads as null beyond its end. Format 1 (faces.parquet + embeddings.npy)
is read as one shard holding every column, and upgraded in place by the
first command that takes the lock (`upgrade`).

Invariants that make crashes harmless:
- every file is only replaced by an atomic rename; a shard's embeddings are
  renamed into place before its rows, so a shard's embeddings are never
  shorter than its rows, whatever a crash interrupted;
- stages add or change columns but never reorder or drop rows; extract only
  adds new shards, it never rewrites one;
- extract's staged parts carry deterministic face ids, so merging them twice
  adds nothing the second time.

Sections: the workspace and its metadata; the write lock and the upgrade;
table and embeddings; face ids and crops; staging (checkpoints, resume state,
commit).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .atomic import atomic_path, write_json
from .errors import CuratorError
from .media import sha256_file

FORMAT_NAME = "curator-workspace"
FORMAT_VERSION = 2

META = "workspace.json"
FACES = "faces"            # faces/<shard>.parquet
EMBEDDINGS = "embeddings"  # embeddings/<shard>.npy
COLUMNS = "columns"        # columns/<group>.parquet
CROPS = "crops"
STAGING = "staging"
LOCK = ".lock"
LEGACY_TABLE = "faces.parquet"      # format 1
LEGACY_EMBEDDINGS = "embeddings.npy"  # format 1

# Rows per shard: a shard's rows with every column (about 2 KB a face, most of it landmark and appearance
# vectors) stay a few hundred MB in memory, so a commit or a stage reading one shard at a time is bounded.
SHARD_ROWS = 100_000
# Which column group a column written after extract lives in. Each group is one file, replaced whole by
# the stage that writes it; columns not listed go to "other".
COLUMN_GROUPS = {
    "identify": ("identity_cluster", "identity_score", "track_id", "is_target"),
    "curate": ("quality", "dup_group", "pose_cluster", "expr_cluster", "light_cluster", "selected", "reason"),
    "review": ("rejected", "kept", "review_tags"),
    "verify": ("crop_missing",),
}
GROUP_OF = {c: g for g, cols in COLUMN_GROUPS.items() for c in cols}
OTHER_GROUP = "other"


class WorkspaceError(CuratorError):
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
    def faces_dir(self) -> Path:
        return self.root / FACES

    @property
    def embeddings_dir(self) -> Path:
        return self.root / EMBEDDINGS

    @property
    def columns_dir(self) -> Path:
        return self.root / COLUMNS

    @property
    def legacy_table_path(self) -> Path:
        return self.root / LEGACY_TABLE

    @property
    def legacy_embeddings_path(self) -> Path:
        return self.root / LEGACY_EMBEDDINGS

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
        "embeddings": {"folder": EMBEDDINGS, "dim": None, "dtype": "float32"},
    }


def open_workspace(path: str | os.PathLike, *, create: bool = False) -> Workspace:
    """Open (or with `create`, make) a workspace; refuse one this version cannot read."""
    ws = Workspace(Path(path).expanduser().resolve())
    if ws.exists():
        read_meta(ws)  # validates the version
        return ws
    if ws.root.is_dir() and any(ws.root.iterdir()):
        # Never make a workspace of a folder that holds other things (footage, an export): its files would mix.
        raise WorkspaceError(f"{ws.root} is not a curator workspace (no {META})"
                             + ("; give a new or empty folder for one" if create else ""))
    if not create:
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


def inputs_of(ws: Workspace) -> dict[Path, str]:
    """What no output may be or contain ({path: what it is}): the workspace, its footage and its model pack."""
    meta = read_meta(ws)
    keep = {ws.root: f"the workspace {ws.root}"}
    keep.update({Path(rec["path"]): "input footage of the workspace" for rec in meta.get("sources", {}).values()
                 if rec.get("path")})
    pack = (meta.get("models") or {}).get("path")
    if pack:
        keep[Path(pack)] = "the workspace's model pack"
    return keep


# --- the lock and the upgrade ----------------------------------------------------

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
            if ws.exists():  # the first writer upgrades a format-1 workspace; a crash's leftovers go
                ensure_current(ws)
                remove_leftovers(ws)
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
# The table is a list of shards (rows in order) joined column-wise with the column groups. Everything
# below reads only the shards and columns asked for; nothing holds more than one shard's wide columns.

@dataclass(frozen=True)
class Shard:
    """One stored slice of the table: rows [start, start + rows) in `faces`, their embeddings in `embeddings`."""
    faces: Path
    embeddings: Path
    start: int
    rows: int

    @property
    def stop(self) -> int:
        return self.start + self.rows


def format_version(ws: Workspace) -> int:
    return int(read_meta(ws)["format_version"])


def shards(ws: Workspace) -> list[Shard]:
    """The table's shards in row order (a format-1 workspace is one shard: faces.parquet + embeddings.npy)."""
    if format_version(ws) < 2:
        files = [(ws.legacy_table_path, ws.legacy_embeddings_path)] if ws.legacy_table_path.exists() else []
    else:
        found = sorted((int(p.stem), p) for p in ws.faces_dir.glob("*.parquet") if p.stem.isdigit()) \
            if ws.faces_dir.is_dir() else []
        files = [(p, ws.embeddings_dir / f"{p.stem}.npy") for _, p in found]
    out, start = [], 0
    for faces, emb in files:
        rows = _parquet_rows(ws, faces)
        out.append(Shard(faces, emb, start, rows))
        start += rows
    return out


def table_rows(ws: Workspace) -> int:
    """How many rows the table has (from the shards' Parquet footers; nothing else is read)."""
    sh = shards(ws)
    return sh[-1].stop if sh else 0


def _parquet_rows(ws: Workspace, path: Path) -> int:
    try:
        return pq.read_metadata(path).num_rows
    except (pa.ArrowException, OSError) as e:
        raise WorkspaceError(f"{_rel(ws, path)} cannot be read: {e}") from None


def _rel(ws: Workspace, path: Path) -> str:
    try:
        return path.relative_to(ws.root).as_posix()
    except ValueError:
        return str(path)


def _read_parquet(ws: Workspace, path: Path, columns: list[str] | None, row_groups: list[int] | None = None) -> pa.Table:
    try:
        f = pq.ParquetFile(path)
        if columns is not None:
            columns = [c for c in columns if c in f.schema_arrow.names]
        if row_groups is not None:
            return f.read_row_groups(row_groups, columns=columns)
        return f.read(columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise WorkspaceError(f"{_rel(ws, path)} cannot be read: {e}") from None


def _schema_names(ws: Workspace, path: Path) -> list[str]:
    try:
        return pq.read_schema(path).names
    except (pa.ArrowException, OSError) as e:
        raise WorkspaceError(f"{_rel(ws, path)} cannot be read: {e}") from None


def column_groups(ws: Workspace) -> dict[str, Path]:
    """The column-group files that exist ({group: path}); none in a format-1 workspace."""
    if format_version(ws) < 2 or not ws.columns_dir.is_dir():
        return {}
    found = {p.stem: p for p in ws.columns_dir.glob("*.parquet") if not p.name.startswith(".")}
    order = list(COLUMN_GROUPS) + [OTHER_GROUP]
    return dict(sorted(found.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


def table_columns(ws: Workspace) -> list[str]:
    """Every column name of the table, in the order read_table gives them."""
    names: list[str] = []
    for sh in shards(ws):
        names += [c for c in _schema_names(ws, sh.faces) if c not in names]
    for path in column_groups(ws).values():
        names += [c for c in _schema_names(ws, path) if c not in names]
    return names


def _group_slice(ws: Workspace, path: Path, columns: list[str], start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of a column group's `columns`, padded with nulls past the group's end."""
    try:
        f = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise WorkspaceError(f"{_rel(ws, path)} cannot be read: {e}") from None
    md, schema = f.metadata, f.schema_arrow
    groups, first, at = [], None, 0
    for i in range(md.num_row_groups):
        n = md.row_group(i).num_rows
        if at < stop and at + n > start:
            groups.append(i)
            first = at if first is None else first
        at += n
    have = min(stop, at) - start
    if groups and have > 0:
        t = _read_parquet(ws, path, columns, groups).slice(start - first, have)
    else:
        t = pa.table({c: pa.array([], schema.field(c).type) for c in columns})
    missing = stop - start - max(have, 0)
    if missing > 0:
        t = pa.concat_tables([t, pa.table({c: pa.nulls(missing, t.schema.field(c).type) for c in t.column_names})])
    return t


def _read_rows(ws: Workspace, sh: Shard, columns: list[str] | None, groups: dict[str, Path],
               start: int | None = None, stop: int | None = None) -> pa.Table:
    """Rows [start, stop) (global; default the whole shard) of one shard with the groups' columns joined."""
    start = sh.start if start is None else start
    stop = sh.stop if stop is None else stop
    t = _read_parquet(ws, sh.faces, columns)
    if (start, stop) != (sh.start, sh.stop):
        t = t.slice(start - sh.start, stop - start)
    for path in groups.values():
        names = [c for c in _schema_names(ws, path) if c != "face_id" and (columns is None or c in columns)]
        if not names:
            continue
        g = _group_slice(ws, path, names, start, stop)
        for c in names:
            col = g.column(c)
            if c in t.column_names:
                # A group written over a shard's column: the group's rows win, the shard's fill past its end.
                t = t.set_column(t.column_names.index(c), c, _coalesce(col, t.column(c)))
            else:
                t = t.append_column(c, col)
    if columns is not None:
        t = t.select([c for c in columns if c in t.column_names])
    return t


def _coalesce(first: pa.ChunkedArray, second: pa.ChunkedArray) -> pa.ChunkedArray:
    import pyarrow.compute as pc

    try:
        return pc.coalesce(first, second.cast(first.type))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return first


def _to_pandas(t: pa.Table, categories: tuple[str, ...] = ()) -> pd.DataFrame:
    for c in categories:
        if c in t.column_names and not pa.types.is_dictionary(t.schema.field(c).type):
            t = t.set_column(t.column_names.index(c), c, t.column(c).dictionary_encode())
    return t.to_pandas()


def read_arrow(ws: Workspace, columns: list[str] | None = None) -> pa.Table:
    """The table (or `columns` of it) as one Arrow table, shards in order."""
    groups = column_groups(ws)
    parts = [_read_rows(ws, sh, columns, groups) for sh in shards(ws)]
    if not parts:
        return pa.table({})
    return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]


def read_table(ws: Workspace, columns: list[str] | None = None, *, rows: np.ndarray | None = None,
               categories: tuple[str, ...] = ()) -> pd.DataFrame:
    """The face table (or `columns` of it) as a DataFrame, row i = global row i.

    Only the shards and columns asked for are read. `rows`: only these
    (sorted) global rows, keeping their numbers as the index. `categories`:
    string columns to give as pandas categoricals (a 64-hex source hash per
    row costs 100 bytes as a string, 4 as a code).
    """
    if rows is None:
        t = read_arrow(ws, columns)
        return _to_pandas(t, categories) if t.num_columns else pd.DataFrame()
    rows = np.asarray(rows, np.int64)
    groups = column_groups(ws)
    frames = []
    for sh in shards(ws):
        lo, hi = np.searchsorted(rows, [sh.start, sh.stop])
        if hi > lo:
            local = rows[lo:hi] - sh.start
            t = _read_rows(ws, sh, columns, groups).take(pa.array(local))
            frames.append(_to_pandas(t, categories).set_axis(rows[lo:hi]))
    if not frames:
        return read_table(ws, columns, categories=categories).iloc[:0]
    return pd.concat(frames) if len(frames) > 1 else frames[0]


def iter_table(ws: Workspace, columns: list[str] | None = None, *,
               categories: tuple[str, ...] = ()) -> Iterator[pd.DataFrame]:
    """The table one shard at a time (index = global row numbers): for passes that need only a shard in memory."""
    groups = column_groups(ws)
    for sh in shards(ws):
        t = _read_rows(ws, sh, columns, groups)
        yield _to_pandas(t, categories).set_axis(pd.RangeIndex(sh.start, sh.stop))


def read_columns(ws: Workspace, columns: list[str], rows: np.ndarray | None = None) -> pa.Table:
    """`columns` of the table (those it has) as one Arrow table: every row, or only `rows` (sorted row numbers).

    The same values as `read_table`, read for a few columns of a large table
    (review at 10 million rows): each column group file is read once, not
    once per shard (a group's row groups are a million rows, so reading it
    shard by shard decodes each of them ten times), and with `rows` each
    shard keeps only its rows as soon as it is read.
    """
    sh = shards(ws)
    n = sh[-1].stop if sh else 0
    if rows is not None:
        rows = np.asarray(rows, np.int64)
    parts = []
    for s in sh:
        if rows is None:
            parts.append(_read_parquet(ws, s.faces, columns))
            continue
        lo, hi = np.searchsorted(rows, [s.start, s.stop])
        if hi > lo:
            parts.append(_read_parquet(ws, s.faces, columns).take(pa.array(rows[lo:hi] - s.start)))
    t = pa.concat_tables(parts, promote_options="permissive") if parts else pa.table({})
    for path in column_groups(ws).values():
        names = [c for c in _schema_names(ws, path) if c != "face_id" and c in columns]
        if not names:
            continue
        g = _read_parquet(ws, path, names)
        for c in names:
            col = g.column(c)  # chunked as read: combining 10 million strings would copy them
            if rows is None:  # a group shorter than the table: null past its end
                col = pa.chunked_array(col.chunks + [pa.nulls(n - len(col), col.type)]) if len(col) < n else col
            else:
                inside_ = rows < len(col)
                col = col.take(pa.array(np.where(inside_, rows, 0), mask=~inside_))
            if c in t.column_names:  # a group written over a shard's column: the group wins where it has the row
                t = t.set_column(t.column_names.index(c), c, _coalesce(col, t.column(c)))
            elif t.num_columns:
                t = t.append_column(c, col)
            else:
                t = pa.table({c: col})
    return t.select([c for c in columns if c in t.column_names])


class RowArray:
    """Read-only rows of several per-shard arrays seen as one [rows, dim] array.

    Supports len, shape, indexing by an int, a slice, an int or bool array
    (rows are gathered shard by shard), `np.asarray`, `@` (chunk by chunk) and
    `chunks()`. Each part needs only len and indexing by slices and sorted
    int arrays: a memory map per shard, or a column read from Parquet.
    """

    def __init__(self, parts: list, dim: int, dtype=np.float32):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.dtype = np.dtype(dtype)
        self.shape = (int(self.starts[-1]), int(dim))
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self[key[0]][(slice(None),) + key[1:]]
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            s = int(np.searchsorted(self.starts, i, "right")) - 1
            return np.asarray(self.parts[s][i - self.starts[s]: i - self.starts[s] + 1], self.dtype)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                return self[np.arange(start, stop, step)]
            out = [np.asarray(p[max(start - a, 0): min(stop - a, len(p))], self.dtype)
                   for p, a in zip(self.parts, self.starts[:-1].tolist()) if a < stop and a + len(p) > start]
            return np.concatenate(out) if out else np.zeros((0, self.shape[1]), self.dtype)
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + n, idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        out = np.empty((len(idx), self.shape[1]), self.dtype)
        order = np.argsort(idx, kind="stable")
        srt = idx[order]
        bounds = np.searchsorted(srt, self.starts)
        for s, part in enumerate(self.parts):
            lo, hi = bounds[s], bounds[s + 1]
            if hi > lo:
                out[order[lo:hi]] = np.asarray(part[srt[lo:hi] - self.starts[s]], self.dtype)
        return out

    def __array__(self, dtype=None, copy=None):
        a = self[0:len(self)]
        return a.astype(dtype) if dtype is not None else a

    def __matmul__(self, other):
        chunks = [c @ other for c in self.chunks()]
        return np.concatenate(chunks) if chunks else np.zeros((0,) + np.shape(other)[1:], self.dtype)

    def chunks(self, size: int = 65536) -> Iterator[np.ndarray]:
        for s in range(0, len(self), size):
            yield self[s:s + size]


class _RowFile:
    """A .npy file's rows read with pread, without a memory map: for a few thousand scattered rows, where a map
    would fault in (and count as resident) 64 KB around each row, most of a large file."""

    def __init__(self, path: Path, rows: int):
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = header(f)
            self.offset = f.tell()
        if len(shape) != 2 or fortran:
            raise ValueError(f"not a 2-D C-ordered array: shape {shape}")
        self.path, self.dtype, self.dim = path, np.dtype(dtype), int(shape[1])
        self.rows, self.shape = rows, (rows, int(shape[1]))
        self.row_bytes = self.dim * self.dtype.itemsize
        self.fd = os.open(path, os.O_RDONLY)

    def __del__(self):
        try:
            os.close(self.fd)
        except (AttributeError, OSError):
            pass

    def __len__(self) -> int:
        return self.rows

    def _read(self, start: int, count: int) -> np.ndarray:
        data = os.pread(self.fd, count * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(data, self.dtype).reshape(count, self.dim)

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, _ = key.indices(self.rows)
            return self._read(start, max(stop - start, 0))
        idx = np.asarray(key, np.int64).reshape(-1)
        out = np.empty((len(idx), self.dim), self.dtype)
        for k, i in enumerate(idx.tolist()):
            out[k] = self._read(i, 1)[0]
        return out


def _open_embeddings(ws: Workspace, sh: Shard, random_access: bool = False):
    if random_access:
        try:
            part = _RowFile(sh.embeddings, sh.rows)
        except (OSError, ValueError) as e:
            raise WorkspaceError(f"{_rel(ws, sh.embeddings)} cannot be read: {e}") from None
        if (os.path.getsize(sh.embeddings) - part.offset) // part.row_bytes < sh.rows:
            raise WorkspaceError(f"{_rel(ws, sh.embeddings)} holds fewer rows than {_rel(ws, sh.faces)}; "
                                 "run `curator verify --repair`")
        return part
    try:
        emb = np.load(sh.embeddings, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise WorkspaceError(f"{_rel(ws, sh.embeddings)} is missing for {_rel(ws, sh.faces)}; "
                             "the workspace's embeddings are lost (extract the footage again)") from None
    except (OSError, ValueError) as e:
        raise WorkspaceError(f"{_rel(ws, sh.embeddings)} cannot be read: {e}") from None
    if emb.ndim != 2 or emb.shape[0] < sh.rows:
        raise WorkspaceError(
            f"{_rel(ws, sh.embeddings)} holds {emb.shape[0] if emb.ndim else 0} rows but "
            f"{_rel(ws, sh.faces)} has {sh.rows}; run `curator verify --repair`"
        )
    return emb[: sh.rows]


def read_embeddings(ws: Workspace, rows: int | None = None, *, random_access: bool = False):
    """The embeddings of the table's first `rows` rows (default all), read-only: one shard's memory map as it
    is, several shards as a `RowArray` over their memory maps (only the rows indexed are read).
    `random_access`: the caller reads a few scattered rows (curate): a `RowArray` that reads each row with
    pread, so the rows not asked for are never mapped into the process."""
    sh = shards(ws)
    if rows is None:
        rows = sh[-1].stop if sh else 0
    if rows == 0:
        dim = (read_meta(ws).get("embeddings") or {}).get("dim") or 0
        return np.zeros((0, dim), np.float32)
    if rows > (sh[-1].stop if sh else 0):
        raise WorkspaceError(f"the table has {sh[-1].stop if sh else 0} rows, {rows} embeddings were asked for")
    parts = []
    for s in sh:
        if s.start >= rows:
            break
        part = _open_embeddings(ws, s, random_access)
        parts.append(part[: rows - s.start] if not random_access else part)
    if random_access:
        parts[-1].rows = rows - sh[len(parts) - 1].start  # the last shard only up to `rows`
        return RowArray(parts, parts[0].dim, parts[0].dtype)
    if len(parts) == 1:
        return parts[0]
    return RowArray(parts, parts[0].shape[1], parts[0].dtype)


class _VectorColumn:
    """A fixed-width list column of one shard (e.g. `appearance`) as a lazily read float32 [rows, width] array.

    Shards share `cache`, which keeps only the last shard read: a pass over
    the rows in order reads each shard once and holds one at a time."""

    def __init__(self, ws: Workspace, sh: Shard, column: str, groups: dict[str, Path], cache: dict):
        self.ws, self.sh, self.column, self.groups, self.cache = ws, sh, column, groups, cache

    def __len__(self) -> int:
        return self.sh.rows

    def load(self) -> np.ndarray:
        key = self.sh.faces
        if key not in self.cache:
            self.cache.clear()
            col = _read_rows(self.ws, self.sh, [self.column], self.groups).column(self.column)
            self.cache[key] = list_matrix(col)
        return self.cache[key]

    def __getitem__(self, key):
        return self.load()[key]


def list_matrix(col: pa.ChunkedArray | pa.Array, dtype=np.float32) -> np.ndarray:
    """A column of equal-length lists as a [rows, width] array (nulls become NaN rows)."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(col)
    if n == 0:
        return np.zeros((0, 0), dtype)
    if pa.types.is_null(col.type):
        return np.full((n, 1), np.nan, dtype)
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    if not valid.all():
        sizes = col.value_lengths().to_numpy(zero_copy_only=False)
        width = int(np.nanmax(np.where(valid, sizes, 0))) if valid.any() else 1
        out = np.full((n, max(width, 1)), np.nan, dtype)
        flat = col.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        out[valid] = flat.reshape(-1, width) if width else out[valid]
        return out
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(dtype, copy=False).reshape(n, -1)


def read_vectors(ws: Workspace, column: str) -> RowArray:
    """A list column (`appearance`, `bbox`, ...) as a float32 [rows, width] `RowArray`, each shard read on first use."""
    groups = column_groups(ws)
    cache: dict = {}
    parts = [_VectorColumn(ws, sh, column, groups, cache) for sh in shards(ws)]
    width = 0
    for p in parts:
        if p.sh.rows:
            width = p.load().shape[1]
            break
    return RowArray(parts, width, np.float32)


# --- writing the table --------------------------------------------------------

def _arrow_columns(frame: pd.DataFrame) -> pa.Table:
    """A DataFrame as Arrow, categoricals as their plain values (so they read back as the plain type)."""
    t = pa.Table.from_pandas(frame, preserve_index=False)
    for i, field in enumerate(t.schema):
        if pa.types.is_dictionary(field.type):
            t = t.set_column(i, field.name, t.column(i).cast(field.type.value_type))
    return t


def _write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _face_ids(ws: Workspace) -> pa.ChunkedArray:
    t = read_arrow(ws, ["face_id"])
    return t.column("face_id").cast(pa.large_string()) if t.num_columns else pa.chunked_array([], pa.large_string())


def ensure_current(ws: Workspace) -> None:
    """Upgrade a format-1 workspace before anything is written to it (the caller holds the lock)."""
    if format_version(ws) < FORMAT_VERSION:
        upgrade(ws)


def write_table(ws: Workspace, table: pd.DataFrame) -> None:
    """Replace the whole table (every column) with `table`, which must keep the row count and order.

    For repairs and tools; stages write their columns with `update_columns`.
    Columns of a group (COLUMN_GROUPS) go to its file, the others into the
    shards (each rewritten); the embeddings are not touched.
    """
    ensure_current(ws)
    sh = shards(ws)
    n = sh[-1].stop if sh else 0
    if len(table) != n:
        raise ValueError(f"write_table keeps the row count: {len(table)} rows given, the table has {n}")
    table = table.reset_index(drop=True)
    grouped = {g: [c for c in table.columns if GROUP_OF.get(c, "") == g] for g in COLUMN_GROUPS}
    base = [c for c in table.columns if c not in GROUP_OF]
    for s in sh:
        _write_parquet(s.faces, _arrow_columns(table.iloc[s.start:s.stop][base]))
    for g, path in column_groups(ws).items():
        if not grouped.get(g):
            path.unlink()
    for g, cols in grouped.items():
        if cols:
            _write_parquet(ws.columns_dir / f"{g}.parquet", _arrow_columns(table[["face_id", *cols]]))
    write_meta(ws, {**read_meta(ws), "rows": n})


def write_embeddings(ws: Workspace, emb: np.ndarray) -> None:
    """Replace the embeddings, split over the shards by their rows (rows past the table go to the last shard)."""
    ensure_current(ws)
    sh = shards(ws)
    if not sh:
        return
    for i, s in enumerate(sh):
        stop = len(emb) if i == len(sh) - 1 else s.stop
        _write_npy(s.embeddings, np.asarray(emb[s.start:stop], np.float32))


def trim_embeddings(ws: Workspace) -> int:
    """Drop embedding rows past each shard's rows (left by an interrupted write); returns how many."""
    ensure_current(ws)
    dropped = 0
    for sh in shards(ws):
        emb = _open_embeddings(ws, sh)
        total = np.load(sh.embeddings, mmap_mode="r", allow_pickle=False).shape[0]
        if total > sh.rows:
            _write_npy(sh.embeddings, np.asarray(emb))
            dropped += total - sh.rows
    return dropped


def _write_npy(path: Path, emb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(emb, dtype=np.float32), allow_pickle=False)


def update_columns(ws: Workspace, columns: pd.DataFrame) -> None:
    """Set (add or overwrite) columns of the table, row-aligned by face_id (`columns` has every row, in order).

    Each column goes to its group's file (COLUMN_GROUPS; others to "other"),
    which is rewritten whole with the group's other columns kept; the shards
    are not touched, so a stage's write costs its own columns, not the table.
    """
    if "face_id" not in columns:
        raise ValueError("columns must carry face_id")
    ensure_current(ws)
    ids = _face_ids(ws)
    given = pa.array(columns["face_id"], from_pandas=True).cast(pa.large_string())
    if len(given) != len(ids) or not _same_ids(given, ids):
        raise WorkspaceError("table changed while the command ran; re-run it")
    n = len(ids)
    by_group: dict[str, list[str]] = {}
    for name in columns.columns:
        if name != "face_id":
            by_group.setdefault(GROUP_OF.get(name, OTHER_GROUP), []).append(name)
    existing = column_groups(ws)
    for g, names in by_group.items():
        new = _arrow_columns(columns[names].reset_index(drop=True))
        out = pa.table({"face_id": ids})
        if g in existing:
            kept = [c for c in _schema_names(ws, existing[g]) if c != "face_id" and c not in names]
            if kept:
                old = _group_slice(ws, existing[g], kept, 0, n)
                for c in kept:
                    out = out.append_column(c, old.column(c))
        for c in names:
            out = out.append_column(c, new.column(c))
        _write_parquet(ws.columns_dir / f"{g}.parquet", out)
    write_meta(ws, read_meta(ws))


def _same_ids(a: pa.Array, b: pa.ChunkedArray) -> bool:
    import pyarrow.compute as pc

    if not len(a):
        return True
    return bool(pc.all(pc.equal(a, b.combine_chunks() if b.num_chunks != 1 else b.chunk(0))).as_py())


# --- format 1 -> 2 --------------------------------------------------------------

def upgrade(ws: Workspace) -> None:
    """Turn a format-1 workspace (faces.parquet + embeddings.npy) into format 2, in place, under the lock.

    Crash-safe: the format-2 files are written first, `workspace.json`'s
    format_version last (until then readers use the format-1 files), and the
    format-1 files are removed only after it (a leftover is removed by the
    next writer, `remove_leftovers`).
    """
    meta = read_meta(ws)
    if meta["format_version"] >= 2:
        return
    for folder in (ws.faces_dir, ws.embeddings_dir, ws.columns_dir):  # a crashed earlier upgrade's files
        if folder.is_dir():
            for p in folder.iterdir():
                p.unlink()
    if ws.legacy_table_path.exists():
        try:
            f = pq.ParquetFile(ws.legacy_table_path)
            names = f.schema_arrow.names
            n = f.metadata.num_rows
            emb = np.load(ws.legacy_embeddings_path, mmap_mode="r", allow_pickle=False) if n else None
        except (pa.ArrowException, OSError, ValueError) as e:
            raise WorkspaceError(f"cannot upgrade {ws.root} to workspace format {FORMAT_VERSION}: {e}") from None
        if n and (emb.ndim != 2 or emb.shape[0] < n):
            raise WorkspaceError(f"{ws.legacy_embeddings_path} is shorter than {ws.legacy_table_path}; "
                                 "run `curator verify` with the curator that wrote it")
        base = [c for c in names if c not in GROUP_OF]
        start = 0
        for seq, batch in enumerate(f.iter_batches(batch_size=SHARD_ROWS, columns=base)):
            stop = start + batch.num_rows
            _write_npy(ws.embeddings_dir / f"{seq:06d}.npy", emb[start:stop])
            _write_parquet(ws.faces_dir / f"{seq:06d}.parquet", pa.Table.from_batches([batch]))
            start = stop
        for g, cols in COLUMN_GROUPS.items():
            cols = [c for c in cols if c in names]
            if cols:
                _write_parquet(ws.columns_dir / f"{g}.parquet", f.read(columns=["face_id", *cols]))
    meta["format_version"] = FORMAT_VERSION
    meta["embeddings"] = {**{k: v for k, v in (meta.get("embeddings") or {}).items() if k != "file"},
                          "folder": EMBEDDINGS}
    write_meta(ws, meta)
    remove_leftovers(ws)


def remove_leftovers(ws: Workspace) -> None:
    """Remove the format-1 files of an upgraded workspace (left by a crash after the upgrade's last step)."""
    if format_version(ws) < 2:
        return
    for path in (ws.legacy_table_path, ws.legacy_embeddings_path):
        path.unlink(missing_ok=True)


# --- face ids, crops and sources ----------------------------------------------

def face_id(sha: str, frame: int, k: int) -> str:
    """Deterministic id of face `k` (left to right) of `frame` of the source with SHA-256 `sha` (invariant 3)."""
    return f"{sha[:12]}_{int(frame):07d}_{int(k):02d}"


def crop_path(sha: str, frame: int, k: int) -> str:
    """Where that face's aligned crop lives, relative to the workspace."""
    return f"{CROPS}/{sha[:12]}/{int(frame):07d}_{int(k):02d}.jpg"


def write_crop(ws: Workspace, relative: str, crop: np.ndarray, quality: int) -> None:
    """Write an aligned crop as JPEG at `relative` (from `crop_path`)."""
    path = ws.root / relative
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"could not encode crop {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    # No fsync per crop (thousands per minute); the staged part that references
    # them is fsynced, and `curator verify` finds crops lost to a power cut.
    os.replace(tmp, path)


def source_sha256(meta: dict, path: Path) -> tuple[str, os.stat_result]:
    """SHA-256 of a source file, reusing the one `meta` records when path, size and mtime are unchanged."""
    st = path.stat()
    for sha, rec in meta["sources"].items():
        if rec.get("path") == str(path) and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
            return sha, st
    return sha256_file(path), st


# --- staging: checkpoints and the merge ---------------------------------------
# A writer (extract) stages rows in parts: Parquet files holding rows, their
# embeddings and, in the file's metadata, how far into each unit of work they
# go. A unit is a whole source, keyed by its SHA-256, or one segment of a long
# video (`unit_key`), so that several workers can stage parts of one file at
# once. `commit_staging` merges finished parts into the table; a partial source
# keeps its parts so a resumed run knows where to start.

PART_META_KEY = b"curator.progress"
UNIT_FIELDS = "unit"  # a segment's own part of its progress record (`media.Segment.as_dict()`)


def unit_key(sha: str, segment: int = 0, segments: int = 1) -> str:
    """The progress key of a unit of work: the source's SHA-256 when it is read whole, else that plus the segment."""
    return sha if segments <= 1 else f"{sha}-s{segment:05d}"


def unit_source(key: str) -> str:
    """The source SHA-256 of a progress key (`unit_key`)."""
    return key[:64]


class PartWriter:
    """Buffers rows and writes them as staged parts with the progress they stand for.

    One writer per process. Without `unit`, parts are numbered in sequence
    (`part-000012.parquet`): the one local run that holds the workspace's
    lock writes them. With `unit` (a `unit_key`), parts are named after the
    unit and this writer (`part-<unit>-<writer>-000003.parquet`), so workers
    on several machines stage at once without taking each other's names, and
    a unit run again after its worker was lost (or while a lost worker still
    runs) adds parts beside the ones before; rows staged twice have the same
    face ids, and the merge keeps one.
    """

    def __init__(self, ws: Workspace, *, every_frames: int = 200, every_seconds: float = 60.0,
                 unit: str | None = None):
        self.ws = ws
        self.every_frames = every_frames
        self.every_seconds = every_seconds
        self.rows: list[dict] = []
        self.embs: list[np.ndarray] = []
        self.progress: dict[str, dict] = {}
        self.frames = 0
        self.last_flush = time.monotonic()
        self.prefix = f"{unit}-{secrets.token_hex(4)}-" if unit else ""
        numbered = [int(p.stem[5:]) for p in staged_parts(ws) if p.stem[5:].isdigit()]
        self.seq = 0 if unit else max(numbered, default=-1) + 1

    def add(self, rows, emb, key, record, *, last_frame: int, complete: bool, resume: dict | None = None) -> None:
        """Stage `rows` of unit `key` (`unit_key`), analysed up to `last_frame`; `resume` is what a resumed run
        needs to seek there (`curator.media.ResumePoint`), None when it must decode the unit from its start."""
        self.rows.extend(rows)
        if emb is not None and len(emb):
            self.embs.append(emb)
        self.progress[key] = {**record, "last_frame": int(last_frame), "resume": None if complete else resume,
                              "complete": complete, "status": "complete" if complete else "partial"}
        self.frames += 1
        self.flush()

    def fail(self, key, record, reason) -> None:
        self.progress[key] = {**record, "last_frame": -1, "resume": None, "complete": False, "status": "failed",
                              "error": reason}
        self.flush(force=True)

    def flush(self, force: bool = False) -> None:
        due = self.frames >= self.every_frames or time.monotonic() - self.last_flush > self.every_seconds
        if not (force or due) or not self.progress:
            return
        write_part(self.ws, f"{self.prefix}{self.seq:06d}", self.rows,
                   np.concatenate(self.embs) if self.embs else None, self.progress)
        self.seq += 1
        self.rows, self.embs, self.progress, self.frames = [], [], {}, 0
        self.last_flush = time.monotonic()


def write_part(ws: Workspace, name: str, rows: list[dict], emb: np.ndarray | None, progress: dict) -> None:
    """Stage `rows` and `progress` ({unit key: record}) as `staging/part-NAME.parquet`, written whole or not at all."""
    df = pd.DataFrame(rows)
    if len(df):
        df["embedding"] = list(np.asarray(emb, np.float32))
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PART_META_KEY: json.dumps(progress).encode()})
    ws.staging_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(ws.staging_dir / f"part-{name}.parquet") as tmp:
        pq.write_table(table, tmp)


def part_progress(path: Path) -> dict:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(PART_META_KEY, b"{}"))


def staged_units(ws: Workspace, key: str | None = None) -> dict[str, dict]:
    """Per unit key: the furthest frame staged (`last_frame`, and `resume`: where to seek to go on after it) and
    whether the unit is finished. With `key`, only the parts a `PartWriter(unit=key)` wrote (a worker's own
    unit, without reading every part's metadata; a run of photos stages one key per photo)."""
    merged: dict[str, dict] = {}
    for part in staged_parts(ws, key):
        for k, rec in part_progress(part).items():
            merged[k] = further(merged.get(k), rec)
    return merged


def further(prev: dict | None, rec: dict | None) -> dict | None:
    """Of two staged records of one unit, the one that got further (a complete one, else the later frame)."""
    if prev is None or rec is None:
        return rec or prev
    if rec.get("complete") or rec.get("last_frame", -1) >= prev.get("last_frame", -1):
        return {**prev, **rec, "complete": bool(rec.get("complete") or prev.get("complete"))}
    return prev


def staged_progress(ws: Workspace) -> dict[str, dict]:
    """Per source sha: the furthest frame staged (`last_frame`, and `resume`: where to seek to go on after it)
    and whether the source is finished; for a source read in segments, see `source_progress`."""
    return progress_by_source(staged_units(ws))


def progress_by_source(units: dict[str, dict]) -> dict[str, dict]:
    """`staged_progress` from `staged_units`' answer."""
    by_source: dict[str, dict[str, dict]] = {}
    for key, rec in units.items():
        by_source.setdefault(unit_source(key), {})[key] = rec
    return {sha: source_progress(sha, recs) for sha, recs in by_source.items()}


def source_progress(sha: str, units: dict[str, dict]) -> dict:
    """One source's progress from its units' records. A source read in segments is complete when every segment
    is; `last_frame` is then how far from its start every frame is done (later segments may be done too), and
    there is no `resume` (each segment has its own)."""
    segmented = {k: r for k, r in units.items() if k != sha}
    if not segmented:
        return units[sha]
    count = max(int(r.get("segments", 1)) for r in segmented.values())
    recs = [segmented.get(unit_key(sha, k, count)) for k in range(count)]
    merged = {k: v for r in recs if r for k, v in r.items() if k != UNIT_FIELDS}
    last = -1
    for rec in recs:  # the segments done one after another from the start, then how far the next one got
        if rec is None:
            break
        if not rec.get("complete"):
            last = max(last, rec.get("last_frame", -1))
            break
        stop = (rec.get(UNIT_FIELDS) or {}).get("stop")
        last = stop - 1 if stop is not None else rec.get("frames", 0) - 1
    complete = all(r is not None and r.get("complete") for r in recs)
    failed = [r for r in recs if r is not None and r.get("status") == "failed"]
    merged.update(last_frame=last, resume=None, complete=complete,
                  frames=max((r.get("frames", 0) for r in recs if r), default=0),
                  status="complete" if complete else "failed" if failed else "partial")
    warnings = sorted({r["warning"] for r in recs if r and r.get("warning")})
    if warnings:
        merged["warning"] = "; ".join(warnings)
    if failed:
        merged["error"] = failed[0].get("error")
    return merged


def staged_parts(ws: Workspace, unit: str | None = None) -> list[Path]:
    """The staged parts in name order; with `unit`, only those a `PartWriter(unit=unit)` wrote."""
    if not ws.staging_dir.is_dir():
        return []
    return sorted(ws.staging_dir.glob(f"part-{unit}-*.parquet" if unit else "part-*.parquet"))


def commit_staging(ws: Workspace) -> int:
    """Merge staged parts into the table and embeddings; returns the table's row count.

    Two halves: `store_parts` turns the parts' new rows into new shards, then
    `workspace.json` takes the parts' progress and the parts whose sources
    are finished are removed. Safe to repeat after a crash at any point (see
    the module doc).
    """
    parts = staged_parts(ws)
    if not parts:
        return table_rows(ws)
    ensure_current(ws)
    progress = staged_progress(ws)
    store_parts(ws, parts)
    meta = read_meta(ws)
    counts = source_counts(ws)
    for sha, rec in progress.items():
        entry = {k: v for k, v in rec.items() if k not in ("complete", "last_frame", "resume")}
        if not rec.get("complete"):
            if rec.get("status") == "failed" and meta["sources"].get(sha, {}).get("status") == "complete":
                continue
            entry["last_frame"] = rec.get("last_frame", -1)
        entry["faces"] = int(counts.get(sha, 0))
        meta["sources"][sha] = {**meta["sources"].get(sha, {}), **entry}
    meta["rows"] = table_rows(ws)
    write_meta(ws, meta)
    # Partial sources keep their parts until they complete, so resume still knows where they stopped.
    for part in parts:
        if all(progress.get(unit_source(key), {}).get("complete")
               or progress.get(unit_source(key), {}).get("status") == "failed" for key in part_progress(part)):
            part.unlink()
    return meta["rows"]


def source_counts(ws: Workspace) -> dict[str, int]:
    """Rows per source SHA-256."""
    counts: dict[str, int] = {}
    for frame in iter_table(ws, ["source_sha256"], categories=("source_sha256",)):
        for sha, k in frame["source_sha256"].value_counts(sort=False).items():
            counts[sha] = counts.get(sha, 0) + int(k)
    return counts


def store_parts(ws: Workspace, parts: list[Path]) -> int:
    """Append the parts' rows that the table lacks (by face_id, first copy wins) as new shards; returns how many.

    Existing shards are never rewritten. Each new shard's embeddings are
    renamed into place before its rows, so no crash leaves a shard with
    fewer embeddings than rows; a shard is committed when its rows file
    appears, and a repeat finds its face ids known and adds nothing.
    """
    import pyarrow.compute as pc

    ids = [_read_parquet(ws, part, ["face_id"]) for part in parts]
    staged = pa.chunked_array([t.column("face_id").cast(pa.large_string()) for t in ids
                               if "face_id" in t.column_names and t.num_rows], pa.large_string())
    if not len(staged):
        return 0
    # Which staged ids the table already has: look the table's ids up among the staged ones (the smaller set
    # is the one hashed), then the few found among the staged.
    table_ids = _face_ids(ws)
    known = table_ids.filter(pc.is_in(table_ids, value_set=staged.combine_chunks())) if len(table_ids) else None
    keep = ~pd.Series(staged.to_numpy(zero_copy_only=False)).duplicated().to_numpy()
    if known is not None and len(known):
        keep &= ~pc.is_in(staged, value_set=known.combine_chunks()).to_numpy(zero_copy_only=False)
    total = int(keep.sum())
    if not total:
        return 0
    seq = int(shards(ws)[-1].faces.stem) + 1 if format_version(ws) >= 2 and shards(ws) else 0
    pending: list[pa.Table] = []
    at = 0
    for part, t in zip(parts, ids):
        n = t.num_rows
        mask = keep[at:at + n]
        at += n
        if not mask.any():
            continue
        rows = _read_parquet(ws, part, None).filter(pa.array(mask))
        pending.append(rows)
        while sum(p.num_rows for p in pending) >= SHARD_ROWS:
            merged = pa.concat_tables(pending, promote_options="permissive")
            _write_shard(ws, seq, merged.slice(0, SHARD_ROWS))
            seq += 1
            pending = [merged.slice(SHARD_ROWS)] if merged.num_rows > SHARD_ROWS else []
    if pending:
        _write_shard(ws, seq, pa.concat_tables(pending, promote_options="permissive"))
    return total


def _write_shard(ws: Workspace, seq: int, rows: pa.Table, emb: np.ndarray | None = None) -> None:
    if emb is None:
        emb = list_matrix(rows.column("embedding"))
        rows = rows.drop_columns(["embedding"])
    _write_npy(ws.embeddings_dir / f"{seq:06d}.npy", emb)  # first: never fewer embeddings than rows
    _write_parquet(ws.faces_dir / f"{seq:06d}.parquet", rows)
    meta = read_meta(ws)
    if not (meta.get("embeddings") or {}).get("dim"):
        meta.setdefault("embeddings", {"folder": EMBEDDINGS, "dtype": "float32"})["dim"] = int(emb.shape[1])
        write_meta(ws, meta)


def append_rows(ws: Workspace, rows: pa.Table | pd.DataFrame, emb: np.ndarray) -> int:
    """Add rows (extract's columns) and their embeddings as new shards after the last; returns the row count.

    For tools that make tables without footage (bench/curate.py's synthetic
    tables); extract adds rows through staged parts and `commit_staging`.
    The caller holds the lock and gives new face ids.
    """
    ensure_current(ws)
    if isinstance(rows, pd.DataFrame):
        rows = _arrow_columns(rows)
    if len(emb) != rows.num_rows:
        raise ValueError(f"{rows.num_rows} rows but {len(emb)} embeddings")
    sh = shards(ws)
    seq = int(sh[-1].faces.stem) + 1 if sh else 0
    for k, start in enumerate(range(0, rows.num_rows, SHARD_ROWS)):
        _write_shard(ws, seq + k, rows.slice(start, SHARD_ROWS), np.asarray(emb[start:start + SHARD_ROWS]))
    meta = read_meta(ws)
    meta["rows"] = table_rows(ws)
    write_meta(ws, meta)
    return meta["rows"]


def staged_rows(ws: Workspace, sha: str, frame: int, key: str | None = None) -> list[dict]:
    """Box and pose of the faces of `frame` of source `sha`, from the table and from the parts of unit `key` not
    merged yet (a unit run again after its worker was lost finds its own rows there)."""
    columns = ["face_id", "source_sha256", "frame", "bbox", "yaw", "pitch"]
    tables = [read_table(ws, columns=columns)]
    if key:
        tables += [pq.read_table(p, columns=columns).to_pandas() for p in staged_parts(ws, key)
                   if "frame" in pq.read_schema(p).names]
    tables = [t for t in tables if len(t)]
    if not tables:
        return []
    t = pd.concat(tables, ignore_index=True)
    rows = t[(t["source_sha256"] == sha) & (t["frame"] == frame)]
    return rows.drop_duplicates("face_id").sort_values("face_id").to_dict("records")


def staged_crops(ws: Workspace) -> set[str]:
    """Crops referenced by staged parts (a partial source keeps its parts until it completes)."""
    out: set[str] = set()
    for part in staged_parts(ws):
        if "crop_path" in pq.read_schema(part).names:
            out.update(pq.read_table(part, columns=["crop_path"]).column("crop_path").to_pylist())
    return out
