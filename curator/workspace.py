"""The workspace: a folder that every stage reads and writes.

This module owns the workspace format; no other module reads or writes the
files below except through it. Layout (the contract is docs/workspace.md):

    WS/workspace.json     format version, models, settings, sources, consent
    WS/faces.parquet      one row per face
    WS/embeddings.npy     float32 [rows, dim]; row i belongs to table row i
    WS/crops/             aligned face crops, paths in the `crop_path` column
    WS/staging/           extract's checkpoints not yet merged into the table (per unit of work)
    WS/.lock              held by the one command that may write

Invariants that make crashes harmless:
- the table and the embeddings are only replaced by atomic renames;
- stages add or change columns but never reorder or drop rows, so the
  embeddings file only grows by appending and `embeddings[:len(table)]` is
  always the table's embeddings, even if a crash fell between the two renames;
- extract's staged parts carry deterministic face ids, so merging them twice
  adds nothing the second time.

Sections: the workspace and its metadata; the write lock; table and
embeddings; face ids and crops; staging (checkpoints, resume state, commit).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .atomic import atomic_path, write_json
from .errors import CuratorError
from .media import sha256_file

FORMAT_NAME = "curator-workspace"
FORMAT_VERSION = 1

META = "workspace.json"
TABLE = "faces.parquet"
EMBEDDINGS = "embeddings.npy"
CROPS = "crops"
STAGING = "staging"
LOCK = ".lock"


class WorkspaceError(CuratorError):
    """A workspace problem the user can act on; the message says what and where."""


class WorkspaceLocked(WorkspaceError):
    pass


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def meta_path(self) -> Path:
        return self.root / META

    @property
    def table_path(self) -> Path:
        return self.root / TABLE

    @property
    def embeddings_path(self) -> Path:
        return self.root / EMBEDDINGS

    @property
    def crops_dir(self) -> Path:
        return self.root / CROPS

    @property
    def staging_dir(self) -> Path:
        return self.root / STAGING

    def exists(self) -> bool:
        return self.meta_path.is_file()


def new_meta() -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "created": now(),
        "updated": now(),
        "models": None,
        "settings": {},
        "consent": [],
        "sources": {},
        "rows": 0,
        "embeddings": {"file": EMBEDDINGS, "dim": None, "dtype": "float32"},
    }


def open_workspace(path: str | os.PathLike, *, create: bool = False) -> Workspace:
    """Open (or with `create`, make) a workspace; refuse one this version cannot read."""
    ws = Workspace(Path(path).expanduser().resolve())
    if ws.exists():
        read_meta(ws)  # validates the version
        return ws
    if ws.root.is_dir() and any(ws.root.iterdir()):
        # Never make a workspace of a folder that holds other things (footage, an export): its files would mix.
        raise WorkspaceError(f"{ws.root} is not a curator workspace (no {META})"
                             + ("; give a new or empty folder for one" if create else ""))
    if not create:
        raise WorkspaceError(f"no workspace at {ws.root}: run `curator extract FOOTAGE --workspace {path}` first")
    try:
        ws.root.mkdir(parents=True, exist_ok=True)
        write_json(ws.meta_path, new_meta())
    except OSError as e:
        raise WorkspaceError(f"cannot create workspace at {ws.root}: {e.strerror or e}") from e
    return ws


def read_meta(ws: Workspace) -> dict:
    try:
        meta = json.loads(ws.meta_path.read_text())
    except FileNotFoundError:
        raise WorkspaceError(f"no workspace at {ws.root} ({META} missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorkspaceError(f"{ws.meta_path} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT_NAME:
        raise WorkspaceError(f"{ws.meta_path} is not a curator workspace file")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WorkspaceError(
            f"{ws.root} was written by a newer curator (workspace format {version}, "
            f"this curator {__version__} reads up to {FORMAT_VERSION}); upgrade curator"
        )
    return meta


def write_meta(ws: Workspace, meta: dict) -> None:
    meta["updated"] = now()
    meta["tool_version"] = __version__
    write_json(ws.meta_path, meta)


def inputs_of(ws: Workspace) -> dict[Path, str]:
    """What no output may be or contain ({path: what it is}): the workspace, its footage and its model pack."""
    meta = read_meta(ws)
    keep = {ws.root: f"the workspace {ws.root}"}
    keep.update({Path(rec["path"]): "input footage of the workspace" for rec in meta.get("sources", {}).values()
                 if rec.get("path")})
    pack = (meta.get("models") or {}).get("path")
    if pack:
        keep[Path(pack)] = "the workspace's model pack"
    return keep


# --- the lock -----------------------------------------------------------------

@contextmanager
def locked(ws: Workspace, command: str) -> Iterator[None]:
    """Hold the workspace's write lock, or refuse naming who holds it.

    flock is released by the kernel when the holder dies (even by kill -9), so
    a crashed run never leaves a stale lock behind.
    """
    ws.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(ws.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise WorkspaceLocked(
                f"workspace {ws.root} is in use by `{holder.get('command', '?')}` "
                f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}); "
                "wait for it to finish"
            ) from None
        info = json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(), "since": now()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}


# --- table and embeddings -----------------------------------------------------

def read_table(ws: Workspace, columns: list[str] | None = None) -> pd.DataFrame:
    if not ws.table_path.exists():
        return pd.DataFrame()
    try:
        return pq.read_table(ws.table_path, columns=columns).to_pandas()
    except (pa.ArrowException, OSError) as e:
        raise WorkspaceError(f"{ws.table_path} cannot be read: {e}") from None


def read_embeddings(ws: Workspace, rows: int | None = None) -> np.ndarray:
    """The embeddings of the table's rows (memory-mapped, read-only)."""
    if rows is None:
        rows = len(read_table(ws, columns=["face_id"]))
    if rows == 0:
        dim = (read_meta(ws).get("embeddings") or {}).get("dim") or 0
        return np.zeros((0, dim), np.float32)
    try:
        emb = np.load(ws.embeddings_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise WorkspaceError(f"{ws.embeddings_path} cannot be read: {e}") from None
    if emb.ndim != 2 or emb.shape[0] < rows:
        raise WorkspaceError(
            f"{ws.embeddings_path} holds {emb.shape[0] if emb.ndim else 0} rows but the table has {rows}; "
            "run `curator verify --repair`"
        )
    return emb[:rows]


def write_table(ws: Workspace, table: pd.DataFrame) -> None:
    """Replace the table atomically. Callers must keep row order and count (see module doc)."""
    with atomic_path(ws.table_path) as tmp:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp, compression="zstd")


def write_embeddings(ws: Workspace, emb: np.ndarray) -> None:
    with atomic_path(ws.embeddings_path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(emb, dtype=np.float32), allow_pickle=False)


def update_columns(ws: Workspace, columns: pd.DataFrame) -> pd.DataFrame:
    """Set (add or overwrite) columns on the table, row-aligned by face_id; returns the new table."""
    table = read_table(ws)
    if "face_id" not in columns:
        raise ValueError("columns must carry face_id")
    if len(columns) != len(table) or not (columns["face_id"].to_numpy() == table["face_id"].to_numpy()).all():
        raise WorkspaceError("table changed while the command ran; re-run it")
    for name in columns.columns:
        if name != "face_id":
            table[name] = columns[name].to_numpy()
    write_table(ws, table)
    meta = read_meta(ws)
    write_meta(ws, meta)
    return table


# --- face ids, crops and sources ----------------------------------------------

def face_id(sha: str, frame: int, k: int) -> str:
    """Deterministic id of face `k` (left to right) of `frame` of the source with SHA-256 `sha` (invariant 3)."""
    return f"{sha[:12]}_{int(frame):07d}_{int(k):02d}"


def crop_path(sha: str, frame: int, k: int) -> str:
    """Where that face's aligned crop lives, relative to the workspace."""
    return f"{CROPS}/{sha[:12]}/{int(frame):07d}_{int(k):02d}.jpg"


def write_crop(ws: Workspace, relative: str, crop: np.ndarray, quality: int) -> None:
    """Write an aligned crop as JPEG at `relative` (from `crop_path`)."""
    path = ws.root / relative
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"could not encode crop {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    # No fsync per crop (thousands per minute); the staged part that references
    # them is fsynced, and `curator verify` finds crops lost to a power cut.
    os.replace(tmp, path)


def source_sha256(meta: dict, path: Path) -> tuple[str, os.stat_result]:
    """SHA-256 of a source file, reusing the one `meta` records when path, size and mtime are unchanged."""
    st = path.stat()
    for sha, rec in meta["sources"].items():
        if rec.get("path") == str(path) and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
            return sha, st
    return sha256_file(path), st


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
        numbered = [int(p.stem[5:]) for p in ws.staging_dir.glob("part-*.parquet") if p.stem[5:].isdigit()]
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
    pattern = f"part-{key}-*.parquet" if key else "part-*.parquet"
    merged: dict[str, dict] = {}
    for part in sorted(ws.staging_dir.glob(pattern)):
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


def commit_staging(ws: Workspace) -> int:
    """Merge staged parts into the table and embeddings; returns the table's row count.

    Safe to repeat after a crash at any point (see workspace module doc).
    """
    parts = sorted(ws.staging_dir.glob("part-*.parquet")) if ws.staging_dir.is_dir() else []
    table = read_table(ws)
    if not parts:
        return len(table)
    emb = read_embeddings(ws, len(table)) if len(table) else None
    known = set(table["face_id"]) if len(table) else set()
    new_frames, new_embs = [], []
    for part in parts:
        df = pq.read_table(part).to_pandas()
        if not len(df):
            continue
        df = df[~df["face_id"].isin(known)].drop_duplicates("face_id")
        known.update(df["face_id"])
        if len(df):
            new_embs.append(np.stack(df.pop("embedding").to_numpy()).astype(np.float32))
            new_frames.append(df)
    meta = read_meta(ws)
    progress = staged_progress(ws)
    if new_frames:
        added = pd.concat(new_frames, ignore_index=True)
        merged = pd.concat([table, added], ignore_index=True) if len(table) else added
        all_emb = np.concatenate(([np.asarray(emb)] if emb is not None else []) + new_embs)
        # Embeddings first: a crash between the two renames leaves extra
        # trailing embedding rows, which readers ignore (module doc of workspace).
        write_embeddings(ws, all_emb)
        write_table(ws, merged)
        table = merged
        meta["embeddings"]["dim"] = int(all_emb.shape[1])
    counts = table.groupby("source_sha256").size().to_dict() if len(table) else {}
    for sha, rec in progress.items():
        entry = {k: v for k, v in rec.items() if k not in ("complete", "last_frame", "resume")}
        if not rec.get("complete"):
            if rec.get("status") == "failed" and meta["sources"].get(sha, {}).get("status") == "complete":
                continue
            entry["last_frame"] = rec.get("last_frame", -1)
        entry["faces"] = int(counts.get(sha, 0))
        meta["sources"][sha] = {**meta["sources"].get(sha, {}), **entry}
    meta["rows"] = len(table)
    write_meta(ws, meta)
    # Partial sources keep their parts until they complete, so resume still knows where they stopped.
    for part in parts:
        if all(progress.get(unit_source(key), {}).get("complete")
               or progress.get(unit_source(key), {}).get("status") == "failed" for key in part_progress(part)):
            part.unlink()
    return len(table)


def staged_rows(ws: Workspace, sha: str, frame: int, key: str | None = None) -> list[dict]:
    """Box and pose of the faces of `frame` of source `sha`, from the table and from the parts of unit `key` not
    merged yet (a unit run again after its worker was lost finds its own rows there)."""
    columns = ["face_id", "source_sha256", "frame", "bbox", "yaw", "pitch"]
    tables = [read_table(ws, columns=columns)]
    if key and ws.staging_dir.is_dir():
        parts = sorted(ws.staging_dir.glob(f"part-{key}-*.parquet"))
        tables += [pq.read_table(p, columns=columns).to_pandas() for p in parts if "frame" in pq.read_schema(p).names]
    tables = [t for t in tables if len(t)]
    if not tables:
        return []
    t = pd.concat(tables, ignore_index=True)
    rows = t[(t["source_sha256"] == sha) & (t["frame"] == frame)]
    return rows.drop_duplicates("face_id").sort_values("face_id").to_dict("records")


def staged_crops(ws: Workspace) -> set[str]:
    """Crops referenced by staged parts (a partial source keeps its parts until it completes)."""
    out: set[str] = set()
    if ws.staging_dir.is_dir():
        for part in ws.staging_dir.glob("part-*.parquet"):
            if "crop_path" in pq.read_schema(part).names:
                out.update(pq.read_table(part, columns=["crop_path"]).column("crop_path").to_pylist())
    return out
