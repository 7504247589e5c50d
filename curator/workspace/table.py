"""Reading the table: shards joined with column groups, by column and by row, and the embeddings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..fs.atomic import atomic_path
from .meta import COLUMN_GROUPS, OTHER_GROUP, Workspace, WorkspaceError, read_meta


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


# The two kinds of table file, written whole under a temporary name and renamed (readers above never see half a file).
def write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")



def write_npy(path: Path, emb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(emb, dtype=np.float32), allow_pickle=False)
