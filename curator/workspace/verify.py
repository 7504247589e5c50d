"""`curator verify`: do the table, embeddings, crops and workspace.json agree?

Checks, each reported with a count and examples:
- workspace.json readable and of a version this curator reads;
- every shard (faces/*.parquet) readable, `face_id` unique;
- each shard's embeddings have at least as many rows as the shard (extra
  trailing rows are a write that a crash interrupted: harmless, see
  docs/workspace.md), and the dimension workspace.json records;
- each column group (columns/*.parquet) holds no more rows than the table,
  with the table's face ids in order;
- every row's crop file exists (`missing_crops`); no crop file is unreferenced
  (`orphan_crops`); checkpoints of an interrupted extract are a note;
- every source in the table is recorded in workspace.json, and the recorded
  row count matches;
- the model files recorded in workspace.json still have the recorded SHA-256
  (`changed_models`): embeddings from a changed recogniser do not compare.

`repair=True` fixes only what needs no guessing: upgrades a format-1
workspace (the lock does it, docs/workspace.md), merges staged parts, drops
trailing embedding rows, deletes orphan crops, marks rows whose crops are gone
(`crop_missing`, which curate and export skip) and corrects the row count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fs.hash import sha256_file

from . import (
    FORMAT_VERSION,
    Workspace,
    column_groups,
    commit_staging,
    part_progress,
    read_meta,
    read_table,
    shards,
    staged_crops,
    staged_parts,
    table_columns,
    trim_embeddings,
    update_columns,
    write_meta,
)

CHECKED = ["face_id", "source_sha256", "crop_path"]


def _problem(kind: str, detail: str, items: list | None = None) -> dict:
    items = list(items or [])
    return {"kind": kind, "detail": detail, "count": len(items) or 1, "examples": [str(i) for i in items[:5]]}


def check(ws: Workspace) -> dict:
    """Inspect without changing anything; returns {'ok': bool, 'rows': n, 'problems': [...]}."""
    meta = read_meta(ws)
    table = read_table(ws, CHECKED + (["crop_missing"] if "crop_missing" in table_columns(ws) else []))
    problems: list[dict] = []
    notes: list[dict] = []
    n = len(table)
    if n and not table["face_id"].is_unique:
        dup = table["face_id"][table["face_id"].duplicated()].tolist()
        problems.append(_problem("duplicate_ids", "face_id values repeated", dup))
    dim = (meta.get("embeddings") or {}).get("dim")
    for sh in shards(ws) if n else []:
        name = sh.embeddings.relative_to(ws.root).as_posix()
        try:
            emb = np.load(sh.embeddings, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            problems.append(_problem("embeddings_unreadable", f"{name}: {e}"))
            continue
        if emb.ndim != 2 or emb.shape[0] < sh.rows:
            problems.append(_problem("embeddings_short", f"{name}: {emb.shape[0] if emb.ndim else 0} embedding rows "
                                                         f"for {sh.rows} table rows"))
        elif emb.shape[0] > sh.rows:
            notes.append(_problem("embeddings_trailing", f"{name}: {emb.shape[0] - sh.rows} embedding rows beyond "
                                                         "its shard (an interrupted write)"))
        if emb.ndim == 2 and dim and emb.shape[1] != dim:
            problems.append(_problem("embeddings_dim", f"{name}: dimension {emb.shape[1]}, workspace.json says {dim}"))
    for group, path in column_groups(ws).items():
        ids = read_table_group_ids(path)
        if len(ids) > n or not (ids == table["face_id"].to_numpy(object)[: len(ids)]).all():
            problems.append(_problem("columns_misaligned", f"columns/{path.name} does not follow the table's rows "
                                                           f"({len(ids)} rows, the table has {n})"))
    referenced = set(table["crop_path"]) if n else set()
    missing = [p for p in referenced if not (ws.root / p).is_file()]
    if n and "crop_missing" in table:
        missing = [p for p in missing if p not in set(table.loc[table["crop_missing"].fillna(False).astype(bool), "crop_path"])]
    if missing:
        problems.append(_problem("missing_crops", "rows whose crop file is gone", sorted(missing)))
    orphans = orphan_crops(ws, referenced)
    if orphans:
        problems.append(_problem("orphan_crops", "crop files no row refers to", orphans))
    parts = staged_parts(ws)
    if parts:
        partial = sorted({rec.get("path", sha) for part in parts for sha, rec in part_progress(part).items()
                          if not rec.get("complete")})
        notes.append(_problem("interrupted_extract", "extract checkpoints from an interrupted run; "
                              "`curator extract` with the same footage resumes it", partial or [p.name for p in parts]))
    if n:
        unknown = sorted(set(table["source_sha256"]) - set(meta.get("sources", {})))
        if unknown:
            problems.append(_problem("unknown_sources", "table rows from sources workspace.json does not list", unknown))
    if meta.get("format_version", FORMAT_VERSION) < FORMAT_VERSION:
        notes.append(_problem("old_format", f"workspace format {meta.get('format_version')}; the next command that "
                              f"writes (or `curator verify --repair`) upgrades it to {FORMAT_VERSION}"))
    if meta.get("rows") != n:
        problems.append(_problem("row_count", f"workspace.json says {meta.get('rows')} rows, the table has {n}"))
    changed = _changed_models(meta)
    if changed:
        problems.append(_problem("changed_models", "model files differ from the ones the embeddings were made with", changed))
    return {"workspace": str(ws.root), "ok": not problems, "rows": n, "problems": problems, "notes": notes}


def read_table_group_ids(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=["face_id"]).column("face_id").to_numpy().astype(object)
    except Exception:  # noqa: BLE001  any unreadable group is misaligned for this check
        return np.array(["<unreadable>"], dtype=object)


def orphan_crops(ws: Workspace, referenced: set[str]) -> list[str]:
    """Crop files (relative paths) that neither the table nor a staged extract part refers to."""
    if not ws.crops_dir.is_dir():
        return []
    on_disk = {p.relative_to(ws.root).as_posix() for p in ws.crops_dir.rglob("*") if p.is_file()}
    return sorted(on_disk - referenced - staged_crops(ws))


def _changed_models(meta: dict) -> list[str]:
    models = meta.get("models") or {}
    folder = Path(models.get("path") or "")
    changed = []
    for name, sha in (models.get("files") or {}).items():
        path = folder / name
        if path.is_file() and sha256_file(path) != sha:
            changed.append(name)
    landmark_model = models.get("landmark_model")  # dlib's, with --landmarks dlib
    if landmark_model and Path(landmark_model["file"]).is_file() and sha256_file(landmark_model["file"]) != landmark_model["sha256"]:
        changed.append(Path(landmark_model["file"]).name)
    return changed


def repair(ws: Workspace) -> dict:
    """Fix what can be fixed without guessing; returns the check after repair plus what was done.

    The caller holds the workspace lock (`curator.api.verify` does).
    """
    done: list[str] = []
    before = check(ws)
    kinds = {p["kind"] for p in before["problems"] + before["notes"]}
    if "interrupted_extract" in kinds:
        commit_staging(ws)
        done.append("merged staged extract checkpoints")
    table = read_table(ws, CHECKED)
    n = len(table)
    trimmed = trim_embeddings(ws)
    if trimmed:
        done.append(f"dropped {trimmed} trailing embedding rows")
    after = check(ws)
    for p in after["problems"]:
        if p["kind"] == "orphan_crops":
            for rel in orphan_crops(ws, set(table["crop_path"]) if n else set()):
                (ws.root / rel).unlink()
            done.append(f"deleted {p['count']} orphan crop file(s)")
        elif p["kind"] == "missing_crops":
            gone = np.array([not (ws.root / c).is_file() for c in table["crop_path"]])
            update_columns(ws, table.assign(crop_missing=gone)[["face_id", "crop_missing"]])
            done.append(f"marked {int(gone.sum())} row(s) crop_missing")
    meta = read_meta(ws)
    if meta.get("rows") != n:
        meta["rows"] = n
        write_meta(ws, meta)
        done.append("corrected the row count in workspace.json")
    result = check(ws)
    result["repaired"] = done
    return result
