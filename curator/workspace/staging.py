"""Staging: extract's checkpoints (parts), resume state and the merge into the table."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..fs.atomic import atomic_path
from . import meta as contract  # SHARD_ROWS read at call time, so a test can make shards small
from .meta import EMBEDDINGS, Workspace, read_meta, write_meta
from .table import _read_parquet, format_version, iter_table, list_matrix, read_table, shards, table_rows
from .table import write_npy, write_parquet
from .write import _arrow_columns, _face_ids, ensure_current


# --- staging: checkpoints and the merge ---------------------------------------
# A writer (extract) stages rows in parts: Parquet files holding rows, their
# embeddings and, in the file's metadata, how far into each unit of work they
# go. A unit is a whole source, keyed by its SHA-256, or one segment of a long
# video (`unit_key`), so that several workers can stage parts of one file at
# once. `commit_staging` merges finished parts into the table; a partial source
# keeps its parts so a resumed run knows where to start.

PART_META_KEY = b"curator.progress"
UNIT_FIELDS = "unit"  # a segment's own part of its progress record (`media.Segment.as_dict()`)


def unit_key(sha: str, segment: int = 0, segments: int = 1) -> str:
    """The progress key of a unit of work: the source's SHA-256 when it is read whole, else that plus the segment."""
    return sha if segments <= 1 else f"{sha}-s{segment:05d}"


def unit_source(key: str) -> str:
    """The source SHA-256 of a progress key (`unit_key`)."""
    return key[:64]


class PartWriter:
    """Buffers rows and writes them as staged parts with the progress they stand for.

    One writer per process. Without `unit`, parts are numbered in sequence
    (`part-000012.parquet`): the one local run that holds the workspace's
    lock writes them. With `unit` (a `unit_key`), parts are named after the
    unit and this writer (`part-<unit>-<writer>-000003.parquet`), so workers
    on several machines stage at once without taking each other's names, and
    a unit run again after its worker was lost (or while a lost worker still
    runs) adds parts beside the ones before; rows staged twice have the same
    face ids, and the merge keeps one.
    """

    def __init__(self, ws: Workspace, *, every_frames: int = 200, every_seconds: float = 60.0,
                 unit: str | None = None):
        self.ws = ws
        self.every_frames = every_frames
        self.every_seconds = every_seconds
        self.rows: list[dict] = []
        self.embs: list[np.ndarray] = []
        self.progress: dict[str, dict] = {}
        self.frames = 0
        self.last_flush = time.monotonic()
        self.prefix = f"{unit}-{secrets.token_hex(4)}-" if unit else ""
        numbered = [int(p.stem[5:]) for p in staged_parts(ws) if p.stem[5:].isdigit()]
        self.seq = 0 if unit else max(numbered, default=-1) + 1

    def add(self, rows, emb, key, record, *, last_frame: int, complete: bool, resume: dict | None = None) -> None:
        """Stage `rows` of unit `key` (`unit_key`), analysed up to `last_frame`; `resume` is what a resumed run
        needs to seek there (`curator.media.ResumePoint`), None when it must decode the unit from its start."""
        self.rows.extend(rows)
        if emb is not None and len(emb):
            self.embs.append(emb)
        self.progress[key] = {**record, "last_frame": int(last_frame), "resume": None if complete else resume,
                              "complete": complete, "status": "complete" if complete else "partial"}
        self.frames += 1
        self.flush()

    def fail(self, key, record, reason) -> None:
        self.progress[key] = {**record, "last_frame": -1, "resume": None, "complete": False, "status": "failed",
                              "error": reason}
        self.flush(force=True)

    def flush(self, force: bool = False) -> None:
        due = self.frames >= self.every_frames or time.monotonic() - self.last_flush > self.every_seconds
        if not (force or due) or not self.progress:
            return
        write_part(self.ws, f"{self.prefix}{self.seq:06d}", self.rows,
                   np.concatenate(self.embs) if self.embs else None, self.progress)
        self.seq += 1
        self.rows, self.embs, self.progress, self.frames = [], [], {}, 0
        self.last_flush = time.monotonic()


def write_part(ws: Workspace, name: str, rows: list[dict], emb: np.ndarray | None, progress: dict) -> None:
    """Stage `rows` and `progress` ({unit key: record}) as `staging/part-NAME.parquet`, written whole or not at all."""
    df = pd.DataFrame(rows)
    if len(df):
        df["embedding"] = list(np.asarray(emb, np.float32))
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PART_META_KEY: json.dumps(progress).encode()})
    ws.staging_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(ws.staging_dir / f"part-{name}.parquet") as tmp:
        pq.write_table(table, tmp)


def part_progress(path: Path) -> dict:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(PART_META_KEY, b"{}"))


def staged_units(ws: Workspace, key: str | None = None) -> dict[str, dict]:
    """Per unit key: the furthest frame staged (`last_frame`, and `resume`: where to seek to go on after it) and
    whether the unit is finished. With `key`, only the parts a `PartWriter(unit=key)` wrote (a worker's own
    unit, without reading every part's metadata; a run of photos stages one key per photo)."""
    merged: dict[str, dict] = {}
    for part in staged_parts(ws, key):
        for k, rec in part_progress(part).items():
            merged[k] = further(merged.get(k), rec)
    return merged


def further(prev: dict | None, rec: dict | None) -> dict | None:
    """Of two staged records of one unit, the one that got further (a complete one, else the later frame)."""
    if prev is None or rec is None:
        return rec or prev
    if rec.get("complete") or rec.get("last_frame", -1) >= prev.get("last_frame", -1):
        return {**prev, **rec, "complete": bool(rec.get("complete") or prev.get("complete"))}
    return prev


def staged_progress(ws: Workspace) -> dict[str, dict]:
    """Per source sha: the furthest frame staged (`last_frame`, and `resume`: where to seek to go on after it)
    and whether the source is finished; for a source read in segments, see `source_progress`."""
    return progress_by_source(staged_units(ws))


def progress_by_source(units: dict[str, dict]) -> dict[str, dict]:
    """`staged_progress` from `staged_units`' answer."""
    by_source: dict[str, dict[str, dict]] = {}
    for key, rec in units.items():
        by_source.setdefault(unit_source(key), {})[key] = rec
    return {sha: source_progress(sha, recs) for sha, recs in by_source.items()}


def source_progress(sha: str, units: dict[str, dict]) -> dict:
    """One source's progress from its units' records. A source read in segments is complete when every segment
    is; `last_frame` is then how far from its start every frame is done (later segments may be done too), and
    there is no `resume` (each segment has its own)."""
    segmented = {k: r for k, r in units.items() if k != sha}
    if not segmented:
        return units[sha]
    count = max(int(r.get("segments", 1)) for r in segmented.values())
    recs = [segmented.get(unit_key(sha, k, count)) for k in range(count)]
    merged = {k: v for r in recs if r for k, v in r.items() if k != UNIT_FIELDS}
    last = -1
    for rec in recs:  # the segments done one after another from the start, then how far the next one got
        if rec is None:
            break
        if not rec.get("complete"):
            last = max(last, rec.get("last_frame", -1))
            break
        stop = (rec.get(UNIT_FIELDS) or {}).get("stop")
        last = stop - 1 if stop is not None else rec.get("frames", 0) - 1
    complete = all(r is not None and r.get("complete") for r in recs)
    failed = [r for r in recs if r is not None and r.get("status") == "failed"]
    merged.update(last_frame=last, resume=None, complete=complete,
                  frames=max((r.get("frames", 0) for r in recs if r), default=0),
                  status="complete" if complete else "failed" if failed else "partial")
    warnings = sorted({r["warning"] for r in recs if r and r.get("warning")})
    if warnings:
        merged["warning"] = "; ".join(warnings)
    if failed:
        merged["error"] = failed[0].get("error")
    return merged


def staged_parts(ws: Workspace, unit: str | None = None) -> list[Path]:
    """The staged parts in name order; with `unit`, only those a `PartWriter(unit=unit)` wrote."""
    if not ws.staging_dir.is_dir():
        return []
    return sorted(ws.staging_dir.glob(f"part-{unit}-*.parquet" if unit else "part-*.parquet"))


def commit_staging(ws: Workspace) -> int:
    """Merge staged parts into the table and embeddings; returns the table's row count.

    Two halves: `store_parts` turns the parts' new rows into new shards, then
    `workspace.json` takes the parts' progress and the parts whose sources
    are finished are removed. Safe to repeat after a crash at any point (see
    the module doc).
    """
    parts = staged_parts(ws)
    if not parts:
        return table_rows(ws)
    ensure_current(ws)
    progress = staged_progress(ws)
    store_parts(ws, parts)
    meta = read_meta(ws)
    counts = source_counts(ws)
    for sha, rec in progress.items():
        entry = {k: v for k, v in rec.items() if k not in ("complete", "last_frame", "resume")}
        if not rec.get("complete"):
            if rec.get("status") == "failed" and meta["sources"].get(sha, {}).get("status") == "complete":
                continue
            entry["last_frame"] = rec.get("last_frame", -1)
        entry["faces"] = int(counts.get(sha, 0))
        meta["sources"][sha] = {**meta["sources"].get(sha, {}), **entry}
    meta["rows"] = table_rows(ws)
    write_meta(ws, meta)
    # Partial sources keep their parts until they complete, so resume still knows where they stopped.
    for part in parts:
        if all(progress.get(unit_source(key), {}).get("complete")
               or progress.get(unit_source(key), {}).get("status") == "failed" for key in part_progress(part)):
            part.unlink()
    return meta["rows"]


def source_counts(ws: Workspace) -> dict[str, int]:
    """Rows per source SHA-256."""
    counts: dict[str, int] = {}
    for frame in iter_table(ws, ["source_sha256"], categories=("source_sha256",)):
        for sha, k in frame["source_sha256"].value_counts(sort=False).items():
            counts[sha] = counts.get(sha, 0) + int(k)
    return counts


def store_parts(ws: Workspace, parts: list[Path]) -> int:
    """Append the parts' rows that the table lacks (by face_id, first copy wins) as new shards; returns how many.

    Existing shards are never rewritten. Each new shard's embeddings are
    renamed into place before its rows, so no crash leaves a shard with
    fewer embeddings than rows; a shard is committed when its rows file
    appears, and a repeat finds its face ids known and adds nothing.
    """
    import pyarrow.compute as pc

    ids = [_read_parquet(ws, part, ["face_id"]) for part in parts]
    staged = pa.chunked_array([t.column("face_id").cast(pa.large_string()) for t in ids
                               if "face_id" in t.column_names and t.num_rows], pa.large_string())
    if not len(staged):
        return 0
    # Which staged ids the table already has: look the table's ids up among the staged ones (the smaller set
    # is the one hashed), then the few found among the staged.
    table_ids = _face_ids(ws)
    known = table_ids.filter(pc.is_in(table_ids, value_set=staged.combine_chunks())) if len(table_ids) else None
    keep = ~pd.Series(staged.to_numpy(zero_copy_only=False)).duplicated().to_numpy()
    if known is not None and len(known):
        keep &= ~pc.is_in(staged, value_set=known.combine_chunks()).to_numpy(zero_copy_only=False)
    total = int(keep.sum())
    if not total:
        return 0
    seq = int(shards(ws)[-1].faces.stem) + 1 if format_version(ws) >= 2 and shards(ws) else 0
    pending: list[pa.Table] = []
    at = 0
    for part, t in zip(parts, ids):
        n = t.num_rows
        mask = keep[at:at + n]
        at += n
        if not mask.any():
            continue
        rows = _read_parquet(ws, part, None).filter(pa.array(mask))
        pending.append(rows)
        while sum(p.num_rows for p in pending) >= contract.SHARD_ROWS:
            merged = pa.concat_tables(pending, promote_options="permissive")
            _write_shard(ws, seq, merged.slice(0, contract.SHARD_ROWS))
            seq += 1
            pending = [merged.slice(contract.SHARD_ROWS)] if merged.num_rows > contract.SHARD_ROWS else []
    if pending:
        _write_shard(ws, seq, pa.concat_tables(pending, promote_options="permissive"))
    return total


def _write_shard(ws: Workspace, seq: int, rows: pa.Table, emb: np.ndarray | None = None) -> None:
    if emb is None:
        emb = list_matrix(rows.column("embedding"))
        rows = rows.drop_columns(["embedding"])
    write_npy(ws.embeddings_dir / f"{seq:06d}.npy", emb)  # first: never fewer embeddings than rows
    write_parquet(ws.faces_dir / f"{seq:06d}.parquet", rows)
    meta = read_meta(ws)
    if not (meta.get("embeddings") or {}).get("dim"):
        meta.setdefault("embeddings", {"folder": EMBEDDINGS, "dtype": "float32"})["dim"] = int(emb.shape[1])
        write_meta(ws, meta)


def append_rows(ws: Workspace, rows: pa.Table | pd.DataFrame, emb: np.ndarray) -> int:
    """Add rows (extract's columns) and their embeddings as new shards after the last; returns the row count.

    For tools that make tables without footage (bench/curate.py's synthetic
    tables); extract adds rows through staged parts and `commit_staging`.
    The caller holds the lock and gives new face ids.
    """
    ensure_current(ws)
    if isinstance(rows, pd.DataFrame):
        rows = _arrow_columns(rows)
    if len(emb) != rows.num_rows:
        raise ValueError(f"{rows.num_rows} rows but {len(emb)} embeddings")
    sh = shards(ws)
    seq = int(sh[-1].faces.stem) + 1 if sh else 0
    for k, start in enumerate(range(0, rows.num_rows, contract.SHARD_ROWS)):
        _write_shard(ws, seq + k, rows.slice(start, contract.SHARD_ROWS), np.asarray(emb[start:start + contract.SHARD_ROWS]))
    meta = read_meta(ws)
    meta["rows"] = table_rows(ws)
    write_meta(ws, meta)
    return meta["rows"]


def staged_rows(ws: Workspace, sha: str, frame: int, key: str | None = None) -> list[dict]:
    """Box and pose of the faces of `frame` of source `sha`, from the table and from the parts of unit `key` not
    merged yet (a unit run again after its worker was lost finds its own rows there)."""
    columns = ["face_id", "source_sha256", "frame", "bbox", "yaw", "pitch"]
    tables = [read_table(ws, columns=columns)]
    if key:
        tables += [pq.read_table(p, columns=columns).to_pandas() for p in staged_parts(ws, key)
                   if "frame" in pq.read_schema(p).names]
    tables = [t for t in tables if len(t)]
    if not tables:
        return []
    t = pd.concat(tables, ignore_index=True)
    rows = t[(t["source_sha256"] == sha) & (t["frame"] == frame)]
    return rows.drop_duplicates("face_id").sort_values("face_id").to_dict("records")


def staged_crops(ws: Workspace) -> set[str]:
    """Crops referenced by staged parts (a partial source keeps its parts until it completes)."""
    out: set[str] = set()
    for part in staged_parts(ws):
        if "crop_path" in pq.read_schema(part).names:
            out.update(pq.read_table(part, columns=["crop_path"]).column("crop_path").to_pylist())
    return out
