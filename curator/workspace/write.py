"""Writing the table: shards, embeddings and column groups, each replaced by an atomic rename."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pyarrow as pa

from .meta import COLUMN_GROUPS, FORMAT_VERSION, GROUP_OF, OTHER_GROUP, Workspace, WorkspaceError, read_meta, write_meta
from .table import (_group_slice, _open_embeddings, _schema_names, column_groups, format_version, read_arrow, shards,
                    write_npy, write_parquet)
from .upgrade import upgrade


# --- writing the table --------------------------------------------------------

def _arrow_columns(frame: pd.DataFrame) -> pa.Table:
    """A DataFrame as Arrow, categoricals as their plain values (so they read back as the plain type)."""
    t = pa.Table.from_pandas(frame, preserve_index=False)
    for i, field in enumerate(t.schema):
        if pa.types.is_dictionary(field.type):
            t = t.set_column(i, field.name, t.column(i).cast(field.type.value_type))
    return t



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
        write_parquet(s.faces, _arrow_columns(table.iloc[s.start:s.stop][base]))
    for g, path in column_groups(ws).items():
        if not grouped.get(g):
            path.unlink()
    for g, cols in grouped.items():
        if cols:
            write_parquet(ws.columns_dir / f"{g}.parquet", _arrow_columns(table[["face_id", *cols]]))
    write_meta(ws, {**read_meta(ws), "rows": n})


def write_embeddings(ws: Workspace, emb: np.ndarray) -> None:
    """Replace the embeddings, split over the shards by their rows (rows past the table go to the last shard)."""
    ensure_current(ws)
    sh = shards(ws)
    if not sh:
        return
    for i, s in enumerate(sh):
        stop = len(emb) if i == len(sh) - 1 else s.stop
        write_npy(s.embeddings, np.asarray(emb[s.start:stop], np.float32))


def trim_embeddings(ws: Workspace) -> int:
    """Drop embedding rows past each shard's rows (left by an interrupted write); returns how many."""
    ensure_current(ws)
    dropped = 0
    for sh in shards(ws):
        emb = _open_embeddings(ws, sh)
        total = np.load(sh.embeddings, mmap_mode="r", allow_pickle=False).shape[0]
        if total > sh.rows:
            write_npy(sh.embeddings, np.asarray(emb))
            dropped += total - sh.rows
    return dropped



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
        write_parquet(ws.columns_dir / f"{g}.parquet", out)
    write_meta(ws, read_meta(ws))


def _same_ids(a: pa.Array, b: pa.ChunkedArray) -> bool:
    import pyarrow.compute as pc

    if not len(a):
        return True
    return bool(pc.all(pc.equal(a, b.combine_chunks() if b.num_chunks != 1 else b.chunk(0))).as_py())


