"""dlib's 68-point shape predictor (`curator extract --landmarks dlib`): loading it, the box it expects, running it.

The model is dlib's `shape_predictor_68_face_landmarks.dat` (an ensemble of
regression trees, Kazemi and Sullivan 2014) trained on iBUG 300-W: the
68-point scheme faceswap and DeepFaceLab align and mask with. dlib comes from
the PyPI package `dlib-bin` (prebuilt wheels) and the model file from
`face-recognition-models`; both are the optional extra `curator-faces[dlib]`.
300-W's images are for non-commercial research only, and so is the model
(docs/dependencies.md). dlib reads the file with its own deserialiser: nothing
is unpickled.

The predictor starts from a face rectangle, and it was trained on the boxes of
dlib's own HOG detector. SCRFD frames faces differently (taller boxes, lower
on the face), and its boxes fed as they are doubled the error on hand-labelled
faces (NME 0.098 against 0.049, docs/reliability.md). We do not run the HOG
detector (it misses turned faces that SCRFD finds, and took 0.35 s on one
1024x817 photo); the box dlib expects is drawn from SCRFD's 5 keypoints
instead (`dlib_box`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from ..errors import CuratorError

MODEL_PACKAGE = "face_recognition_models"
MODEL_FILE = "shape_predictor_68_face_landmarks.dat"
INSTALL = "pip install 'curator-faces[dlib]' (dlib-bin and face-recognition-models)"

# The HOG detector's box from SCRFD's keypoints: a square of BOX_SIDE times the
# distance from the eyes' midpoint to the mouth corners' midpoint, centred on
# the midpoint of those two moved BOX_SHIFT of that distance toward the eyes.
# Fitted by bench/landmarks.py (`fit`; bench/results/landmarks.json), never on
# the hand-labelled landmarks that measure the result: dlib's
# get_frontal_face_detector() and SCRFD-500M (pack-small) ran on 8 frames (one
# a second) of each shared clip and on the photos under images/, and the 355
# faces both found (box IoU > 0.3; 281 in video frames, 74 in photos) were
# paired. Medians: side 2.237 (IQR 2.15-2.33), centre 0.035 toward the eyes
# and 0.002 sideways. A first run with SCRFD-2.5G (threshold 0.5) gave 2.238
# and 0.028: SCRFD's keypoints place the box alike across its sizes. Boxes compared
# on those faces (two folds by source: fitted on one, measured on the other)
# by how far dlib's landmarks from them lie from those it gives on its own HOG
# box, in outer-eye-corner distances, mean (worst): SCRFD's box as it is 0.035
# (0.55), a square fitted to SCRFD's box 0.014 (0.49), this box 0.011 (0.072).
# A second pass, the box re-derived from the first pass's landmarks, did not
# help there (0.011, worst 0.12); on the hand-labelled faces it gave NME 0.0491
# against 0.0495, better on one face of four and worse on two: not kept.
BOX_SIDE = 2.24
BOX_SHIFT = 0.03


class LandmarkModelMissing(CuratorError):
    """--landmarks dlib without dlib or its model installed."""


def model_path() -> Path:
    """The installed 68-point model file, found without importing its package.

    face_recognition_models' `__init__` imports pkg_resources, which current
    setuptools (84 here) no longer ships, so importing the package fails;
    the file is where the package is.
    """
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):  # ValueError: a module object without a spec in sys.modules
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "models" / MODEL_FILE
        if path.is_file():
            return path
    raise LandmarkModelMissing(f"--landmarks dlib needs dlib's 68-point model {MODEL_FILE}: {INSTALL}")


def installed() -> bool:
    """Whether dlib and its 68-point model are installed (what `--landmarks auto` checks), without importing dlib."""
    if importlib.util.find_spec("dlib") is None:
        return False
    try:
        model_path()
    except LandmarkModelMissing:
        return False
    return True


def load():
    """dlib's shape predictor with the 68-point model; LandmarkModelMissing when either is not installed."""
    try:
        import dlib
    except ImportError:
        raise LandmarkModelMissing(f"--landmarks dlib needs dlib: {INSTALL}") from None
    return dlib.shape_predictor(str(model_path()))


def dlib_box(kps: np.ndarray) -> np.ndarray:
    """The square (x1, y1, x2, y2) dlib's HOG detector would draw around the face with these 5 SCRFD keypoints."""
    kps = np.asarray(kps, np.float64).reshape(5, 2)
    eyes, mouth = (kps[0] + kps[1]) / 2, (kps[3] + kps[4]) / 2
    down = mouth - eyes
    centre = (eyes + mouth) / 2 - BOX_SHIFT * down
    half = BOX_SIDE * float(np.linalg.norm(down)) / 2
    return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])


def predict(predictor, image: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """68 iBUG landmarks (68, 2) in source pixels for the face at `kps` in a BGR image.

    The predictor sees only the box and half its side around it, converted
    to RGB: the same points as on the whole frame (checked on 72 faces), for
    a fraction of the conversion.
    """
    import dlib

    x1, y1, x2, y2 = (int(round(v)) for v in dlib_box(kps))
    pad = (x2 - x1) // 2
    h, w = image.shape[:2]
    left, top = max(0, x1 - pad), max(0, y1 - pad)
    right, bottom = min(w, x2 + pad), min(h, y2 + pad)
    if right <= left or bottom <= top:  # a face whose box lies wholly outside the frame: no pixels to look at
        return np.full((68, 2), np.nan, np.float32)
    rgb = cv2.cvtColor(image[top:bottom, left:right], cv2.COLOR_BGR2RGB)
    # dlib's rectangles are inclusive: right = left + side - 1.
    shape = predictor(rgb, dlib.rectangle(x1 - left, y1 - top, x2 - left - 1, y2 - top - 1))
    points = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
    return points + np.array([left, top], np.float32)
