"""The review dataset's samples as MongoDB documents: written, removed and given landmarks in bulk.

FiftyOne's `add_samples` builds a `Sample` object per face, validates it and
serialises it again: about 600 faces a second here (docs/review.md measured
170 s for 100,000). The documents it writes are plain: so this module builds
the same documents (`Dataset._make_dict`'s keys: filepath, tags, metadata,
created_at, last_modified_at, _media_type, _rand, _dataset_id and the
fields, None left out) column by column from Arrow and inserts them with
pymongo's `insert_many` into the dataset's own collection: 47,590 of them in
under 5 s on the busy 2-core machine (a profiled sync, landmarks left for
later). FiftyOne reads them as its own (tests/test_review.py reads every
field back through FiftyOne). The fields are declared first with FiftyOne's
API, so the schema is FiftyOne's.

Removing samples deletes only documents whose tags are still exactly the
tags just copied into the table, so a tag made in the App in between keeps
its sample (removed on a later run, after its tags are pulled).

Landmarks (a Keypoints label per face) are the expensive part: the 68
landmarks are 136 numbers per row, stored with every extract column in the
table's shards, and a shard cannot be read for a few rows only. At 10 million
rows reading them takes about a minute, so `fill_landmarks` runs after the
dataset is ready (review.py: while the App shows it, or before returning
without the App) when the shards to read hold more than LANDMARKS_INLINE_ROWS
rows or more than LANDMARKS_INLINE_FACES faces are added.
"""

from __future__ import annotations

import datetime as _dt
import mimetypes
import os
import random
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..workspace import Workspace, list_matrix, read_columns, shards

INSERT_BATCH = 5_000    # documents per insert_many / bulk_write: a few MB, well under MongoDB's 48 MB message
LANDMARKS_INLINE_ROWS = 500_000  # table rows read for landmarks during the sync itself (about 3 s); more waits
LANDMARKS_INLINE_FACES = 20_000  # landmarks (68 points each) written with the new samples; more wait (5-8 s at 50,000)
LANDMARK_COLUMNS = ["lmk68", "kps", "align_matrix", "crop_size"]


# --- field values -------------------------------------------------------------------------------

def field_type(dtype: pa.DataType, fo):
    """FiftyOne field class (and kwargs) for a table column's Arrow type; all-null columns are strings."""
    if pa.types.is_boolean(dtype):
        return fo.BooleanField, {}
    if pa.types.is_integer(dtype):
        return fo.IntField, {}
    if pa.types.is_floating(dtype):
        return fo.FloatField, {}
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype):
        return fo.ListField, {"subfield": fo.FloatField}
    return fo.StringField, {}


def column_values(col) -> list:
    """Plain Python values of an Arrow column: NaN -> None (the App filters None as 'missing'), lists as lists."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_floating(col.type):
        col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col.to_pylist()


def seed_tags(t: pa.Table, reject: str, keep: str) -> list[list[str]]:
    """Tags for faces added to the dataset: what a person decided before, as the table's tag columns record it."""
    n = t.num_rows
    rej = column_values(t.column("rejected")) if "rejected" in t.column_names else [None] * n
    kept = column_values(t.column("kept")) if "kept" in t.column_names else [None] * n
    free = column_values(t.column("review_tags")) if "review_tags" in t.column_names else [None] * n
    out = []
    for r, k, f in zip(rej, kept, free):
        tags = ([reject] if r else []) + ([keep] if k else [])
        if isinstance(f, str) and f:
            tags += [x for x in f.split(",") if x]
        out.append(tags)
    return out


# --- writing and removing samples ---------------------------------------------------------------

def sample_docs(dataset, t: pa.Table, columns: list[str], names: list[str], files: list[Path], sizes: list[int],
                extra: dict[str, list], tags: list[list[str]]) -> list[dict]:
    """One document per row of `t`, as FiftyOne's `Dataset._make_dict` would write it for the same Sample."""
    values = [column_values(t.column(c)) for c in columns]
    extra_items = list(extra.items())
    crop = column_values(t.column("crop_size")) if "crop_size" in t.column_names else [None] * t.num_rows
    now = _dt.datetime.utcnow()
    dataset_id = dataset._doc.id
    mimes: dict[str, str] = {}
    docs = []
    for i, path in enumerate(files):
        suffix = path.suffix.lower()
        if suffix not in mimes:
            mimes[suffix] = mimetypes.guess_type(path.name)[0] or "image/jpeg"
        meta = {"_cls": "ImageMetadata", "size_bytes": sizes[i], "mime_type": mimes[suffix]}
        if crop[i] is not None:
            meta.update(width=int(crop[i]), height=int(crop[i]))
        meta["num_channels"] = 3
        # `_rand` as FiftyOne draws it (fiftyone.core.odm.sample._generate_rand): take() and shuffle() use it.
        doc = {"filepath": str(path), "tags": tags[i], "metadata": meta, "created_at": now, "last_modified_at": now,
               "_media_type": "image", "_rand": random.random() * 0.001 + 0.999, "_dataset_id": dataset_id}
        for name, vals in zip(names, values):
            if vals[i] is not None:
                doc[name] = vals[i]
        for name, vals in extra_items:
            if vals[i] is not None:
                doc[name] = vals[i]
        docs.append(doc)
    return docs


def insert_docs(dataset, docs: list[dict]) -> None:
    """Insert in bulk; a face_id already there (another review adding at the same time) is an error."""
    import pymongo.errors

    from .db import ReviewError

    if dataset.media_type is None:
        dataset.media_type = "image"  # what FiftyOne sets from the first sample it adds
    coll = dataset._sample_collection
    for start in range(0, len(docs), INSERT_BATCH):
        try:
            coll.insert_many(docs[start:start + INSERT_BATCH], ordered=False)
        except pymongo.errors.BulkWriteError as e:
            if any(err.get("code") == 11000 for err in e.details.get("writeErrors", [])):
                raise ReviewError(f"another curator review is adding faces to dataset {dataset.name!r} right now; "
                                  "wait for it to finish and run this again") from None
            raise


def remove_samples(dataset, face_ids: list[str], tags: list[list[str]]) -> int:
    """Delete these faces' samples, each only if its tags are still exactly `tags` (what was copied into the table)."""
    coll = dataset._sample_collection
    by_tags: dict[tuple, list[str]] = {}
    for fid, t in zip(face_ids, tags):
        by_tags.setdefault(tuple(t or ()), []).append(fid)
    removed = 0
    for t, fids in by_tags.items():
        for start in range(0, len(fids), INSERT_BATCH):
            res = coll.delete_many({"face_id": {"$in": fids[start:start + INSERT_BATCH]}, "tags": list(t)})
            removed += res.deleted_count
    return removed


# --- landmarks ----------------------------------------------------------------------------------

def landmark_docs(t: pa.Table) -> list[dict | None]:
    """Each row's landmarks on its crop as a Keypoints document (coordinates relative to the crop side).

    The 68 landmarks where the row has them, else its 5 keypoints; None
    without an alignment matrix or crop size. Vectorised: the same points
    as `align.transform_points` row by row.
    """
    from bson import ObjectId

    n = t.num_rows

    def matrix(name: str, width: int | None = None) -> np.ndarray | None:
        if name not in t.column_names or pa.types.is_null(t.column(name).type):
            return None
        m = list_matrix(t.column(name), np.float64)
        return m if width is None or m.shape[1] == width else None

    mat, lmk, kps = matrix("align_matrix", 6), matrix("lmk68"), matrix("kps")
    size = (pc.fill_null(t.column("crop_size").cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
            if "crop_size" in t.column_names and not pa.types.is_null(t.column("crop_size").type) else np.full(n, np.nan))
    out: list[dict | None] = [None] * n
    if mat is None:
        return out
    ok = np.isfinite(mat).all(1) & np.isfinite(size) & (size > 0)
    has68 = ok & (np.isfinite(lmk).any(1) if lmk is not None and lmk.shape[1] >= 2 else np.zeros(n, bool))
    has5 = ok & ~has68 & (np.isfinite(kps).any(1) if kps is not None and kps.shape[1] >= 2 else np.zeros(n, bool))
    for pts_all, mask, label in ((lmk, has68, "lmk68"), (kps, has5, "kps5")):
        rows = np.flatnonzero(mask)
        if not len(rows):
            continue
        pts = pts_all[rows].reshape(len(rows), -1, 2)
        m = mat[rows].reshape(-1, 2, 3)
        crop = (np.einsum("kpi,kji->kpj", pts, m[:, :, :2]) + m[:, None, :, 2]) / size[rows, None, None]
        for r, p in zip(rows.tolist(), crop.tolist()):
            out[r] = {"_cls": "Keypoints", "keypoints": [
                {"_id": ObjectId(), "_cls": "Keypoint", "attributes": {}, "tags": [], "label": label,
                 "points": p, "confidence": None}]}
    return out


def landmark_rows_to_read(ws: Workspace, rows: np.ndarray) -> int:
    """Table rows read to find the landmarks of these rows: the rows of every shard holding one of them."""
    rows = np.asarray(rows, np.int64)
    return sum(s.rows for s in shards(ws) if np.searchsorted(rows, s.stop) > np.searchsorted(rows, s.start))


def fill_landmarks(ws: Workspace, collection, rows: np.ndarray, face_ids: list[str],
                   stop: threading.Event | None = None) -> int:
    """Set `landmarks` of these faces' samples (rows sorted, face_ids in the same order), shard by shard.

    `collection`: the dataset's pymongo collection (thread-safe: this runs
    beside the App). Stops between shards when `stop` is set; a sample left
    without landmarks gets them on the next sync. Returns samples updated.
    """
    from pymongo import UpdateOne

    rows = np.asarray(rows, np.int64)
    ids = np.asarray(face_ids, dtype=object)
    done = 0
    for s in shards(ws):
        if stop is not None and stop.is_set():
            break
        lo, hi = np.searchsorted(rows, [s.start, s.stop])
        if hi == lo:
            continue
        t = read_columns(ws, LANDMARK_COLUMNS, rows=rows[lo:hi])
        now = _dt.datetime.utcnow()
        ops = [UpdateOne({"face_id": fid}, {"$set": {"landmarks": doc, "last_modified_at": now}})
               for fid, doc in zip(ids[lo:hi].tolist(), landmark_docs(t)) if doc is not None]
        for start in range(0, len(ops), INSERT_BATCH):
            collection.bulk_write(ops[start:start + INSERT_BATCH], ordered=False)
        done += len(ops)
    return done


def nice_this_thread(level: int = 10) -> None:
    """Lower this thread's CPU priority (Linux sets nice per thread), so the App answers first on a busy machine."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), level)
    except (AttributeError, OSError):
        pass
