"""The ways other tools choose a training set, re-implemented from their sources for bench/thesis.py.

Every function takes arrays over the candidate faces (one row per face, in
time order where it matters) and returns row indices into them. The feature
functions compute what each tool computes from its own crops; the selection
functions follow the tools' code, named at each function. No code is copied
from those projects (DeepFaceLab and faceswap are GPL-3.0): the steps are
written again from reading them.

- DeepFaceLab `sort_best` (iperov/DeepFaceLab, mainscripts/Sorter.py,
  `sort_best` and `FinalLoaderSubprocessor`, commit 46fc239 of 2023-04-27):
  yaw and pitch from 68 landmarks by solvePnP
  (facelib/LandmarksProcessor.py `estimate_pitch_yaw_roll`), sharpness as
  CPBD of the grey crop inside the landmarks' hull
  (core/imagelib/estimate_sharpness.py), grey histogram of the whole crop.
- faceswap's sort tool (deepfakes/faceswap, tools/sort/sort_methods.py:
  `SortFace`, `SortBlur.estimate_blur`, `SortHistogram.binning`).
- uniform in time and random.
FiftyOne Brain's `find_unique` runs in bench/thesis.py (it needs a FiftyOne
dataset); its image embedding is `image_embeddings` here.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# --- uniform, random ---------------------------------------------------------------

def pick_uniform(n_faces: int, n: int) -> np.ndarray:
    """Every (n_faces / n)-th face of a time-ordered list, centred in its stretch."""
    if n >= n_faces:
        return np.arange(n_faces)
    return np.floor((np.arange(n) + 0.5) * n_faces / n).astype(int)


def pick_random(n_faces: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n_faces, size=min(n, n_faces), replace=False))


# --- DeepFaceLab sort_best ----------------------------------------------------------

DFL_GRADS = 128  # yaw bins over [-1.2, 1.2] rad (Sorter.py: "maximum yaw for 2DFAN landmarks")


def dfl_sort_best(yaw: np.ndarray, pitch: np.ndarray, sharpness: np.ndarray, hist: np.ndarray,
                  target_count: int) -> list[int]:
    """The faces DeepFaceLab's `sort_best` keeps for `target_count`, in the order it writes them.

    yaw, pitch in radians as DFL's `estimate_pitch_yaw_roll` returns them.
    Steps (Sorter.py `sort_best`): imgs_per_grad = round(target / 128);
    faces into 128 yaw bins over [-1.2, 1.2] by -yaw (first bin open below,
    last open above); imgs_per_grad grows by (sum over bins of the shortfall)
    // 128; each bin keeps its 10 * imgs_per_grad sharpest faces, splits them
    into imgs_per_grad pitch bins over [-pi/2, pi/2], orders each pitch bin
    by histogram dissimilarity (sum of Bhattacharyya distances to the bin's
    other faces, most dissimilar first), then takes faces round-robin over
    the pitch bins until imgs_per_grad. Python's round is DFL's: round(0.5)
    is 0, so a target below 192 gives imgs_per_grad 0 or 1, and below 64
    nothing at all.
    """
    n = len(yaw)
    per_grad = round(target_count / DFL_GRADS)
    edges = np.linspace(-1.2, 1.2, DFL_GRADS)
    s_yaw = -np.asarray(yaw, float)
    bins: list[list[int]] = []
    for g in range(DFL_GRADS):
        lo = edges[g]
        hi = edges[g + 1] if g < DFL_GRADS - 1 else lo
        if g == 0:
            inside = s_yaw < hi
        elif g < DFL_GRADS - 1:
            inside = (s_yaw >= lo) & (s_yaw < hi)
        else:
            inside = s_yaw >= lo
        bins.append(list(np.flatnonzero(inside)))
    lack = sum(max(per_grad - len(b), 0) for b in bins)
    per_grad += lack // DFL_GRADS
    if per_grad <= 0:
        return []
    keep = per_grad * 10
    out: list[int] = []
    pitch_edges = np.linspace(-math.pi / 2, math.pi / 2, per_grad)
    for members in bins:
        if not members:
            continue
        # sorted(..., key=sharpness, reverse=True) is stable: equal sharpness keeps file order
        members = sorted(members, key=lambda i: -sharpness[i])[:keep]
        queues = []
        for pg in range(per_grad):
            lo = pitch_edges[pg]
            hi = pitch_edges[pg + 1] if pg < per_grad - 1 else lo
            if pg == 0 and per_grad > 1:
                inside = [i for i in members if pitch[i] < hi]
            elif pg < per_grad - 1:
                inside = [i for i in members if lo <= pitch[i] < hi]
            else:  # the last bin (and the only one when per_grad is 1: DFL's test is then pitch >= -pi/2)
                inside = [i for i in members if pitch[i] >= lo]
            queues.append(_hist_dissim_order(inside, hist))
        want = per_grad
        while want > 0:
            before = want
            for q in queues:
                if not q:
                    continue
                out.append(q.pop(0))
                want -= 1
                if want == 0:
                    break
            if before == want:
                break
    assert len(set(out)) == len(out) <= n
    return out


def _hist_dissim_order(members: list[int], hist: np.ndarray) -> list[int]:
    """FinalHistDissimSubprocessor: most dissimilar histogram first (stable for ties)."""
    if len(members) < 2:
        return list(members)
    score = [sum(cv2.compareHist(hist[i], hist[j], cv2.HISTCMP_BHATTACHARYYA) for j in members if j != i)
             for i in members]
    order = sorted(range(len(members)), key=lambda k: -score[k])
    return [members[k] for k in order]


def dfl_at_budget(yaw, pitch, sharpness, hist, n: int, step: int = 64) -> tuple[np.ndarray, dict]:
    """DFL's sort_best at a target it can meet, cut evenly to n.

    sort_best returns about imgs_per_grad faces per occupied yaw bin, not
    `target_count`: asked for 20 it returns nothing, for 100 one face per
    occupied bin. So the target starts at n and grows by `step` until what
    DFL keeps holds at least n faces; the n are then every (kept / n)-th of
    DFL's output, which is in yaw order, so the cut keeps its yaw range. The
    target used and the faces DFL kept are returned with the choice.
    """
    target = n
    while True:
        kept = dfl_sort_best(yaw, pitch, sharpness, hist, target)
        if len(kept) >= n or target > DFL_GRADS * 10 * max(len(yaw), 1):
            break
        target += step
    kept = np.asarray(kept, int)
    chosen = kept[pick_uniform(len(kept), n)] if len(kept) > n else kept
    return chosen, {"dfl_target_count": int(target), "dfl_kept": int(len(kept))}


def dfl_pitch_yaw(landmarks68: np.ndarray, size: int, mean_face_68: np.ndarray) -> tuple[float, float]:
    """(pitch, yaw) in radians from 68 landmarks on a size x size crop, as DFL's estimate_pitch_yaw_roll.

    solvePnP of the jaw and brows (0-26) and the lower nose (30-35) against a
    3D mean face (OpenCV camera axes), focal length = size, centre of the
    crop, no distortion; Euler angles of the rotation (x: pitch, y: yaw),
    each clipped to +-pi/2; pitch negated. DFL ships its own 3D face; here it
    is InsightFace's 68-point mean shape (the one curator's 5-point model
    took its depths from).
    """
    pts = np.asarray(landmarks68, np.float64)
    if not np.isfinite(pts).all():
        return float("nan"), float("nan")
    idx = list(range(27)) + list(range(30, 36))
    cam = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], np.float64)
    ok, rvec, _ = cv2.solvePnP(mean_face_68[idx].astype(np.float64), pts[idx], cam, np.zeros((4, 1)))
    if not ok:
        return float("nan"), float("nan")
    r = cv2.Rodrigues(rvec)[0]
    sy = math.hypot(r[0, 0], r[1, 0])
    if sy > 1e-6:
        x, y = math.atan2(r[2, 1], r[2, 2]), math.atan2(-r[2, 0], sy)
    else:
        x, y = math.atan2(-r[1, 2], r[1, 1]), math.atan2(-r[2, 0], sy)
    half = math.pi / 2
    return -float(np.clip(x, -half, half)), float(np.clip(y, -half, half))


def landmark_hull_mask(shape: tuple[int, int], landmarks68: np.ndarray) -> np.ndarray:
    """uint8 0/1 mask: the convex hulls DFL's get_image_hull_mask fills (jaw, cheeks, nose ridge, eyes, nose).

    DFL first raises the brow points (expand_eyebrows); that step is left
    out, so the mask stops at the brows.
    """
    p = np.asarray(landmarks68, np.float32)
    parts = [(p[0:9], p[17:18]), (p[8:17], p[26:27]), (p[17:20], p[8:9]), (p[24:27], p[8:9]),
             (p[19:25], p[8:9]), (p[17:22], p[27:28], p[31:36], p[8:9]), (p[22:27], p[27:28], p[31:36], p[8:9]),
             (p[27:31], p[31:36])]
    mask = np.zeros(shape, np.uint8)
    for part in parts:
        hull = cv2.convexHull(np.concatenate(part).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1)
    return mask


def cpbd(grey: np.ndarray) -> float:
    """Cumulative probability of blur detection (Narvekar and Karam 2011): DFL's `estimate_sharpness`.

    Written from the paper and DFL's description of its steps: Canny edges
    decide which 64x64 blocks are edge blocks (> 0.2% edge pixels); Sobel
    vertical edges, thinned to local maxima, give the edge pixels whose
    width is measured along the row (Marziliano: steps to the nearest
    extrema on both sides; only edges whose gradient points along the row);
    each width's probability of blur is 1 - exp(-(w / w_JNB)^3.6), with
    w_JNB 5 for block contrast <= 50 and 3 above; CPBD is the share of
    edge pixels with that probability <= 0.63. Higher is sharper.
    """
    from scipy.ndimage import convolve
    from skimage.feature import canny

    img = np.asarray(grey, np.float64)
    h, w = img.shape
    canny_edges = canny(img)
    kernel = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float64) / 8.0
    strength = convolve(img, kernel.T) ** 2
    strength[strength <= 2 * math.sqrt(strength.mean())] = 0
    zc, zr = np.zeros((h, 1)), np.zeros((1, w))
    thin = (((strength > np.c_[zc, strength[:, :-1]]) & (strength > np.c_[strength[:, 1:], zc]))
            | ((strength > np.r_[zr, strength[:-1, :]]) & (strength > np.r_[strength[1:, :], zr])))
    gy, gx = np.gradient(img)
    angle = np.where(gx != 0, np.degrees(np.arctan2(gy, gx)), 0.0)
    q = 45 * np.round(angle / 45)
    widths = np.zeros_like(img)
    if np.any(angle):
        rows, cols = np.nonzero(thin[1:-1, 1:-1])
        for r, c in zip(rows + 1, cols + 1):
            if q[r, c] in (180, -180):
                rising = False
            elif q[r, c] == 0:
                rising = True
            else:
                continue
            widths[r, c] = _edge_width(img[r], c, rising)
    counts = np.zeros(101)
    total = 0
    for i in range(h // 64):
        for j in range(w // 64):
            rs, cs = slice(64 * i, 64 * i + 64), slice(64 * j, 64 * j + 64)
            if np.count_nonzero(canny_edges[rs, cs]) <= 64 * 64 * 0.002:
                continue
            bw = widths[rs, cs]
            bw = bw[bw != 0]
            block = img[rs, cs]
            jnb = 5.0 if int(block.max() - block.min()) <= 50 else 3.0
            p = 1 - np.exp(-np.abs(bw / jnb) ** 3.6)
            np.add.at(counts, np.round(p * 100).astype(int), 1)
            total += len(bw)
    return float(counts[:64].sum() / total) if total else 0.0


def _edge_width(row: np.ndarray, c: int, rising: bool) -> int:
    """Pixels from the edge at c to the nearest local extremum on each side, along the row (Marziliano)."""
    n = len(row)
    sign = 1 if rising else -1
    for left in range(101):  # left: while the intensity keeps falling away (rising edge) or rising (falling edge)
        inner, outer = c - 1 - left, c - 2 - left
        if outer < 0 or sign * (row[outer] - row[inner]) >= 0:
            break
    for right in range(101):
        inner, outer = c + 1 + right, c + 2 + right
        if outer >= n or sign * (row[outer] - row[inner]) <= 0:
            break
    return left + right + 2


def grey_histogram(grey: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.calcHist([grey], [0], None, [256], [0, 256]), np.float32).ravel()


# --- faceswap's sort chain -------------------------------------------------------------

FACESWAP_HIST_THRESHOLD = 0.3  # SortHistogram's default grouping threshold


def faceswap_blur(grey_masked: np.ndarray) -> float:
    """SortBlur.estimate_blur: variance of the Laplacian (float32) over sqrt(pixels); higher is sharper."""
    lap = cv2.Laplacian(grey_masked, cv2.CV_32F)
    return float(np.var(lap) / math.sqrt(grey_masked.shape[0] * grey_masked.shape[1]))


def faceswap_hist_groups(order: np.ndarray, hist: np.ndarray, threshold: float = FACESWAP_HIST_THRESHOLD) -> list[list[int]]:
    """SortHistogram.binning over faces in `order`: each face joins the group whose histograms it is
    closest to on average (Bhattacharyya), if that is below threshold; else it starts a new group."""
    groups: list[list[int]] = []
    for i in order:
        best, best_score = -1, math.inf
        for g, members in enumerate(groups):
            score = sum(cv2.compareHist(hist[i], hist[j], cv2.HISTCMP_BHATTACHARYYA) for j in members) / len(members)
            if score < best_score:
                best, best_score = g, score
        if best >= 0 and best_score < threshold:
            groups[best].append(int(i))
        else:
            groups.append([int(i)])
    return groups


def faceswap_chain(blur: np.ndarray, hist: np.ndarray, n: int) -> tuple[np.ndarray, dict]:
    """faceswap's usual clean-up, sort by face, then blur, then histogram, cut to n.

    Sort by face (ward linkage of identity embeddings) is how a faceswap
    user finds and deletes other people's faces; the candidates here are
    all the target's (curator identify chose them), so it removes nothing.
    `sort -s blur -g hist` then orders by blur (sharpest first) and groups
    by histogram similarity, each group in blur order; a user keeps the
    sharpest of each group of look-alikes. Cut to n: rounds over the groups
    in faceswap's order (the order their sharpest faces come in), each round
    taking each group's next sharpest face, until n.
    """
    order = np.argsort(-np.asarray(blur, float), kind="stable")
    groups = faceswap_hist_groups(order, hist)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n and any(depth < len(g) for g in groups):
        for g in groups:
            if depth < len(g) and len(chosen) < n:
                chosen.append(g[depth])
        depth += 1
    return np.asarray(chosen, int), {"faceswap_groups": len(groups)}


# --- an image embedding for FiftyOne -----------------------------------------------------

def image_embeddings(crops_bgr: np.ndarray, dims: int = 64, side: int = 32) -> np.ndarray:
    """A plain image embedding of face crops: each crop at side x side RGB, standardised per crop, projected on
    the set's first `dims` principal components; rows L2-normalised.

    FiftyOne's find_unique is usually run on a zoo model's image embedding
    (CLIP, MobileNet); those weights cannot be downloaded here, and the
    recogniser's embedding would be trained to ignore pose, expression and
    light. A pixel PCA sees exactly those.
    """
    x = np.stack([cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA) for c in crops_bgr]).astype(np.float32)
    x = x.reshape(len(x), -1)
    x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
    x -= x.mean(0, keepdims=True)
    k = min(dims, len(x) - 1, x.shape[1]) if len(x) > 1 else 1
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    e = x @ vt[:k].T
    return (e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-9)).astype(np.float32)
