"""The face models: loading an InsightFace model pack and running it.

A *pack* is what InsightFace calls a model directory: a detector with 5
keypoints, a recogniser, and optionally landmark models (buffalo_l has a 3D
68-point and a 2D 106-point one). `--models` (or CURATOR_MODELS) names a pack
InsightFace knows (`buffalo_l`, the default, which InsightFace downloads to
~/.insightface on first use) or a directory of ONNX files.

We load through `insightface.app.FaceAnalysis` so users get InsightFace's own
download and model routing, but run the models ourselves: detection once per
frame, recognition batched over all faces of a frame, landmarks per face.

68-point landmarks (`--landmarks`) come from the pack's 3D-68 model (`auto`
when the pack has one), from dlib's shape predictor (`dlib`, curator/dlib68.py),
or not at all (`none`); `FaceModels.landmarks` names the one in use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from . import dlib68
from .errors import CuratorError
from .align import recognition_crop
from .media import sha256_file

DEFAULT_PACK = "buffalo_l"
ENV_PACK = "CURATOR_MODELS"
ENV_ROOT = "CURATOR_MODELS_ROOT"  # where named packs are stored; InsightFace's default otherwise
# --landmarks: what the user may ask for, and what a workspace records (auto resolved to 3d68 or none).
LANDMARK_OPTIONS = ("auto", "dlib", "none")
LANDMARK_METHODS = ("3d68", "dlib", "none")


class ModelError(CuratorError):
    pass


def resolve_pack(option: str | None) -> str:
    return option or os.environ.get(ENV_PACK) or DEFAULT_PACK


def available_providers(device: str = "auto") -> list[str]:
    import onnxruntime as ort

    have = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise ModelError("--device cuda asked for, but onnxruntime has no CUDA provider (pip install 'curator-faces[gpu]')")
    return ["CPUExecutionProvider"]


@dataclass
class FaceModels:
    pack: str
    path: Path
    detector: object
    recognizer: object
    landmarks_3d68: object | None = None
    landmarks_2d106: object | None = None
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    providers: list[str] = field(default_factory=list)
    landmarks: str = "none"  # the 68-point landmarks run per face: "3d68", "dlib" or "none"
    shape_predictor: object | None = None  # dlib's, when landmarks == "dlib"
    landmark_model: dict | None = None  # {"file", "sha256"} of dlib's model, for workspace.json

    @cached_property
    def embedding_dim(self) -> int:
        out = self.recognizer.session.get_outputs()[0].shape
        dim = out[-1]
        if isinstance(dim, int):
            return dim
        probe = np.zeros((112, 112, 3), np.uint8)
        return int(self.recognizer.get_feat([probe]).shape[-1])

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


def load_models(pack: str | None = None, *, device: str = "auto", det_thresh: float = 0.5,
                threads: int | None = None, landmarks: str = "auto") -> FaceModels:
    """Load a model pack by name or directory; raises ModelError with a user-facing reason.

    `threads`: CPU threads per model call (None: one per core). The models
    may be called from several threads at once (onnxruntime sessions are
    thread-safe, dlib's predictor is only read). `landmarks`: one of
    LANDMARK_OPTIONS or LANDMARK_METHODS (see `use_landmarks`).
    """
    import onnxruntime as ort
    from insightface.app import FaceAnalysis

    name = resolve_pack(pack)
    providers = available_providers(device)
    ort.set_default_logger_severity(3)
    root = os.environ.get(ENV_ROOT, "~/.insightface")
    direct = Path(name).expanduser()
    if any(sep in name for sep in ("/", os.sep)) and not direct.is_dir():
        raise ModelError(f"model pack {name}: no such directory")
    try:
        app = FaceAnalysis(name=str(direct) if direct.is_dir() else name, root=root, providers=providers,
                           sess_options=session_options(threads))
    except AssertionError:
        raise ModelError(f"model pack {name}: no face detector (.onnx with 5-keypoint outputs) found") from None
    except Exception as e:  # InsightFace raises plain exceptions for failed downloads and bad files
        raise ModelError(f"model pack {name} could not be loaded ({e}); without network access, point --models or {ENV_PACK} at a local pack directory") from None
    if "recognition" not in app.models:
        raise ModelError(f"model pack {name}: no recognition model found (needed for identity embeddings)")
    ctx = 0 if providers[0] == "CUDAExecutionProvider" else -1
    det = app.models["detection"]
    det.prepare(ctx, input_size=(640, 640), det_thresh=det_thresh)
    for task, model in app.models.items():
        if task != "detection":
            model.prepare(ctx)
    if not getattr(det, "use_kps", True):
        raise ModelError(f"model pack {name}: the detector gives no keypoints (curator needs 5)")
    model_dir = Path(app.model_dir)
    files = {p.name: sha256_file(p) for p in sorted(model_dir.glob("*.onnx"))}
    fm = FaceModels(
        pack=direct.name if direct.is_dir() else name,
        path=model_dir,
        detector=det,
        recognizer=app.models["recognition"],
        landmarks_3d68=app.models.get("landmark_3d_68"),
        landmarks_2d106=app.models.get("landmark_2d_106"),
        files=files,
        providers=providers,
    )
    return use_landmarks(fm, landmarks)


def use_landmarks(fm: FaceModels, option: str) -> FaceModels:
    """Set which 68-point landmarks `landmarks()` gives: `auto` is the pack's 3D-68 model when it has one, else none."""
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


def resolve_landmarks(option: str, pack_has_3d68: bool) -> str:
    """The method (LANDMARK_METHODS) that a --landmarks option gives with a pack that has or lacks a 3D-68 model."""
    if option == "auto":
        return "3d68" if pack_has_3d68 else "none"
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


def detect(models: FaceModels, image: np.ndarray, det_size: int = 640) -> tuple[np.ndarray, np.ndarray]:
    """Faces in a BGR image: boxes [n, 5] (x1, y1, x2, y2, score) and keypoints [n, 5, 2], best first."""
    size = detector_size(image.shape[0], image.shape[1], det_size)
    boxes, kps = models.detector.detect(image, input_size=size)
    if boxes.shape[0] == 0:
        return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
    # Stable order (left to right) so face numbering in a frame is deterministic.
    order = np.lexsort((boxes[:, 1], boxes[:, 0]))
    return boxes[order], kps[order]


def embed(models: FaceModels, image: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """L2-normalised identity embeddings [n, dim] for the faces at `kps` (one batched model call)."""
    if len(kps) == 0:
        return np.zeros((0, models.embedding_dim), np.float32)
    size = models.recognizer.input_size[0]
    crops = [recognition_crop(image, k, size) for k in kps]
    feats = np.asarray(models.recognizer.get_feat(crops), np.float32).reshape(len(crops), -1)
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return feats / np.maximum(norms, 1e-12)


def landmarks(models: FaceModels, image: np.ndarray, box: np.ndarray, kps: np.ndarray) -> dict:
    """68 iBUG landmarks of one face, by `models.landmarks`: {'lmk68': (68, 2 or 3)}, plus 'pose_pyr' (3,) from 3D-68.

    The pack's 3D-68 model crops around the detector box; dlib's predictor
    around a box drawn from the 5 keypoints (curator/dlib68.py). With
    `none`, an empty dict.
    """
    from insightface.app.common import Face

    out: dict = {}
    if models.landmarks == "dlib":
        out["lmk68"] = dlib68.predict(models.shape_predictor, image, kps)
    elif models.landmarks == "3d68":
        face = Face(bbox=np.asarray(box[:4], np.float32))
        out["lmk68"] = np.asarray(models.landmarks_3d68.get(image, face), np.float32)
        if "pose" in face:
            out["pose_pyr"] = np.asarray(face["pose"], np.float32)
    # The 2D-106 model (buffalo_l has one) is not run: the 68 points carry every
    # descriptor we compute, and running it would cost a network call per face.
    return out
