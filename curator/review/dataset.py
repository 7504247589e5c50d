"""The review dataset's contents: one sample per face in scope, its fields, the embeddings-panel maps, the views.

`sync_dataset` creates or updates the workspace's dataset (found and
version-checked by review.db) so that it holds the faces of the `--faces`
scope (review.scope) and the faces tagged `keep` or `reject`: it adds the
faces not in it yet (their tags seeded from the table), removes the faces
that left the scope (after copying their tags into the table), refreshes the
fields later stages changed, rebuilds the maps and views, and never touches
the tags of a sample it keeps. Upgrading an older dataset pulls its tags into
the table first (review.tags).

Scale (docs/review.md, bench/review.py): at 10 million rows only the few
columns that choose the scope are read for every row; every other column is
read for the faces in the dataset only; samples are written as documents in
bulk (review.samples); nothing loops over the table's rows in Python.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


from ..measure import metrics
from ..workspace import (Workspace, crop_file, fiftyone_field_name, read_columns, read_embeddings, read_meta,
                         table_columns, table_rows)
from .db import REVIEW_SCHEMA, ReviewError, connect, dataset_name, dataset_version, load_dataset, quiet, stamp
from .samples import (LANDMARK_COLUMNS, LANDMARKS_INLINE_FACES, LANDMARKS_INLINE_ROWS, column_values, field_type,
                      fill_landmarks, insert_docs, landmark_docs, landmark_rows_to_read, remove_samples, sample_docs,
                      seed_tags)
from .scope import DEFAULT_SCOPE, Faces, check_scope, choose, read_faces, resolve
from .tags import KEEP, REJECT, TAG_COLUMNS, pull_tags

# Long vectors made for computation, not for looking at or filtering on; lmk68 is shown as `landmarks`.
SKIP_COLUMNS = {"appearance", "lmk68", "align_matrix"}
# Written by extract and never changed for a face_id afterwards; every other column (identify, curate,
# verify, later stages) is refreshed on existing samples when it changes.
EXTRACT_COLUMNS = {
    "face_id", "source", "source_sha256", "source_kind", "frame", "time_s", "face_index", "frame_w", "frame_h",
    "bbox", "kps", "det_score", "face_px", "yaw", "pitch", "roll", "pose_method", "lum", "contrast", "light_lr",
    "light_tb", "cast_a", "cast_b", "sharpness", "appearance", "mouth_open", "eyes_open", "smile",
    "expression_method", "lmk68", "align_matrix", "crop_size", "crop_path",
    "eyes_closed", "eye_left_open", "eye_right_open", "teeth", "occlusion", "occluded_eyes", "occluded_mouth",
    "states_method",
}
DERIVED = ("dup_group_size", "pose_bin_faces")
# Fields people filter and sort on in the App: indexed so that stays fast at 100k+ faces.
INDEXED = ("yaw", "pitch", "roll", "quality", "sharpness", "face_px", "det_score", "selected", "dup_group",
           "dup_group_size", "is_target", "identity_cluster", "identity_score", "pose_cluster", "pose_bin_faces",
           "expr_cluster", "light_cluster", "source_sha256", "crop_missing", "for_target", "target_faces", "tags")
EMBEDDINGS_KEY = "identity_pca"
POSE_KEY = "pose"
MAPS = (EMBEDDINGS_KEY, POSE_KEY)
LOW_QUALITY_SHARE = 0.10  # "low quality": the worst tenth by quality (or sharpness before curate), and too small
SHOWN_MISSING = 5  # missing crops named one per line before the rest are summarised

VIEWS = ("selected", "rejected", "kept", "near-duplicate groups", "rare poses", "low quality", "other identities",
         "eyes closed", "mouth open", "covered")


def field_name(column: str) -> str:
    """The dataset field of a table column: the same names as `export --format fiftyone`."""
    return fiftyone_field_name(column)


def _field_columns(columns: list[str]) -> list[str]:
    """The table columns that are sample fields (in table order)."""
    return [c for c in columns if c not in SKIP_COLUMNS and c not in TAG_COLUMNS]


def _declare_fields(dataset, schema: pa.Schema, fo) -> None:
    have = dataset.get_field_schema()
    wanted = {field_name(c): field_type(schema.field(c).type, fo) for c in _field_columns(schema.names)}
    wanted.update({"dup_group_size": (fo.IntField, {}), "pose_bin_faces": (fo.IntField, {})})
    new = {name: ftype(**({"field": kwargs["subfield"]()} if "subfield" in kwargs else {}))
           for name, (ftype, kwargs) in wanted.items() if name not in have}
    if "landmarks" not in have:
        new["landmarks"] = fo.EmbeddedDocumentField(fo.Keypoints)
    if not new:
        return
    try:
        # One schema update for all of them: add_sample_field reloads the dataset after each (40 round trips).
        dataset._merge_sample_field_schema(new)
    except AttributeError:  # a FiftyOne without it: one by one
        for name, (ftype, kwargs) in wanted.items():
            if name not in have:
                dataset.add_sample_field(name, ftype, **kwargs)
        if "landmarks" not in have:
            dataset.add_sample_field("landmarks", fo.EmbeddedDocumentField, embedded_doc_type=fo.Keypoints)


def derived_fields(f: Faces, rows: np.ndarray) -> dict[str, np.ndarray]:
    """dup_group_size (members of the face's near-duplicate group) and pose_bin_faces (faces in its 10° bin)
    of these rows, as float arrays (NaN = None), counted over the whole table.

    Pose bins are counted over the target's faces once identify has run (other
    faces get None: they have their own view), else over all faces.
    """
    bins = f.bins
    target = f.flag("is_target") if f.identified else np.ones(f.n, bool)
    counted = target & (bins >= 0)
    per_bin = np.bincount(bins[counted], minlength=int(bins.max()) + 1 if f.n else 0)
    faces = np.full(len(rows), np.nan)
    mine = counted[rows]
    faces[mine] = per_bin[bins[rows][mine]]
    return {"dup_group_size": f.group_sizes(rows), "pose_bin_faces": faces}


def _ints(values: np.ndarray) -> list:
    return [None if math.isnan(v) else int(v) for v in values.tolist()]


def _missing_notes(missing: list[tuple[str, str]], what: str) -> list[str]:
    notes = [f"face {fid}: crop file {crop} is missing; {what} (`curator verify --repair` marks such faces)"
             for fid, crop in missing[:SHOWN_MISSING]]
    if len(missing) > SHOWN_MISSING:
        notes.append(f"... and {len(missing) - SHOWN_MISSING} more faces whose crop files are missing; {what}")
    return notes


def _same_person(ws: Workspace) -> float:
    from ..models.recognisers import of_workspace

    return of_workspace(read_meta(ws)).same_person


def sync_dataset(ws: Workspace, name: str | None = None, faces: str = DEFAULT_SCOPE) -> dict:
    """Create or update the workspace's review dataset for the scope `faces`; returns a summary (JSON-ready).

    Adds the faces of the scope not in the dataset yet, removes those no
    longer in it (never one tagged keep or reject, never before its tags are
    in the table), refreshes the fields of the others that later stages
    changed, never touches a kept sample's tags. `landmarks_pending` in the
    summary: samples whose landmarks `fill_pending_landmarks` still has to add
    (a large table; review.py does it while the App runs).
    """
    fo = connect()
    check_scope(faces)
    columns = table_columns(ws)
    if "face_id" not in columns:
        raise ReviewError(f"{ws.root} has no faces: run `curator extract FOOTAGE -w {ws.root}` first")
    resolve(faces, table_rows(ws), columns, str(ws.root))  # a scope the table cannot give: refused before anything
    name = name or dataset_name(ws)
    notes: list[str] = []
    summary = {"workspace": str(ws.root), "dataset": name, "created": False, "upgraded_from": None}
    with quiet():
        dataset = load_dataset(ws, name)
        if dataset is None:
            dataset = fo.Dataset(name, persistent=True)
            stamp(ws, dataset)  # before any sample: an interrupted first sync is resumed, not mistaken for old
            summary["created"] = True
            version = REVIEW_SCHEMA
        else:
            version = dataset_version(ws, dataset)
        upgrading = version < REVIEW_SCHEMA
        if upgrading:
            # Tags into the table first: whatever the upgrade does, nothing a person decided can be lost.
            pull_tags(ws, dataset)
            summary["upgraded_from"] = version
            notes.append(f"dataset {name} was made by an older curator review (schema {version}); upgraded to "
                         f"schema {REVIEW_SCHEMA} in place, every tag kept (and copied into the table first)")

        f = read_faces(ws)
        if not f.n:
            raise ReviewError(f"{ws.root} has no faces: run `curator extract FOOTAGE -w {ws.root}` first")
        if "face_id" not in dataset.get_field_schema():
            dataset.add_sample_field("face_id", fo.StringField)
        dataset.create_index("face_id", unique=True)  # before adding: two syncs at once cannot duplicate a face
        ids, tags = dataset.values(["face_id", "tags"])
        sample_row = _rows_of(f, ids)
        pinned = f.flag("rejected") | f.flag("kept")
        pinned[sample_row[[i for i, t in enumerate(tags) if sample_row[i] >= 0 and {KEEP, REJECT} & set(t or ())]]] = True
        scope = choose(f, faces, pinned, same_person=_same_person(ws), ws_root=str(ws.root))
        notes += scope.notes
        in_scope = np.zeros(f.n, bool)
        in_scope[scope.rows] = True
        known = sample_row >= 0
        orphans = int((~known).sum())
        if orphans:
            notes.append(f"{orphans} samples of dataset {name} have no row in the workspace table; left as they are")

        # Faces leaving the scope: their tags into the table, then their samples out.
        leaving = np.flatnonzero(known & ~in_scope[np.maximum(sample_row, 0)])
        removed = 0
        if len(leaving):
            pull_tags(ws, dataset, tags=dict(zip(ids, tags)))
            removed = remove_samples(dataset, [ids[i] for i in leaving], [tags[i] for i in leaving])

        in_dataset = np.zeros(f.n, bool)
        in_dataset[sample_row[known]] = True
        need = np.flatnonzero(in_scope)  # every face of the scope: new ones to add, the others to refresh
        want = [c for c in columns if c not in SKIP_COLUMNS]
        t = _read_rows(ws, f, want, need)
        is_new = ~in_dataset[need]
        crop_paths = column_values(t.column("crop_path")) if "crop_path" in t.column_names else [None] * len(need)
        files, sizes = _crop_files(ws, crop_paths)
        present = np.array([s is not None for s in sizes], bool)
        face_ids = column_values(t.column("face_id"))
        gone_new = [(face_ids[i], crop_paths[i]) for i in np.flatnonzero(is_new & ~present)]
        gone_old = [(face_ids[i], crop_paths[i]) for i in np.flatnonzero(~is_new & ~present)]
        notes += _missing_notes(gone_new, "not added to the review")
        notes += _missing_notes(gone_old, "it stays in the review (a broken image) with its tags")

        _declare_fields(dataset, t.schema, fo)
        derived = derived_fields(f, need)
        add = np.flatnonzero(is_new & present)
        added_ids = [face_ids[i] for i in add]
        row_of = dict(zip(ids, sample_row.tolist()))
        row_of.update(zip(face_ids, need.tolist()))

        # The maps: recomputed over the dataset's faces whenever they change. Their points are written with
        # the new samples' documents (and in bulk into the others'), not by FiftyOne's compute_visualization,
        # which sets them sample by sample: for 10,000 faces of a 1M-row table that was half the first sync.
        stale = bool(len(add) or len(leaving) or upgrading) or not all(dataset.has_brain_run(k) for k in MAPS)
        points: dict[str, dict] = {}
        if stale:
            _drop_maps(dataset)  # FiftyOne unsets a map's field with its run: before the new points are written
            _declare_map_fields(dataset, fo)
            before = dataset.values("face_id")  # after the removals
            points, map_notes = _map_points(ws, f, before + added_ids, row_of)
            notes += map_notes

        # Landmarks: with the new samples when that reads little of the table, else after the dataset is
        # ready (review.py: while the App shows the faces), as for any sample still without them.
        inline = _landmarks_now(ws, need[add])
        marks = landmark_docs(read_columns(ws, LANDMARK_COLUMNS, rows=need[add])) if inline and len(add) else None
        _add(dataset, t.take(pa.array(add)), [files[i] for i in add], [sizes[i] for i in add],
             {k: v[add] for k, v in derived.items()}, marks,
             {k: [v.get(fid) for fid in added_ids] for k, v in points.items()})
        _refresh(dataset, t.filter(pa.array(~is_new)), {k: v[~is_new] for k, v in derived.items()},
                 all_columns=upgrading)
        if stale:
            _write_points(dataset, points, before)
            maps = _register_maps(dataset, points)
        else:
            maps = [k for k in MAPS if dataset.has_brain_run(k)]

        lacking = _lacking_landmarks(dataset, t, need, skip=add if inline else None)
        pending = 0
        if len(lacking):
            rows = need[lacking]
            if upgrading or _landmarks_now(ws, rows):
                fill_landmarks(ws, dataset._sample_collection, rows, [face_ids[i] for i in lacking])
            else:
                pending = int(len(lacking))
                notes.append(f"landmarks of {pending} faces are added once the dataset is ready (that reads the "
                             f"68 landmarks of {landmark_rows_to_read(ws, rows)} rows): while the App shows the "
                             "faces, or before --no-app returns")

        _indexes(dataset)
        views, skipped = saved_views(dataset, f.frame())
        stamp(ws, dataset)
        total = len(dataset)
    summary.update({
        "faces": scope.used, "scope": scope.as_dict(),
        "samples_added": int(len(add)), "samples_removed": int(removed), "samples_total": int(total),
        "faces_in_table": int(f.n), "missing_crops": len(gone_new) + len(gone_old), "landmarks_pending": pending,
        "views": views, "views_skipped": skipped, "maps": maps, "notes": notes,
    })
    return summary


def _read_rows(ws: Workspace, f: Faces, columns: list[str], rows: np.ndarray) -> pa.Table:
    """`columns` of these rows; those read for every row already (the choice columns) are taken, not read again."""
    again = [c for c in columns if c not in f.raw.column_names]
    t = read_columns(ws, again, rows=rows)
    known = f.raw.select([c for c in columns if c in f.raw.column_names]).take(pa.array(rows))
    for c in known.column_names:
        t = t.append_column(c, known.column(c)) if t.num_columns else pa.table({c: known.column(c)})
    return t.select([c for c in columns if c in t.column_names])


def _landmarks_now(ws: Workspace, rows: np.ndarray) -> bool:
    """Whether these rows' landmarks are added during the sync (cheap: few faces, few table rows to read)."""
    return len(rows) <= LANDMARKS_INLINE_FACES and landmark_rows_to_read(ws, rows) <= LANDMARKS_INLINE_ROWS


def _rows_of(f: Faces, ids: list[str]) -> np.ndarray:
    """The table row of each face id (-1: no row), by one hash pass over the table's ids."""
    out = np.full(len(ids), -1, np.int64)
    if not ids:
        return out
    pos = pc.index_in(f.face_id, value_set=pa.array(ids, pa.large_string()))
    hit = np.flatnonzero(pos.is_valid().to_numpy(zero_copy_only=False))
    out[pos.filter(pos.is_valid()).to_numpy(zero_copy_only=False)] = hit
    return out


def _crop_files(ws: Workspace, crops: list) -> tuple[list[Path | None], list[int | None]]:
    """Each crop's file inside the workspace and its size in bytes (None: no such file).

    A crop's folder is checked to be inside the workspace once (crops share a
    few folders); a file that is a symlink is resolved and checked itself.
    """
    folders: dict[str, Path | None] = {}
    files, sizes = [], []
    for c in crops:
        path = size = None
        if isinstance(c, str) and c:
            head, tail = os.path.split(c)
            if head not in folders:
                folders[head] = _crop_file(ws, head) if head else Path(ws.root).resolve()
            folder = folders[head]
            if folder is not None and tail not in ("", ".", ".."):
                path = folder / tail
                try:
                    st = os.lstat(path)
                    if stat.S_ISLNK(st.st_mode):
                        path = _crop_file(ws, c)
                        st = os.stat(path) if path is not None else None
                    size = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None
                except OSError:
                    pass
        files.append(path)
        sizes.append(size)
    return files, sizes


def _crop_file(ws: Workspace, crop) -> Path | None:
    if not isinstance(crop, str) or not crop:
        return None
    try:
        return crop_file(ws, crop)  # an edited table cannot point the App outside the workspace
    except ValueError:
        return None


def _add(dataset, t: pa.Table, files: list, sizes: list, derived: dict, landmarks: list | None,
         points: dict[str, list]) -> None:
    """Insert these rows' samples: fields, derived fields, seeded tags, the maps' points, landmarks when given
    (else added later)."""
    if not t.num_rows:
        return
    columns = _field_columns(t.column_names)
    extra = {k: _ints(v) for k, v in derived.items()}
    extra.update(points)
    if landmarks is not None:
        extra["landmarks"] = landmarks
    docs = sample_docs(dataset, t, columns, [field_name(c) for c in columns], files, sizes, extra,
                       seed_tags(t, REJECT, KEEP))
    insert_docs(dataset, docs)


def _refresh(dataset, t: pa.Table, derived: dict, *, all_columns: bool) -> int:
    """Set fields of existing samples whose table values changed (a re-run of identify or curate); tags untouched."""
    columns = [c for c in _field_columns(t.column_names) if (all_columns or c not in EXTRACT_COLUMNS) and c != "face_id"]
    fields = [field_name(c) for c in columns] + list(DERIVED)
    if not t.num_rows:
        return 0
    face_ids = column_values(t.column("face_id"))
    new = {field_name(c): column_values(t.column(c)) for c in columns}
    new.update({k: _ints(derived[k]) for k in DERIVED})
    stored = dataset.values(["face_id", *fields])
    at = {fid: i for i, fid in enumerate(face_ids)}
    changed_total = 0
    for pos, field in enumerate(fields):
        values = new[field]
        changed = {fid: values[at[fid]] for fid, old in zip(stored[0], stored[pos + 1])
                   if fid in at and old != values[at[fid]]}
        if changed:
            dataset.set_values(field, changed, key_field="face_id")
            changed_total += len(changed)
    return changed_total


def _lacking_landmarks(dataset, t: pa.Table, need: np.ndarray, skip: np.ndarray | None) -> np.ndarray:
    """Positions in `need` of samples without landmarks whose rows may have them (they have a crop size);
    `skip`: positions just given theirs (a row without an alignment has none, and is not read again)."""
    if "crop_size" not in t.column_names or not t.num_rows:
        return np.zeros(0, np.int64)
    without = {d["face_id"] for d in dataset._sample_collection.find({"landmarks": None}, {"face_id": 1, "_id": 0})
               if "face_id" in d}
    if not without:
        return np.zeros(0, np.int64)
    face_ids = column_values(t.column("face_id"))
    ok = t.column("crop_size").is_valid().to_numpy(zero_copy_only=False).copy()
    if skip is not None:
        ok[skip] = False
    return np.array([i for i, fid in enumerate(face_ids) if ok[i] and fid in without], np.int64)


def fill_pending_landmarks(ws: Workspace, collection, stop=None) -> int:
    """Add the landmarks `sync_dataset` left for later (`landmarks_pending`); returns how many samples got them.

    `collection`: the dataset's pymongo collection (`dataset._sample_collection`); only it is used, so this
    may run in a thread beside code using the dataset object.
    """
    ids = [d["face_id"] for d in collection.find({"landmarks": None}, {"face_id": 1, "_id": 0}) if "face_id" in d]
    if not ids:
        return 0
    t = read_columns(ws, ["face_id"])
    pos = pc.index_in(t.column("face_id").combine_chunks().cast(pa.large_string()),
                      value_set=pa.array(ids, pa.large_string()))
    rows = np.flatnonzero(pos.is_valid().to_numpy(zero_copy_only=False))
    order = pos.filter(pos.is_valid()).to_numpy(zero_copy_only=False)
    return fill_landmarks(ws, collection, rows, [ids[i] for i in order], stop=stop)


def _indexes(dataset) -> None:
    """The INDEXED fields' indexes, built in one createIndexes command: MongoDB builds them in one pass over
    the samples, where FiftyOne's create_index makes one pass per index (20 passes over 50,000 samples took 4 s)."""
    from pymongo import IndexModel

    schema = dataset.get_field_schema()
    have = set(dataset.list_indexes())
    names = [field_name(n) if n != "tags" else n for n in INDEXED]
    todo = [n for n in names if n in schema and n not in have]
    if todo:
        dataset._sample_collection.create_indexes([IndexModel([(n, 1)], name=n) for n in todo])


def _drop_maps(dataset) -> None:
    """Delete both maps (runs, points fields and their 2d indexes) before they are made again."""
    for key in MAPS:
        if dataset.has_brain_run(key):
            dataset.delete_brain_run(key)
        if key in dataset.get_field_schema():
            dataset.delete_sample_field(key)  # its index goes with it


def _declare_map_fields(dataset, fo) -> None:
    have = dataset.get_field_schema()
    for key in MAPS:
        if key not in have:
            dataset.add_sample_field(key, fo.ListField, subfield=fo.FloatField)


def _map_points(ws: Workspace, f: Faces, ids: list[str], row_of: dict) -> tuple[dict[str, dict], list[str]]:
    """The embeddings panel's two maps over these faces (the dataset's, after this sync), from our own numbers:
    {map: {face_id: [x, y]}}. identity_pca: a PCA of their identity embeddings; pose: (yaw, pitch)."""
    notes = []
    rows = np.array([row_of.get(fid, -1) for fid in ids], np.int64)
    out: dict[str, dict] = {}
    if not len(ids):
        return out, notes  # every crop was missing: nothing to map (and FiftyOne cannot index zero points)
    if (rows < 0).any():
        notes.append(f"identity map skipped: {int((rows < 0).sum())} samples have no row (so no embedding) "
                     "in the workspace table")
    else:
        # Only the dataset's rows are read (pread per row): at 10M faces the embeddings are 20 GB.
        emb = np.asarray(read_embeddings(ws, random_access=True)[rows], np.float32)
        out[EMBEDDINGS_KEY] = dict(zip(ids, _pca2(emb).tolist()))
    known = rows >= 0
    yaw, pitch = f.number("yaw")[rows], f.number("pitch")[rows]
    posed = known & np.isfinite(yaw) & np.isfinite(pitch)
    out[POSE_KEY] = {fid: [float(y), float(p)] for fid, y, p, ok in zip(ids, yaw, pitch, posed) if ok}
    return out, notes


def _write_points(dataset, points: dict[str, dict], face_ids: list[str]) -> None:
    """The maps' points of samples already in the dataset, in bulk by face_id."""
    from pymongo import UpdateOne

    ops = []
    for fid in face_ids:
        values = {k: v[fid] for k, v in points.items() if fid in v}
        if values:
            ops.append(UpdateOne({"face_id": fid}, {"$set": values}))
    for start in range(0, len(ops), 5000):
        dataset._sample_collection.bulk_write(ops[start:start + 5000], ordered=False)


def _register_maps(dataset, points: dict[str, dict]) -> list[str]:
    """Record the maps as FiftyOne Brain visualizations whose points are in fields of their own, with a 2d index
    (lasso selections in the panel query it): what `compute_visualization(points_field=...)` makes, its field
    written by us. FiftyOne's own documented way: results.config.points_field + save_config (`index_points`)."""
    import fiftyone.brain as fob

    made = []
    for key in MAPS:
        by_face = points.get(key)
        if not by_face:
            continue
        samples = dataset if key == EMBEDDINGS_KEY else dataset.exists(key)
        order = samples.values("face_id")
        arr = np.array([by_face[fid] for fid in order], np.float64).reshape(-1, 2)
        results = fob.compute_visualization(samples, points=arr, brain_key=key, create_index=False)
        lo, hi = float(arr.min()), float(arr.max())
        dataset.create_index([(key, "2d")], min=lo, max=hi if hi > lo else lo + 1.0)
        results.config.points_field = key
        results.save_config()
        made.append(key)
    return made


def _pca2(emb: np.ndarray) -> np.ndarray:
    """2-D PCA of the identity embeddings (deterministic; no new dependency: scikit-learn is already one)."""
    n = len(emb)
    out = np.zeros((n, 2), np.float64)
    if n < 2 or emb.shape[1] < 1:
        return out
    from sklearn.decomposition import PCA

    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    k = min(2, n, emb.shape[1])
    fit = emb if n <= 50_000 else emb[np.random.default_rng(0).choice(n, 50_000, replace=False)]
    # One BLAS thread: on 2 busy cores OpenBLAS's threads wait for each other (50,000 faces: 0.3 s, not 0.7-4 s).
    with threadpool_limits(1):
        pca = PCA(n_components=k, random_state=0).fit(fit)
        out[:, :k] = pca.transform(emb)
    return out


def saved_views(dataset, table: pd.DataFrame) -> tuple[list[str], dict]:
    """Save (or replace) the review's views; returns (saved names, {skipped name: why})."""
    from fiftyone import ViewField as F


    saved: list[str] = []
    skipped: dict = {}
    n = len(table)

    def save(name: str, view, description: str) -> None:
        dataset.save_view(name, view, description=description, overwrite=True)
        saved.append(name)

    def skip(name: str, why: str) -> None:
        skipped[name] = why
        if dataset.has_saved_view(name):  # never leave a view that no longer means what it says
            dataset.delete_saved_view(name)

    if "selected" in table:
        save("selected", dataset.match(F("selected") == True), "faces curate selected")  # noqa: E712
    else:
        skip("selected", "`curator curate` has not run")
    save("rejected", dataset.match_tags(REJECT), f"faces tagged {REJECT!r}: never selected, never exported")
    save("kept", dataset.match_tags(KEEP), f"faces tagged {KEEP!r}: curate selects them")
    if "dup_group" in table:
        save("near-duplicate groups",
             dataset.match(F("dup_group_size") > 1).sort_by([("dup_group", 1), (field_name("quality"), -1)]),
             "near-duplicate groups of more than one face, group by group, best quality first")
    else:
        skip("near-duplicate groups", "`curator curate` has not run")
    counted = int(table["is_target"].fillna(False).sum()) if "is_target" in table else n
    few = _thin_bin_faces(counted)
    # `!= None` first: in MongoDB expressions null sorts below every number, so `None < 3` is true.
    rare = dataset.match(_number("pose_bin_faces") & (F("pose_bin_faces") < few))
    save("rare poses", rare.sort_by([("pose_bin_faces", 1), ("yaw", 1)]),
         f"faces in 10° yaw x pitch bins with fewer than {few} faces (audit's thin bins)")
    by = "quality" if "quality" in table else "sharpness"
    values = table[by].to_numpy(float)
    values = values[np.isfinite(values)]
    if len(values):
        cut = float(np.quantile(values, LOW_QUALITY_SHARE))
        worst = _number(field_name(by)) & (F(field_name(by)) <= cut)
        low = worst | (_number("face_px") & (F("face_px") < metrics.MIN_FACE_PX))
        save("low quality", dataset.match(low).sort_by(field_name(by)),
             f"the lowest {LOW_QUALITY_SHARE:.0%} by {by} (<= {cut:.3g}) and faces under {metrics.MIN_FACE_PX:g} px")
    else:
        skip("low quality", f"no face has a {by} value")
    # Eye, mouth and covered-face states (curator/measure/states.py), at the thresholds curate and audit use
    schema = dataset.get_field_schema()  # the dataset's fields: `table` may hold only the scope's choice columns
    if field_name("eyes_closed") in schema and field_name("states_method") in schema:
        from ..measure.states import CLOSED_AT, OCCLUDED_AT

        save("eyes closed", dataset.match(_number(field_name("eyes_closed")) & (F(field_name("eyes_closed")) >= CLOSED_AT))
             .sort_by(field_name("eyes_closed"), reverse=True), f"faces with eyes_closed >= {CLOSED_AT:g}")
        save("mouth open", dataset.match(_number(field_name("mouth_open")) & (F(field_name("mouth_open")) >= 0.5))
             .sort_by(field_name("mouth_open"), reverse=True), "faces with mouth_open >= 0.5")
        covered = (_number(field_name("occluded_mouth")) & (F(field_name("occluded_mouth")) >= OCCLUDED_AT)) | \
            (_number(field_name("occluded_eyes")) & (F(field_name("occluded_eyes")) >= OCCLUDED_AT))
        save("covered", dataset.match(covered).sort_by(field_name("occlusion"), reverse=True),
             f"faces whose mouth or eye region is covered (occluded_mouth or occluded_eyes >= {OCCLUDED_AT:g})")
    else:
        for name in ("eyes closed", "mouth open", "covered"):
            skip(name, "the workspace has no state columns (extracted before curator/measure/states.py)")
    if "is_target" in table:
        save("other identities", dataset.match(F("is_target") == False), "faces not of the target identity")  # noqa: E712
    else:
        skip("other identities", "`curator identify` has not run")
    return saved, skipped


def _number(field: str):
    from fiftyone import ViewField as F

    return F(field) != None  # noqa: E711 - a MongoDB expression, not a Python comparison


def _thin_bin_faces(faces: int) -> int:
    """A pose bin with fewer faces than this is "thin": the same rule as `curator audit`."""

    return metrics.thin_bin_faces(faces)
