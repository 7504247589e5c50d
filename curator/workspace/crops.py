"""Face ids, crop files and source fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..fs.hash import sha256_file
from ..fs.atomic import inside
from .meta import CROPS, META, Workspace


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


# --- reading crops and the workspace's derived files ------------------------------
# Every other package finds a crop, a contact sheet or a report's default place through these, so the
# layout stays this package's to change.

IDENTITIES = "identities"  # contact sheets of identity clusters (`curator identities`)


def crop_file(ws: Workspace, relative: str) -> Path:
    """The file a row's `crop_path` names; ValueError when it points outside the workspace (an edited table)."""
    return inside(ws.root, relative)


def read_crop(ws: Workspace, relative) -> np.ndarray | None:
    """A crop as BGR, or None when the row has no crop path or its file is missing, unreadable or outside."""
    if not isinstance(relative, str) or not relative:
        return None
    try:
        return cv2.imread(str(crop_file(ws, relative)), cv2.IMREAD_COLOR)
    except ValueError:
        return None


def identity_sheet(ws: Workspace, cluster: int) -> Path:
    """Where the contact sheet of identity cluster `cluster` goes."""
    return ws.root / IDENTITIES / f"cluster_{cluster:03d}.jpg"


def report_path(ws: Workspace, name: str) -> Path:
    """A report's default place: beside the table, named `name` (audit.html, compare.html)."""
    return ws.root / name


def is_workspace(path: str | os.PathLike) -> bool:
    """Whether `path` is a curator workspace folder (it has workspace.json)."""
    return (Path(path) / META).is_file()

