"""`curator convert`: replace a face in a video with a model from `curator train`, labelled as synthetic.

Per frame (decoded front to back with PyAV, never seeking):

    detect faces (the `extract` face module) -> choose the face of the replaced
    identity (its export's mean embedding, or --ref photos) -> smooth its
    keypoints over time (One-Euro) -> align it to the training template ->
    encoder + the other identity's decoder (batched on the GPU when there is
    one) -> colour-match to the original face -> blend through the predicted
    or landmark mask (eroded, feathered) -> warp back into the frame

Frames without the chosen face are encoded from the decoded frame itself, and
in a changed frame only the pixels the swap or the mark touched are replaced
(in the frame's own YUV planes), so nothing else goes through an RGB round trip.

The output is written with PyAV (FFmpeg's libraries, in the `av` wheel; no
ffmpeg binary): H.264 (libx264) in the input's pixel format, the input's frame
times copied, every audio stream copied packet for packet. It is always
labelled: container metadata (comment, description) and a JSON sidecar
`OUT.synthetic.json`; a visible corner mark is on by default. Everything is
written under a temporary name and renamed at the end, so OUT is never half
written. docs/convert.md has the details.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .errors import CuratorError
from . import __version__, faces, media
from .align import DEFAULT_MARGIN, align_matrix, warp
from .atomic import atomic_path, inside, replace_dir, temp_dir, write_json
from .workspace import now

VIDEO_SUFFIXES = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
MARK_TEXT = "SYNTHETIC: face swapped"
SIDECAR_SUFFIX = ".synthetic.json"
# A face that overlaps the previously chosen one this much, and looks this much
# like it, continues the track even below the identity threshold: profiles and
# blurred frames embed poorly, and dropping them would make the swap flicker
# on and off (the same guards as identify.link_tracks).
KEEP_IOU, KEEP_SIM = 0.3, 0.3
KEEP_GAP_S = 0.5  # a track lost for longer starts afresh


class ConvertError(CuratorError):
    """A problem the user can fix; the message is one line naming the file and the reason."""


@dataclass(frozen=True)
class ConvertSettings:
    direction: str = "a2b"        # a2b: replace identity A's face with decoder B's drawing; b2a the reverse
    mask: str = "predicted"       # predicted (the decoder's mask), landmark (the training template's ellipse), both (their minimum)
    erode: float = 0.02           # shrink the mask by this fraction of the face crop's side
    feather: float = 0.04         # then blur its edge over this fraction of the crop's side
    color: str = "lab"            # lab (mean/std in Lab), hist (histogram matching per RGB channel), none
    smooth: bool = True           # One-Euro filter on the keypoints
    min_cutoff: float = 1.0       # One-Euro: Hz; lower = steadier when the head is still
    beta: float = 3.0             # One-Euro: how fast the cutoff rises with speed (per face-width/s); higher = less lag
    jump: float = 0.35            # a keypoint move over this share of the face scale in one frame is a cut: reset
    threshold: float | None = None  # same-person cosine similarity; default per recogniser (curator.identify)
    det_size: int = 640
    det_thresh: float = 0.6
    batch: int = 16               # frames per network call
    visible_mark: bool = True
    lossless: bool = False        # libx264 qp 0 in the input's pixel format: untouched pixels stay bit-exact
    crf: int = 18
    preset: str = "medium"
    max_frames: int | None = None  # convert only the first N frames (and the audio up to their end)


# --- the model run --------------------------------------------------------------------


@dataclass
class Run:
    path: Path
    model: object          # trainer.model.FaceSwap, eval mode, on `device`
    device: object         # torch.device
    config: dict
    step: int
    weights_sha256: str
    run_id: str
    margin: float          # alignment margin of the training crops
    crop_size: int         # side of the training crops before the trainer resized them


def load_run(run: str | os.PathLike, device: str = "auto") -> Run:
    """A `curator train` run folder, ready for inference; ConvertError for anything unusable."""
    from trainer import TrainError
    from trainer.checkpoint import load_for_inference
    from trainer.train import pick_device

    path = Path(run).expanduser().resolve()
    try:
        dev = pick_device(device, 0)
        model, config, info = load_for_inference(path, dev)
    except TrainError as e:
        raise ConvertError(str(e)) from None
    settings = {}
    for side in ("a", "b"):  # both sides were checked to share one margin when the run started
        settings = _export_settings(config.get(side))
        if settings:
            break
    resolution = int(config["resolution"])
    return Run(path=path, model=model, device=dev, config=config, step=info["step"],
               weights_sha256=info["weights_sha256"],
               run_id=f"{path.name}@step{info['step']}:{info['weights_sha256'][:12]}",
               margin=float(settings.get("margin", DEFAULT_MARGIN)),
               crop_size=max(resolution, int(settings.get("size", resolution))))


def _export_settings(folder: str | None) -> dict:
    prov = Path(folder) / "provenance.json" if folder else None
    if prov is None or not prov.is_file():
        return {}
    try:
        return json.loads(prov.read_text()).get("settings") or {}
    except (OSError, ValueError):
        return {}


def source_embedding(run: Run, direction: str, fm: faces.FaceModels) -> tuple[np.ndarray, str]:
    """The replaced identity's mean embedding [1, dim] from its export, and a description of where it came from."""
    side = "a" if direction == "a2b" else "b"
    folder = Path(run.config.get(side) or "?")
    path = folder / "embeddings.npy"
    hint = "pass --ref PHOTO of the person to replace"
    if not path.is_file():
        raise ConvertError(f"{folder}: identity {side.upper()}'s export, recorded in {run.path}, is not here "
                           f"(no embeddings.npy); {hint}")
    try:
        emb = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConvertError(f"{path}: cannot read it ({e}); {hint}") from None
    if emb.ndim != 2 or not len(emb) or emb.shape[1] != fm.embedding_dim:
        raise ConvertError(f"{path}: {emb.shape} embeddings, the recogniser of {fm.pack} makes "
                           f"{fm.embedding_dim}-d ones; use that export's --models, or {hint}")
    try:
        recorded = (json.loads((folder / "provenance.json").read_text()).get("models") or {}).get("files") or {}
    except (OSError, ValueError):
        recorded = {}
    mine = fm.files.get(Path(getattr(fm.recognizer, "model_file", "")).name)
    if recorded and mine and mine not in recorded.values():
        raise ConvertError(f"{folder}: its embeddings come from another recogniser ({', '.join(recorded)}); "
                           f"convert with the export's --models, or {hint}")
    centre = emb.astype(np.float32).mean(0, keepdims=True)
    return centre / max(float(np.linalg.norm(centre)), 1e-12), f"mean of {len(emb)} faces in {folder}"


def export_models(run: Run, direction: str) -> str | None:
    """The face-model pack the replaced identity's export recorded, when it is still on disk."""
    folder = run.config.get("a" if direction == "a2b" else "b")
    try:
        recorded = (json.loads((Path(folder) / "provenance.json").read_text()).get("models") or {}).get("path")
    except (OSError, ValueError, TypeError):
        return None
    return recorded if recorded and Path(recorded).is_dir() else None


# --- choosing and tracking the face ---------------------------------------------------------


def choose_face(boxes: np.ndarray, emb: np.ndarray, target: np.ndarray, threshold: float,
                last: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[int | None, float]:
    """Index of the face to replace in one frame (or None), and its similarity to the target.

    The most similar face at or above `threshold`; failing that, a face that
    continues `last` (the box and embedding chosen in the previous frame):
    overlapping it by KEEP_IOU and at least KEEP_SIM alike.
    """
    if not len(boxes):
        return None, 0.0
    sims = (emb @ np.asarray(target, np.float32).T).max(1)
    best = int(np.argmax(sims))
    if sims[best] >= threshold:
        return best, float(sims[best])
    if last is not None:
        overlap = faces.box_iou(boxes[:, :4], last[0][:4])[:, 0]
        alike = emb @ last[1]
        ok = (overlap >= KEEP_IOU) & (alike >= KEEP_SIM)
        if ok.any():
            i = int(np.argmax(np.where(ok, overlap, -1.0)))
            return i, float(sims[i])
    return None, float(sims[best])


def one_euro(x: np.ndarray, t: float, state: dict | None, min_cutoff: float, beta: float,
             d_cutoff: float = 1.0) -> tuple[np.ndarray, dict]:
    """One step of the One-Euro filter (Casiez et al. 2012): (filtered x, new state).

    A low-pass filter whose cutoff rises with the signal's speed: still
    points are smoothed hard (no jitter), moving ones barely (little lag).
    """
    x = np.asarray(x, np.float64)
    if state is None:
        return x, {"x": x, "dx": np.zeros_like(x), "t": t}
    dt = max(t - state["t"], 1e-6)

    def alpha(cutoff):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    dx = (x - state["x"]) / dt
    dx_hat = state["dx"] + alpha(d_cutoff) * (dx - state["dx"])
    cutoff = min_cutoff + beta * np.abs(dx_hat)
    a = alpha(cutoff)
    x_hat = state["x"] + a * (x - state["x"])
    return x_hat, {"x": x_hat, "dx": dx_hat, "t": t}


def smooth_track(points: np.ndarray, t: float, state: dict | None, *, min_cutoff: float = 1.0,
                 beta: float = 3.0, jump: float = 0.35, max_gap_s: float = KEEP_GAP_S) -> tuple[np.ndarray, dict]:
    """Smooth one face's points [k, 2] (keypoints, box corners) over time: (smoothed points, new state).

    Points are measured in units of the face's scale (eye distance times 2.5,
    about the face's width, fixed when a track starts), so the filter's
    settings mean the same for small and large faces. The filter starts afresh
    after a gap longer than `max_gap_s`, or when a point moves more than `jump`
    face scales in one step: a cut, after which old positions must not pull
    the face back.
    """
    points = np.asarray(points, np.float64)
    fresh = state is None or t - state["t"] > max_gap_s
    if not fresh:
        scale = state["scale"]
        fresh = np.abs(points / scale - state["euro"]["x"]).max() > jump
    if fresh:
        scale = max(2.5 * float(np.linalg.norm(points[1] - points[0])), 1.0)
        _, euro = one_euro(points / scale, t, None, min_cutoff, beta)
        return points.copy(), {"euro": euro, "scale": scale, "t": t}
    x, euro = one_euro(points / scale, t, state["euro"], min_cutoff, beta)
    return x * scale, {"euro": euro, "scale": scale, "t": t}


# --- the swap in face-crop space -------------------------------------------------------------


def swap_faces(run: Run, crops: list[np.ndarray], to: str) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 crops [R, R, 3] -> (faces float32 [n, R, R, 3] RGB in [0, 1], masks float32 [n, R, R]).

    One network call for the whole batch, on the run's device (bf16 autocast
    on GPUs that have it, as in training).
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(np.stack(crops))).to(run.device)
    x = x.permute(0, 3, 1, 2).float() / 255.0
    cuda = run.device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and torch.cuda.is_bf16_supported())
    with torch.inference_mode(), autocast:
        face, mask = run.model.swap(x, to)
    return (face.float().permute(0, 2, 3, 1).cpu().numpy(), mask.float()[:, 0].cpu().numpy())


def color_match(face: np.ndarray, target: np.ndarray, weight: np.ndarray, method: str = "lab") -> np.ndarray:
    """`face`'s colours moved onto `target`'s, both float32 RGB [H, W, 3] in [0, 1], statistics weighted by `weight`.

    lab: per Lab channel, shift and scale the weighted mean and standard
    deviation (Reinhard et al. 2001). hist: per RGB channel, map the face's
    weighted histogram onto the target's (pixels with weight > 0.5).
    """
    if method == "none":
        return face
    w = np.asarray(weight, np.float32)
    total = float(w.sum())
    if total < 1.0:
        return face
    if method == "lab":
        f = cv2.cvtColor(face.astype(np.float32), cv2.COLOR_RGB2Lab)
        t = cv2.cvtColor(target.astype(np.float32), cv2.COLOR_RGB2Lab)
        ww = w[..., None]
        mf, mt = (f * ww).sum((0, 1)) / total, (t * ww).sum((0, 1)) / total
        sf = np.sqrt(((f - mf) ** 2 * ww).sum((0, 1)) / total)
        st = np.sqrt(((t - mt) ** 2 * ww).sum((0, 1)) / total)
        # A nearly flat channel in the drawn face (an undertrained decoder) would
        # otherwise be stretched into noise.
        gain = np.clip(st / np.maximum(sf, 1e-3), 0.5, 2.0)
        out = (f - mf) * gain + mt
        return np.clip(cv2.cvtColor(out.astype(np.float32), cv2.COLOR_Lab2RGB), 0.0, 1.0)
    if method == "hist":
        sel = w > 0.5
        if sel.sum() < 16:
            return face
        out = np.empty_like(face, dtype=np.float32)
        levels = np.arange(256, dtype=np.float64)
        for c in range(3):
            fq = np.clip(np.rint(face[..., c] * 255), 0, 255).astype(np.int64)
            tq = np.clip(np.rint(target[..., c] * 255), 0, 255).astype(np.int64)
            cdf_f = np.cumsum(np.bincount(fq[sel], minlength=256)) / sel.sum()
            cdf_t = np.cumsum(np.bincount(tq[sel], minlength=256)) / sel.sum()
            lut = np.interp(cdf_f, cdf_t, levels)
            out[..., c] = lut[fq] / 255.0
        return out
    raise ValueError(f"colour method must be lab, hist or none, not {method!r}")


def blend_mask(predicted: np.ndarray | None, landmark: np.ndarray, kind: str = "predicted",
               erode: float = 0.02, feather: float = 0.04) -> np.ndarray:
    """The mask a swapped face is blended with, float32 [R, R] in [0, 1].

    `predicted` is the decoder's mask, `landmark` the template ellipse the
    trainer taught it (trainer.data.face_mask); `both` takes their minimum.
    Erosion pulls the edge in by `erode` of the crop side (the drawn face's
    outline is its least reliable part); a Gaussian blur of `feather` of the
    side softens it. Last, the mask fades to 0 towards the crop's edges (over
    `feather` of the side, at least 2 px), so the square of the crop never
    shows in the frame, even where a poorly trained decoder's mask reaches it.
    """
    if kind == "landmark" or predicted is None:
        m = landmark
    elif kind == "predicted":
        m = predicted
    elif kind == "both":
        m = np.minimum(predicted, landmark)
    else:
        raise ValueError(f"mask must be predicted, landmark or both, not {kind!r}")
    m = np.clip(np.asarray(m, np.float32), 0.0, 1.0)
    size = m.shape[0]
    r = int(round(erode * size))
    if r > 0:
        m = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    sigma = feather * size / 2
    if sigma > 0.3:
        m = cv2.GaussianBlur(m, (0, 0), sigma)
    ramp = max(2.0, feather * size)
    dist = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32)  # pixels to the nearest edge
    fade = np.clip(dist / ramp, 0.0, 1.0)
    return np.clip(m * np.minimum(fade[:, None], fade[None, :]), 0.0, 1.0)


def paste_back(frame: np.ndarray, face: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Warp a BGR float face [R, R, 3] (0-255) and its mask back through the inverse of `matrix` and blend.

    Only the crop's bounding box in the frame is warped and blended; a pixel
    where the warped mask is 0 keeps its value exactly.
    """
    size = face.shape[0]
    inv = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inv[:, :2].T + inv[:, 2]
    h, w = frame.shape[:2]
    x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 1, 0, [w, h])
    if x1 <= x0 or y1 <= y0:
        return frame
    roi_m = inv.copy()
    roi_m[:, 2] -= (x0, y0)
    size_wh = (int(x1 - x0), int(y1 - y0))
    f = cv2.warpAffine(face.astype(np.float32), roi_m, size_wh, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    m = cv2.warpAffine(mask.astype(np.float32), roi_m, size_wh, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0.0)[..., None]
    out = frame.copy()
    roi = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(np.rint(roi + (f - roi) * m), 0, 255).astype(np.uint8)
    return out


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


@dataclass
class Swapper:
    """Everything a frame's swap needs, loaded once: the run, the face models, the identity and the settings."""

    run: Run
    fm: faces.FaceModels
    target: np.ndarray          # [k, dim] embeddings of the replaced identity
    threshold: float
    settings: ConvertSettings
    landmark_mask: np.ndarray = field(init=False)

    def __post_init__(self):
        from trainer.data import face_mask

        self.landmark_mask = face_mask(int(self.run.config["resolution"]), self.run.margin)

    @property
    def decoder(self) -> str:
        return "b" if self.settings.direction == "a2b" else "a"


def find_face(sw: Swapper, image: np.ndarray, t: float, track: dict | None) -> tuple[np.ndarray | None, dict | None]:
    """The chosen face's alignment matrix in one BGR frame (None when absent), and the updated track.

    track: {"box", "emb", "t", "smooth"} of the face chosen last; None starts afresh.
    """
    s = sw.settings
    boxes, kps = faces.detect(sw.fm, image, s.det_size)
    emb = faces.embed(sw.fm, image, kps)
    recent = track is not None and t - track["t"] <= KEEP_GAP_S
    last = (track["box"], track["emb"]) if recent else None
    i, _ = choose_face(boxes, emb, sw.target, sw.threshold, last)
    if i is None:
        return None, track if recent else None
    box = boxes[i, :4]
    points = np.concatenate([kps[i], box.reshape(2, 2)])
    smooth_state = track["smooth"] if recent else None
    if s.smooth:
        points, smooth_state = smooth_track(points, t, smooth_state, min_cutoff=s.min_cutoff, beta=s.beta, jump=s.jump)
    matrix = align_matrix(points[:5], int(sw.run.config["resolution"]), sw.run.margin)
    return matrix, {"box": box, "emb": emb[i], "t": t, "smooth": smooth_state}


def crop_for_model(sw: Swapper, image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The RGB crop the network expects: made as the training crops were (warped at the export's size, then area-resized)."""
    r, big = int(sw.run.config["resolution"]), sw.run.crop_size
    if big > r:
        scale = np.diag([big / r, big / r])
        crop = cv2.resize(warp(image, np.hstack([scale @ matrix[:, :2], (big / r) * matrix[:, 2:]]), big), (r, r),
                          interpolation=cv2.INTER_AREA)
    else:
        crop = warp(image, matrix, r)
    return crop[:, :, ::-1]


def swap_batch(sw: Swapper, images: list[np.ndarray], matrices: list[np.ndarray | None]) -> list[np.ndarray]:
    """Swap the chosen face in each BGR image (None: no face, image returned as is); one network call."""
    todo = [i for i, m in enumerate(matrices) if m is not None]
    out = list(images)
    if not todo:
        return out
    crops = [crop_for_model(sw, images[i], matrices[i]) for i in todo]
    drawn, masks = swap_faces(sw.run, crops, sw.decoder)
    s = sw.settings
    for j, i in enumerate(todo):
        original = crops[j].astype(np.float32) / 255.0
        face = color_match(drawn[j], original, sw.landmark_mask, s.color)
        mask = blend_mask(masks[j], sw.landmark_mask, s.mask, s.erode, s.feather)
        out[i] = paste_back(images[i], face[:, :, ::-1] * 255.0, mask, matrices[i])
    return out


def swap_frame(sw: Swapper, image: np.ndarray, t: float = 0.0, track: dict | None = None) -> tuple[np.ndarray, bool, dict | None]:
    """One BGR image with its chosen face swapped: (image, swapped?, track). No visible mark."""
    matrix, track = find_face(sw, image, t, track)
    return swap_batch(sw, [image], [matrix])[0], matrix is not None, track


# --- frames in and out of PyAV ------------------------------------------------------------

_PLANAR_YUV = {"yuv420p": (2, 2), "yuvj420p": (2, 2), "yuv422p": (2, 1), "yuvj422p": (2, 1),
               "yuv444p": (1, 1), "yuvj444p": (1, 1)}


def bgr_to_frame(bgr: np.ndarray, like, fmt: str, before: np.ndarray | None = None):
    """A VideoFrame in pixel format `fmt` showing `bgr`, with `like`'s timing and colour tags.

    When `before` (the BGR image `like` decodes to) is given and `like` is
    planar YUV in `fmt`, only the pixels where `bgr` differs from `before` get
    new values (a chroma sample when any pixel it covers changed): every
    other value is `like`'s own, bit for bit, instead of passing through
    YUV -> RGB -> YUV. Only the boxes around the changes are converted.
    """
    kw = {}
    if like.colorspace in (1, 4, 5, 6, 7, 9):  # the matrices swscale knows; others mean "unspecified" (BT.601)
        kw["dst_colorspace"] = like.colorspace
    if like.color_range:
        kw["dst_color_range"] = like.color_range
    sub = _PLANAR_YUV.get(fmt)
    if before is None or sub is None or like.format.name != fmt:
        new = _from_bgr(bgr, fmt, kw)
    else:
        d = cv2.absdiff(bgr, before)
        changed = (d[..., 0] | d[..., 1] | d[..., 2]) != 0  # 15x faster than np.any(..., axis=2)
        planes = [_plane_array(p).copy() for p in like.planes]
        for y0, y1, x0, x1 in _changed_boxes(changed, 16):
            roi = _from_bgr(bgr[y0:y1, x0:x1], fmt, kw)
            sel_y = changed[y0:y1, x0:x1]
            for k, plane in enumerate(roi.planes):
                sx, sy = (1, 1) if k == 0 else sub
                upd = _plane_array(plane)
                if k == 0:
                    sel = sel_y
                else:
                    h, w = sel_y.shape
                    padded = np.pad(sel_y, ((0, (-h) % sy), (0, (-w) % sx)))
                    sel = padded.reshape(padded.shape[0] // sy, sy, padded.shape[1] // sx, sx).any(axis=(1, 3))
                target = planes[k][y0 // sy:y0 // sy + upd.shape[0], x0 // sx:x0 // sx + upd.shape[1]]
                np.copyto(target, upd, where=sel[:target.shape[0], :target.shape[1]])
        new = _frame_from_planes(planes, fmt, bgr.shape[1], bgr.shape[0])
    new.pts, new.time_base, new.duration = like.pts, like.time_base, like.duration
    for tag in ("color_range", "colorspace", "color_primaries", "color_trc"):
        try:
            setattr(new, tag, getattr(like, tag))
        except (AttributeError, ValueError, TypeError):
            pass
    return new


def _from_bgr(bgr: np.ndarray, fmt: str, kw: dict):
    import av

    return av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24").reformat(format=fmt, threads=1, **kw)


def _changed_boxes(changed: np.ndarray, block: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) boxes, on a `block`-pixel grid, that together cover every True of `changed`.

    One box per connected group of changed blocks: the swapped face and the
    corner mark are converted separately, not the whole span between them.
    Groups a block apart are joined first (the ragged rim of a feathered
    mask would otherwise make dozens of small boxes, each a new swscale setup).
    """
    h, w = changed.shape
    gh, gw = -(-h // block), -(-w // block)
    grid = np.pad(changed, ((0, gh * block - h), (0, gw * block - w))).reshape(gh, block, gw, block).any(axis=(1, 3))
    grid = cv2.dilate(grid.astype(np.uint8), np.ones((3, 3), np.uint8)) & 1
    _, _, stats, _ = cv2.connectedComponentsWithStats(grid, connectivity=8)
    return [(y * block, min(h, (y + bh) * block), x * block, min(w, (x + bw) * block))
            for x, y, bw, bh, _ in stats[1:]]


def _plane_array(plane) -> np.ndarray:
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:plane.height, :plane.width]


def _frame_from_planes(planes: list[np.ndarray], fmt: str, width: int, height: int):
    import av

    frame = av.VideoFrame(width, height, fmt)
    for plane, data in zip(frame.planes, planes):
        view = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        view[:data.shape[0], :data.shape[1]] = data
    return frame


@dataclass
class VideoInput:
    container: object
    stream: object
    audio: list
    info: media.VideoInfo


def open_input(video: Path) -> VideoInput:
    try:
        container, stream = media.open_video(video)
    except media.MediaError as e:
        raise ConvertError(f"{video}: {e}") from None
    return VideoInput(container, stream, list(container.streams.audio), media.video_info(stream, container))


def demux(inp: VideoInput, max_frames: int | None, on_audio: Callable, stats: dict) -> Iterator:
    """Decoded video frames in presentation order; audio packets go to `on_audio` in file order.

    With `max_frames`, the audio is cut where the last frame ends. The decoder
    hands frames back a few packets late, so audio packets are held until a
    decoded frame (or the end) shows they come before the cut.
    """
    import av

    frames, end = 0, None
    held: list = []
    finished: set = set()  # audio streams that reached the cut

    def seconds(packet) -> float | None:
        return None if packet.pts is None else float(packet.pts * packet.time_base)

    def release(upto: float) -> None:
        keep = []
        for p in held:
            if seconds(p) is None or seconds(p) < upto:
                on_audio(p)
            else:
                keep.append(p)
        held[:] = keep

    try:
        for packet in inp.container.demux(inp.stream, *inp.audio):
            if packet.stream.type == "audio":
                if packet.dts is None:
                    continue  # the demuxer's flush packet carries no data
                if not max_frames:
                    on_audio(packet)
                elif end is None:
                    held.append(packet)
                elif seconds(packet) is not None and seconds(packet) >= end:
                    finished.add(packet.stream.index)
                    if len(finished) == len(inp.audio):
                        break
                elif packet.stream.index not in finished:
                    on_audio(packet)
                continue
            if end is not None:
                continue
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError:
                stats["bad_packets"] = stats.get("bad_packets", 0) + 1
                continue
            for frame in decoded:
                yield frame
                frames += 1
                if frame.time is not None:
                    release(frame.time)
                if max_frames and frames >= max_frames:
                    end = (frame.time or 0.0) + float((frame.duration or 0) * (frame.time_base or 0))
                    release(end)
                    held.clear()  # what is left starts after the cut
                    break
            if end is not None and not inp.audio:
                break
        if end is None:
            release(math.inf)
    except av.error.FFmpegError as e:
        stats["error"] = f"decoding stopped after {frames} frames ({media._av_reason(e)})"


@dataclass
class VideoOutput:
    container: object
    stream: object
    audio: dict                 # input audio stream index -> output stream
    durations: dict             # pts -> frame duration, for the packets the encoder hands back
    fmt: str


def open_output(path: Path, container_format: str, first, inp: VideoInput, settings: ConvertSettings,
                metadata: dict) -> VideoOutput:
    import av

    out = av.open(str(path), mode="w", format=container_format)
    try:
        for k, v in metadata.items():
            out.metadata[k] = v
        stream = out.add_stream("libx264", rate=inp.stream.average_rate or inp.stream.guessed_rate or 25)
        supported = {f.name for f in av.codec.Codec("libx264", "w").video_formats}
        fmt = first.format.name if first.format.name in supported else "yuv420p"
        stream.width, stream.height, stream.pix_fmt = first.width, first.height, fmt
        stream.time_base = first.time_base or inp.stream.time_base
        stream.codec_context.time_base = stream.time_base
        # No B-frames: with them, MP4's edit list makes players estimate a different
        # frame rate for clips whose first frame is not at time 0 (every frame time
        # would still be the input's).
        stream.codec_context.max_b_frames = 0
        stream.options = {"qp": "0"} if settings.lossless else {"crf": str(settings.crf), "preset": settings.preset}
        for tag in ("color_range", "colorspace", "color_primaries", "color_trc"):
            try:
                setattr(stream.codec_context, tag, getattr(first, tag))
            except (AttributeError, ValueError, TypeError):
                pass
        rotation = int(getattr(first, "rotation", 0) or 0)
        if rotation:
            stream.set_display_rotation(rotation)
        audio = {}
        for a in inp.audio:
            try:
                audio[a.index] = out.add_stream_from_template(a)
            except (ValueError, av.error.FFmpegError) as e:
                raise ConvertError(f"{path}: cannot copy the {a.codec_context.name} audio into "
                                   f"{container_format} ({e}); choose an .mkv OUT") from None
        out.start_encoding()
    except av.error.FFmpegError as e:
        out.close()
        raise ConvertError(f"{path}: cannot start writing ({media._av_reason(e)})") from None
    except BaseException:
        out.close()
        raise
    return VideoOutput(out, stream, audio, {}, fmt)


def write_frame(vo: VideoOutput, frame) -> None:
    if frame is not None:
        frame.pict_type = 0  # let the encoder choose frame types, not copy the input's
        if frame.pts is not None and frame.duration:
            vo.durations[frame.pts] = frame.duration
    for packet in vo.stream.encode(frame):
        # The encoder guesses the last frame's duration; the input's keeps the clip's length.
        packet.duration = vo.durations.pop(packet.pts, packet.duration)
        vo.container.mux(packet)


def write_audio(vo: VideoOutput, packet) -> None:
    packet.stream = vo.audio[packet.stream_index]
    vo.container.mux(packet)


# --- the command -------------------------------------------------------------------------------


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + SIDECAR_SUFFIX)


def _check_writable(target: Path, what: str) -> None:
    """Fail now, not after minutes of work, when `target`'s folder cannot take a new file."""
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConvertError(f"{target}: cannot write the {what} there ({e.strerror or e})") from None


def _check_target(target: Path, video: Path, force: bool, what: str) -> None:
    if target.exists() and video.exists() and target.resolve() == video.resolve():
        raise ConvertError(f"{target}: is the input video; choose another output")
    if target.is_dir():
        raise ConvertError(f"{target}: is a folder; give a file name for the {what}")
    if target.exists() and not force:
        raise ConvertError(f"{target}: exists; use --force to replace it")
    _check_writable(target, what)


def load_swapper(run: str | os.PathLike, refs: list | None = None, models: str | None = None, device: str = "auto",
                 settings: ConvertSettings = ConvertSettings()) -> tuple[Swapper, dict]:
    """Everything a swap needs (run, face models, the replaced identity), and a record of the identity choice."""
    from .identify import IdentityError, default_threshold, reference_embeddings

    choices = {"direction": ("a2b", "b2a"), "mask": ("predicted", "landmark", "both"), "color": ("lab", "hist", "none")}
    for name, allowed in choices.items():
        if getattr(settings, name) not in allowed:
            raise ConvertError(f"--{name} must be one of {', '.join(allowed)}, not {getattr(settings, name)!r}")
    r = load_run(run, device)
    try:
        fm = faces.load_models(models or export_models(r, settings.direction),
                               device="cpu" if device == "cpu" else "auto", det_thresh=settings.det_thresh)
    except faces.ModelError as e:
        raise ConvertError(str(e)) from None
    if refs:
        try:
            target = reference_embeddings(fm, refs)
        except IdentityError as e:
            raise ConvertError(str(e)) from None
        method = f"reference photos: {', '.join(str(p) for p in refs)}"
    else:
        target, method = source_embedding(r, settings.direction, fm)
    threshold = settings.threshold if settings.threshold is not None else default_threshold({"models": fm.describe()})
    side = "A" if settings.direction == "a2b" else "B"
    other = "B" if side == "A" else "A"
    identity = {"replaced": side, "replaced_export": r.config.get(side.lower()), "drawn": other,
                "drawn_export": r.config.get(other.lower()), "chosen_by": method, "threshold": round(float(threshold), 4)}
    return Swapper(r, fm, target, float(threshold), settings), identity


def _label(sw: Swapper, identity: dict, video: Path, video_sha: str, info: media.VideoInfo, settings: ConvertSettings,
           started: str) -> dict:
    """The part of the synthetic-media record every output shares."""
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


def _metadata(label: dict, sidecar_name: str) -> dict:
    line = (f"SYNTHETIC: faces replaced by curator convert {__version__} with model run {label['model']['run_id']} "
            f"({label['identity']['replaced']} -> {label['identity']['drawn']}); details in {sidecar_name}")
    return {"comment": line, "description": line, "synthetic": "faces replaced (curator convert)",
            "curator_run_id": label["model"]["run_id"]}


def convert(video: str | os.PathLike, run: str | os.PathLike, out: str | os.PathLike | None = None, *,
            frames_out: str | os.PathLike | None = None, refs: list | None = None, models: str | None = None,
            device: str = "auto", settings: ConvertSettings = ConvertSettings(), force: bool = False,
            on_total: Callable[[int], None] | None = None, on_progress: Callable[[int], None] | None = None) -> dict:
    """Convert VIDEO with RUN into OUT (a video) and/or FRAMES_OUT (a folder of PNGs); returns a summary.

    Raises ConvertError with one line for bad input; nothing is left at OUT or
    FRAMES_OUT unless the whole conversion succeeded.
    """
    t0 = time.perf_counter()
    started = now()
    video = Path(video).expanduser()
    if out is None and frames_out is None:
        raise ConvertError("give --out OUT (a video file) and/or --frames-out DIR (a folder of PNGs)")
    if not video.is_file():
        raise ConvertError(f"{video}: no such file")
    out = Path(out).expanduser().absolute() if out is not None else None
    frames_dir = Path(frames_out).expanduser().absolute() if frames_out is not None else None
    if out is not None:
        container_format = VIDEO_SUFFIXES.get(out.suffix.lower())
        if container_format is None:
            raise ConvertError(f"{out}: unknown video type {out.suffix or '(none)'!r}; use .mp4, .mov or .mkv")
        _check_target(out, video, force, "video")
        _check_target(sidecar_path(out), video, True, "sidecar")
    if frames_dir is not None:
        if frames_dir.exists() and (not frames_dir.is_dir() or any(frames_dir.iterdir())) and not force:
            raise ConvertError(f"{frames_dir}: exists and is not empty; use --force to replace it")
        _check_writable(frames_dir, "frames folder")
    if settings.batch <= 0 or (settings.max_frames is not None and settings.max_frames <= 0):
        raise ConvertError("--batch and --max-frames must be positive")

    inp = open_input(video)
    try:
        sw, identity = load_swapper(run, refs, models, device, settings)
        video_sha = media.sha256_file(video)
        label = _label(sw, identity, video, video_sha, inp.info, settings, started)
        total = inp.info.frames if not settings.max_frames else min(inp.info.frames or settings.max_frames,
                                                                   settings.max_frames)
        if on_total:
            on_total(total)
        stats: dict = {"frames": 0, "swapped": 0}
        sidecar = sidecar_path(out) if out is not None else None
        sidecar_written = False
        try:
            with ExitStack() as stack:
                tmp_video = stack.enter_context(atomic_path(out)) if out is not None else None
                tmp_frames = stack.enter_context(_temp_folder(frames_dir)) if frames_dir is not None else None
                state = {"vo": None, "pending_audio": []}
                # Registered last, so it runs first: the container is closed before its file is removed.
                stack.callback(lambda: state["vo"] is not None and _close_quietly(state["vo"]))
                digits = max(6, len(str(max(total, 1))))

                def on_audio(packet):
                    if state["vo"] is None:
                        state["pending_audio"].append(packet)  # the output opens at the first frame (format, rotation)
                    else:
                        write_audio(state["vo"], packet)

                def write(frame, before, after):
                    index = stats["frames"]
                    stats["frames"] += 1
                    if tmp_frames is not None:
                        ok, buf = cv2.imencode(".png", after)
                        if not ok:
                            raise ConvertError(f"{frames_dir}: cannot encode frame {index} as PNG")
                        inside(tmp_frames, f"frame_{index:0{digits}d}.png").write_bytes(buf.tobytes())
                    if tmp_video is None:
                        return
                    if state["vo"] is None:
                        state["vo"] = open_output(tmp_video, container_format, frame, inp, settings,
                                                  _metadata(label, sidecar.name))
                        for packet in state["pending_audio"]:
                            write_audio(state["vo"], packet)
                        state["pending_audio"].clear()
                    vo = state["vo"]
                    rotation = media.display_rotation(frame)
                    if after is before and frame.format.name == vo.fmt:
                        write_frame(vo, frame)  # untouched: the decoded frame itself
                    else:
                        write_frame(vo, bgr_to_frame(media.rotate(after, -rotation), frame, vo.fmt,
                                                     media.rotate(before, -rotation)))

                # Decoding and face detection (FFmpeg, onnxruntime: both release the GIL) run in
                # a thread ahead of the swap, blending and encoding here.
                for kind, *item in media.prefetch(analyse(inp, sw, stats), depth=4):
                    if kind == "audio":
                        on_audio(item[0])
                        continue
                    batch, images, matrices = item
                    for frame, before, after, matrix in zip(batch, images, swap_batch(sw, images, matrices), matrices):
                        stats["swapped"] += matrix is not None
                        write(frame, before, visible_mark(after) if settings.visible_mark else after)
                    if on_progress:
                        on_progress(len(batch))

                if stats["frames"] == 0:
                    raise ConvertError(f"{video}: no video frames could be decoded" +
                                       (f" ({stats['error']})" if stats.get("error") else ""))
                if stats["swapped"] == 0:
                    raise ConvertError(
                        f"{video}: no face of identity {identity['replaced']} in any of its {stats['frames']} frames "
                        f"(similarity threshold {sw.threshold:.2f}); check --direction, or pass --ref photos of the "
                        "person to replace")
                label.update(frames=stats["frames"], frames_swapped=stats["swapped"], visible_mark=settings.visible_mark)
                label["input"]["audio_streams"] = len(inp.audio)
                if tmp_frames is not None:
                    write_json(tmp_frames / "synthetic.json",
                               {**label, "output": {"path": str(frames_dir), "files": "frame_*.png"}})
                if tmp_video is not None:
                    vo, state["vo"] = state["vo"], None
                    write_frame(vo, None)  # drain the encoder
                    vo.container.close()
                    write_json(sidecar, {**label, "output": {"path": str(out), "sha256": media.sha256_file(tmp_video),
                                                             "codec": "libx264", "pix_fmt": vo.fmt,
                                                             "lossless": settings.lossless}})
                    sidecar_written = True
                # Leaving the block renames the frames folder, then the video, into place.
        except BaseException:
            if sidecar_written:  # the video it describes never arrived
                sidecar.unlink(missing_ok=True)
            raise
        result = {"input": str(video.resolve()), "frames": stats["frames"], "frames_swapped": stats["swapped"],
                  "width": inp.info.width, "height": inp.info.height, "fps": round(inp.info.fps, 6),
                  "audio_streams": len(inp.audio), "run_id": sw.run.run_id, "device": str(sw.run.device)}
        if out is not None:
            result.update(out=str(out), sidecar=str(sidecar))
        if frames_dir is not None:
            result["frames_out"] = str(frames_dir)
        notes = []
        if not inp.audio:
            notes.append("the input has no audio stream, so neither has the output")
        if stats.get("error"):
            notes.append(stats["error"])
        if stats.get("bad_packets"):
            notes.append(f"{stats['bad_packets']} damaged video packet(s) skipped")
        if notes:
            result["notes"] = notes
        result["seconds"] = round(time.perf_counter() - t0, 2)
        return result
    finally:
        inp.container.close()


def analyse(inp: VideoInput, sw: Swapper, stats: dict) -> Iterator[tuple]:
    """The input in file order, as ("audio", packet) and ("batch", frames, upright BGR images, matrices).

    A batch is `settings.batch` decoded frames with the chosen face found,
    tracked and smoothed in each (matrix None where it is absent).
    """
    audio: list = []
    batch, images, matrices = [], [], []
    track = None
    for index, frame in enumerate(demux(inp, sw.settings.max_frames, audio.append, stats)):
        yield from (("audio", packet) for packet in audio)
        audio.clear()
        image = media.to_bgr(frame)
        t = float(frame.time) if frame.time is not None else index / max(inp.info.fps, 1e-6)
        matrix, track = find_face(sw, image, t, track)
        batch.append(frame)
        images.append(image)
        matrices.append(matrix)
        if len(batch) >= sw.settings.batch:
            yield "batch", batch, images, matrices
            batch, images, matrices = [], [], []
    if batch:
        yield "batch", batch, images, matrices
    yield from (("audio", packet) for packet in audio)


def _close_quietly(vo: VideoOutput) -> None:
    try:
        vo.container.close()
    except Exception:  # a half-written file may not close cleanly; it is deleted right after
        pass


@contextmanager
def _temp_folder(target: Path) -> Iterator[Path]:
    """A temporary folder beside `target`, renamed over it on success and removed on any failure."""
    tmp = temp_dir(target)
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def preview(video: str | os.PathLike, run: str | os.PathLike, out: str | os.PathLike, count: int = 8, *,
            refs: list | None = None, models: str | None = None, device: str = "auto",
            settings: ConvertSettings = ConvertSettings(), force: bool = False,
            on_total: Callable[[int], None] | None = None, on_progress: Callable[[int], None] | None = None) -> dict:
    """Write `count` frames of VIDEO side by side (original | swapped) as PNGs into folder OUT, to judge settings.

    The whole video is decoded (no seeking), but faces are looked for only in
    3 x count evenly spaced frames; the `count` previews are spread evenly
    over those that have the face. No temporal smoothing (the frames are far apart).
    """
    t0 = time.perf_counter()
    started = now()
    video = Path(video).expanduser()
    out = Path(out).expanduser().absolute()
    if count <= 0:
        raise ConvertError("--preview needs a positive number of frames")
    if not video.is_file():
        raise ConvertError(f"{video}: no such file")
    if out.suffix.lower() in VIDEO_SUFFIXES or (out.exists() and not out.is_dir()):
        raise ConvertError(f"{out}: --preview writes a folder of PNGs; give a folder, not a video file")
    if out.exists() and any(out.iterdir()) and not force:
        raise ConvertError(f"{out}: exists and is not empty; use --force to replace it")
    _check_writable(out, "preview folder")
    settings = ConvertSettings(**{**asdict(settings), "smooth": False})
    inp = open_input(video)
    try:
        sw, identity = load_swapper(run, refs, models, device, settings)
        label = _label(sw, identity, video, media.sha256_file(video), inp.info, settings, started)
        estimate = inp.info.frames if not settings.max_frames else min(inp.info.frames or settings.max_frames,
                                                                      settings.max_frames)
        picks = set(np.linspace(0, max(estimate - 1, 0), min(3 * count, max(estimate, 1))).round().astype(int).tolist())
        if on_total:
            on_total(estimate)
        found: list[tuple[int, np.ndarray, np.ndarray]] = []
        stats: dict = {}
        for index, frame in enumerate(demux(inp, settings.max_frames, lambda p: None, stats)):
            if on_progress:
                on_progress(1)
            if index not in picks:
                continue
            image = media.to_bgr(frame)
            swapped, hit, _ = swap_frame(sw, image)
            if hit:
                found.append((index, image, swapped))
        if not found:
            raise ConvertError(f"{video}: no face of identity {identity['replaced']} in the {len(picks)} frames "
                               f"looked at (similarity threshold {sw.threshold:.2f}); check --direction, or pass --ref "
                               "photos of the person to replace")
        chosen = [found[i] for i in sorted(set(np.linspace(0, len(found) - 1, min(count, len(found))).round().astype(int)))]
        with _temp_folder(out) as tmp:
            files = []
            for index, image, swapped in chosen:
                right = visible_mark(swapped) if settings.visible_mark else swapped
                gap = np.full((image.shape[0], max(4, image.shape[1] // 100), 3), 255, np.uint8)
                ok, buf = cv2.imencode(".png", np.hstack([image, gap, right]))
                if not ok:
                    raise ConvertError(f"{out}: cannot encode preview of frame {index} as PNG")
                name = f"preview_{index:06d}.png"
                inside(tmp, name).write_bytes(buf.tobytes())
                files.append(name)
            write_json(tmp / "synthetic.json", {**label, "visible_mark": settings.visible_mark,
                                               "output": {"path": str(out), "previews": files,
                                                          "layout": "original | swapped, side by side"}})
        return {"input": str(video.resolve()), "out": str(out), "previews": len(files), "frames_looked_at": len(picks),
                "frames_with_face": len(found), "files": files, "run_id": sw.run.run_id,
                "seconds": round(time.perf_counter() - t0, 2)}
    finally:
        inp.container.close()
