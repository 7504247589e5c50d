"""`curator identify` / `curator identities`: which faces are the target person.

Two ways to name the target:
- reference photos (`--ref`): a face's score is its best cosine similarity to
  any reference embedding;
- no references: embeddings are clustered and the largest cluster (or the one
  chosen with `--cluster K` after looking at `curator identities`) is the
  target; a face's score is its similarity to that cluster's centre.

Faces are first linked into short *tracks* (the same box position in
consecutive analysed frames of one video), and a track is the target when its
typical member is. Profiles and blurred frames embed poorly on their own, but
they sit in a track whose frontal frames identify it; this keeps the rare poses
a training set needs without admitting other people.

Thresholds (the same-person one and the track link) are cosine similarities
between L2-normalised embeddings, per recogniser: `curator.recognisers` has
the table and where each number comes from. Everything here works on a face
table and its embeddings and writes nothing; `curator.api.identify` reads
the workspace, holds its lock, passes its recogniser's numbers and writes
the columns back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .models import faces
from .models.faces import REF_DET_THRESH, ReferencePhotoError, reference_embeddings  # noqa: F401
from .fs.atomic import atomic_path
from .errors import CuratorError
from .models.recognisers import DEFAULT
from .workspace import Workspace, WorkspaceError, read_crop

# The columns identify reads (`curator.api.identify` reads only these, not the wide landmark columns).
COLUMNS = ["face_id", "source_sha256", "source_kind", "frame", "face_index", "time_s", "bbox"]
CLUSTER_SAMPLE = 4000  # agglomerative clustering is O(n^2); the rest are assigned to centres


class IdentityError(CuratorError):
    pass


def link_tracks(table: pd.DataFrame, emb: np.ndarray, min_iou: float = 0.3, min_sim: float = DEFAULT.track_link,
                max_gap_s: float = 2.0) -> np.ndarray:
    """Track ids: a face continues the track of the best-overlapping face in the previous analysed frame.

    Two guards keep a track to one person: the previous frame must be at most
    `max_gap_s` earlier, and the two faces' embeddings must be at least
    `min_sim` alike (the recogniser's `track_link`, curator.recognisers).
    Talking heads sit in the same place on screen across cuts; without the
    guards a track chained one interview into the next person's
    (bench/curate.py found 5 of 30 tracks mixing people).
    """
    track = np.full(len(table), -1, np.int64)
    next_id = 0
    order = table.sort_values(["source_sha256", "frame", "face_index"], kind="stable")
    prev = None  # (sha, time, boxes, ids, rows)
    for (sha, _frame), group in order.groupby(["source_sha256", "frame"], sort=False):
        rows = table.index.get_indexer(group.index)
        boxes = np.stack(group["bbox"].to_numpy()).astype(np.float64)
        t_now = float(group["time_s"].iloc[0])
        ids = np.full(len(group), -1, np.int64)
        if (prev is not None and prev[0] == sha and group["source_kind"].iloc[0] == "video"
                and t_now - prev[1] <= max_gap_s):
            iou = faces.box_iou(boxes, prev[2])
            iou = np.where(np.asarray(emb[rows]) @ np.asarray(emb[prev[4]]).T >= min_sim, iou, 0.0)
            # Greedy one-to-one matching, best overlaps first: crossing people do not swap tracks.
            for flat in np.argsort(-iou, axis=None):
                i, j = np.unravel_index(flat, iou.shape)
                if iou[i, j] < min_iou:
                    break
                if ids[i] < 0 and prev[3][j] not in ids:
                    ids[i] = prev[3][j]
        for i in range(len(ids)):
            if ids[i] < 0:
                ids[i] = next_id
                next_id += 1
        track[rows] = ids
        prev = (sha, t_now, boxes, ids, rows)
    return track


def cluster_embeddings(emb: np.ndarray, threshold: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Identity clusters: (labels [n], centres [k, dim]); label -1 for faces near no centre.

    Average-linkage agglomerative clustering on cosine distance, cut at
    1 - threshold, on at most CLUSTER_SAMPLE faces; every face is then assigned
    to its most similar centre, so the cost stays linear in the number of faces.
    Clusters are numbered by size, largest first.
    """
    from sklearn.cluster import AgglomerativeClustering

    n = len(emb)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, emb.shape[1] if emb.ndim == 2 else 0), np.float32)
    if n == 1:
        return np.zeros(1, np.int64), np.asarray(emb, np.float32)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, CLUSTER_SAMPLE, replace=False)) if n > CLUSTER_SAMPLE else np.arange(n)
    sampled = np.asarray(emb[sample])  # once: emb may be a memory map
    labels = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                     distance_threshold=1.0 - threshold).fit_predict(sampled)
    centres = np.stack([sampled[labels == k].mean(0) for k in range(labels.max() + 1)])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    assigned, score = assign(emb, centres, threshold)
    sizes = np.bincount(assigned[assigned >= 0], minlength=len(centres))
    keep = np.argsort(-sizes, kind="stable")
    keep = keep[sizes[keep] > 0]
    remap = np.full(len(centres), -1)
    remap[keep] = np.arange(len(keep))
    return np.where(assigned >= 0, remap[np.maximum(assigned, 0)], -1), centres[keep]


def assign(emb: np.ndarray, centres: np.ndarray, threshold: float, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    labels = np.empty(len(emb), np.int64)
    best = np.empty(len(emb), np.float32)
    for start in range(0, len(emb), chunk):
        sims = np.asarray(emb[start:start + chunk], np.float32) @ centres.T
        labels[start:start + chunk] = sims.argmax(1)
        best[start:start + chunk] = sims.max(1)
    return np.where(best >= threshold, labels, -1), best


def identity_clusters(table: pd.DataFrame, emb: np.ndarray, threshold: float,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(labels, centres, listing): `cluster_embeddings` plus each cluster's face and source counts, largest first."""
    labels, centres = cluster_embeddings(emb, threshold, seed)
    listing = [{"cluster": int(k), "faces": int((labels == k).sum()),
                "sources": int(table.loc[labels == k, "source_sha256"].nunique())} for k in range(len(centres))]
    return labels, centres, listing


@dataclass
class IdentifyResult:
    table: pd.DataFrame  # face_id, identity_cluster, identity_score, is_target, track_id
    method: str
    threshold: float
    target_cluster: int | None
    clusters: list[dict]

    def summary(self) -> dict:
        return {"method": self.method, "threshold": self.threshold, "target_cluster": self.target_cluster,
                "faces": len(self.table), "target_faces": int(self.table["is_target"].sum()),
                "clusters": self.clusters[:20]}


def identify(table: pd.DataFrame, emb: np.ndarray, *, threshold: float, refs: np.ndarray | None = None,
             cluster: int | None = None, seed: int = 0, track_link: float = DEFAULT.track_link) -> IdentifyResult:
    """Score every face of `table` (embeddings `emb`, row-aligned) against the target; pure, writes nothing.

    The target is the reference embeddings `refs` (one per photo), or else
    identity cluster `cluster` (default: the largest). `threshold` and
    `track_link` are the recogniser's (curator.recognisers).
    """
    if not len(table):
        raise WorkspaceError("the workspace has no faces yet; run `curator extract` first")
    labels, centres, clusters = identity_clusters(table, emb, threshold, seed)
    if refs is not None:
        score = np.asarray(emb @ refs.T).max(1)
        method, target = "reference", None
    else:
        if not len(centres):
            raise IdentityError("no identity clusters found")
        target = 0 if cluster is None else cluster
        if not 0 <= target < len(centres):
            raise IdentityError(f"no cluster {target}; `curator identities` lists clusters 0..{len(centres) - 1}")
        score = np.asarray(emb @ centres[target])
        method = "largest-cluster" if cluster is None else "cluster"
    tracks = link_tracks(table, emb, min_sim=track_link)
    track_score = pd.Series(score).groupby(tracks).transform(lambda s: np.percentile(s, 75)).to_numpy()
    is_target = track_score >= threshold
    out = pd.DataFrame({"face_id": table["face_id"], "identity_cluster": labels, "identity_score": score.astype(np.float32),
                        "track_id": tracks, "is_target": is_target})
    return IdentifyResult(out, method, float(threshold), target, clusters)


def contact_sheet(ws: Workspace, crop_paths: list[str], out: Path, tile: int = 128, cols: int = 6) -> Path:
    """A grid image of up to cols*cols of the workspace's crops, for a person to recognise a cluster at a glance."""
    tiles = []
    for rel in crop_paths[: cols * cols]:
        img = read_crop(ws, rel)
        tiles.append(cv2.resize(img, (tile, tile)) if img is not None else np.zeros((tile, tile, 3), np.uint8))
    while len(tiles) % cols:
        tiles.append(np.zeros((tile, tile, 3), np.uint8))
    rows = [np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)]
    with atomic_path(out) as tmp:
        cv2.imwrite(str(tmp), np.vstack(rows))
    return out


def sheet_members(crop_paths: pd.Series, labels: np.ndarray, cluster: int, count: int = 36) -> list[str]:
    """Up to `count` crops of one cluster, evenly spaced in extraction order (not just its first frames)."""
    members = crop_paths[labels == cluster]
    return list(members.iloc[np.linspace(0, len(members) - 1, min(count, len(members))).astype(int)])
