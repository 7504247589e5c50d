"""Training data: export folders in, augmented batches out, all on the training device.

A face set is a few thousand aligned crops, well under a GB as uint8 even at
256 px, so each set is decoded ONCE into a uint8 tensor on the device. A batch
is then an index draw plus a handful of batched tensor ops (one grid_sample for
the warp, a few elementwise ops for colour): no DataLoader, no worker
processes, no per-image CPU work, and nothing for the GPU to wait on.

Masks. Exports carry no mask files, but every crop is aligned to the same
5-point template (curator.align.template, padded by the export's margin), so
the face region is at the same place in every crop. `face_mask` derives it
once from the template: an ellipse through the brows, cheeks and chin, sized
from the template's eye distance and eye-to-mouth distance, feathered inward
so that it is 1 over the face and falls smoothly to 0 at its rim.
`eyes_mouth_mask` marks the eyes and mouth the same way, for the optional
extra loss weight there. Random warps move the mask together with the face.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from curator.align import DEFAULT_MARGIN, template
from curator.atomic import inside

from . import TrainError

# --- the face sets ----------------------------------------------------------------


def load_set(folder: str | Path, resolution: int) -> dict:
    """Train split of one export: {"faces": uint8 [N,3,R,R] (CPU), "yaw", "pitch", "margin", "size", "files"}."""
    folder = Path(folder).expanduser()
    manifest = folder / "manifest.parquet"
    if not folder.is_dir():
        raise TrainError(f"{folder}: no such folder (expected a `curator export` folder)")
    if not manifest.is_file():
        raise TrainError(f"{folder}: not a curator export folder (no manifest.parquet)")
    try:
        table = pd.read_parquet(manifest)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise TrainError(f"{manifest}: cannot read it ({type(e).__name__}: {e})") from None
    if "file" not in table or "split" not in table:
        raise TrainError(f"{manifest}: no `file`/`split` columns; is this a curator export?")
    table = table[table["split"] == "train"].reset_index(drop=True)
    if not len(table):
        raise TrainError(f"{folder}: no training faces (manifest.parquet has no rows with split == 'train')")

    faces, sizes = [], {}
    for rel in table["file"]:
        try:
            path = inside(folder, rel)  # a tampered manifest cannot make us read outside the folder
        except ValueError as e:
            raise TrainError(f"{manifest}: {e}") from None
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise TrainError(f"{path}: missing or not an image")
        if img.shape[0] != img.shape[1]:
            raise TrainError(f"{path}: crop is {img.shape[1]}x{img.shape[0]}, not square; not an aligned crop")
        sizes[img.shape[0]] = sizes.get(img.shape[0], 0) + 1
        faces.append(img)
    if len(sizes) > 1:
        # Different sizes mean different extract settings, which usually means a
        # different margin too; resizing would silently misalign the template.
        listing = ", ".join(f"{s} px: {n}" for s, n in sorted(sizes.items()))
        raise TrainError(f"{folder}: crops of mixed sizes ({listing}); export the set again with one --size")
    size = next(iter(sizes))
    if size != resolution:
        # Same template, uniformly scaled: resizing keeps the alignment exact.
        interp = cv2.INTER_AREA if size > resolution else cv2.INTER_CUBIC
        faces = [cv2.resize(f, (resolution, resolution), interpolation=interp) for f in faces]
    rgb = np.stack([f[:, :, ::-1] for f in faces])  # cv2 reads BGR
    tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)))

    margin, settings = DEFAULT_MARGIN, {}
    prov = folder / "provenance.json"
    if prov.is_file():
        try:
            settings = json.loads(prov.read_text()).get("settings") or {}
        except (OSError, ValueError) as e:
            raise TrainError(f"{prov}: cannot read it ({e})") from None
        margin = float(settings.get("margin", DEFAULT_MARGIN))
    yaw = table["yaw"].to_numpy(float) if "yaw" in table else np.full(len(table), np.nan)
    pitch = table["pitch"].to_numpy(float) if "pitch" in table else np.full(len(table), np.nan)
    return {"faces": tensor, "yaw": yaw, "pitch": pitch, "margin": margin, "size": size,
            "has_provenance": prov.is_file(), "files": list(table["file"])}


def pose_weights(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Sampling weight per face: 1 / (faces in its 10-degree yaw x pitch bin), normalised to sum 1.

    A set from interviews is mostly frontal; drawing by inverse bin frequency
    shows the model its few profiles as often as its many frontals. Faces
    without a pose estimate share one bin of their own.
    """
    bins = [("nan" if not (np.isfinite(y) and np.isfinite(p)) else f"{math.floor(y / 10)}:{math.floor(p / 10)}")
            for y, p in zip(yaw, pitch)]
    counts = pd.Series(bins).value_counts()
    w = 1.0 / counts.loc[bins].to_numpy(float)
    return w / w.sum()


# --- masks from the template --------------------------------------------------------


def _soft_ellipse(size: int, cx: float, cy: float, ax: float, ay: float, feather: float) -> np.ndarray:
    """1 inside the ellipse shrunk by `feather` (a fraction of its radii), smoothstep down to 0 at its rim."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres
    r = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    t = np.clip((1.0 - r) / feather, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _template_geometry(size: int, margin: float) -> dict:
    pts = template(size, margin)  # right eye, left eye, nose, right mouth corner, left mouth corner
    eyes, mouth = pts[:2], pts[3:]
    eye_dist = float(np.linalg.norm(eyes[1] - eyes[0]))
    eyes_y, mouth_y = float(eyes[:, 1].mean()), float(mouth[:, 1].mean())
    return {"pts": pts, "eyes": eyes, "mouth": mouth, "eye_dist": eye_dist, "eyes_y": eyes_y, "mouth_y": mouth_y,
            "d": mouth_y - eyes_y, "cx": float(eyes[:, 0].mean())}


def face_mask(size: int, margin: float) -> np.ndarray:
    """float32 [size, size] soft face mask: brows to chin, cheek to cheek (see the module docstring).

    With d = eye-to-mouth height and e = eye distance of the template:
    top = eyes - 0.8 d (above the brows), bottom = mouth + 0.65 d (the chin),
    half-width 1.15 e (cheek to cheek at nose height; wider reaches past the
    jaw into the background), feathered over the outer 15% of the radius.
    Checked by eye on 256 px crops of the shared clips (docs/trainer.md).
    """
    g = _template_geometry(size, margin)
    top, bottom = g["eyes_y"] - 0.8 * g["d"], g["mouth_y"] + 0.65 * g["d"]
    m = _soft_ellipse(size, g["cx"], (top + bottom) / 2, 1.15 * g["eye_dist"], (bottom - top) / 2, 0.15)
    return m.astype(np.float32)


def eyes_mouth_mask(size: int, margin: float) -> np.ndarray:
    """float32 [size, size]: soft ellipses over both eyes (with lids) and the mouth (lips, corners)."""
    g = _template_geometry(size, margin)
    e = g["eye_dist"]
    m = np.zeros((size, size))
    for x, y in g["eyes"]:
        m = np.maximum(m, _soft_ellipse(size, x, y, 0.4 * e, 0.25 * e, 0.3))
    (x0, y0), (x1, y1) = g["mouth"]
    half_width = abs(x1 - x0) / 2
    m = np.maximum(m, _soft_ellipse(size, (x0 + x1) / 2, (y0 + y1) / 2, half_width + 0.2 * e, 0.3 * e, 0.3))
    return m.astype(np.float32)


# --- batches ----------------------------------------------------------------------


def sample(n_faces: int, count: int, weights: torch.Tensor | None, gen: torch.Generator, device) -> torch.Tensor:
    """`count` face indices, uniform or by `weights`, with replacement, drawn on the device."""
    if weights is None:
        return torch.randint(0, n_faces, (count,), generator=gen, device=device)
    return torch.multinomial(weights, count, replacement=True, generator=gen)


# Augmentation ranges. Global: what alignment jitter looks like (a few degrees,
# a few percent); local warp: enough to hide exact pixels, not enough to change
# the expression; colour: lighting differences between sources.
ROTATE_DEG, SCALE, SHIFT = 10.0, 0.05, 0.05
WARP_GRID, WARP_STD = 5, 0.025
BRIGHTNESS, CONTRAST, SATURATION, HUE_DEG = 0.08, 0.15, 0.2, 8.0


def augment(faces: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, gen: torch.Generator):
    """A batch of uint8 faces [B,3,R,R] -> (warped input, target, target mask, loss weight map), floats in [0, 1].

    target = a random similarity transform of the face (rotation, scale,
    shift), colour-jittered. input = the same, plus a smooth random local warp.
    The model must undo the local warp, i.e. draw a clean face from a
    distorted view, which is what lets it draw identity B from A's features.
    The same colour jitter is on input and target: the decoder should keep the
    lighting it is shown, not learn one colour per identity. Everything is
    batched torch on the faces' device, random numbers from `gen`.
    """
    b, _, r, _ = faces.shape
    dev = faces.device

    def u(*shape):  # uniform in [-1, 1]
        return torch.rand(*shape, generator=gen, device=dev) * 2 - 1

    x = faces.float() / 255.0

    # Colour: brightness, contrast, saturation, and hue as a rotation about the grey axis.
    angle = u(b) * math.radians(HUE_DEG)
    c = 1 / math.sqrt(3)  # the unit grey axis is (c, c, c)
    k = torch.full((3,), c, device=dev)
    kx = c * torch.tensor([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]], device=dev)  # cross-product matrix of k
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    rot = cos * torch.eye(3, device=dev) + sin * kx + (1 - cos) * torch.outer(k, k)  # Rodrigues, [B,3,3]
    x = torch.einsum("bij,bjhw->bihw", rot, x)
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * (1 + SATURATION * u(b, 1, 1, 1))
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * (1 + CONTRAST * u(b, 1, 1, 1)) + BRIGHTNESS * u(b, 1, 1, 1)
    x = x.clamp(0, 1)

    # Global similarity transform, as the sampling grid's affine matrix (normalised coordinates).
    a = u(b) * math.radians(ROTATE_DEG)
    s = 1 + SCALE * u(b)
    theta = torch.stack([torch.stack([s * a.cos(), -s * a.sin(), SHIFT * u(b)], 1),
                         torch.stack([s * a.sin(), s * a.cos(), SHIFT * u(b)], 1)], 1)
    grid = F.affine_grid(theta, [b, 3, r, r], align_corners=False)
    # Border padding: the crops already extend past the face, and black corners
    # would teach the decoder to draw black corners.
    target = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    maps = F.grid_sample(torch.stack([mask, weight])[None].expand(b, -1, -1, -1), grid, mode="bilinear",
                         padding_mode="zeros", align_corners=False)

    # Local warp: random offsets on a coarse grid, smoothly upsampled, added to the grid.
    offsets = WARP_STD * torch.randn(b, 2, WARP_GRID, WARP_GRID, generator=gen, device=dev)
    offsets = F.interpolate(offsets, size=(r, r), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    inp = F.grid_sample(x, grid + offsets, mode="bilinear", padding_mode="border", align_corners=False)
    return inp, target, maps[:, :1], maps[:, 1:]


def plain(faces: torch.Tensor) -> torch.Tensor:
    """uint8 faces as floats in [0, 1], no augmentation (previews)."""
    return faces.float() / 255.0
