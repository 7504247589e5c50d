"""`curator export`: the curated faces as a folder a trainer can read.

    OUT/faces/<face_id>.jpg    aligned crops (the workspace's --size)
    OUT/manifest.parquet       every table column of the exported faces + `split`
    OUT/manifest.csv           the same, list columns as JSON, for spreadsheets
    OUT/embeddings.npy         identity embeddings, row-aligned with the manifest
    OUT/provenance.json        source hashes, consent notes, models, settings

With --format faceswap|dfl|fiftyone the faces are written in that tool's own
format instead of OUT/faces/ (curator/export/formats.py, docs/formats.md); the
manifest, embeddings and provenance are written the same way for every format.

The train/validation split is by source file, so near-identical frames never
sit on both sides; with a single source it falls back to one contiguous time
block at the end of the footage. The folder is built under a temporary name
and renamed into place, so OUT is either the old export or the complete new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__, outputs
from . import formats
from ..fs.atomic import inside, write_json
from ..errors import CuratorError
from ..workspace import Workspace, WorkspaceError, crop_file, inputs_of, now, read_embeddings, read_meta, read_table, table_columns

VAL_FRACTION = 0.1


class ExportError(CuratorError):
    pass


def faces_to_export(table: pd.DataFrame, include_all: bool = False) -> pd.DataFrame:
    """Selected faces (or all with include_all), never those rejected in review."""
    if not include_all and "selected" not in table:
        raise ExportError("nothing is selected yet: run `curator curate` first (or export --all)")
    keep = np.ones(len(table), bool) if include_all else table["selected"].fillna(False).to_numpy(bool)
    for flag in ("rejected", "crop_missing"):  # crop_missing: set by `curator verify --repair`
        if flag in table:
            keep = keep & ~table[flag].fillna(False).to_numpy(bool)
    return table[keep]


def split_by_source(rows: pd.DataFrame, val_fraction: float = VAL_FRACTION, seed: int = 0) -> tuple[np.ndarray, str]:
    """'train'/'val' per row, whole sources on one side; ('time-block' fallback for a single source)."""
    if not len(rows):
        return np.array([], dtype=object), "source"
    counts = rows.groupby("source_sha256").size()
    if len(counts) >= 2:
        order = sorted(counts.index, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
        val, n_val, target = set(), 0, max(1, round(val_fraction * len(rows)))
        for sha in order:
            if n_val >= target or len(val) == len(counts) - 1:
                break
            val.add(sha)
            n_val += counts[sha]
        return np.where(rows["source_sha256"].isin(val), "val", "train").astype(object), "source"
    t = rows["time_s"].to_numpy(float)
    cut = np.quantile(t, 1 - val_fraction) if len(t) > 1 else np.inf
    return np.where(t > cut, "val", "train").astype(object), "time-block"


def export(ws: Workspace, out: str | os.PathLike, *, include_all: bool = False, val_fraction: float = VAL_FRACTION,
           force: bool = False, seed: int = 0, fmt: str = "folder", face_size: int = formats.FACE_SIZE) -> dict:
    if fmt not in formats.FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(formats.FORMATS)}")
    meta = read_meta(ws)
    out = outputs.check_folder(out, "export", force=force, keep=inputs_of(ws),
                               not_inside={ws.root: f"the workspace {ws.root}"})
    # The flags first, then every column of only the rows exported: the table may have millions of rows.
    have = table_columns(ws)
    flags = read_table(ws, ["face_id"] + [c for c in ("selected", "rejected", "crop_missing") if c in have])
    if not len(flags):
        raise WorkspaceError(f"workspace {ws.root} has no faces")
    emb = read_embeddings(ws, len(flags))
    keep = faces_to_export(flags, include_all).index.to_numpy()
    rows = read_table(ws, rows=keep) if len(keep) else flags.iloc[:0]
    if not len(rows):
        raise ExportError("no faces to export (none selected, or all rejected in review)")
    try:
        formats.check(fmt, rows)  # before anything is written
    except formats.FormatError as e:
        raise ExportError(str(e)) from None
    split, split_by = split_by_source(rows, val_fraction, seed)
    names = formats.unique_names(list(rows["face_id"]))
    outputs.check_writable(out, "export folder")

    try:
        with outputs.building(out, "export", format=fmt) as tmp:
            row_emb = np.asarray(emb[rows.index.to_numpy()], np.float32)
            provenance = {
                "tool": "curator", "tool_version": __version__, "exported": now(), "workspace": str(ws.root),
                "format": fmt,
                "faces": len(rows), "split_by": split_by, "train": int((split == "train").sum()),
                "val": int((split == "val").sum()),
                "models": meta.get("models"), "settings": meta.get("settings"),
                "consent": meta.get("consent", []),
                "sources": {sha: {"path": meta["sources"].get(sha, {}).get("path"), "sha256": sha,
                                  "consent": meta["sources"].get(sha, {}).get("consent"), "faces": int(n)}
                            for sha, n in rows.groupby("source_sha256").size().items()},
            }
            if meta.get("curated_for"):  # `curate --for`: the video the set was curated for, by file hash
                provenance["curated_for"] = meta["curated_for"]
            files, fmt_info = _write_faces(fmt, ws, rows, names, tmp, meta, row_emb, split, provenance, face_size)
            if fmt_info:
                provenance[fmt] = fmt_info
            manifest = rows.copy()
            manifest["file"] = files
            manifest["split"] = split
            pq.write_table(pa.Table.from_pandas(manifest.reset_index(drop=True), preserve_index=False),
                           tmp / "manifest.parquet", compression="zstd")
            _to_csv(manifest).to_csv(tmp / "manifest.csv", index=False)
            with open(tmp / "embeddings.npy", "wb") as f:
                np.save(f, row_emb, allow_pickle=False)
            write_json(tmp / "provenance.json", provenance)
    except formats.FormatError as e:
        raise ExportError(str(e)) from None
    summary = {"out": str(out), "format": fmt, "faces": len(rows), "train": provenance["train"], "val": provenance["val"],
               "split_by": split_by, "sources": len(provenance["sources"])}
    if fmt_info and fmt_info.get("notes"):
        summary["notes"] = fmt_info["notes"]
    return summary


def _write_faces(fmt: str, ws: Workspace, rows: pd.DataFrame, names: list[str], tmp: Path, meta: dict,
                 emb: np.ndarray, split: np.ndarray, provenance: dict, face_size: int) -> tuple[list[str], dict | None]:
    """Write the faces in `fmt` under `tmp`; returns each row's file (relative to tmp) and what provenance should record."""
    if fmt == "faceswap":
        return formats.write_faceswap(ws, rows, names, meta, tmp, face_size)
    if fmt == "dfl":
        return formats.write_dfl(ws, rows, names, meta, tmp, face_size)
    if fmt == "fiftyone":
        return formats.write_fiftyone(ws, rows, names, tmp, emb, split, provenance)
    faces_dir = tmp / "faces"
    faces_dir.mkdir()
    files = []
    for name, crop in zip(names, rows["crop_path"]):
        file_name = name + Path(crop).suffix
        src = crop_file(ws, crop)  # a tampered table cannot make us read outside the workspace
        shutil.copyfile(src, inside(faces_dir, file_name))
        files.append(f"faces/{file_name}")
    return files, None


def _to_csv(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object and out[c].map(lambda v: isinstance(v, (list, np.ndarray))).any():
            out[c] = out[c].map(lambda v: json.dumps(np.asarray(v).tolist()) if v is not None else "")
    return out
