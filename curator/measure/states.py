"""Per-face states that ruin a swap when a set lacks them: eyes closed, mouth open, teeth, smile, covered face.

Pure functions over the 128 px analysis crop (curator/measure/descriptors.py) and
the face's points in that crop: the detector's 5 keypoints, and the 68
iBUG landmarks when the workspace has them (`settings.landmarks` 3d68 or
dlib). Every value is on a 0-1 scale that means the same whatever the
method, so curate, audit and review compare faces of any workspace alike;
`states_method` records which method measured them (docs/workspace.md).

- `eye_left_open`, `eye_right_open` (the subject's left and right eye, as
  `kps` names them): the eye aspect ratio (Soukupova and Cech 2016: eyelid
  gap over eye width) through a logistic centred on EAR_CLOSED (where it
  comes from: below). `eyes_closed` is 1 minus the more open eye: a wink is
  one eye closed, not closed eyes.
- `mouth_open`: the inner-lip gap over the eye-corner distance through a logistic
  centred on MOUTH_GAP_OPEN; `teeth`: the share of the opening (inside the
  inner-lip outline) that is bright and unsaturated, 0 with a closed mouth.
- `smile`: probability of a smile from a logistic regression on mouth width
  and corner lift (68 points) or on the corners' spread (5 keypoints),
  fitted on SMILEsmileD by bench/states.py (`--fit`), coefficients below.
- `occlusion`: the share of the face covered, from the two regions below
  (LOWER_SHARE of the face for the lower face, EYE_SHARE for the eye band,
  times the probability that each is covered); `occluded_mouth` and
  `occluded_eyes`: probability that the lower face (mouth, chin, cheeks) or
  the eye band is covered by something that is not skin (a mask, a hand in
  a glove, a microphone, sunglasses). Both are logistic regressions fitted
  by bench/states.py `--fit`: `occluded_mouth` on a public masked-face set,
  `occluded_eyes` on web selfies with sunglasses against bare faces
  (`eye_cover_features`: what surrounds the eyes is not skin, the eyes have
  no texture; docs/benchmarks.md).

Without 68 points (a pack without a 3D-68 model and dlib not installed)
the eye and mouth states are appearance proxies at the keypoints
(`descriptors.expression_from_kps5`): near chance on labelled faces
(docs/benchmarks.md), which is why extract uses dlib's landmarks by default.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from .align import DEFAULT_MARGIN, template

# Eye aspect ratio (the more open eye's) at which the eyes count as half closed, and the logistic's width; and the
# inner-lip gap (62-66) over the outer-eye-corner distance at which the lips count as apart (over the mouth's width
# instead, a pursed mouth, narrow, read as open). Both chosen by `python bench/states.py --fit-thresholds`
# (bench/results/states_fit.json, "THRESHOLDS"; docs/benchmarks.md) with dlib's points: on a 0.005 grid, the value
# maximising balanced accuracy averaged over the data sets, so that no one set dominates: the hand-labelled frames of
# tests/data/states_labels.csv and the fitting half (fold 0) of a public set, CEW closed faces vs UTKFace faces for
# the eyes, yawn vs no-yawn in-car frames for the mouth. Soukupova and Cech (2016) used 0.2 on Talking Face /
# Eyeblink8 with their landmarks. On the held-out half of the public sets the 0.5 point now calls 77% of CEW's
# closed eyes closed (62% at the 0.17 read off the frames alone before) and 95% of UTKFace's open (98%); on the
# yawn set's held-out half balanced accuracy is 0.92 at 0.075 as at the 0.05 before (5% fewer yawns called open,
# 5% more no-yawns called closed), and every labelled frame's mouth is called right. The widths are unchanged: a
# wider one lowers the log-loss on CEW, whose closed faces dlib often opens, but calls no more faces right.
EAR_CLOSED = 0.20
EAR_SCALE = 0.015
MOUTH_GAP_OPEN = 0.075
MOUTH_GAP_SCALE = 0.01
# Fitted by `python bench/states.py --fit` (bench/results/states_fit.json): intercept, then one weight per
# feature of `smile_features` / `occlusion_features`, on standardised features (mean, std below).
SMILE_LMK68 = {"mean": [0.68037, 0.06898, 0.11568], "std": [0.08834, 0.053, 0.07634], "coef": [0.08728, 1.73334, 0.67474, 1.25356]}
SMILE_KPS5 = {"mean": [0.82948], "std": [0.08481], "coef": [0.03729, 2.28578]}
OCCLUDED_MOUTH = {"mean": [0.45028, 11.58185, 2.55872, -2.52678, -4.70549], "std": [0.35913, 8.91516, 13.02639, 8.55237, 9.44349], "coef": [-0.34996, 0.59802, 0.3949, -4.01311, 2.34706, -0.27506]}
# `eye_cover_features` (non-skin share around the eyes, log eye-to-face texture) of web selfies with sunglasses
# against bare faces, fold 0, dlib's points; the intercept then lowered by 1.03 so that at most 2% of fold 0's bare
# faces score above 0.5 (bench/states.py EYES_FALSE_ALARM). It replaced a fixed rule on the dark share of the eye
# band (bench/states.py `dark_eye_band`, held-out AUC 0.68): held out, 0.97 with dlib's points and 0.96 with 5 keypoints, the same
# coefficients for both (docs/benchmarks.md, with the share of faces above 0.5 on the frames and the masks set).
OCCLUDED_EYES = {"mean": [0.51605, 1.01614], "std": [0.35635, 1.02785], "coef": [-0.61339, 2.05923, -2.57729]}

LOWER_SHARE = 0.45
EYE_SHARE = 0.25
# A face counts as covered (curate ranks it last, audit counts it) when a region is more likely covered than not.
OCCLUDED_AT = 0.5
CLOSED_AT = 0.5  # eyes_closed, mouth_open: the state holds when its probability reaches this
REGION_NAMES = {"occluded_mouth": "mouth region", "occluded_eyes": "eye region"}

COLUMNS = ("eyes_closed", "eyes_open", "eye_left_open", "eye_right_open", "mouth_open", "teeth", "smile", "occlusion",
           "occluded_eyes", "occluded_mouth")
METHODS = ("lmk68", "kps5")
SIZE = 128
_T = template(SIZE, DEFAULT_MARGIN)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def logistic(model: dict, features) -> float:
    x = (np.asarray(features, np.float64) - model["mean"]) / np.maximum(model["std"], 1e-9)
    return float(sigmoid(model["coef"][0] + np.dot(model["coef"][1:], x)))


def eye_aspect_ratio(lmk: np.ndarray, first: int) -> float:
    """(|p2-p6| + |p3-p5|) / (2 |p1-p4|) for the eye whose outline starts at landmark `first` (36 or 42)."""
    p = lmk[first:first + 6]
    width = float(np.linalg.norm(p[0] - p[3]))
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * max(width, 1e-6)))


def mouth_gap(lmk: np.ndarray) -> float:
    """Inner-lip gap (62 to 66) over the outer eye corners' distance (36 to 45)."""
    return float(np.linalg.norm(lmk[62] - lmk[66]) / max(float(np.linalg.norm(lmk[36] - lmk[45])), 1e-6))


def smile_features(lmk: np.ndarray) -> list[float]:
    """Mouth width over outer-eye-corner distance; corner lift and lip gap over the same distance."""
    eyes = float(np.linalg.norm(lmk[36] - lmk[45])) or 1e-6
    up = lmk[27] - lmk[8]  # chin to nose bridge: the face's up, whatever its roll
    up = up / max(float(np.linalg.norm(up)), 1e-6)
    centre = (lmk[51] + lmk[57]) / 2
    lift = float(np.dot((lmk[48] + lmk[54]) / 2 - centre, up)) / eyes
    return [float(np.linalg.norm(lmk[48] - lmk[54])) / eyes, lift, float(np.linalg.norm(lmk[62] - lmk[66])) / eyes]


def smile_features_kps5(kps: np.ndarray) -> list[float]:
    return [float(np.linalg.norm(kps[4] - kps[3]) / max(float(np.linalg.norm(kps[1] - kps[0])), 1e-6))]


# --- skin and what covers it --------------------------------------------------------------------------

def _lab(crop_bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(crop_bgr.astype(np.float32) / 255.0, cv2.COLOR_BGR2LAB)


def _polygon_mask(points: np.ndarray, shape=(SIZE, SIZE)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32).reshape(-1, 1, 2)], 1)
    return mask.astype(bool)


@functools.lru_cache(maxsize=4)
def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rows and columns of a crop (made once: building them was most of a face's states' time)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _disc(centre, radius: float, shape=(SIZE, SIZE)) -> np.ndarray:
    yy, xx = _grid(tuple(shape))
    return (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius ** 2


def face_axes(kps: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The frame every region is drawn in: the 5 keypoints (5, 2), the distance between the eyes (at least 4 px),
    the eyes' and the mouth's centres, and unit vectors `down` (eyes to mouth) and `side` (across the face)."""
    k = np.asarray(kps, np.float64).reshape(5, 2)
    iod = max(float(np.linalg.norm(k[1] - k[0])), 4.0)
    eyes_c, mouth_c = (k[0] + k[1]) / 2, (k[3] + k[4]) / 2
    down = mouth_c - eyes_c
    down = down / max(float(np.linalg.norm(down)), 1e-6)
    return k, iod, eyes_c, mouth_c, down, np.array([-down[1], down[0]])


def regions(kps: np.ndarray, lmk: np.ndarray | None) -> dict[str, np.ndarray]:
    """Masks in the analysis crop: `skin_ref` (between the eyes, the nose bridge), `lower` (mouth, chin and
    lower cheeks), `eye_band` (both eyes and the bridge), `face` (the face less eyes and mouth)."""
    k, iod, eyes_c, mouth_c, down, side = face_axes(kps)
    reye, leye, nose, rmouth, lmouth = k
    # between the eyes and down the bridge to the top of the nose
    ref = _disc(eyes_c + 0.12 * iod * down, 0.14 * iod) | _disc(eyes_c + 0.35 * iod * down, 0.1 * iod)
    lower = _polygon_mask(np.array([
        nose + 0.25 * iod * down - 0.75 * iod * side, nose + 0.25 * iod * down + 0.75 * iod * side,
        mouth_c + 0.75 * iod * down + 0.45 * iod * side, mouth_c + 0.75 * iod * down - 0.45 * iod * side]))
    band = _polygon_mask(np.array([
        eyes_c - 0.18 * iod * down - 0.85 * iod * side, eyes_c - 0.18 * iod * down + 0.85 * iod * side,
        eyes_c + 0.18 * iod * down + 0.85 * iod * side, eyes_c + 0.18 * iod * down - 0.85 * iod * side]))
    face = np.zeros((SIZE, SIZE), np.uint8)
    centre = (eyes_c + mouth_c) / 2
    angle = float(np.degrees(np.arctan2(down[1], down[0]))) - 90.0
    cv2.ellipse(face, (int(round(centre[0])), int(round(centre[1]))), (int(0.95 * iod), int(1.35 * iod)), angle,
                0, 360, 1, -1)
    face = face.astype(bool)
    if lmk is not None:
        features = _polygon_mask(lmk[36:42]) | _polygon_mask(lmk[42:48]) | _polygon_mask(lmk[48:60])
    else:
        features = _disc(reye, 0.2 * iod) | _disc(leye, 0.2 * iod) | _polygon_mask(np.array([
            rmouth - 0.12 * iod * down, lmouth - 0.12 * iod * down, lmouth + 0.15 * iod * down,
            rmouth + 0.15 * iod * down]))
    return {"skin_ref": ref, "lower": lower & ~features, "eye_band": band, "face": face & ~features}


def not_skin(lab: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Pixels whose colour is not the reference skin's: chroma (a*, b*) more than 14 units away, or lightness
    outside 0.45-1.6 of the skin's (shadows and highlights on skin stay skin)."""
    L0, a0, b0 = (float(np.median(lab[..., i][ref])) for i in range(3))
    chroma = np.hypot(lab[..., 1] - a0, lab[..., 2] - b0)
    L = lab[..., 0]
    return (chroma > 14.0) | (L < 0.45 * L0) | (L > 1.6 * max(L0, 1.0))


def occlusion_features(crop_bgr: np.ndarray, kps: np.ndarray, lmk: np.ndarray | None = None, *,
                       lab: np.ndarray | None = None, r: dict | None = None) -> list[float]:
    """The lower face against the skin between the eyes: share of non-skin pixels, median chroma distance,
    redness of the lips (median a* inside the outer lip outline, or between the mouth corners, minus the
    skin's: a mask has no red lips, and alone this told masked faces from bare ones at AUC 0.93), and the
    median a* and b* differences. `lab` (`_lab` of the crop) and `r` (`regions(kps, lmk)`) when the caller has
    them already."""
    lab = _lab(crop_bgr) if lab is None else lab
    r = regions(kps, lmk) if r is None else r
    ref, low = r["skin_ref"], r["lower"]
    if not ref.any() or not low.any():  # keypoints at or past the crop's edge: no skin to compare, unknown
        return [float("nan")] * 5
    L0, a0, b0 = (float(np.median(lab[..., i][ref])) for i in range(3))
    chroma = np.hypot(lab[..., 1] - a0, lab[..., 2] - b0)
    if lmk is not None:
        lips = _polygon_mask(lmk[48:60])
    else:
        _, iod, _, mouth_c, _, _ = face_axes(kps)
        lips = _disc(mouth_c, 0.18 * iod)
    lip_a = float(np.median(lab[..., 1][lips]) - a0) if lips.any() else 0.0
    return [float(not_skin(lab, ref)[low].mean()), float(np.median(chroma[low])), lip_a,
            float(np.median(lab[..., 1][low]) - a0), float(np.median(lab[..., 2][low]) - b0)]


def _skinness(lab: np.ndarray, mask: np.ndarray) -> float:
    """Chroma of a region's median colour when its hue (a*, b* angle) is a skin's, 10-90 degrees; else 0 (a
    black frame, a grey or blue mask, hair)."""
    a, b = float(np.median(lab[..., 1][mask])), float(np.median(lab[..., 2][mask]))
    return float(np.hypot(a, b)) if 10.0 <= float(np.degrees(np.arctan2(b, a))) <= 90.0 else 0.0


def eye_cover_features(crop_bgr: np.ndarray, kps: np.ndarray, lmk: np.ndarray | None = None, *,
                       lab: np.ndarray | None = None, r: dict | None = None) -> list[float]:
    """What covers the eyes, against the face's own skin: the share of non-skin pixels (`not_skin`) in a ring
    around each eye (lids, the skin under the eye, the brow's lower edge: a lens covers it, the eye itself is
    left out), with the skin measured where it looks most like skin of the nose bridge, the cheeks and the
    forehead (sunglasses' bridge or a mask can cover one of them); and the log ratio of the eyes' Laplacian
    energy (median |Laplacian| of lightness) to the rest of the face's: an eye has lids, lashes and an iris
    edge, a lens is smooth. The eyes are dlib's eye outlines with 68 points, discs at the keypoints without.
    `lab` and `r` as for `occlusion_features`."""
    k, iod, eyes_c, _, down, side = face_axes(kps)
    reye, leye, nose = k[0], k[1], k[2]
    r = regions(k, lmk) if r is None else r
    cheeks = (_disc(reye + 0.55 * iod * down - 0.05 * iod * side, 0.16 * iod)
              | _disc(leye + 0.55 * iod * down + 0.05 * iod * side, 0.16 * iod)) & ~_disc(nose, 0.2 * iod)
    forehead = _disc(eyes_c - 0.5 * iod * down, 0.18 * iod)
    if lmk is not None:
        eyes = _polygon_mask(lmk[36:42]) | _polygon_mask(lmk[42:48])
        ring = (_disc(lmk[36:42].mean(0), 0.3 * iod) | _disc(lmk[42:48].mean(0), 0.3 * iod)) & ~eyes
    else:
        eyes = _disc(reye, 0.15 * iod) | _disc(leye, 0.15 * iod)
        ring = (_disc(reye, 0.3 * iod) | _disc(leye, 0.3 * iod)) & ~_disc(reye, 0.17 * iod) & ~_disc(leye, 0.17 * iod)
    refs = [r["skin_ref"], cheeks, forehead]
    if min(int(m.sum()) for m in (*refs, eyes, ring, r["face"])) < 3:  # keypoints at or past the crop's edge
        return [float("nan")] * 2
    lab = _lab(crop_bgr) if lab is None else lab
    ref = refs[int(np.argmax([_skinness(lab, m) for m in refs]))]
    lap = np.abs(cv2.Laplacian(np.ascontiguousarray(lab[..., 0]), cv2.CV_32F, ksize=3))
    texture = float(np.log((np.median(lap[eyes]) + 1.0) / (np.median(lap[r["face"]]) + 1.0)))
    return [float(not_skin(lab, ref)[ring].mean()), texture]


def teeth_share(crop_bgr: np.ndarray, lmk: np.ndarray, *, lab: np.ndarray | None = None) -> float:
    """Share of the inner-lip opening (landmarks 60-67) that is bright and unsaturated: teeth."""
    inner = _polygon_mask(lmk[60:68])
    if inner.sum() < 3:
        return 0.0
    lab = _lab(crop_bgr) if lab is None else lab
    r = regions(np.array([lmk[36:42].mean(0), lmk[42:48].mean(0), lmk[30], lmk[48], lmk[54]]), lmk)
    if not r["skin_ref"].any():
        return float("nan")
    L0 = float(np.median(lab[..., 0][r["skin_ref"]]))
    teeth = (lab[..., 0] > 0.8 * L0) & (np.hypot(lab[..., 1], lab[..., 2]) < 25.0)
    return float(teeth[inner].mean())


# --- all states of one face ------------------------------------------------------------------------------

def face_states(crop_bgr: np.ndarray, kps: np.ndarray, lmk: np.ndarray | None = None,
                kps5_expression: dict | None = None) -> dict:
    """Every state of one face. `kps`: the 5 keypoints and `lmk` the 68 landmarks (or None), both in
    analysis-crop pixels; `kps5_expression`: descriptors.expression_from_kps5 of the same face (used
    without landmarks)."""
    kps = np.asarray(kps, np.float64).reshape(5, 2)
    out: dict = {}
    lab = _lab(crop_bgr)  # once per face: extract's hot path; each measure below reads it
    usable = lmk is not None and np.isfinite(np.asarray(lmk, np.float64)).all()
    if usable:
        lmk = np.asarray(lmk, np.float64)[:, :2]
        # iBUG 36-41 is the eye on the image's left: the subject's right eye
        right = sigmoid((eye_aspect_ratio(lmk, 36) - EAR_CLOSED) / EAR_SCALE)
        left = sigmoid((eye_aspect_ratio(lmk, 42) - EAR_CLOSED) / EAR_SCALE)
        out["eye_left_open"], out["eye_right_open"] = float(left), float(right)
        out["eyes_closed"] = float(1.0 - max(left, right))
        out["eyes_open"] = float(max(left, right))
        out["mouth_open"] = float(sigmoid((mouth_gap(lmk) - MOUTH_GAP_OPEN) / MOUTH_GAP_SCALE))
        out["teeth"] = teeth_share(crop_bgr, lmk, lab=lab) if out["mouth_open"] > 0.5 else 0.0
        out["smile"] = logistic(SMILE_LMK68, smile_features(lmk))
        out["states_method"] = "lmk68"
    else:
        lmk = None
        proxy = kps5_expression or {}
        # the appearance proxies' own scales (descriptors.expression_from_kps5): a share of dark pixels, and
        # rows of cavity per eye distance; centred where open and closed faces overlapped least
        eyes = proxy.get("eyes_open", np.nan)
        mouth = proxy.get("mouth_open", np.nan)
        out["eye_left_open"] = out["eye_right_open"] = float("nan")
        out["eyes_closed"] = float(1.0 - sigmoid((eyes - 0.08) / 0.03)) if np.isfinite(eyes) else float("nan")
        out["eyes_open"] = 1.0 - out["eyes_closed"]
        out["mouth_open"] = float(sigmoid((mouth - 0.15) / 0.05)) if np.isfinite(mouth) else float("nan")
        out["teeth"] = float("nan")
        out["smile"] = logistic(SMILE_KPS5, smile_features_kps5(kps))
        out["states_method"] = "kps5"
    r = regions(kps, lmk)
    out["occluded_mouth"] = logistic(OCCLUDED_MOUTH, occlusion_features(crop_bgr, kps, lmk, lab=lab, r=r))
    out["occluded_eyes"] = logistic(OCCLUDED_EYES, eye_cover_features(crop_bgr, kps, lmk, lab=lab, r=r))
    # the share of the face covered: the lower face (mouth, chin, lower cheeks) is about LOWER_SHARE of the
    # face's ellipse and the eye band about EYE_SHARE (measured on the regions above)
    out["occlusion"] = float(LOWER_SHARE * out["occluded_mouth"] + EYE_SHARE * out["occluded_eyes"])
    return out


def describe_states(image: np.ndarray, kps: np.ndarray, matrix_to_analysis: np.ndarray,
                    lmk68: np.ndarray | None = None, kps5_expression: dict | None = None) -> dict:
    """`face_states` of the face at `kps` (source pixels) in a BGR frame; `matrix_to_analysis` maps source
    pixels to the analysis crop (as for descriptors.describe), `lmk68` in source pixels or None."""
    from .align import transform_points
    from .descriptors import analysis_crop, expression_from_kps5

    crop = analysis_crop(image, matrix_to_analysis)
    k = transform_points(kps, matrix_to_analysis)
    lmk = None if lmk68 is None else transform_points(np.asarray(lmk68)[:, :2], matrix_to_analysis)
    if lmk is None and kps5_expression is None:
        kps5_expression = expression_from_kps5(crop, k)
    return face_states(crop, k, lmk, kps5_expression)
