"""The review's result: the dataset's tags copied into the table's `rejected`, `kept` and `review_tags` columns.

The workspace lock is taken only to write the table, and `pull_tags` waits a
bounded time for another command's lock.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .db import ReviewError, dataset_version, one_line, quiet
from ..workspace import Workspace, WorkspaceLocked, locked, read_table, update_columns

REJECT, KEEP = "reject", "keep"
TAG_COLUMNS = ("rejected", "kept", "review_tags")  # written by pull_tags; the tags themselves are their fields


def tag_columns(table: pd.DataFrame, tags_by_face: dict) -> pd.DataFrame:
    """face_id + rejected, kept, review_tags for every row: from the tags for faces in the dataset, else as before."""
    old_rej = table["rejected"].fillna(False).to_numpy(bool) if "rejected" in table else np.zeros(len(table), bool)
    old_keep = table["kept"].fillna(False).to_numpy(bool) if "kept" in table else np.zeros(len(table), bool)
    old_free = (table["review_tags"].fillna("").astype(str).to_numpy(dtype=object) if "review_tags" in table
                else np.full(len(table), "", dtype=object))
    rej, keep, free = old_rej.copy(), old_keep.copy(), old_free.copy()
    for i, fid in enumerate(table["face_id"].tolist()):
        tags = tags_by_face.get(fid)
        if tags is None:
            continue
        tags = set(tags or ())
        rej[i] = REJECT in tags
        keep[i] = KEEP in tags
        free[i] = ",".join(sorted(tags - {REJECT, KEEP}))
    return pd.DataFrame({"face_id": table["face_id"].to_numpy(), "rejected": rej, "kept": keep,
                         "review_tags": free.astype(str)})


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


def _tag_changes(table: pd.DataFrame, by_face: dict) -> tuple[pd.DataFrame, int, bool]:
    """(new tag columns, rows whose tag columns change, whether the table needs writing)."""
    cols = tag_columns(table, by_face)
    before = tag_columns(table, {})
    changed = int(((cols["rejected"] != before["rejected"]) | (cols["kept"] != before["kept"])
                   | (cols["review_tags"] != before["review_tags"])).sum())
    # Rows extract appended since the last pull hold nulls in these columns: fill them too.
    absent = any(c not in table or table[c].isna().any() for c in TAG_COLUMNS)
    return cols, changed, bool(changed or absent)


def pull_tags(ws: Workspace, dataset, *, wait_s: float = 0.0, tags: dict | None = None) -> dict:
    """Copy the dataset's sample tags into the table's rejected / kept / review_tags; returns counts.

    Takes the workspace lock only when there is something to write, and only
    for the write (re-reading the table under it); waits up to `wait_s` for
    another command's lock. `tags`: what `read_tags` returned, if at hand.
    """
    by_face = read_tags(ws, dataset) if tags is None else tags
    table = read_table(ws)
    cols, changed, write = _tag_changes(table, by_face)
    deadline = time.monotonic() + wait_s
    while write:
        try:
            with locked(ws, "curator review"):
                table = read_table(ws)  # what another command may have written since
                cols, changed, write = _tag_changes(table, by_face)
                if write:
                    update_columns(ws, cols)
            break
        except WorkspaceLocked:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)
    both = int((cols["rejected"] & cols["kept"]).sum())
    summary = {"dataset": dataset.name, "rejected": int(cols["rejected"].sum()), "kept": int(cols["kept"].sum()),
               "other_tags": int((cols["review_tags"] != "").sum()), "changed": changed, "written": write,
               "notes": []}
    if both:
        summary["notes"].append(f"{both} faces are tagged both {REJECT!r} and {KEEP!r}: {REJECT!r} wins "
                                "(never selected, never exported)")
    unknown = len(set(by_face) - set(table["face_id"]))
    if unknown:
        summary["notes"].append(f"{unknown} samples have no row in the workspace table; their tags were not copied")
    return summary


def _still_exists(fo, name: str) -> bool:
    try:
        return fo.dataset_exists(name)
    except Exception:  # noqa: BLE001 - no database: say that, not "deleted"
        return True
