"""Format 1 -> 2, in place and crash-safe, done by the first writer."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import meta as contract  # SHARD_ROWS read at call time, so a test can make shards small
from .meta import COLUMN_GROUPS, EMBEDDINGS, FORMAT_VERSION, GROUP_OF, Workspace, WorkspaceError, read_meta, write_meta
from .table import format_version
from .table import write_npy, write_parquet


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
        for seq, batch in enumerate(f.iter_batches(batch_size=contract.SHARD_ROWS, columns=base)):
            stop = start + batch.num_rows
            write_npy(ws.embeddings_dir / f"{seq:06d}.npy", emb[start:stop])
            write_parquet(ws.faces_dir / f"{seq:06d}.parquet", pa.Table.from_batches([batch]))
            start = stop
        for g, cols in COLUMN_GROUPS.items():
            cols = [c for c in cols if c in names]
            if cols:
                write_parquet(ws.columns_dir / f"{g}.parquet", f.read(columns=["face_id", *cols]))
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


