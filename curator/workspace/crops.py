"""Face ids, crop files and source fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..fs.hash import sha256_file
from .meta import CROPS, Workspace


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


