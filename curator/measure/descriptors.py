"""Per-face descriptors: expression, lighting and quality.

All of them are computed on one *analysis crop*: the face aligned to the
canonical template at a fixed 128 px (margin 0.3), whatever `--size` the
training crops are written at, so numbers are comparable across workspaces.

Definitions (units in docs/workspace.md):
- lighting, in CIE L*a*b* over an ellipse covering the face: `lum` (mean L*,
  0-100), `contrast` (std of L*), `light_lr` (mean L* of the image-right half
  minus the image-left half), `light_tb` (top half minus bottom half),
  `cast_a` and `cast_b` (mean a* and b*: + is red / yellow, - green / blue);
- `sharpness`: variance of the Laplacian of the grey analysis crop inside the
  face ellipse; a face upscaled from few source pixels scores low, as it should;
- expression: `mouth_open`, `eyes_open`, `smile`. With 68 landmarks they are
  the classic ratios (inner-lip gap / mouth width, eye aspect ratio, mouth
  width / eye-corner distance). With only the detector's 5 keypoints there are
  no lip or eyelid points, so they are appearance proxies measured at the
  keypoints (dark mouth-cavity height, dark iris/pupil area in the eye boxes,
  mouth-corner spread); `expression_method` says which, because the two scales
  differ and should not be mixed in one comparison.
"""

from __future__ import annotations

import cv2
import numpy as np

from .align import DEFAULT_MARGIN, template, transform_points

ANALYSIS_SIZE = 128
_T = template(ANALYSIS_SIZE, DEFAULT_MARGIN)
_TEMPLATE_IOD = float(np.linalg.norm(_T[1] - _T[0]))
_TEMPLATE_MOUTH_RATIO = float(np.linalg.norm(_T[4] - _T[3]) / _TEMPLATE_IOD)


def _face_mask(size: int = ANALYSIS_SIZE, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """An ellipse over the face interior (brows to chin, cheek to cheek) in the analysis crop."""
    face = size / (1.0 + 2.0 * margin)  # side of the 112-template face box in the crop
    mask = np.zeros((size, size), np.uint8)
    centre = (size // 2, int(size / 2 + 0.06 * face))
    cv2.ellipse(mask, centre, (int(0.40 * face), int(0.52 * face)), 0, 0, 360, 1, -1)
    return mask.astype(bool)


FACE_MASK = _face_mask()


def lighting(crop_bgr: np.ndarray, mask: np.ndarray = FACE_MASK) -> dict[str, float]:
    lab = cv2.cvtColor(crop_bgr.astype(np.float32) / 255.0, cv2.COLOR_BGR2LAB)
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    h, w = mask.shape
    left, right = mask.copy(), mask.copy()
    left[:, w // 2:] = False
    right[:, : w // 2] = False
    top, bottom = mask.copy(), mask.copy()
    top[h // 2:, :] = False
    bottom[: h // 2, :] = False
    return {
        "lum": float(L[mask].mean()),
        "contrast": float(L[mask].std()),
        "light_lr": float(L[right].mean() - L[left].mean()),
        "light_tb": float(L[top].mean() - L[bottom].mean()),
        "cast_a": float(a[mask].mean()),
        "cast_b": float(b[mask].mean()),
    }


def sharpness(crop_bgr: np.ndarray, mask: np.ndarray = FACE_MASK) -> float:
    grey = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY)
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=3)
    return float(lap[mask].var())


def expression_from_kps5(crop_bgr: np.ndarray, kps_crop: np.ndarray) -> dict[str, float]:
    """Appearance proxies at the 5 keypoints (already in analysis-crop coordinates)."""
    grey = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    reye, leye, nose, rmouth, lmouth = kps_crop
    iod = float(np.linalg.norm(leye - reye))
    if not np.isfinite(iod) or iod < 4:
        return {"mouth_open": float("nan"), "eyes_open": float("nan"), "smile": float("nan")}
    # Skin reference: the cheeks beside the nose, robust to beards and glasses frames.
    ref = _patch_median(grey, [nose + (-0.45 * iod, 0), nose + (0.45 * iod, 0)], 0.12 * iod)
    ref = max(ref, 8.0)

    # Mouth: how tall is the dark cavity between the corners, in eye distances.
    mouth_c = (rmouth + lmouth) / 2
    half_w = max(2.0, 0.3 * float(np.linalg.norm(lmouth - rmouth)))
    roi = _crop(grey, mouth_c[0] - half_w, mouth_c[1] - 0.12 * iod, mouth_c[0] + half_w, mouth_c[1] + 0.40 * iod)
    # A row is "open" when most of it is cavity (much darker than skin) or teeth
    # (much brighter); closed lips are only a little darker than skin.
    if roi.size:
        unlike_skin = (roi < 0.65 * ref) | (roi > 1.15 * ref)
        open_rows = int((unlike_skin.mean(axis=1) > 0.4).sum())
    else:
        open_rows = 0
    mouth_open = float(open_rows / iod)

    # Eyes: share of clearly dark pixels (iris, pupil, lashes of an open eye) around each eye point.
    eye_scores = []
    for eye in (reye, leye):
        r = _crop(grey, eye[0] - 0.22 * iod, eye[1] - 0.11 * iod, eye[0] + 0.22 * iod, eye[1] + 0.11 * iod)
        if r.size:
            eye_scores.append(float((r < 0.55 * ref).mean()))
    eyes_open = float(np.mean(eye_scores)) if eye_scores else float("nan")

    smile = float(np.linalg.norm(lmouth - rmouth) / iod / _TEMPLATE_MOUTH_RATIO - 1.0)
    return {"mouth_open": mouth_open, "eyes_open": eyes_open, "smile": smile}


def expression_from_lmk68(lmk: np.ndarray) -> dict[str, float]:
    """Ratios on iBUG-68 landmarks (any 2D coordinates: they are scale-free)."""
    p = np.asarray(lmk, np.float64)[:, :2]

    def d(i: int, j: int) -> float:
        return float(np.linalg.norm(p[i] - p[j]))

    def ear(a: int) -> float:  # eye aspect ratio of the eye whose corners are a and a+3
        return (d(a + 1, a + 5) + d(a + 2, a + 4)) / (2.0 * max(d(a, a + 3), 1e-6))

    mouth_w = max(d(48, 54), 1e-6)
    return {
        "mouth_open": d(62, 66) / mouth_w,
        "eyes_open": (ear(36) + ear(42)) / 2.0,
        "smile": mouth_w / max(d(36, 45), 1e-6),
    }


APPEARANCE_SIDE = 8


def appearance(crop_bgr: np.ndarray, mask: np.ndarray = FACE_MASK) -> np.ndarray:
    """A tiny picture of the face: the grey face ellipse at 8x8, zero mean, unit norm (64 floats).

    Near-duplicate detection compares these: two frames that look alike at 8x8
    in the face region differ by nothing a model would learn from, while a
    hand over the mouth, a microphone or a new background shows up.
    """
    grey = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    ys, xs = np.nonzero(mask)
    face = grey[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    small = cv2.resize(face, (APPEARANCE_SIDE, APPEARANCE_SIDE), interpolation=cv2.INTER_AREA).ravel()
    small -= small.mean()
    return (small / max(float(np.linalg.norm(small)), 1e-6)).astype(np.float32)


def analysis_crop(image: np.ndarray, matrix_to_analysis: np.ndarray) -> np.ndarray:
    return cv2.warpAffine(image, matrix_to_analysis, (ANALYSIS_SIZE, ANALYSIS_SIZE), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def describe(image: np.ndarray, kps: np.ndarray, matrix_to_analysis: np.ndarray, lmk68: np.ndarray | None = None) -> dict:
    """Every descriptor of one face; `matrix_to_analysis` maps source pixels to the analysis crop."""
    crop = analysis_crop(image, matrix_to_analysis)
    out = lighting(crop)
    out["sharpness"] = sharpness(crop)
    out["appearance"] = [float(v) for v in appearance(crop)]
    if lmk68 is not None:
        out.update(expression_from_lmk68(lmk68))
        out["expression_method"] = "lmk68"
    else:
        out.update(expression_from_kps5(crop, transform_points(kps, matrix_to_analysis)))
        out["expression_method"] = "kps5_appearance"
    return out


def _crop(grey: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    h, w = grey.shape
    xa, ya = max(0, int(round(x0))), max(0, int(round(y0)))
    xb, yb = min(w, int(round(x1)) + 1), min(h, int(round(y1)) + 1)
    if xb <= xa or yb <= ya:
        return np.zeros((0, 0), grey.dtype)
    return grey[ya:yb, xa:xb]


def _patch_median(grey: np.ndarray, centres, radius: float) -> float:
    vals = [_crop(grey, c[0] - radius, c[1] - radius, c[0] + radius, c[1] + radius).ravel() for c in centres]
    vals = np.concatenate(vals) if vals else np.zeros(0)
    return float(np.median(vals)) if vals.size else float(grey.mean())
