"""Similarity alignment of faces to a canonical 5-point template.

The template is InsightFace's ArcFace template (the one its recognisers were
trained on), expressed in a unit box and then padded by a margin on each side.
Recognition uses it without margin at 112 px, exactly as InsightFace does;
training crops use it with a margin (default 0.3 of the face box per side) so
forehead, chin and some background are in the crop, which face-swap models
need to learn blending.
"""

from __future__ import annotations

import cv2
import numpy as np

# InsightFace's arcface_dst, in a 112x112 crop.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

DEFAULT_MARGIN = 0.3


def template(size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The 5 template points in a `size` px crop whose face box (the 112 template box) is padded by `margin`."""
    unit = ARCFACE_112 / 112.0 - 0.5  # face box is [-0.5, 0.5]^2
    return (unit / (1.0 + 2.0 * margin) + 0.5) * size


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama) mapping src points to dst; a 2x3 matrix.

    Same estimate as skimage's SimilarityTransform used by InsightFace, without
    the dependency on the hot path.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (s0**2).sum() / len(src)
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_matrix(kps: np.ndarray, size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    return similarity(kps, template(size, margin))


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    # Replicated borders: a black band where the crop leaves the frame would teach
    # a face-swap model to draw black bands.
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def recognition_crop(image: np.ndarray, kps: np.ndarray, size: int = 112) -> np.ndarray:
    """The crop InsightFace's recognisers expect (ArcFace template, no margin)."""
    m = similarity(kps, ARCFACE_112 * (size / 112.0))
    return cv2.warpAffine(image, m, (size, size), borderValue=0.0)
