"""The review's result: the dataset's tags copied into the table's `rejected`, `kept` and `review_tags` columns.

The workspace lock is taken only to write the table, and `pull_tags` waits a
bounded time for another command's lock.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..workspace import Workspace, WorkspaceLocked, locked, read_columns, update_columns
from .db import ReviewError, dataset_version, one_line, quiet

REJECT, KEEP = "reject", "keep"
TAG_COLUMNS = ("rejected", "kept", "review_tags")  # written by pull_tags; the tags themselves are their fields


def tag_columns(table: pa.Table, tags_by_face: dict) -> tuple[dict, int, int, bool]:
    """The tag columns for every row: from `tags_by_face` for faces in the dataset, else as the table has them.

    `table`: face_id and whichever of rejected, kept, review_tags the table
    has (Arrow, every row). Returns ({rejected, kept: bool arrays, review_tags:
    Arrow strings}, rows changed, faces of `tags_by_face` with no row, whether
    some row still lacks a value). Vectorised: one hash pass over the table's
    ids finds the dataset's faces, so a pull costs little at 10 million rows.
    """
    n = table.num_rows
    have = set(table.column_names)
    rej = _flags(table, "rejected", n)
    keep = _flags(table, "kept", n)
    free = (pc.fill_null(table.column("review_tags").combine_chunks().cast(pa.large_string()), "")
            if "review_tags" in have else pa.array([""] * n, pa.large_string()))
    absent = any(c not in have or table.column(c).null_count for c in TAG_COLUMNS)
    keys = list(tags_by_face)
    ids = table.column("face_id").combine_chunks().cast(pa.large_string())
    pos = pc.index_in(ids, value_set=pa.array(keys, pa.large_string())) if keys else pa.nulls(n, pa.int32())
    valid = pos.is_valid().to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(valid)
    which = pos.filter(pos.is_valid()).to_numpy(zero_copy_only=False)
    unknown = len(keys) - len(np.unique(which))
    new_rej, new_keep, new_free = np.zeros(len(rows), bool), np.zeros(len(rows), bool), []
    for k, i in enumerate(which.tolist()):
        tags = set(tags_by_face[keys[i]] or ())
        new_rej[k], new_keep[k] = REJECT in tags, KEEP in tags
        new_free.append(",".join(sorted(tags - {REJECT, KEEP})))
    old_free = free.take(pa.array(rows)).to_pylist() if len(rows) else []
    changed = int(((rej[rows] != new_rej) | (keep[rows] != new_keep)
                   | np.array([a != b for a, b in zip(old_free, new_free)], bool)).sum()) if len(rows) else 0
    rej, keep = rej.copy(), keep.copy()
    rej[rows], keep[rows] = new_rej, new_keep
    if len(rows):
        free = pc.replace_with_mask(free, pa.array(valid), pa.array(new_free, pa.large_string()))
    return {"rejected": rej, "kept": keep, "review_tags": free}, changed, unknown, absent


def _flags(table: pa.Table, name: str, n: int) -> np.ndarray:
    if name not in table.column_names or pa.types.is_null(table.column(name).type):
        return np.zeros(n, bool)
    return pc.fill_null(table.column(name).combine_chunks().cast(pa.bool_()), False).to_numpy(zero_copy_only=False)


def read_tags(ws: Workspace, dataset) -> dict:
    """{face_id: [tags]} of every sample, read fresh from the database."""
    import fiftyone as fo

    name = dataset.name
    try:
        with quiet():
            dataset.reload()
            ids, tags = dataset.values(["face_id", "tags"])
    except Exception as e:  # noqa: BLE001 - deleted meanwhile (by the App or another process), or no database
        if not _still_exists(fo, name):
            raise ReviewError(f"dataset {name!r} was deleted; no tags to pull (the table keeps the tags it had)") from None
        raise ReviewError(f"cannot read the tags of dataset {name!r} ({type(e).__name__}: {one_line(e)}); "
                          f"they stay in the dataset: run `curator review -w {ws.root} --pull` when MongoDB is back") from None
    dataset_version(ws, dataset)
    return dict(zip(ids, tags))


def _table_tags(ws: Workspace) -> pa.Table:
    """face_id and the tag columns of every row: only these columns are read."""
    return read_columns(ws, ["face_id", *TAG_COLUMNS])


def pull_tags(ws: Workspace, dataset, *, wait_s: float = 0.0, tags: dict | None = None) -> dict:
    """Copy the dataset's sample tags into the table's rejected / kept / review_tags; returns counts.

    Takes the workspace lock only when there is something to write, and only
    for the write (re-reading the table under it); waits up to `wait_s` for
    another command's lock. `tags`: what `read_tags` returned, if at hand.
    Faces not in the dataset keep the tags the table has for them.
    """
    by_face = read_tags(ws, dataset) if tags is None else tags
    cols, changed, unknown, absent = tag_columns(_table_tags(ws), by_face)
    write = bool(changed or absent)  # rows extract appended since the last pull hold nulls: fill them too
    deadline = time.monotonic() + wait_s
    while write:
        try:
            with locked(ws, "curator review"):
                table = _table_tags(ws)  # what another command may have written since
                cols, changed, unknown, absent = tag_columns(table, by_face)
                write = bool(changed or absent)
                if write:
                    update_columns(ws, pd.DataFrame({
                        # face_id stays Arrow (update_columns only compares it): no 10 million Python strings
                        "face_id": pd.arrays.ArrowExtensionArray(table.column("face_id").combine_chunks()),
                        "rejected": cols["rejected"], "kept": cols["kept"],
                        "review_tags": cols["review_tags"].cast(pa.string()).to_numpy(zero_copy_only=False)}))
            break
        except WorkspaceLocked:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)
    both = int((cols["rejected"] & cols["kept"]).sum())
    summary = {"dataset": dataset.name, "rejected": int(cols["rejected"].sum()), "kept": int(cols["kept"].sum()),
               "other_tags": int(pc.sum(pc.not_equal(cols["review_tags"], "")).as_py() or 0), "changed": changed,
               "written": write, "notes": []}
    if both:
        summary["notes"].append(f"{both} faces are tagged both {REJECT!r} and {KEEP!r}: {REJECT!r} wins "
                                "(never selected, never exported)")
    if unknown:
        summary["notes"].append(f"{unknown} samples have no row in the workspace table; their tags were not copied")
    return summary


def _still_exists(fo, name: str) -> bool:
    try:
        return fo.dataset_exists(name)
    except Exception:  # noqa: BLE001 - no database: say that, not "deleted"
        return True
