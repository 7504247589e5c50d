"""The synthetic-media label every output of `curator convert` carries.

A converted video must never pass for the original footage, so the label is
in three places: a visible mark in the corner of every frame (unless turned
off), the container's metadata, and a JSON record beside the output
(`OUT.synthetic.json`) that says which input, model run, identities and
settings made it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from .. import __version__, media
from .swapper import Swapper, SwapSettings

MARK_TEXT = "SYNTHETIC: face swapped"
SIDECAR_SUFFIX = ".synthetic.json"


def visible_mark(frame: np.ndarray, text: str = MARK_TEXT) -> np.ndarray:
    """`frame` with a white-on-black label in its bottom-right corner, sized to the frame."""
    h, w = frame.shape[:2]
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(min(h, w) / 400))
    (tw, th), base = cv2.getTextSize(text, font, 1.0, thick)
    # About 3% of the frame's height tall, at most 60% of its width.
    scale = max(0.3, min(0.03 * h / th, 0.6 * w / tw))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    pad = max(2, int(0.3 * th))
    x1, y1 = w - pad, h - pad
    x0, y0 = max(0, x1 - tw - 2 * pad), max(0, y1 - th - base - 2 * pad)
    out = frame.copy()
    out[y0:y1, x0:x1] = (out[y0:y1, x0:x1] * 0.25).astype(np.uint8)
    cv2.putText(out, text, (x0 + pad, y1 - pad - base), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + SIDECAR_SUFFIX)


def read_sidecar(path: Path) -> dict | None:
    """A synthetic-media record curator wrote (`synthetic: true`, `tool: curator`), or None for anything else."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("synthetic") is True and record.get("tool") == "curator" else None


def is_labelled_output(video: Path) -> bool:
    """True when `video` is an earlier `curator convert` output: its sidecar records exactly this file's SHA-256."""
    record = read_sidecar(sidecar_path(video))
    return bool(record) and (record.get("output") or {}).get("sha256") == media.sha256_file(video)


def label_record(sw: Swapper, identity: dict, video: Path, video_sha: str, info: media.VideoInfo,
                 settings: SwapSettings, started: str) -> dict:
    """The part of the synthetic-media record every output shares; every field of `settings` is recorded."""
    r = sw.run
    return {
        "synthetic": True,
        "statement": "Faces in this media were replaced by a face-swap model (curator convert); "
                     "it does not show what the original footage showed.",
        "tool": "curator", "tool_version": __version__, "created": started,
        "input": {"path": str(video), "sha256": video_sha, "width": info.width, "height": info.height,
                  "fps": round(info.fps, 6)},
        "model": {"run": str(r.path), "run_id": r.run_id, "step": r.step, "weights_sha256": r.weights_sha256,
                  "direction": settings.direction, "resolution": int(r.config["resolution"]),
                  "device": str(r.device)},
        "identity": identity,
        "face_models": {"pack": sw.fm.pack, "files": sw.fm.files},
        "settings": asdict(settings),
    }


def container_metadata(label: dict, sidecar_name: str) -> dict:
    line = (f"SYNTHETIC: faces replaced by curator convert {__version__} with model run {label['model']['run_id']} "
            f"({label['identity']['replaced']} -> {label['identity']['drawn']}); details in {sidecar_name}")
    return {"comment": line, "description": line, "synthetic": "faces replaced (curator convert)",
            "curator_run_id": label["model"]["run_id"]}
