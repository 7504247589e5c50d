"""Training data: export folders in, augmented batches out, all on the training device.

A face set is a few thousand aligned crops, well under a GB as uint8 even at
256 px, so each set is decoded ONCE into a uint8 tensor on the device. A batch
is then an index draw plus about twenty batched tensor ops for A and B
together (one matrix per image for colour, one grid_sample for target and
input, one for the masks): no DataLoader, no worker processes, no per-image
CPU work, and nothing for the GPU to wait on.

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

import functools
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from curator.measure.align import DEFAULT_MARGIN, template
from curator.fs.atomic import inside

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
    # `curate --for`: how many faces of the target video each face stands for (None: not curated for one)
    for_target = table["target_faces"].to_numpy(float) if "target_faces" in table else None
    return {"faces": tensor, "yaw": yaw, "pitch": pitch, "margin": margin, "size": size,
            "has_provenance": prov.is_file(), "files": list(table["file"]), "target_faces": for_target}


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


EVEN_SHARE = 0.1  # of draws by target weights, spread evenly over every face (docs/trainer.md)


def target_weights(target_faces: np.ndarray | None, even: float = EVEN_SHARE) -> np.ndarray | None:
    """Sampling weight per face of a set curated `--for` a video: its share of the target faces it stands for
    (`target_faces`, curator/target.py), mixed with `even` of a uniform draw, normalised to sum 1. None when the
    set carries no such weights (not curated for a target, or none of its training faces serves it).

    The uniform part keeps every face in rotation: a face that serves no target face still teaches the
    encoder and the decoder what the person looks like.
    """
    if target_faces is None:
        return None
    w = np.nan_to_num(np.asarray(target_faces, float), nan=0.0).clip(0)
    if not len(w) or w.sum() <= 0:
        return None
    p = (1 - even) * w / w.sum() + even / len(w)
    return p / p.sum()


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

# The per-image parameters, in the columns of one uniform draw, each spread over its own +-range.
# The two angles come first, so that one cos() gives both their rotation matrices.
PARAMETERS = {"hue": math.radians(HUE_DEG), "rotate": math.radians(ROTATE_DEG), "saturation": SATURATION,
              "contrast": CONTRAST, "brightness": BRIGHTNESS, "scale": SCALE, "shift_x": SHIFT, "shift_y": SHIFT}


def batch(faces_a: torch.Tensor, faces_b: torch.Tensor, count: int, draw_a: torch.Tensor | None,
          draw_b: torch.Tensor | None, mask: torch.Tensor, weight: torch.Tensor, gen: torch.Generator):
    """One step's batch: `count` faces of A and of B, drawn and augmented -> (ia, ib, a, b).

    ia, ib: the indices drawn; a, b: (input, target, mask, weight) as `augment` returns them.
    Both identities go through one augment call: half the kernel launches, each
    on twice the data, which is what keeps a GPU from waiting on Python.
    """
    ia = sample(len(faces_a), count, draw_a, gen, faces_a.device)
    ib = sample(len(faces_b), count, draw_b, gen, faces_b.device)
    out = augment(torch.cat([faces_a[ia], faces_b[ib]]), mask, weight, gen)
    return ia, ib, tuple(t[:count] for t in out), tuple(t[count:] for t in out)


def augment(faces: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, gen: torch.Generator):
    """A batch of uint8 faces [B,3,R,R] -> (warped input, target, target mask, loss weight map), floats in [0, 1].

    target = a random similarity transform of the face (rotation, scale,
    shift), colour-jittered. input = the same, plus a smooth random local warp.
    The model must undo the local warp, i.e. draw a clean face from a
    distorted view, which is what lets it draw identity B from A's features.
    The same colour jitter is on input and target: the decoder should keep the
    lighting it is shown, not learn one colour per identity.

    Everything is batched torch on the faces' device, about twenty ops for the
    whole batch whatever its size (on a GPU each op is a kernel launch, and
    launches, not arithmetic, were what augmentation cost): all random numbers
    come from two calls on `gen`, the colour jitter is one 3x3 matrix and
    offset per image, both sampling grids (target, input) come from one
    matrix product, and one grid_sample draws target and input together. The
    outputs are views into those few tensors.
    """
    b, _, r, _ = faces.shape
    dev = faces.device
    const = _constants(r, str(dev))
    p = torch.addcmul(const["low"], torch.rand(b, len(PARAMETERS), generator=gen, device=dev), const["width"])
    noise = torch.randn(b, 2, WARP_GRID * WARP_GRID, generator=gen, device=dev)  # local warp: x, y on the coarse grid
    # Each angle's rotation matrix, row-major: cos(angle - phase) = cos, -sin, sin, cos.
    hue, rotate = torch.cos(p[:, :2, None] - const["phases"]).unbind(1)
    saturation, contrast, brightness, scale, shift = p[:, 2:3], p[:, 3:4], p[:, 4], p[:, 5:6], p[:, 6:]

    x = faces.float().flatten(2)  # [B, 3, R*R], 0-255
    colour, offset = _colour(x, hue[:, ::2], saturation, contrast, brightness, const)  # hue's cos, sin
    x = torch.baddbmm(offset[:, None, None], colour.view(b, 3, 3), x).clamp_(0, 1).view(b, 3, r, r)

    # Sampling grids, target's above input's: the affine matrix theta = [s * rotation | shift] and the
    # local warp's offsets, times their basis: one matrix product, one row per grid coordinate (x, y).
    theta = torch.addcmul(rotate, rotate, scale).view(b, 2, 2)
    weights = torch.cat([theta, shift[:, :, None], noise], 2).view(2 * b, -1)
    grids = torch.mm(weights, const["grid_basis"]).view(b, 2, 2 * r, r).permute(0, 2, 3, 1)
    # Border padding: the crops already extend past the face, and black corners
    # would teach the decoder to draw black corners.
    both = F.grid_sample(x, grids, mode="bilinear", padding_mode="border", align_corners=False)
    maps = F.grid_sample(torch.stack([mask, weight])[None].expand(b, -1, -1, -1), grids[:, :r], mode="bilinear",
                         padding_mode="zeros", align_corners=False)
    return both[:, :, r:], both[:, :, :r], maps[:, :1], maps[:, 1:]


def _colour(x: torch.Tensor, hue: torch.Tensor, saturation: torch.Tensor, contrast: torch.Tensor,
            brightness: torch.Tensor, const: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The colour jitter of images x [B, 3, N] (0-255) as one affine map each: [B, 9] matrix, [B] offset (to 0-1).

    The jitter is hue rotation about the grey axis (cos, sin of the angle),
    then saturation s: grey + s (x - grey), then contrast c about the image's
    mean and brightness: mean + c (x - mean) + brightness. All are linear, and
    neither hue nor saturation moves the mean grey level, so with P the
    projection on the grey axis, Q = I - P and K the cross product with it:
    matrix = c (P + s (cos Q + sin K)), offset = (1 - c) mean + brightness.
    """
    turn = torch.addcmul(hue, hue, saturation)  # s cos, s sin
    matrix = torch.addmm(const["grey"], turn, const["turn"])  # P + s cos Q + s sin K
    matrix = torch.addcmul(matrix, matrix, contrast)  # times c = 1 + contrast
    offset = torch.addcmul(brightness, contrast[:, 0], x.sum((1, 2)), value=-1 / (255 * x[0].numel()))  # -(c-1) mean
    return matrix, offset


@functools.lru_cache(maxsize=8)
def _constants(r: int, device: str) -> dict:
    """What augment needs besides random numbers, once per resolution and device."""
    ranges = torch.tensor(list(PARAMETERS.values()), dtype=torch.float32)
    phases = torch.tensor([0, -math.pi / 2, math.pi / 2, 0])  # cos(a - phase) = cos a, -sin a, sin a, cos a

    # Colour: P, Q and K (see _colour), divided by 255 for 0-255 input.
    k = torch.full((3,), 1 / math.sqrt(3))  # the unit grey axis
    grey = torch.outer(k, k)
    cross = k[0] * torch.tensor([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]])
    turn = torch.stack([torch.eye(3) - grey, cross]).flatten(1) / 255

    # Grids, in grid_sample's normalised coordinates: theta times a pixel's
    # (x, y, 1) (what F.affine_grid computes), plus, for the input, the local
    # warp: the 5x5 offsets upsampled bicubically (F.interpolate's weights,
    # taken from it once as a [R*R, 25] matrix). Stored transposed, [28, 2*R*R].
    xy1 = torch.cat([F.affine_grid(torch.eye(2, 3)[None], [1, 1, r, r], align_corners=False).view(r * r, 2),
                     torch.ones(r * r, 1)], 1)
    coarse = torch.eye(WARP_GRID * WARP_GRID).view(-1, 1, WARP_GRID, WARP_GRID)
    warp = F.interpolate(coarse, size=(r, r), mode="bicubic", align_corners=True).view(-1, r * r).T * WARP_STD
    grid_basis = torch.cat([torch.cat([xy1, torch.zeros_like(warp)], 1), torch.cat([xy1, warp], 1)]).T.contiguous()
    tensors = {"low": -ranges, "width": 2 * ranges, "phases": phases, "grey": grey.flatten() / 255, "turn": turn,
               "grid_basis": grid_basis}
    return {name: t.to(device) for name, t in tensors.items()}


def plain(faces: torch.Tensor) -> torch.Tensor:
    """uint8 faces as floats in [0, 1], no augmentation (previews)."""
    return faces.float() / 255.0
