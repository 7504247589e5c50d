"""Near-duplicates judged on the crops' pixels: SSIM and a DCT perceptual hash.

curator's selection never looks at these. It groups near-duplicates on pose,
expression, lighting and an 8x8 grey thumbnail of the face ellipse, and
refuses a second face that the recogniser's embedding (cosine >= 0.95) and
the pose (within 5 degrees) call the same picture. A benchmark that counted
near-duplicates with that same rule would score curator 0 by construction.
So bench/curate.py counts them here instead, on the aligned crops as written
to the workspace (what a trainer learns from):

- SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03)
  of the whole crop, grey, resized to 64x64 (the trainer's smallest size;
  it also evens out JPEG noise);
- pHash: the grey crop at 32x32, its 2-D DCT, the 8x8 lowest frequencies
  (DC included) against their median: 64 bits, compared by Hamming distance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SSIM_SIDE = 64
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_CHANNELS = 256  # pairs blurred in one cv2 call (cv2 takes up to 512 channels)


class Crops:
    """The grey crops of a workspace's faces: 64x64 for SSIM (with each one's local mean and variance) and pHashes."""

    def __init__(self, ws_root: Path, crop_paths: list[str]):
        import cv2

        n = len(crop_paths)
        self.grey = np.zeros((n, SSIM_SIDE, SSIM_SIDE), np.float32)
        self.hash = np.zeros((n, 64), bool)
        for i, rel in enumerate(crop_paths):
            img = cv2.imread(str(Path(ws_root) / rel), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise RuntimeError(f"{rel}: cannot read the crop")
            self.grey[i] = cv2.resize(img, (SSIM_SIDE, SSIM_SIDE), interpolation=cv2.INTER_AREA)
            self.hash[i] = phash(img)
        self.mu = _blur(self.grey)
        self.var = _blur(self.grey * self.grey) - self.mu * self.mu

    def ssim(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Mean SSIM of crop i[k] against crop j[k], for every k."""
        i, j = np.asarray(i, int), np.asarray(j, int)
        out = np.empty(len(i), np.float32)
        for s in range(0, len(i), _CHANNELS):
            a, b = i[s:s + _CHANNELS], j[s:s + _CHANNELS]
            cov = _blur(self.grey[a] * self.grey[b]) - self.mu[a] * self.mu[b]
            num = (2 * self.mu[a] * self.mu[b] + _C1) * (2 * cov + _C2)
            den = (self.mu[a] ** 2 + self.mu[b] ** 2 + _C1) * (self.var[a] + self.var[b] + _C2)
            out[s:s + len(a)] = (num / den).mean(axis=(1, 2))
        return out

    def hamming(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Bits in which the pHashes of crop i[k] and crop j[k] differ."""
        return (self.hash[np.asarray(i, int)] != self.hash[np.asarray(j, int)]).sum(1)

    def pairs_matrix(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SSIM and Hamming distance of every pair of `rows`, as two square matrices (diagonal: 1 and 0)."""
        rows = np.asarray(rows, int)
        n = len(rows)
        ssim = np.ones((n, n), np.float32)
        ham = np.zeros((n, n), int)
        if n > 1:
            a, b = np.triu_indices(n, 1)
            s, h = self.ssim(rows[a], rows[b]), self.hamming(rows[a], rows[b])
            ssim[a, b] = ssim[b, a] = s
            ham[a, b] = ham[b, a] = h
        return ssim, ham


def phash(grey: np.ndarray) -> np.ndarray:
    """64-bit DCT perceptual hash of a grey image (the 8x8 lowest frequencies of its 32x32 DCT above their median)."""
    import cv2

    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    return low > np.median(low)


def _blur(stack: np.ndarray) -> np.ndarray:
    """The SSIM window (11x11 Gaussian, sigma 1.5) over each image of a [n, h, w] stack."""
    import cv2

    if len(stack) == 0:
        return stack.copy()
    out = np.empty_like(stack)
    for s in range(0, len(stack), _CHANNELS):
        chunk = np.ascontiguousarray(np.moveaxis(stack[s:s + _CHANNELS], 0, -1))
        blurred = cv2.GaussianBlur(chunk, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)
        out[s:s + _CHANNELS] = np.moveaxis(blurred.reshape(chunk.shape), -1, 0)
    return out
