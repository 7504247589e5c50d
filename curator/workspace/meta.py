"""The workspace folder, its names and its metadata (workspace.json): the format's contract in constants."""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import CuratorError
from ..fs.atomic import write_json



FORMAT_NAME = "curator-workspace"
FORMAT_VERSION = 2

META = "workspace.json"
FACES = "faces"            # faces/<shard>.parquet
EMBEDDINGS = "embeddings"  # embeddings/<shard>.npy
COLUMNS = "columns"        # columns/<group>.parquet
CROPS = "crops"
STAGING = "staging"
LOCK = ".lock"
LEGACY_TABLE = "faces.parquet"      # format 1
LEGACY_EMBEDDINGS = "embeddings.npy"  # format 1

# Rows per shard: a shard's rows with every column (about 2 KB a face, most of it landmark and appearance
# vectors) stay a few hundred MB in memory, so a commit or a stage reading one shard at a time is bounded.
SHARD_ROWS = 100_000
# Which column group a column written after extract lives in. Each group is one file, replaced whole by
# the stage that writes it; columns not listed go to "other".
COLUMN_GROUPS = {
    "identify": ("identity_cluster", "identity_score", "track_id", "is_target"),
    "curate": ("quality", "dup_group", "pose_cluster", "expr_cluster", "light_cluster", "selected", "reason",
               "for_target", "target_faces"),
    "review": ("rejected", "kept", "review_tags"),
    "verify": ("crop_missing",),
}
GROUP_OF = {c: g for g, cols in COLUMN_GROUPS.items() for c in cols}
OTHER_GROUP = "other"


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
    def faces_dir(self) -> Path:
        return self.root / FACES

    @property
    def embeddings_dir(self) -> Path:
        return self.root / EMBEDDINGS

    @property
    def columns_dir(self) -> Path:
        return self.root / COLUMNS

    @property
    def legacy_table_path(self) -> Path:
        return self.root / LEGACY_TABLE

    @property
    def legacy_embeddings_path(self) -> Path:
        return self.root / LEGACY_EMBEDDINGS

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
        "embeddings": {"folder": EMBEDDINGS, "dim": None, "dtype": "float32"},
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


# The table's columns as FiftyOne fields (export --format fiftyone and review use the same names): a column whose
# name FiftyOne reserves, or that starts with '_', gets a curator_ prefix.
FIFTYONE_RESERVED = {"id", "_id", "filepath", "tags", "metadata", "media_type", "created_at", "last_modified_at",
                     "embedding", "landmarks", "frames"}


def fiftyone_field_name(column: str) -> str:
    return f"curator_{column}" if column in FIFTYONE_RESERVED or column.startswith("_") else column
