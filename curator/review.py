"""`curator review`: the workspace's faces in the FiftyOne App, and the App's tags back into the table.

One persistent FiftyOne dataset per workspace (docs/review.md):

- one sample per face crop, keyed by the `face_id` field; every table column
  is a field except the three long vectors (`appearance`, `lmk68`,
  `align_matrix`), plus `landmarks` (Keypoints on the crop), `dup_group_size`
  and `pose_bin_faces`;
- two embeddings-panel maps computed from our own numbers: `identity_pca`
  (PCA of the workspace's identity embeddings) and `pose` (yaw, pitch);
- saved views: selected, rejected, kept, near-duplicate groups, rare poses,
  low quality, other identities;
- `dataset.info["curator"]` records the review schema and workspace format.

Tags are the review's result. `pull_tags` copies them into the table's
`rejected` (tag `reject`), `kept` (tag `keep`) and `review_tags` (every other
tag, sorted, comma-joined) columns; for faces in the dataset the dataset is
the truth, so untagging `reject` un-rejects. `sync_dataset` adds only faces
that are not in the dataset yet (seeding their tags from those columns, so a
deleted dataset is rebuilt with its tags) and never touches an existing
sample's tags.

The workspace lock is held only while the table is written (`pull_tags`), not
while a person looks at the App. FiftyOne is imported inside the functions,
so `import curator` stays cheap.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import math
import mimetypes
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote

import numpy as np
import pandas as pd

from .errors import CuratorError
from . import __version__, metrics
from .atomic import inside, safe_name
from .workspace import (
    FORMAT_VERSION,
    Workspace,
    WorkspaceError,
    WorkspaceLocked,
    locked,
    now,
    open_workspace,
    read_embeddings,
    read_table,
    update_columns,
)

# Bump when the dataset's layout changes meaning; sync_dataset upgrades older datasets in place.
REVIEW_SCHEMA = 1
INFO_KEY = "curator"

REJECT, KEEP = "reject", "keep"
TAG_COLUMNS = ("rejected", "kept", "review_tags")  # written by pull_tags; the tags themselves are their fields

# Long vectors made for computation, not for looking at or filtering on; lmk68 is shown as `landmarks`.
SKIP_COLUMNS = {"appearance", "lmk68", "align_matrix"}
# Written by extract and never changed for a face_id afterwards; every other column (identify, curate,
# verify, later stages) is refreshed on existing samples when it changes.
EXTRACT_COLUMNS = {
    "face_id", "source", "source_sha256", "source_kind", "frame", "time_s", "face_index", "frame_w", "frame_h",
    "bbox", "kps", "det_score", "face_px", "yaw", "pitch", "roll", "pose_method", "lum", "contrast", "light_lr",
    "light_tb", "cast_a", "cast_b", "sharpness", "appearance", "mouth_open", "eyes_open", "smile",
    "expression_method", "lmk68", "align_matrix", "crop_size", "crop_path",
}
DERIVED = ("dup_group_size", "pose_bin_faces")
# Fields people filter and sort on in the App: indexed so that stays fast at 100k+ faces.
INDEXED = ("yaw", "pitch", "roll", "quality", "sharpness", "face_px", "det_score", "selected", "dup_group",
           "dup_group_size", "is_target", "identity_cluster", "identity_score", "pose_cluster", "pose_bin_faces",
           "expr_cluster", "light_cluster", "source_sha256", "crop_missing", "tags")
EMBEDDINGS_KEY = "identity_pca"
POSE_KEY = "pose"
LOW_QUALITY_SHARE = 0.10  # "low quality": the worst tenth by quality (or sharpness before curate), and too small
ADD_BATCH = 2000  # samples per insert: bounded memory on 100k+ new faces
MONGO_TIMEOUT_MS = 3000
SHOWN_MISSING = 5  # missing crops named one per line before the rest are summarised
PULL_WAIT_S = 30.0  # how long the pull at the App's exit waits for another command's lock
PULL_EVERY_S = 5.0  # while the App runs, changed tags reach the table this often

VIEWS = ("selected", "rejected", "kept", "near-duplicate groups", "rare poses", "low quality", "other identities")


class ReviewError(CuratorError):
    """A review problem the user can act on; the message is one line saying what and how."""


# --- FiftyOne and its database ---------------------------------------------------------

@contextlib.contextmanager
def _log_level(level: int) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("fiftyone", "eta")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, levels):
            lg.setLevel(old)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """FiftyOne logs banners and progress on stdout; keep --json output clean and stderr short."""
    with _log_level(logging.WARNING), contextlib.redirect_stdout(sys.stderr):
        yield


def _redact(uri: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", uri)


def connect():
    """Import FiftyOne and make sure its database answers, within seconds; returns the `fiftyone` module.

    FiftyOne itself waits 30 s for an unreachable server and then raises a
    generic error, so a configured URI is pinged first with a short timeout.
    """
    with _quiet():
        import fiftyone as fo

        fo.config.show_progress_bars = False
    uri = fo.config.database_uri  # FIFTYONE_DATABASE_URI or ~/.fiftyone/config.json
    how = ("start it, or set FIFTYONE_DATABASE_URI=mongodb://HOST:PORT to a running MongoDB (docs/review.md); "
           "the workspace was not changed")
    if uri:
        import pymongo
        import pymongo.errors

        client = None
        try:
            client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=MONGO_TIMEOUT_MS,
                                         connectTimeoutMS=MONGO_TIMEOUT_MS)
            client.admin.command("ping")
        except pymongo.errors.ServerSelectionTimeoutError:
            raise ReviewError(f"no MongoDB answers at {_redact(uri)} (FIFTYONE_DATABASE_URI) within "
                              f"{MONGO_TIMEOUT_MS // 1000} s: {how}") from None
        except (pymongo.errors.PyMongoError, ValueError) as e:
            raise ReviewError(f"MongoDB at {_redact(uri)} refused us ({type(e).__name__}: {_one_line(e)}): {how}") from None
        finally:
            if client is not None:
                client.close()
    else:
        from fiftyone.core.service import DatabaseService

        try:
            DatabaseService.find_mongod()
        except Exception:  # noqa: BLE001 - ServiceExecutableNotFound, PermissionError, ...
            raise ReviewError("no MongoDB for FiftyOne: FIFTYONE_DATABASE_URI is not set and this FiftyOne install "
                              "has no bundled database; start a MongoDB and set FIFTYONE_DATABASE_URI=mongodb://HOST:PORT "
                              "(docs/review.md); the workspace was not changed") from None
    try:
        with _quiet():
            fo.list_datasets()  # FiftyOne's own connection (and, without a URI, its bundled mongod)
    except Exception as e:  # noqa: BLE001 - FiftyOne raises many kinds when its database is unusable
        raise ReviewError(f"FiftyOne cannot use its database ({type(e).__name__}: {_one_line(e)}): {how}") from None
    return fo


def _one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the dataset -----------------------------------------------------------------------

def dataset_name(ws: Workspace) -> str:
    """`curator-<folder>-<8 hex of the absolute path>`: stable for a workspace, distinct across workspaces."""
    digest = hashlib.sha256(str(ws.root).encode()).hexdigest()[:8]
    return f"curator-{safe_name(ws.root.name, 40)}-{digest}"


def field_name(column: str) -> str:
    from .formats import fiftyone_field_name  # the same names as `export --format fiftyone`

    return fiftyone_field_name(column)


def dataset_version(ws: Workspace, dataset) -> int:
    """The review schema a dataset was written with; refuses datasets this curator must not touch."""
    info = (dataset.info or {}).get(INFO_KEY)
    has_face_id = "face_id" in dataset.get_field_schema()
    if not isinstance(info, dict) or not isinstance(info.get("review_schema"), int):
        if has_face_id:
            return 0  # made before versioning (or interrupted before it was stamped)
        raise ReviewError(f"FiftyOne dataset {dataset.name!r} was not made by curator review (no face_id field); "
                          "leave it alone with --dataset OTHER_NAME, or delete it (`fiftyone datasets delete NAME`)")
    version = info["review_schema"]
    if version > REVIEW_SCHEMA:
        raise ReviewError(f"FiftyOne dataset {dataset.name!r} was written by a newer curator (review schema {version}, "
                          f"this curator {__version__} knows up to {REVIEW_SCHEMA}); upgrade curator. "
                          "Nothing was changed: the tags are still in the dataset")
    owner = info.get("workspace")
    if owner and owner != str(ws.root):
        raise ReviewError(f"FiftyOne dataset {dataset.name!r} belongs to workspace {owner}, not {ws.root}; "
                          "choose another --dataset")
    if not has_face_id:
        raise ReviewError(f"FiftyOne dataset {dataset.name!r} has lost its face_id field, so its samples cannot be "
                          "matched to faces; delete it (`fiftyone datasets delete NAME`; pull its tags first if you can "
                          "re-add face_id) and run curator review again")
    return version


def load_dataset(ws: Workspace, name: str | None = None):
    """The workspace's review dataset, or None if there is none yet (call `connect()` first)."""
    import fiftyone as fo

    name = name or dataset_name(ws)
    with _quiet():
        if not fo.dataset_exists(name):
            return None
        dataset = fo.load_dataset(name)
    dataset_version(ws, dataset)
    return dataset


def _stamp(ws: Workspace, dataset) -> None:
    info = dict(dataset.info or {})
    info[INFO_KEY] = {"review_schema": REVIEW_SCHEMA, "workspace_format": FORMAT_VERSION, "workspace": str(ws.root),
                      "tool_version": __version__, "synced": now()}
    dataset.info = info
    dataset.save()


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
    from .align import transform_points

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
    with _quiet():
        dataset = load_dataset(ws, name)
        if dataset is None:
            dataset = fo.Dataset(name, persistent=True)
            _stamp(ws, dataset)  # before any sample: an interrupted first sync is resumed, not mistaken for old
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
        _stamp(ws, dataset)
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
        return inside(ws.root, crop)  # an edited table cannot point the App outside the workspace
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

    from .curate import MIN_FACE_PX  # curate's "face too small"

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
        low = worst | (_number("face_px") & (F("face_px") < MIN_FACE_PX))
        save("low quality", dataset.match(low).sort_by(field_name(by)),
             f"the lowest {LOW_QUALITY_SHARE:.0%} by {by} (<= {cut:.3g}) and faces under {MIN_FACE_PX:g} px")
    else:
        skip("low quality", f"no face has a {by} value")
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
    from .audit import FEW_MIN, FEW_SHARE

    return max(FEW_MIN, math.ceil(FEW_SHARE * faces))


# --- tags back into the table -------------------------------------------------------------

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
        with _quiet():
            dataset.reload()
            ids, tags = dataset.values(["face_id", "tags"])
    except Exception as e:  # noqa: BLE001 - deleted meanwhile (by the App or another process), or no database
        if not _still_exists(fo, name):
            raise ReviewError(f"dataset {name!r} was deleted; no tags to pull (the table keeps the tags it had)") from None
        raise ReviewError(f"cannot read the tags of dataset {name!r} ({type(e).__name__}: {_one_line(e)}); "
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


# --- the App -----------------------------------------------------------------------------

def _still_exists(fo, name: str) -> bool:
    try:
        return fo.dataset_exists(name)
    except Exception:  # noqa: BLE001 - no database: say that, not "deleted"
        return True


def check_port(address: str, port: int) -> None:
    """Refuse a port something already listens on, before FiftyOne would attach to (or hang on) it."""
    if not 1 <= port <= 65535:
        raise ReviewError(f"--port {port} is not a TCP port (1-65535)")
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ReviewError(f"--address {address}: cannot resolve it ({e.strerror})") from None
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: a socket of a just-closed App in TIME_WAIT is not "in use", a listener is.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ReviewError(f"port {port} on {address} is already in use (another App or program); "
                                  "choose another with --port") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise ReviewError(f"--address {address} is not an address of this machine") from None
            raise ReviewError(f"cannot listen on {address}:{port}: {e.strerror}") from None


def app_url(address: str, port: int, name: str) -> str:
    host = socket.gethostname() if address in ("0.0.0.0", "::") else address  # what another machine would type
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/datasets/{quote(name)}"


def is_loopback(address: str) -> bool:
    import ipaddress

    try:
        return all(ipaddress.ip_address(sa[0].split("%")[0]).is_loopback
                   for _, _, _, _, sa in socket.getaddrinfo(address, None))
    except (socket.gaierror, OSError, ValueError):
        return False


def launch(dataset, *, port: int, address: str = "127.0.0.1"):
    """Start the App's web server on address:port; returns (server, url of `dataset`). Stop it with `close_app`.

    FiftyOne's own server process, without a Python `Session`: the browser
    needs none, and a session's background thread prints reconnection notices
    on our stdout when the machine is slow (and warnings about its own removed
    config options). The server runs under FiftyOne's service wrapper, which
    stops it when this process dies, even by kill -9.
    """
    import fiftyone as fo
    from fiftyone.core.service import ServerService

    check_port(address, port)
    try:
        with _quiet():
            server = ServerService(port, address=address, do_not_track=fo.config.do_not_track)
    except Exception as e:  # noqa: BLE001 - ServiceListenTimeout and friends
        raise ReviewError(f"the FiftyOne App could not start on {address}:{port} ({type(e).__name__}: {_one_line(e)})") from None
    return server, app_url(address, port, dataset.name)


def close_app(server) -> None:
    """Stop the App's server and wait until its processes are gone."""
    with _quiet():
        server.stop()


def _serving(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _interrupt_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) end the review like Ctrl-C: the App stops and tags are pulled."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def serve(ws: Workspace, dataset, *, port: int, address: str, timeout: float | None,
          on_ready: Callable[[str], None], on_note: Callable[[str], None] = lambda note: None) -> dict:
    """Run the App until Ctrl-C (or `timeout` seconds), then stop it and pull the tags; returns the pull summary.

    While it runs, tags are copied into the table every few seconds when they
    changed, so an export started after the browser is closed has them even if
    the review is still running.
    """
    server, url = launch(dataset, port=port, address=address)
    stopped = None
    ended = False
    try:
        with _interrupt_on_signals():
            try:
                on_ready(url)
                _watch(ws, dataset, address, port, timeout, on_note)
            except _ServerGone:
                stopped = "the App's server stopped by itself"
            except KeyboardInterrupt:
                pass
        ended = True
    finally:
        # Stopping the server takes seconds; a second, impatient Ctrl-C must not skip the pull.
        with _shielded():
            if ended:
                on_note("stopping the App, then copying the tags into the workspace table")
            close_app(server)
            if ended:
                pulled = _pull_or_explain(ws, dataset)
            else:
                try:  # an error is on its way up: copy what we can, but do not hide the error
                    pull_tags(ws, dataset)
                except Exception:  # noqa: BLE001 - the tags stay in the dataset for `--pull`
                    pass
    pulled["url"] = url
    if stopped:
        pulled["notes"].append(stopped)
    return pulled


class _ServerGone(Exception):
    pass


def _watch(ws: Workspace, dataset, address: str, port: int, timeout: float | None,
           on_note: Callable[[str], None]) -> None:
    """Until the timeout (or Ctrl-C): pull changed tags every few seconds; raise _ServerGone if the App dies."""
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    next_check = next_pull = start
    last_tags = None
    every = PULL_EVERY_S
    while deadline is None or time.monotonic() < deadline:
        time.sleep(0.2)
        now_ = time.monotonic()
        if now_ >= next_check:
            next_check = now_ + 5
            if not _serving(address, port):
                raise _ServerGone
        if every is not None and now_ >= next_pull:
            try:
                tags = read_tags(ws, dataset)
                if tags != last_tags:
                    pull_tags(ws, dataset, tags=tags)
                    last_tags = tags
            except WorkspaceLocked:
                pass  # another command is writing: next round
            except ReviewError as e:
                on_note(f"{e}; tags are no longer copied while the App runs")
                every = None
                continue
            # A large dataset takes longer to read: never spend more than a tenth of the time on it.
            every = max(PULL_EVERY_S, 10 * (time.monotonic() - now_))
            next_pull = time.monotonic() + every


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to shield from
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _pull_or_explain(ws: Workspace, dataset) -> dict:
    try:
        return pull_tags(ws, dataset, wait_s=PULL_WAIT_S)
    except WorkspaceError as e:
        raise ReviewError(f"the App's tags are safe in dataset {dataset.name!r} but could not be copied into the "
                          f"table ({e}); run `curator review -w {ws.root} --pull`") from None


def review(workspace: str | os.PathLike, *, port: int = 5151, address: str = "127.0.0.1", pull_only: bool = False,
           app: bool = True, timeout: float | None = None, name: str | None = None,
           on_ready: Callable[[str], None] = lambda url: None,
           on_note: Callable[[str], None] = lambda note: None) -> dict:
    """`curator review`: pull, sync, run the App, pull again. The CLI prints what this returns."""
    ws = open_workspace(workspace)
    if app and not pull_only:
        check_port(address, port)  # a busy port is refused at once, not after importing FiftyOne and syncing
    connect()  # before anything is read or written: no database, nothing touched
    name = name or dataset_name(ws)
    if pull_only:
        dataset = load_dataset(ws, name)
        if dataset is None:
            raise ReviewError(f"workspace {ws.root} has no review dataset yet ({name}); run `curator review -w {ws.root}`")
        pulled = pull_tags(ws, dataset)
        for note in pulled["notes"]:
            on_note(note)
        return {"workspace": str(ws.root), "dataset": name, "samples_added": 0, "samples_total": len(dataset),
                "tags": _tag_counts(pulled), "url": None, "notes": pulled["notes"]}
    existing = load_dataset(ws, name)
    if existing is not None and dataset_version(ws, existing) == REVIEW_SCHEMA:
        pull_tags(ws, existing)  # tags left by a review that was killed reach the table before anything else
    summary = sync_dataset(ws, name)
    for note in summary["notes"]:
        on_note(note)
    dataset = load_dataset(ws, name)
    if app and not is_loopback(address):
        on_note(f"the App listens on {address}: anyone who can reach this machine can see and tag these faces (no login)")
    if app:
        pulled = serve(ws, dataset, port=port, address=address, timeout=timeout, on_ready=on_ready, on_note=on_note)
        summary["url"] = pulled.pop("url")
    else:
        pulled = pull_tags(ws, dataset)
        summary["url"] = None
    for note in pulled["notes"]:
        on_note(note)
    summary["notes"] += pulled["notes"]
    summary["tags"] = _tag_counts(pulled)
    return summary


def _tag_counts(pulled: dict) -> dict:
    return {k: pulled[k] for k in ("rejected", "kept", "other_tags", "changed", "written")}


def summary_line(s: dict) -> str:
    t = s["tags"]
    head = (f"dataset {s['dataset']}: {s['samples_total']} faces"
            + (f" ({s['samples_added']} added)" if s.get("samples_added") else ""))
    if "views" in s:
        head += f", {len(s['views'])} saved views"
    return (head + f"; tags in the table: {t['rejected']} rejected, {t['kept']} kept, {t['other_tags']} with other tags"
            + f" ({t['changed']} faces changed)")
