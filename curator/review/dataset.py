"""The review dataset's contents: one sample per face, its fields, the embeddings-panel maps, the saved views.

`sync_dataset` creates or updates the workspace's dataset (found and
version-checked by review_db): it adds faces not in it yet (their tags seeded
from the table), refreshes the fields later stages changed, rebuilds the maps
and views, and never touches an existing sample's tags. Upgrading an older
dataset pulls its tags into the table first (review_tags).
"""

from __future__ import annotations

import math
import mimetypes
from pathlib import Path

import numpy as np
import pandas as pd

from ..measure import metrics
from .db import REVIEW_SCHEMA, ReviewError, connect, dataset_name, dataset_version, load_dataset, quiet, stamp
from .tags import KEEP, REJECT, TAG_COLUMNS, pull_tags
from ..workspace import crop_file, fiftyone_field_name, Workspace, read_embeddings, read_table

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
LOW_QUALITY_SHARE = 0.10  # "low quality": the worst tenth by quality (or sharpness before curate), and too small
ADD_BATCH = 2000  # samples per insert: bounded memory on 100k+ new faces
SHOWN_MISSING = 5  # missing crops named one per line before the rest are summarised

VIEWS = ("selected", "rejected", "kept", "near-duplicate groups", "rare poses", "low quality", "other identities",
         "eyes closed", "mouth open", "covered")


def field_name(column: str) -> str:
    """The dataset field of a table column: the same names as `export --format fiftyone`."""
    return fiftyone_field_name(column)


def _field_type(series: pd.Series, fo):
    """FiftyOne field class (and kwargs) for a table column, so all-null columns still get a typed field."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return fo.BooleanField, {}
    if pd.api.types.is_integer_dtype(dtype):
        return fo.IntField, {}
    if pd.api.types.is_float_dtype(dtype):
        return fo.FloatField, {}
    sample = series.dropna()
    first = sample.iloc[0] if len(sample) else None
    if isinstance(first, (list, tuple, np.ndarray)):
        return fo.ListField, {"subfield": fo.FloatField}
    if isinstance(first, (bool, np.bool_)):
        return fo.BooleanField, {}
    return fo.StringField, {}


def _py_values(series: pd.Series) -> list:
    """Plain Python values for a column: NaN -> None (the App filters None as 'missing'), arrays -> lists."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
        kind = bool if pd.api.types.is_bool_dtype(dtype) else int
        return [None if v is pd.NA else kind(v) for v in series.to_numpy(dtype=object)]
    if pd.api.types.is_float_dtype(dtype):
        arr = series.to_numpy(np.float64)
        return [float(v) if math.isfinite(v) else None for v in arr.tolist()]
    out = []
    for v in series.to_numpy(dtype=object):
        if v is None or (isinstance(v, float) and not math.isfinite(v)) or v is pd.NA:
            out.append(None)
        elif isinstance(v, np.ndarray) or isinstance(v, (list, tuple)):
            out.append([float(x) for x in v])
        elif isinstance(v, np.generic):
            out.append(v.item())
        else:
            out.append(v)
    return out


def _columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in SKIP_COLUMNS and c not in TAG_COLUMNS]


def _declare_fields(dataset, table: pd.DataFrame, fo) -> None:
    schema = dataset.get_field_schema()
    wanted = {field_name(c): _field_type(table[c], fo) for c in _columns(table)}
    wanted.update({"dup_group_size": (fo.IntField, {}), "pose_bin_faces": (fo.IntField, {})})
    for name, (ftype, kwargs) in wanted.items():
        if name not in schema:
            dataset.add_sample_field(name, ftype, **kwargs)
    if "landmarks" not in schema:
        dataset.add_sample_field("landmarks", fo.EmbeddedDocumentField, embedded_doc_type=fo.Keypoints)


def derived_columns(table: pd.DataFrame) -> pd.DataFrame:
    """dup_group_size (members of the face's near-duplicate group) and pose_bin_faces (faces in its 10° bin).

    Pose bins are counted over the target's faces once identify has run (other
    faces get None: they have their own view), else over all faces.
    """
    out = pd.DataFrame({"face_id": table["face_id"].to_numpy()})
    if "dup_group" in table:
        g = table["dup_group"]
        size = g.map(g.value_counts())
        out["dup_group_size"] = pd.Series([int(v) if pd.notna(v) else None for v in size.to_numpy(dtype=object)],
                                          dtype=object)
    else:
        out["dup_group_size"] = pd.Series([None] * len(table), dtype=object)
    bins = metrics.pose_bins(table)
    target = table["is_target"].fillna(False).to_numpy(bool) if "is_target" in table else np.ones(len(table), bool)
    counted = target & (bins.to_numpy() >= 0)
    counts = bins[counted].value_counts()
    per = bins.map(counts).to_numpy(dtype=object)
    out["pose_bin_faces"] = pd.Series([int(v) if c and pd.notna(v) else None for v, c in zip(per, counted)], dtype=object)
    return out


def _landmarks(row, fo):
    """The face's landmarks on its crop as a Keypoints label (coordinates relative to the crop side)."""
    from ..measure.align import transform_points

    matrix = row.get("align_matrix")
    size = row.get("crop_size")
    if matrix is None or size is None:
        return None
    lmk = row.get("lmk68")
    if not _missing(lmk):
        pts, label = np.asarray(lmk, np.float64).reshape(-1, 2), "lmk68"
    elif row.get("kps") is not None:
        pts, label = np.asarray(row["kps"], np.float64).reshape(-1, 2), "kps5"
    else:
        return None
    crop = transform_points(pts, np.asarray(matrix, np.float64).reshape(2, 3)) / float(size)
    return fo.Keypoints(keypoints=[fo.Keypoint(label=label, points=[(float(x), float(y)) for x, y in crop])])


def _seed_tags(row) -> list[str]:
    """Tags for a face added to the dataset: what a person decided before, as the table records it."""
    tags = []
    if _truthy(row.get("rejected")):
        tags.append(REJECT)
    if _truthy(row.get("kept")):
        tags.append(KEEP)
    free = row.get("review_tags")
    if isinstance(free, str) and free:
        tags += [t for t in free.split(",") if t]
    return tags


def _missing(v) -> bool:
    """A table cell with no value: None, NaN (float columns) or pd.NA (nullable columns)."""
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _truthy(v) -> bool:
    return not _missing(v) and bool(v)


def _missing_notes(missing: list[tuple[str, str]], what: str) -> list[str]:
    notes = [f"face {fid}: crop file {crop} is missing; {what} (`curator verify --repair` marks such faces)"
             for fid, crop in missing[:SHOWN_MISSING]]
    if len(missing) > SHOWN_MISSING:
        notes.append(f"... and {len(missing) - SHOWN_MISSING} more faces whose crop files are missing; {what}")
    return notes


def sync_dataset(ws: Workspace, name: str | None = None) -> dict:
    """Create or update the workspace's review dataset; returns a summary (JSON-ready).

    Adds only faces not in the dataset yet, refreshes the fields of existing
    samples that later stages changed, never touches an existing sample's tags.
    """
    fo = connect()

    table = read_table(ws)
    if not len(table):
        raise ReviewError(f"{ws.root} has no faces: run `curator extract FOOTAGE -w {ws.root}` first")
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
            table = read_table(ws)
            summary["upgraded_from"] = version
            notes.append(f"dataset {name} was made by an older curator review (schema {version}); upgraded to "
                         f"schema {REVIEW_SCHEMA} in place, every tag kept (and copied into the table first)")

        _declare_fields(dataset, table, fo)
        dataset.create_index("face_id", unique=True)  # before adding: two syncs at once cannot duplicate a face
        in_dataset = set(dataset.values("face_id"))
        crop_paths = table["crop_path"].to_numpy(dtype=object)
        files = [_crop_file(ws, c) for c in crop_paths]
        present = np.array([f is not None and f.is_file() for f in files], bool)
        is_new = ~table["face_id"].isin(in_dataset).to_numpy()

        add = np.flatnonzero(is_new & present)
        gone_new = [(table["face_id"].iat[i], crop_paths[i]) for i in np.flatnonzero(is_new & ~present)]
        gone_old = [(table["face_id"].iat[i], crop_paths[i]) for i in np.flatnonzero(~is_new & ~present)]
        notes += _missing_notes(gone_new, "not added to the review")
        notes += _missing_notes(gone_old, "it stays in the review (a broken image) with its tags")
        orphans = len(in_dataset - set(table["face_id"]))
        if orphans:
            notes.append(f"{orphans} samples of dataset {name} have no row in the workspace table; left as they are")

        _add_samples(dataset, table, add, files, fo)
        _refresh(dataset, table, fo, all_columns=upgrading)

        _indexes(dataset)
        stale = len(add) > 0 or upgrading
        maps, map_notes = _visualizations(ws, dataset, table, stale)
        notes += map_notes
        views, skipped = saved_views(dataset, table)
        stamp(ws, dataset)
        total = len(dataset)
    summary.update({
        "samples_added": int(len(add)), "samples_total": int(total), "faces_in_table": int(len(table)),
        "missing_crops": len(gone_new) + len(gone_old), "views": views, "views_skipped": skipped,
        "maps": maps, "notes": notes,
    })
    return summary


def _crop_file(ws: Workspace, crop) -> Path | None:
    if not isinstance(crop, str) or not crop:
        return None
    try:
        return crop_file(ws, crop)  # an edited table cannot point the App outside the workspace
    except ValueError:
        return None


def _add_samples(dataset, table: pd.DataFrame, rows: np.ndarray, files: list, fo) -> None:
    columns = _columns(table)
    names = [field_name(c) for c in columns]
    derived = derived_columns(table)
    for start in range(0, len(rows), ADD_BATCH):
        idx = rows[start:start + ADD_BATCH]
        part = table.iloc[idx]
        values = {n: _py_values(part[c]) for n, c in zip(names, columns)}
        dvalues = {d: derived[d].iloc[idx].tolist() for d in DERIVED}
        samples = []
        for k, (_, row) in enumerate(part.iterrows()):
            path = files[idx[k]]
            size = _py_int(row.get("crop_size"))
            fields = {n: values[n][k] for n in names}
            fields.update({d: dvalues[d][k] for d in DERIVED})
            sample = fo.Sample(filepath=str(path), tags=_seed_tags(row), **fields)
            sample["landmarks"] = _landmarks(row, fo)
            sample.metadata = fo.ImageMetadata(size_bytes=path.stat().st_size,
                                               mime_type=mimetypes.guess_type(path.name)[0] or "image/jpeg",
                                               width=size, height=size, num_channels=3)
            samples.append(sample)
        try:
            # The fields were declared with their types up front: skip FiftyOne's per-sample schema work.
            dataset.add_samples(samples, expand_schema=False, validate=False, progress=False)
        except Exception as e:  # noqa: BLE001 - pymongo's BulkWriteError on the unique face_id index
            if "duplicate key" in str(e).lower():
                raise ReviewError(f"another curator review is adding faces to dataset {dataset.name!r} right now; "
                                  "wait for it to finish and run this again") from None
            raise


def _py_int(v):
    return None if _missing(v) else int(v)


def _refresh(dataset, table: pd.DataFrame, fo, *, all_columns: bool) -> int:
    """Set fields of existing samples whose table values changed (a re-run of identify or curate); tags untouched."""
    columns = [c for c in _columns(table) if all_columns or c not in EXTRACT_COLUMNS]
    columns = [c for c in columns if c != "face_id"]
    derived = derived_columns(table)
    fields = [field_name(c) for c in columns] + list(DERIVED)
    if not fields:
        return 0
    stored = dataset.values(["face_id", *fields])
    ids = stored[0]
    rows = pd.Index(table["face_id"]).get_indexer(ids)
    known = rows >= 0
    changed_total = 0
    for pos, (field, column) in enumerate(zip(fields, columns + list(DERIVED))):
        new = _py_values(table[column]) if column in table else derived[column].tolist()
        old = stored[pos + 1]
        changed = {fid: new[r] for fid, r, ok, o in zip(ids, rows, known, old) if ok and o != new[r]}
        if changed:
            dataset.set_values(field, changed, key_field="face_id")
            changed_total += len(changed)
    if all_columns:
        missing = [fid for fid, lm in zip(ids, dataset.values("landmarks")) if lm is None]
        if missing:
            known_ids = set(table["face_id"])
            sub = table.set_index("face_id").loc[[f for f in missing if f in known_ids]]
            marks = {fid: _landmarks(row, fo) for fid, row in sub.iterrows()}
            dataset.set_values("landmarks", marks, key_field="face_id")
    return changed_total


def _indexes(dataset) -> None:
    schema = dataset.get_field_schema()
    for name in INDEXED:
        name = field_name(name) if name != "tags" else name
        if name in schema:
            dataset.create_index(name)


def _visualizations(ws: Workspace, dataset, table: pd.DataFrame, stale: bool) -> tuple[list[str], list[str]]:
    """The embeddings panel's two maps, from our own vectors: identity PCA and (yaw, pitch)."""
    import fiftyone.brain as fob
    from fiftyone import ViewField as F

    notes = []
    if stale or not dataset.has_brain_run(EMBEDDINGS_KEY):
        ids = dataset.values("face_id")
        rows = pd.Index(table["face_id"]).get_indexer(ids)
        if not len(ids):
            pass  # every crop was missing: nothing to map (and FiftyOne cannot index zero points)
        elif (rows < 0).any():
            notes.append(f"identity map skipped: {int((rows < 0).sum())} samples have no row (so no embedding) "
                         "in the workspace table")
        else:
            emb = np.asarray(read_embeddings(ws, len(table))[rows], np.float32)
            _replace_map(fob, dataset, dataset, EMBEDDINGS_KEY, _pca2(emb))
    if stale or not dataset.has_brain_run(POSE_KEY):
        posed = dataset.match((F("yaw") != None) & (F("pitch") != None))  # noqa: E711 - a MongoDB expression
        yaw, pitch = posed.values(["yaw", "pitch"])
        if len(yaw):
            _replace_map(fob, dataset, posed, POSE_KEY, np.column_stack([yaw, pitch]).astype(np.float64))
    return [k for k in (EMBEDDINGS_KEY, POSE_KEY) if dataset.has_brain_run(k)], notes


def _replace_map(fob, dataset, samples, key: str, points: np.ndarray) -> None:
    if dataset.has_brain_run(key):
        dataset.delete_brain_run(key)
    if key in dataset.get_field_schema():
        dataset.delete_sample_field(key)
    # points_field + create_index: lasso selections in the panel query an indexed field, fast at 100k+.
    fob.compute_visualization(samples, points=points, brain_key=key, create_index=True, points_field=key)


def _pca2(emb: np.ndarray) -> np.ndarray:
    """2-D PCA of the identity embeddings (deterministic; no new dependency: scikit-learn is already one)."""
    n = len(emb)
    out = np.zeros((n, 2), np.float64)
    if n < 2 or emb.shape[1] < 1:
        return out
    from sklearn.decomposition import PCA

    k = min(2, n, emb.shape[1])
    fit = emb if n <= 50_000 else emb[np.random.default_rng(0).choice(n, 50_000, replace=False)]
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
    if "eyes_closed" in table and "states_method" in table:
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
