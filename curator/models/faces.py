"""The face models: loading an InsightFace model pack and running it.

A *pack* is what InsightFace calls a model directory: a detector with 5
keypoints, a recogniser, and optionally landmark models (buffalo_l has a 3D
68-point and a 2D 106-point one). `--models` (or CURATOR_MODELS) names a pack
InsightFace knows (`buffalo_l`, the default, which InsightFace downloads to
~/.insightface on first use) or a directory of ONNX files.

We load through `insightface.app.FaceAnalysis` so users get InsightFace's own
download and model routing, but run the graphs ourselves, in the runtime of
`--runtime` / `--device` (curator/models/runtime.py: onnxruntime or PyTorch, CPU or
CUDA), a batch at a time: the detector over a batch of frames of one size
(`detect_batch`), the recogniser and the 3D-68 landmark model over all faces
of a batch (`embed_batch`, `landmarks_batch`). Pre- and post-processing are
InsightFace's, written here once for both runtimes and any batch size.

68-point landmarks (`--landmarks`) come from the pack's 3D-68 model (`auto`
when the pack has one), from dlib's shape predictor (`dlib`, curator/models/dlib68.py;
also `auto` on a pack without a 3D-68 model when dlib and its model are
installed, because eye and mouth states need 68 points: docs/dependencies.md),
or not at all (`none`); `FaceModels.landmarks` names the one in use.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from . import dlib68
from . import runtime as runtimes
from ..measure.align import recognition_crop
from ..errors import CuratorError
from ..fs.hash import sha256_file
from ..media import MediaError, read_image

DEFAULT_PACK = "buffalo_l"
ENV_PACK = "CURATOR_MODELS"
ENV_ROOT = "CURATOR_MODELS_ROOT"  # where named packs are stored; InsightFace's default otherwise
# --landmarks: what the user may ask for, and what a workspace records (auto resolved to 3d68, dlib or none).
LANDMARK_OPTIONS = ("auto", "dlib", "none")
LANDMARK_METHODS = ("3d68", "dlib", "none")


class ModelError(CuratorError):
    pass


def resolve_pack(option: str | None) -> str:
    return option or os.environ.get(ENV_PACK) or DEFAULT_PACK


@dataclass
class FaceModels:
    pack: str
    path: Path
    detector: object
    recognizer: object
    landmarks_3d68: object | None = None
    landmarks_2d106: object | None = None
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    runtime: runtimes.Runtime = runtimes.Runtime("onnxruntime", "cpu")
    graphs: dict = field(default_factory=dict)  # task -> runtime.Graph: "detection", "recognition", "landmark_3d_68"
    landmarks: str = "none"  # the 68-point landmarks run per face: "3d68", "dlib" or "none"
    shape_predictor: object | None = None  # dlib's, when landmarks == "dlib"
    landmark_model: dict | None = None  # {"file", "sha256"} of dlib's model, for workspace.json

    @cached_property
    def embedding_dim(self) -> int:
        size = self.recognizer.input_size[0]
        return int(recognise(self, [np.zeros((size, size, 3), np.uint8)]).shape[-1])

    def describe(self) -> dict:
        """What workspace.json records about the models, so a changed model file is noticed."""
        tasks = {"detection": True, "recognition": True, "landmark_3d_68": self.landmarks_3d68 is not None,
                 "landmark_2d_106": self.landmarks_2d106 is not None}
        described = {"pack": self.pack, "path": str(self.path), "files": self.files, "tasks": tasks,
                     "embedding_dim": self.embedding_dim}
        if self.landmark_model:
            described["landmark_model"] = self.landmark_model
        return described


def session_options(threads: int | None = None):
    """onnxruntime settings for every model we run.

    onnxruntime's CPU thread pool spin-waits between operators by default. In
    extract, FFmpeg decodes on the same cores at the same time, and the
    spinning threads took their CPU: on 2 cores an extract run took 1.4x the
    wall time and 1.6x the CPU time of one with spinning off. `threads` caps
    each model call's threads (None: onnxruntime's default, one per core);
    extract runs several single-threaded calls side by side instead, which
    packs the cores better (docs/benchmarks.md, Extract, "how the cores are used").
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = int(threads)
    return so


def load_models(pack: str | None = None, *, device: str = "auto", runtime: str | runtimes.Runtime = "auto",
                det_thresh: float = 0.5,
                threads: int | None = None, landmarks: str = "auto") -> FaceModels:
    """Load a model pack by name or directory; raises ModelError with a user-facing reason.

    `runtime`, `device`: see curator/models/runtime.py (`choose`), or a Runtime. `threads`: CPU
    threads per onnxruntime call (None: one per core). The models may be
    called from several threads at once (onnxruntime sessions and PyTorch
    modules in inference mode are thread-safe, dlib's predictor is only
    read). `landmarks`: one of LANDMARK_OPTIONS or LANDMARK_METHODS (see
    `use_landmarks`).
    """
    import onnxruntime as ort
    from insightface.app import FaceAnalysis

    name = resolve_pack(pack)
    rt = runtime if isinstance(runtime, runtimes.Runtime) else runtimes.choose(runtime, device)
    ort.set_default_logger_severity(3)
    root = os.environ.get(ENV_ROOT, "~/.insightface")
    direct = Path(name).expanduser()
    if any(sep in name for sep in ("/", os.sep)) and not direct.is_dir():
        raise ModelError(f"model pack {name}: no such directory")
    try:
        # InsightFace routes the pack's files to tasks (and downloads named packs); its own sessions are
        # CPU ones, used for nothing but that, and dropped below.
        app = FaceAnalysis(name=str(direct) if direct.is_dir() else name, root=root,
                           providers=["CPUExecutionProvider"], sess_options=session_options(1))
    except AssertionError:
        raise ModelError(f"model pack {name}: no face detector (.onnx with 5-keypoint outputs) found") from None
    except Exception as e:  # InsightFace raises plain exceptions for failed downloads and bad files
        raise ModelError(f"model pack {name} could not be loaded ({e}); without network access, point --models or {ENV_PACK} at a local pack directory") from None
    if "recognition" not in app.models:
        raise ModelError(f"model pack {name}: no recognition model found (needed for identity embeddings)")
    det = app.models["detection"]
    det.prepare(-1, input_size=(640, 640), det_thresh=det_thresh)
    if not getattr(det, "use_kps", True):
        raise ModelError(f"model pack {name}: the detector gives no keypoints (curator needs 5)")
    model_dir = Path(app.model_dir)
    files = {p.name: sha256_file(p) for p in sorted(model_dir.glob("*.onnx"))}
    graphs = {}
    for task in ("detection", "recognition", "landmark_3d_68"):
        if task in app.models:
            graphs[task] = runtimes.Graph(app.models[task].model_file, rt, task, session_options(threads))
            app.models[task].session = None  # InsightFace's CPU session: routing done, not run
    fm = FaceModels(
        pack=direct.name if direct.is_dir() else name,
        path=model_dir,
        detector=det,
        recognizer=app.models["recognition"],
        landmarks_3d68=app.models.get("landmark_3d_68"),
        landmarks_2d106=app.models.get("landmark_2d_106"),
        files=files,
        runtime=rt,
        graphs=graphs,
    )
    return use_landmarks(fm, landmarks)


def use_landmarks(fm: FaceModels, option: str) -> FaceModels:
    """Set which 68-point landmarks `landmarks()` gives: `auto` is the pack's 3D-68 model when it has one, else
    dlib's when installed, else none."""
    method = resolve_landmarks(option, fm.landmarks_3d68 is not None)
    if method not in LANDMARK_METHODS:  # only from an edited workspace.json: the options are checked before
        raise ModelError(f"unknown landmark method {option!r}; one of {', '.join(LANDMARK_OPTIONS)}")
    if method == "3d68" and fm.landmarks_3d68 is None:
        raise ModelError(f"model pack {fm.pack} has no 3D-68 landmark model, which this workspace's faces were made with")
    if method == "dlib":
        fm.shape_predictor = dlib68.load()
        path = dlib68.model_path()
        fm.landmark_model = {"file": str(path), "sha256": sha256_file(path)}
    fm.landmarks = method
    return fm


def resolve_landmarks(option: str, pack_has_3d68: bool, dlib_installed: bool | None = None) -> str:
    """The method (LANDMARK_METHODS) that a --landmarks option gives with a pack that has or lacks a 3D-68 model.

    `dlib_installed`: None looks (dlib68.installed()); workspaces written before `auto` could give dlib pass
    False to get what auto gave them.
    """
    if option == "auto":
        if pack_has_3d68:
            return "3d68"
        return "dlib" if (dlib68.installed() if dlib_installed is None else dlib_installed) else "none"
    return option


def detector_size(height: int, width: int, cap: int = 640) -> tuple[int, int]:
    """Detector input (w, h): the frame's own aspect, long side at most `cap`, multiples of 32.

    A square 640x640 input letterboxes a 16:9 frame (40% of the compute on
    padding) and upsamples small frames for nothing; matching the frame keeps
    the detector's scale per source pixel the same or better, at a fraction of
    the cost.
    """
    scale = min(1.0, cap / max(height, width))
    w = max(32, int(np.ceil(width * scale / 32)) * 32)
    h = max(32, int(np.ceil(height * scale / 32)) * 32)
    return w, h


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in `a` [n, 4+] with every box in `b` [m, 4+] (x1, y1, x2, y2): [n, m]."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


# --- detection ----------------------------------------------------------------------------------
# SCRFD as InsightFace runs it (insightface/model_zoo/scrfd.py): each frame resized into the top-left of
# the detector input (aspect kept, `letterbox`), normalised, the graph run, every anchor's distances decoded
# to a box and 5 keypoints, kept at the score threshold, greedy NMS with InsightFace's +1 pixel areas.
# The graph runs once for a batch of frames of one size; its outputs hold all frames' anchors, ordered
# (row, column, frame, anchor) by the graph's final transpose, and `per_frame` takes them apart.

def detect(models: FaceModels, image: np.ndarray, det_size: int = 640) -> tuple[np.ndarray, np.ndarray]:
    """Faces in a BGR image: boxes [n, 5] (x1, y1, x2, y2, score) and keypoints [n, 5, 2], left to right."""
    return detect_batch(models, [image], det_size)[0]


def detect_batch(models: FaceModels, images: list[np.ndarray], det_size: int = 640) -> list[tuple[np.ndarray, np.ndarray]]:
    """`detect` for BGR images of one size, with one call of the detector graph."""
    if not images:
        return []
    size = detector_size(images[0].shape[0], images[0].shape[1], det_size)
    det = models.detector
    blob, scales = detector_input(images, size, det.input_mean, det.input_std, models.runtime.device)
    outs = models.graphs["detection"](blob)
    found = decode_detections(outs, len(images), size, det._feat_stride_fpn, det._num_anchors, det.det_thresh,
                              scales, det.nms_thresh)
    # Stable order (left to right) so face numbering in a frame is deterministic.
    return [(boxes[order], kps[order]) for boxes, kps in found
            for order in [np.lexsort((boxes[:, 1], boxes[:, 0]))]]


def letterbox(height: int, width: int, size: tuple[int, int]) -> tuple[int, int, float]:
    """(width, height) of a frame resized into the detector input `size` (w, h), aspect kept, and the scale."""
    if float(height) / width > float(size[1]) / size[0]:
        new_h = size[1]
        new_w = int(new_h / (float(height) / width))
    else:
        new_w = size[0]
        new_h = int(new_w * (float(height) / width))
    return new_w, new_h, float(new_h) / height


def detector_input(images: list[np.ndarray], size: tuple[int, int], mean: float, std: float, device: str):
    """The detector's input for `images`: [n, 3, h, w] RGB, (x - mean) / std, each frame letterboxed at top-left.

    On the CPU with OpenCV, as InsightFace does; on a GPU the frames are
    uploaded once through pinned memory and resized there (bilinear, the same
    sampling as OpenCV's INTER_LINEAR up to its fixed-point rounding).
    Returns (input, scales): a frame's pixel coordinates times its scale are
    the input's.
    """
    import cv2

    new_w, new_h, scale = letterbox(images[0].shape[0], images[0].shape[1], size)
    scales = [scale] * len(images)
    if device != "cuda":
        blob = np.zeros((len(images), 3, size[1], size[0]), np.float32)
        canvas = np.zeros((size[1], size[0], 3), np.uint8)
        for i, image in enumerate(images):
            canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
            blob[i] = cv2.dnn.blobFromImage(canvas, 1.0 / std, size, (mean, mean, mean), swapRB=True)[0]
        return blob, scales
    import torch
    import torch.nn.functional as F

    frames = pinned(images).to("cuda", non_blocking=True)
    x = frames.permute(0, 3, 1, 2).flip(1).float()  # BGR -> RGB, NCHW
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
    blob = torch.zeros((len(images), 3, size[1], size[0]), device="cuda")
    blob[:, :, :new_h, :new_w] = (x.round().clamp(0, 255) - mean) / std
    # the padding is black, (0 - mean) / std, as in the CPU path
    blob[:, :, new_h:, :] = -mean / std
    blob[:, :, :new_h, new_w:] = -mean / std
    return blob, scales


_PINNED = threading.local()


def pinned(images: list[np.ndarray]):
    """`images` stacked into this thread's page-locked host buffer (allocated once per shape: allocating pinned
    memory for every batch cost more than the copy). The caller's next GPU work on the default stream waits for the
    upload, and `decode_detections` synchronises on its results, so the buffer is free again by the next call."""
    import torch

    shape = (len(images), *images[0].shape)
    buf = getattr(_PINNED, "buffer", None)
    if buf is None or tuple(buf.shape) != shape:
        buf = _PINNED.buffer = torch.empty(shape, dtype=torch.uint8).pin_memory()
    np.stack(images, out=buf.numpy())
    return buf


_CENTRES: dict = {}


def anchor_centres(height: int, width: int, stride: int, anchors: int) -> np.ndarray:
    """Anchor centres of one detector level in input pixels, [height * width * anchors, 2] (InsightFace's order)."""
    key = (height, width, stride, anchors)
    if key not in _CENTRES:
        xy = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32) * stride
        _CENTRES[key] = np.repeat(xy.reshape(-1, 1, 2), anchors, axis=1).reshape(-1, 2)
    return _CENTRES[key]


def per_frame(out, frames: int, height: int, width: int, anchors: int):
    """A detector output [height * width * frames * anchors, k] as [frames, height * width * anchors, k]
    (NumPy array or torch tensor, as given)."""
    k = out.shape[-1]
    grouped = out.reshape(height * width, frames, anchors, k)
    grouped = grouped.permute(1, 0, 2, 3) if hasattr(grouped, "permute") else grouped.transpose(1, 0, 2, 3)
    return grouped.reshape(frames, -1, k)


def decode_detections(outs: list, frames: int, size: tuple[int, int], strides, anchors: int, threshold: float,
                      scales: list[float], nms_thresh: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per frame: (boxes [n, 5] in frame pixels with scores, best first after NMS; keypoints [n, 5, 2]).

    The score threshold is applied where the outputs are (on the GPU for
    torch on CUDA), so only the few anchors that pass reach the host.
    """
    levels = len(strides)
    found: list[list] = [[] for _ in range(frames)]
    for level, stride in enumerate(strides):
        h, w = size[1] // stride, size[0] // stride
        scores, dist, kdist = (per_frame(outs[level + j * levels], frames, h, w, anchors) for j in range(3))
        hit = scores[..., 0] >= threshold
        if not isinstance(hit, np.ndarray):  # torch: gather on the device, then copy the hits
            f_idx, a_idx = hit.nonzero(as_tuple=True)
            s, d, k = (x[f_idx, a_idx].float().cpu().numpy() for x in (scores[..., 0], dist, kdist))
            f_idx, a_idx = f_idx.cpu().numpy(), a_idx.cpu().numpy()
        else:
            f_idx, a_idx = np.nonzero(hit)
            s, d, k = scores[f_idx, a_idx, 0], dist[f_idx, a_idx], kdist[f_idx, a_idx]
        c = anchor_centres(h, w, stride, anchors)[a_idx]
        d, k = d * stride, k * stride
        boxes = np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], axis=-1)
        kps = np.stack([c[:, j % 2] + k[:, j] for j in range(10)], axis=-1).reshape(-1, 5, 2)
        for f in range(frames):
            sel = f_idx == f
            found[f].append((s[sel], boxes[sel], kps[sel]))
    results = []
    for f, per_level in enumerate(found):
        s = np.concatenate([x[0] for x in per_level])
        if not len(s):
            results.append((np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)))
            continue
        order = np.argsort(-s, kind="stable")
        boxes = np.concatenate([x[1] for x in per_level]) / scales[f]
        kps = np.concatenate([x[2] for x in per_level]) / scales[f]
        dets = np.hstack((boxes, s[:, None])).astype(np.float32)[order]
        keep = nms(dets, nms_thresh)
        results.append((dets[keep], kps[order][keep]))
    return results


def nms(dets: np.ndarray, thresh: float) -> list[int]:
    """Greedy non-maximum suppression of [n, 5] boxes sorted best first, with InsightFace's +1 pixel widths."""
    x1, y1, x2, y2 = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.arange(len(dets))
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        order = order[np.where(inter / (areas[i] + areas[order[1:]] - inter) <= thresh)[0] + 1]
    return keep


# --- recognition and landmarks --------------------------------------------------------------------

def embed(models: FaceModels, image: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """L2-normalised identity embeddings [n, dim] for the faces at `kps` of one image (one model call)."""
    return embed_batch(models, [(image, k) for k in kps])


def embed_batch(models: FaceModels, faces: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Embeddings [n, dim] of faces given as (BGR image, keypoints [5, 2]), with one call of the recogniser."""
    if not faces:
        return np.zeros((0, models.embedding_dim), np.float32)
    size = models.recognizer.input_size[0]
    feats = recognise(models, [recognition_crop(image, kps, size) for image, kps in faces])
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


def recognise(models: FaceModels, crops: list[np.ndarray]) -> np.ndarray:
    """The recogniser's raw features [n, dim] for aligned BGR crops (InsightFace's ArcFaceONNX.get_feat)."""
    import cv2

    rec = models.recognizer
    blob = cv2.dnn.blobFromImages(crops, 1.0 / rec.input_std, tuple(rec.input_size),
                                  (rec.input_mean, rec.input_mean, rec.input_mean), swapRB=True)
    out = models.graphs["recognition"](blob)[0]
    return np.asarray(out.cpu().numpy() if hasattr(out, "cpu") else out, np.float32).reshape(len(crops), -1)


def landmarks(models: FaceModels, image: np.ndarray, box: np.ndarray, kps: np.ndarray) -> dict:
    """68 iBUG landmarks of one face, by `models.landmarks`: {'lmk68': (68, 2 or 3)}, plus 'pose_pyr' (3,) from 3D-68.

    The pack's 3D-68 model crops around the detector box; dlib's predictor
    around a box drawn from the 5 keypoints (curator/models/dlib68.py). With
    `none`, an empty dict.
    """
    return landmarks_batch(models, [(image, box, kps)])[0]


def landmarks_batch(models: FaceModels, faces: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[dict]:
    """`landmarks` for faces given as (BGR image, box, keypoints); the 3D-68 model runs once for all of them."""
    if models.landmarks == "dlib":
        return [{"lmk68": dlib68.predict(models.shape_predictor, image, kps)} for image, _, kps in faces]
    if models.landmarks != "3d68" or not faces:
        # The 2D-106 model (buffalo_l has one) is not run: the 68 points carry every
        # descriptor we compute, and running it would cost a network call per face.
        return [{} for _ in faces]
    return landmarks_3d68(models, faces)


def landmarks_3d68(models: FaceModels, faces: list) -> list[dict]:
    """InsightFace's Landmark.get for 1k3d68, batched: a crop 1.5x the box around its centre, the graph, the
    68 points back in frame pixels and InsightFace's pose fit to its mean 3D face."""
    import cv2
    from insightface.utils import face_align, transform

    model = models.landmarks_3d68
    side = model.input_size[0]
    crops, inverse = [], []
    for image, box, _ in faces:
        w, h = box[2] - box[0], box[3] - box[1]
        centre = (box[2] + box[0]) / 2, (box[3] + box[1]) / 2
        crop, m = face_align.transform(image, centre, side, side / (max(w, h) * 1.5), 0)
        crops.append(crop)
        inverse.append(cv2.invertAffineTransform(m))
    blob = cv2.dnn.blobFromImages(crops, 1.0 / model.input_std, (side, side),
                                  (model.input_mean, model.input_mean, model.input_mean), swapRB=True)
    out = models.graphs["landmark_3d_68"](blob)[0]
    preds = np.asarray(out.cpu().numpy() if hasattr(out, "cpu") else out, np.float32).reshape(len(faces), -1)
    results = []
    for pred, im in zip(preds, inverse):
        pred = pred.reshape(-1, 3) if pred.shape[0] >= 3000 else pred.reshape(-1, 2)
        pred = pred[-model.lmk_num:].copy()
        pred[:, 0:2] += 1
        pred[:, 0:2] *= side // 2
        if pred.shape[1] == 3:
            pred[:, 2] *= side // 2
        pred = face_align.trans_points(pred, im)
        found = {"lmk68": np.asarray(pred, np.float32)}
        if model.require_pose:
            s, r, t = transform.P2sRt(transform.estimate_affine_matrix_3d23d(model.mean_lmk, pred))
            found["pose_pyr"] = np.asarray(transform.matrix2angle(r), np.float32)
        results.append(found)
    return results


# --- reference photos ---------------------------------------------------------
# A reference must be a clear face: SCRFD scores clear photos of people at
# 0.75-0.9, while animal faces and faint background faces reach 0.6-0.65.
REF_DET_THRESH = 0.7


class ReferencePhotoError(CuratorError):
    """A reference photo that cannot stand for one person: unreadable, no clear face, or several."""


def reference_embeddings(fm: FaceModels, photos: list[str | os.PathLike]) -> np.ndarray:
    """One embedding per reference photo; a photo must show exactly one face."""
    out = []
    for photo in photos:
        path = Path(photo)
        try:
            image = read_image(path)
        except MediaError as e:
            raise ReferencePhotoError(f"reference photo {path}: {e}") from None
        boxes, kps = detect(fm, image)
        keep = boxes[:, 4] >= REF_DET_THRESH
        boxes, kps = boxes[keep], kps[keep]
        if len(boxes) == 0:
            raise ReferencePhotoError(f"reference photo {path}: no face found (detector score >= {REF_DET_THRESH})")
        if len(boxes) > 1:
            raise ReferencePhotoError(f"reference photo {path}: {len(boxes)} faces found; use a photo of the target alone")
        out.append(embed(fm, image, kps)[0])
    return np.stack(out)
