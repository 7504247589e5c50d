"""One frame's faces: detect, align, describe and crop every face; back-fill between frames where a pose jumped."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..measure import descriptors, pose, states
from ..models import faces
from ..models.faces import FaceModels
from ..workspace import Workspace
from .settings import ExtractSettings
from ..measure.align import DEFAULT_MARGIN, align_matrix, warp
from ..measure.metrics import POSE_BIN
from ..workspace import crop_path, face_id, write_crop


def backfill(a_rows: list[dict], b_rows: list[dict], between: list, analyse, bins: int) -> list[tuple[list, np.ndarray]]:
    """Analyse frames between two analysed frames where a face's pose jumped `bins` or more 10-degree bins.

    Bisection: the middle frame is analysed, then each half is checked the
    same way, so a fast head turn is sampled about every bin while a still
    head costs nothing. Faces are matched by box overlap (IoU > 0.2).
    Returns (rows, embeddings) per analysed frame.
    """
    if not between or not a_rows or not b_rows or not _pose_jump(a_rows, b_rows, bins):
        return []
    mid = len(between) // 2
    pf = between[mid]
    rows, emb = analyse(pf.index, pf.time_s, pf.image())
    return (backfill(a_rows, rows, between[:mid], analyse, bins) + [(rows, emb)]
            + backfill(rows, b_rows, between[mid + 1:], analyse, bins))


def _pose_jump(a_rows: list[dict], b_rows: list[dict], bins: int) -> bool:
    overlap = faces.box_iou([r["bbox"] for r in b_rows], [r["bbox"] for r in a_rows])
    for r, iou in zip(b_rows, overlap):
        j = int(np.argmax(iou))
        if iou[j] > 0.2:
            a = a_rows[j]
            dy = abs(np.floor(r["yaw"] / POSE_BIN) - np.floor(a["yaw"] / POSE_BIN))
            dp = abs(np.floor(r["pitch"] / POSE_BIN) - np.floor(a["pitch"] / POSE_BIN))
            if max(dy, dp) >= bins:
                return True
    return False


def frame_of(part: tuple[list, np.ndarray]) -> int:
    return part[0][0]["frame"] if part[0] else -1


@dataclass(frozen=True)
class Source:
    """What every face of one source shares: the models, where it comes from, the settings, where crops go."""

    fm: FaceModels
    sha: str     # the source's SHA-256: its faces' ids and crop paths start with it
    path: str    # the `source` column
    kind: str    # "video" or "image"
    settings: ExtractSettings
    ws: Workspace
    times: StageTimes = field(default_factory=lambda: StageTimes())


def analyse_frame(src: Source, image, frame: int, time_s: float, sampled: str = "due") -> tuple[list[dict], np.ndarray]:
    """Detect, align, crop and describe every face in one frame; crops are written to the workspace."""
    return analyse_frames(src, [(image, frame, time_s, sampled)])[0]


def analyse_frames(src: Source, frames: list[tuple]) -> list[tuple[list[dict], np.ndarray]]:
    """`analyse_frame` for frames of one size, given as (image, frame index, time_s, sampled): the detector runs
    once for all of them, the recogniser and the landmark model once for all their faces."""
    fm, settings, times = src.fm, src.settings, src.times
    with times("detect"):
        found = faces.detect_batch(fm, [f[0] for f in frames], settings.det_size)
    at = [(i, k) for i, (boxes, _) in enumerate(found) for k in range(len(boxes))]
    with times("embed"):
        emb = faces.embed_batch(fm, [(frames[i][0], found[i][1][k]) for i, k in at])
    with times("landmarks"):
        dense = faces.landmarks_batch(fm, [(frames[i][0], found[i][0][k], found[i][1][k]) for i, k in at])
    rows: list[list[dict]] = [[] for _ in frames]
    for (i, k), lmk in zip(at, dense):
        image, frame, time_s, sampled = frames[i]
        rows[i].append(face_row(src, image, frame, time_s, sampled, found[i][0][k], found[i][1][k], k, lmk))
    out, start = [], 0
    for i in range(len(frames)):
        out.append((rows[i], emb[start:start + len(rows[i])]))
        start += len(rows[i])
    return out


def face_row(src: Source, image, frame: int, time_s: float, sampled: str, box, kps, k: int, dense: dict) -> dict:
    """One face's table row (face `k` of the frame, detector `box` and `kps`, the landmark models' `dense` output);
    its aligned crop is written to the workspace."""
    sha, settings, times = src.sha, src.settings, src.times
    h, w = image.shape[:2]
    face_box = settings.size / (1.0 + 2.0 * settings.margin)  # template face box side in crop px
    with times("describe"):
        m_crop = align_matrix(kps, settings.size, settings.margin)
        m_analysis = align_matrix(kps, descriptors.ANALYSIS_SIZE, DEFAULT_MARGIN)
        lmk68 = dense.get("lmk68")
        desc = descriptors.describe(image, kps, m_analysis, lmk68)
        desc.update(states.describe_states(image, kps, m_analysis, lmk68))
        if "pose_pyr" in dense:
            yaw, pitch, roll = pose.pose_from_insightface(dense["pose_pyr"])
            pose_method = "landmark_3d68"
        else:
            yaw, pitch, roll = pose.estimate_pose_kps5(kps, (h, w))
            pose_method = "kps5_pnp"
    crop_rel = crop_path(sha, frame, k)
    with times("write"):
        write_crop(src.ws, crop_rel, warp(image, m_crop, settings.size), settings.jpeg_quality)
    scale = float(np.hypot(m_crop[0, 0], m_crop[0, 1]))
    return {
        "face_id": face_id(sha, frame, k),
        "source": src.path,
        "source_sha256": sha,
        "source_kind": src.kind,
        "frame": int(frame),
        "time_s": round(float(time_s), 4),
        "sampled": sampled,
        "face_index": k,
        "frame_w": w,
        "frame_h": h,
        "bbox": [float(v) for v in box[:4]],
        "kps": [float(v) for v in kps.reshape(-1)],
        "det_score": float(box[4]),
        "face_px": round(face_box / scale, 2),
        "yaw": float(yaw),
        "pitch": float(pitch),
        "roll": float(roll),
        "pose_method": pose_method,
        **desc,
        "lmk68": None if lmk68 is None else [float(v) for v in np.asarray(lmk68)[:, :2].reshape(-1)],
        "align_matrix": [float(v) for v in m_crop.reshape(-1)],
        "crop_size": settings.size,
        "crop_path": crop_rel,
    }


class StageTimes:
    """Seconds spent per stage, summed over threads: `with times("detect"): ...`; `as_dict()` for the summary.

    Stages run in several threads at once add up to more than the wall time;
    their shares still show which stage a run waits on.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in sorted(self.seconds.items())}
