"""One face in one frame: find it, draw the other identity's face in its place, blend it back.

Everything here works on images and face crops, not on files: `curator
convert` runs it over a video's frames, and `swap_faces` alone turns aligned
crops into drawn faces and masks (for evaluating a run on crops, no video
needed). The model run itself (`load_run`) is loaded here too, since every
swap starts from it.

    detect faces (the `extract` face module) -> choose the face of the replaced
    identity -> smooth its keypoints over time (One-Euro) -> align it to the
    training template -> encoder + the other identity's decoder -> colour-match
    to the original face -> blend through the predicted or landmark mask
    (eroded, feathered) -> warp back into the frame
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..models import faces
from ..measure.align import DEFAULT_MARGIN, align_matrix, warp
from ..errors import ConvertError
from ..models.recognisers import DEFAULT

# A face that overlaps the previously chosen one this much, and looks like it
# (the recogniser's `track_link` similarity, curator.recognisers), continues the
# track even below the identity threshold: profiles and blurred frames embed
# poorly, and dropping them would make the swap flicker on and off (the same
# guards as identify.link_tracks).
KEEP_IOU = 0.3
KEEP_GAP_S = 0.5  # a track lost for longer starts afresh


@dataclass(frozen=True)
class SwapSettings:
    """How a face is found, tracked, drawn and blended (convert's ConvertSettings adds batching and encoding)."""

    direction: str = "a2b"        # a2b: replace identity A's face with decoder B's drawing; b2a the reverse
    mask: str = "predicted"       # predicted (the decoder's mask), landmark (the training template's ellipse), both (their minimum)
    erode: float = 0.02           # shrink the mask by this fraction of the face crop's side
    feather: float = 0.04         # then blur its edge over this fraction of the crop's side
    color: str = "lab"            # lab (mean/std in Lab), hist (histogram matching per RGB channel), none
    smooth: bool = True           # One-Euro filter on the keypoints
    min_cutoff: float = 1.0       # One-Euro: Hz; lower = steadier when the head is still
    beta: float = 3.0             # One-Euro: how fast the cutoff rises with speed (per face-width/s); higher = less lag
    jump: float = 0.35            # a keypoint move over this share of the face scale in one frame is a cut: reset
    threshold: float | None = None  # same-person cosine similarity; default per recogniser (curator.recognisers)
    det_size: int = 640
    det_thresh: float = 0.6


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


def run_inputs(run: str | os.PathLike) -> dict[str, str]:
    """The exports a run folder learned from, as {path: what it is}, read from its weights' metadata ({} if none)."""
    from trainer.checkpoint import read_config

    config = read_config(Path(run).expanduser()) or {}
    return {config[side]: f"identity {side.upper()}'s export, which the run learned from"
            for side in ("a", "b") if config.get(side)}


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
                last: tuple[np.ndarray, np.ndarray] | None = None,
                keep_sim: float = DEFAULT.track_link) -> tuple[int | None, float]:
    """Index of the face to replace in one frame (or None), and its similarity to the target.

    The most similar face at or above `threshold`; failing that, a face that
    continues `last` (the box and embedding chosen in the previous frame):
    overlapping it by KEEP_IOU and at least `keep_sim` alike (the
    recogniser's track link).
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
        ok = (overlap >= KEEP_IOU) & (alike >= keep_sim)
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


@dataclass
class Swapper:
    """Everything a frame's swap needs, loaded once: the run, the face models, the identity and the settings."""

    run: Run
    fm: faces.FaceModels
    target: np.ndarray          # [k, dim] embeddings of the replaced identity
    threshold: float
    settings: SwapSettings
    keep_sim: float = DEFAULT.track_link  # the recogniser's track link (choose_face)
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
    i, _ = choose_face(boxes, emb, sw.target, sw.threshold, last, sw.keep_sim)
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
