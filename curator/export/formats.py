"""Export formats other than the plain folder: faceswap, DeepFaceLab and FiftyOne.

`curator export --format faceswap|dfl|fiftyone` builds on the folder export
(curator/export/folder.py: selection, split, manifest, embeddings, provenance, the
temporary folder swapped in at the end); this module writes the faces.

- faceswap: aligned PNGs with faceswap's metadata in a PNG `iTXt` chunk,
  rendered with faceswap's own "head" centring so its trainer and tools can
  re-derive every crop from the stored 68-point landmarks.
- dfl: DeepFaceLab aligned JPEGs ("whole_face") with DFL's metadata dictionary
  in an APP15 segment.
- fiftyone: a `fiftyone.types.FiftyOneDataset` folder of the workspace crops
  with every table column as a field, the embedding, the landmarks as
  Keypoints and tags.

What each format stores, and the exact upstream sources the layouts follow, is
in docs/formats.md. The faceswap and DFL images are rendered from the source
frames (re-decoded, and checked against the workspace crop so a wrong frame can
never be used); when a source file is gone or changed they are rendered from
the workspace crop instead, and provenance.json counts both.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import struct
import sys
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import pandas as pd

from .. import media
from ..measure.align import similarity, transform_points
from ..fs.atomic import inside, safe_name
from ..errors import CuratorError
from ..workspace import Workspace, crop_file, fiftyone_field_name

FORMATS = ("folder", "faceswap", "dfl", "fiftyone")
NEEDS_LMK68 = ("faceswap", "dfl")
FACE_SIZE = 512  # faceswap's and DFL's default extract size for these face types

# ------------------------------------------------------------------ faceswap
# lib/align/alignments.py `_VERSION`: the alignments version faceswap writes into
# every extracted face's header (2.4 on master and in the 2.x releases).
FACESWAP_ALIGNMENTS_VERSION = 2.4
# lib/align/constants.py EXTRACT_RATIOS["head"]: padding of a head-centred extract.
FACESWAP_HEAD_RATIO = 0.625
# lib/align/constants.py _MEAN_FACE[LandmarkType.LM_2D_51]: iBUG points 17-67 in a unit box.
FACESWAP_MEAN_FACE_51 = np.array([
    [0.010086, 0.106454], [0.085135, 0.038915], [0.191003, 0.018748], [0.300643, 0.034489],
    [0.403270, 0.077391], [0.596729, 0.077391], [0.699356, 0.034489], [0.808997, 0.018748],
    [0.914864, 0.038915], [0.989913, 0.106454], [0.500000, 0.203352], [0.500000, 0.307009],
    [0.500000, 0.409805], [0.500000, 0.515625], [0.376753, 0.587326], [0.435909, 0.609345],
    [0.500000, 0.628106], [0.564090, 0.609345], [0.623246, 0.587326], [0.131610, 0.216423],
    [0.196995, 0.178758], [0.275698, 0.179852], [0.344479, 0.231733], [0.270791, 0.245099],
    [0.192616, 0.244077], [0.655520, 0.231733], [0.724301, 0.179852], [0.803005, 0.178758],
    [0.868389, 0.216423], [0.807383, 0.244077], [0.729208, 0.245099], [0.264022, 0.780233],
    [0.350858, 0.745405], [0.438731, 0.727388], [0.500000, 0.742578], [0.561268, 0.727388],
    [0.649141, 0.745405], [0.735977, 0.780233], [0.652032, 0.864805], [0.566594, 0.902192],
    [0.500000, 0.909281], [0.433405, 0.902192], [0.347967, 0.864805], [0.300252, 0.784792],
    [0.437969, 0.778746], [0.500000, 0.785343], [0.562030, 0.778746], [0.699747, 0.784792],
    [0.563237, 0.824182], [0.500000, 0.831803], [0.436763, 0.824182]], np.float64)
# lib/align/constants.py _MEAN_FACE[LandmarkType.LM_3D_26] and lib/align/pose.py: the
# generic 3D head that faceswap fits (solvePnP) to find the centre of the skull.
FACESWAP_MEAN_FACE_3D_26 = np.array([
    [4.056931, -11.432347, 1.636229], [1.833492, -12.542305, 4.061275], [0.0, -12.901019, 4.070434],
    [-1.833492, -12.542305, 4.061275], [-4.056931, -11.432347, 1.636229], [6.825897, 1.275284, 4.402142],
    [1.330353, 1.636816, 6.903745], [-1.330353, 1.636816, 6.903745], [-6.825897, 1.275284, 4.402142],
    [1.930245, -5.060977, 5.914376], [0.746313, -5.136947, 6.263227], [0.0, -5.485328, 6.76343],
    [-0.746313, -5.136947, 6.263227], [-1.930245, -5.060977, 5.914376], [5.311432, 0.0, 3.987654],
    [1.78993, -0.091703, 4.413414], [-1.78993, -0.091703, 4.413414], [-5.311432, 0.0, 3.987654],
    [2.774015, -7.566103, 5.048531], [0.509714, -7.056507, 6.566167], [0.0, -7.131772, 6.704956],
    [-0.509714, -7.056507, 6.566167], [-2.774015, -7.566103, 5.048531], [-0.589441, -8.443925, 6.109526],
    [0.0, -8.601736, 6.097667], [0.589441, -8.443925, 6.109526]], np.float64)
FACESWAP_PNP_POINTS = [6, 7, 8, 9, 10, 17, 21, 22, 26, 31, 32, 33, 34, 35, 36, 39, 42, 45, 48, 50, 51, 52, 54,
                       56, 57, 58]
FACESWAP_CAMERA = np.array([[4.0, 0.0, 0.5], [0.0, 4.0, 0.5], [0.0, 0.0, 1.0]])
FACESWAP_HEAD_CENTRE_3D = np.array([[0.0, 0.0, -2.3]])

# ----------------------------------------------------------------- DeepFaceLab
DFL_FACE_TYPE = "whole_face"  # facelib/FaceType.py to_string_dict[FaceType.WHOLE_FACE]
DFL_WHOLE_FACE_PADDING = 0.40  # LandmarksProcessor.FaceType_to_padding_remove_align[WHOLE_FACE]
DFL_JPEG_QUALITY = 90  # mainscripts/Extractor.py default
# facelib/LandmarksProcessor.py landmarks_2D_new: iBUG points 17-48 and 54 in a unit box.
DFL_LANDMARKS_2D_NEW = np.array([
    [0.000213256, 0.106454], [0.0752622, 0.038915], [0.18113, 0.0187482], [0.29077, 0.0344891],
    [0.393397, 0.0773906], [0.586856, 0.0773906], [0.689483, 0.0344891], [0.799124, 0.0187482],
    [0.904991, 0.038915], [0.98004, 0.106454], [0.490127, 0.203352], [0.490127, 0.307009],
    [0.490127, 0.409805], [0.490127, 0.515625], [0.36688, 0.587326], [0.426036, 0.609345],
    [0.490127, 0.628106], [0.554217, 0.609345], [0.613373, 0.587326], [0.121737, 0.216423],
    [0.187122, 0.178758], [0.265825, 0.179852], [0.334606, 0.231733], [0.260918, 0.245099],
    [0.182743, 0.244077], [0.645647, 0.231733], [0.714428, 0.179852], [0.793132, 0.178758],
    [0.858516, 0.216423], [0.79751, 0.244077], [0.719335, 0.245099], [0.254149, 0.780233],
    [0.726104, 0.780233]], np.float64)
DFL_PICKLE_PROTOCOL = 3  # DFL runs on Python 3.6/3.7, whose pickle default is protocol 3

# A re-decoded frame warped like the crop must match the stored crop this well
# (mean absolute difference in grey levels; JPEG noise is ~1-3).
FRAME_MATCH_TOLERANCE = 10.0

# Columns whose values are lists of floats (docs/workspace.md), for typing empty ones.
LIST_COLUMNS = {"bbox", "kps", "lmk68", "align_matrix", "appearance"}


class FormatError(CuratorError):
    """The workspace cannot be exported in the requested format; the message says why."""


def check(fmt: str, rows: pd.DataFrame) -> None:
    """Refuse, before anything is written, what a format cannot represent."""
    if fmt not in FORMATS:
        raise FormatError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt in NEEDS_LMK68:
        missing = int(rows["lmk68"].isna().sum()) if "lmk68" in rows else len(rows)
        if missing:
            raise FormatError(
                f"--format {fmt} needs 68-point landmarks (the lmk68 column), but {missing} of {len(rows)} faces "
                "have only the 5 detector keypoints: extract into a new workspace with --landmarks dlib or with a "
                "model pack that has a 3D-68 landmark model (buffalo_l's 1k3d68.onnx), or export --format folder "
                "or fiftyone")


def unique_names(face_ids: list[str]) -> list[str]:
    """safe_name of each face id, made unique (case-insensitively) with -2, -3, ... suffixes."""
    seen: set[str] = set()
    out = []
    for fid in face_ids:
        base = safe_name(str(fid))
        name, n = base, 1
        while name.lower() in seen:
            n += 1
            name = f"{base}-{n}"
        seen.add(name.lower())
        out.append(name)
    return out


# ------------------------------------------------------------------ geometry

def lmk68_of(row) -> np.ndarray:
    return np.asarray(row["lmk68"], np.float64).reshape(68, 2)


def faceswap_matrix(lmk: np.ndarray, size: int) -> np.ndarray:
    """Source pixels -> faceswap's head-centred aligned face of `size` px (2x3).

    As faceswap extracts: the "legacy" matrix is the Umeyama similarity of
    landmarks 17-67 onto its 51-point mean face (unit box); a PnP fit of its
    26-point 3D head gives the projected centre of the skull, by which the
    matrix is shifted ("head" centring); then it is scaled to
    size - 2 * padding, padding = round(size * 0.625 / 2).
    """
    legacy = similarity(lmk[17:], FACESWAP_MEAN_FACE_51)
    normalised = transform_points(lmk, legacy)
    _, rvec, tvec = cv2.solvePnP(FACESWAP_MEAN_FACE_3D_26, normalised[FACESWAP_PNP_POINTS], FACESWAP_CAMERA,
                                 np.zeros((4, 1)), flags=cv2.SOLVEPNP_ITERATIVE)
    centre = cv2.projectPoints(FACESWAP_HEAD_CENTRE_3D, rvec, tvec, FACESWAP_CAMERA, np.zeros((4, 1)))[0].reshape(2)
    head = legacy.copy()
    head[:, 2] -= centre - 0.5
    padding = round(size * FACESWAP_HEAD_RATIO / 2)
    mat = head * (size - 2 * padding)
    mat[:, 2] += padding
    return mat


def dfl_matrix(lmk: np.ndarray, size: int) -> np.ndarray:
    """Source pixels -> DeepFaceLab's WHOLE_FACE aligned face of `size` px (2x3).

    LandmarksProcessor.get_transform_mat: Umeyama of landmarks 17-48 and 54
    onto landmarks_2D_new, the unit box's corners taken back to the image,
    grown along both diagonals by (padding * sqrt(2) + 0.5), moved 7% of the
    box up for WHOLE_FACE, and mapped onto the output square.
    """
    mat = similarity(np.concatenate([lmk[17:49], lmk[54:55]]), DFL_LANDMARKS_2D_NEW)
    inv = cv2.invertAffineTransform(mat)
    g_p = transform_points(np.array([(0, 0), (1, 0), (1, 1), (0, 1), (0.5, 0.5)], np.float64), inv)
    g_c = g_p[4].copy()
    tb_diag = (g_p[2] - g_p[0]) / np.linalg.norm(g_p[2] - g_p[0])
    bt_diag = (g_p[1] - g_p[3]) / np.linalg.norm(g_p[1] - g_p[3])
    mod = np.linalg.norm(g_p[0] - g_p[2]) * (DFL_WHOLE_FACE_PADDING * np.sqrt(2.0) + 0.5)
    up = g_p[0] - g_p[3]
    g_c += up * 0.07
    src = np.float32([g_c - tb_diag * mod, g_c + bt_diag * mod, g_c + tb_diag * mod])
    dst = np.float32([(0, 0), (size, 0), (size, size)])
    return cv2.getAffineTransform(src, dst).astype(np.float64)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 affine a ∘ b (apply b, then a)."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


def faceswap_interpolation(mat: np.ndarray) -> int:
    """faceswap's lib/align/aligned_face.get_matrix_scaling: cubic for an enlarging matrix, else area."""
    x_scale = float(np.hypot(mat[0, 0], mat[0, 1]))
    y_scale = float((mat[0, 0] * mat[1, 1] - mat[0, 1] * mat[1, 0]) / x_scale)
    return cv2.INTER_CUBIC if (x_scale + y_scale) / 2 >= 1.0 else cv2.INTER_AREA


# How each tool's extractor warps a frame into its aligned face: faceswap's transform_image passes its
# interpolation and leaves the border to OpenCV (constant black); DeepFaceLab's extractor calls
# cv2.warpAffine(image, mat, (size, size), cv2.INTER_LANCZOS4), where the fourth argument is `dst`, not
# `flags`, so OpenCV's defaults apply: bilinear, constant black. Where a head crop passes the frame's edge,
# both tools' faces are black there, and so are ours.
TOOL_INTERPOLATION = {"faceswap": faceswap_interpolation, "dfl": lambda mat: cv2.INTER_LINEAR}


def tool_warp(tool: str, image: np.ndarray, mat: np.ndarray, size: int) -> np.ndarray:
    """`image` warped into `tool`'s aligned face, as that tool's extractor renders it (see TOOL_INTERPOLATION)."""
    return cv2.warpAffine(image, mat, (size, size), flags=TOOL_INTERPOLATION[tool](mat),
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def outside_frame(frame_w: int, frame_h: int, mat: np.ndarray, size: int) -> np.ndarray:
    """[size, size] bool: the face pixels that `mat` (frame px -> face px) takes from outside the frame."""
    inside_px = cv2.warpAffine(np.full((frame_h, frame_w), 255, np.uint8), mat, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return inside_px == 0


# ------------------------------------------------------------------ containers

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_itxt(png: bytes, keyword: str, text: str) -> bytes:
    """Insert an uncompressed iTXt chunk right before the first IDAT, as faceswap's png_write_meta does.

    iTXt layout (PNG spec 11.3.4.5): keyword, NUL, compression flag 0,
    compression method 0, empty language tag + NUL, empty translated keyword
    + NUL, UTF-8 text -- i.e. b"faceswap\\0\\0\\0\\0\\0" + text, byte for byte
    faceswap's pack_to_itxt.
    """
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    pos = len(PNG_SIGNATURE)
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        if png[pos + 4:pos + 8] == b"IDAT":
            data = keyword.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")
            return png[:pos] + png_chunk(b"iTXt", data) + png[pos:]
        pos += 12 + length
    raise ValueError("PNG has no IDAT chunk")


def jpeg_with_app15(jpeg: bytes, payload: bytes) -> bytes:
    """Insert an APP15 segment after the last APPn segment, where DFLJPG.dump puts it."""
    if not jpeg.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    if len(payload) > 0xFFFF - 2:
        raise ValueError(f"APP15 payload of {len(payload)} bytes does not fit one JPEG segment")
    pos = insert = 2
    while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF:
        marker = jpeg[pos + 1]
        if marker == 0xDA:  # start of scan: no more header segments
            break
        (length,) = struct.unpack(">H", jpeg[pos + 2:pos + 4])
        pos += 2 + length
        if 0xE0 <= marker <= 0xEF:
            insert = pos
    segment = b"\xff\xef" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:insert] + segment + jpeg[insert:]


def _py(v):
    """Plain Python values (no numpy scalars, NaN -> None) for headers, pickles and FiftyOne."""
    if v is None:
        return None
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_py(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, (pd.Timestamp,)):
        return v.isoformat()
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def _source_name(row) -> str:
    name = Path(str(row["source"])).name
    return name if name not in ("", ".", "..") else str(row["source_sha256"])[:12]


def faceswap_source_filename(row) -> str:
    """The frame name faceswap gives this face's frame: <video stem>_<frame from 1:06d><video ext>, or the image's name."""
    name = _source_name(row)
    if row["source_kind"] == "video":
        stem, ext = os.path.splitext(name)
        return f"{stem}_{int(row['frame']) + 1:06d}{ext}"
    return name


def faceswap_header(row, file_name: str) -> dict:
    """The PNGHeader dict faceswap writes (lib/align/objects.py PNGHeader / PNGAlignments / PNGSource)."""
    x1, y1, x2, y2 = (float(v) for v in row["bbox"])
    return {
        "alignments": {
            "x": int(round(x1)), "y": int(round(y1)), "w": int(round(x2 - x1)), "h": int(round(y2 - y1)),
            "landmarks_xy": [[float(x), float(y)] for x, y in lmk68_of(row)],
            "mask": {}, "identity": {},
        },
        "source": {
            "alignments_version": FACESWAP_ALIGNMENTS_VERSION,
            "original_filename": file_name,
            "face_index": int(row["face_index"]),
            "source_filename": faceswap_source_filename(row),
            "source_is_video": row["source_kind"] == "video",
            "source_frame_dims": (int(row["frame_h"]), int(row["frame_w"])),
        },
    }


def dfl_source_filename(row) -> str:
    """The frame file DFL's own video extraction would give this frame (VideoEd.extract_video: %5d, from 1), or the image's name."""
    if row["source_kind"] == "video":
        return f"{int(row['frame']) + 1:05d}.png"
    return _source_name(row)


def dfl_dict(row, mat: np.ndarray) -> dict:
    """The dictionary DFL's extractor stores (mainscripts/Extractor.py final_stage), builtins only."""
    lmk = lmk68_of(row)
    x1, y1, x2, y2 = (float(v) for v in row["bbox"])
    return {
        "face_type": DFL_FACE_TYPE,
        "landmarks": transform_points(lmk, mat).tolist(),
        "source_filename": dfl_source_filename(row),
        "source_rect": [int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2))],
        "source_landmarks": lmk.tolist(),
        "image_to_face_mat": mat.tolist(),
    }


# ------------------------------------------------------------------ frames

@dataclass
class RenderStats:
    from_source: int = 0
    from_crop: int = 0
    notes: list[str] = field(default_factory=list)
    more_notes: int = 0

    def note(self, text: str) -> None:
        if len(self.notes) < 20:
            self.notes.append(text)
        else:
            self.more_notes += 1

    def all_notes(self) -> list[str]:
        return self.notes + ([f"... and {self.more_notes} more like these"] if self.more_notes else [])


def _same_file(path: Path, sha: str, record: dict) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    if not path.is_file():
        return False
    if record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns and record.get("path") == str(path):
        return True
    try:
        return media.sha256_file(path) == sha
    except OSError:
        return False


def source_frames(rows: pd.DataFrame, meta: dict, stats: RenderStats) -> Iterator[tuple[int, np.ndarray | None]]:
    """(position in rows, the source frame or None) for every row, decoding each source once, front to back.

    None means the frame is not available (file gone, changed, or shorter than
    recorded); the caller then renders from the workspace crop.
    """
    sources = meta.get("sources") or {}
    order: dict[str, list[int]] = {}
    for pos, sha in enumerate(rows["source_sha256"].astype(str)):
        order.setdefault(sha, []).append(pos)
    for sha, positions in order.items():
        first = rows.iloc[positions[0]]
        path = Path(str(first["source"]))
        if not _same_file(path, sha, sources.get(sha, {})):
            stats.note(f"{path}: missing or changed since extract; its faces were rendered from the workspace crops")
            for pos in positions:
                yield pos, None
            continue
        if first["source_kind"] != "video":
            try:
                image = media.read_image(path)
            except media.MediaError as e:
                stats.note(f"{path}: {e}; its faces were rendered from the workspace crops")
                image = None
            for pos in positions:
                yield pos, image
            continue
        wanted: dict[int, list[int]] = {}
        for pos in positions:
            wanted.setdefault(int(rows.iloc[pos]["frame"]), []).append(pos)
        last = max(wanted)
        try:
            container, stream = media.open_video(path)
        except media.MediaError as e:
            stats.note(f"{path}: {e}; its faces were rendered from the workspace crops")
            for pos in positions:
                yield pos, None
            continue
        decode_stats = media.SampleStats()
        try:
            for index, frame in enumerate(media.decode(container, stream, decode_stats)):
                if index in wanted:
                    image = media.to_bgr(frame)
                    for pos in wanted.pop(index):
                        yield pos, image
                if index >= last:
                    break
        finally:
            container.close()
        if wanted:
            stats.note(f"{path}: frames {sorted(wanted)[:5]} could not be decoded again; "
                       "those faces were rendered from the workspace crops")
            for frame_positions in wanted.values():
                for pos in frame_positions:
                    yield pos, None


def render_faces(tool: str, ws: Workspace, rows: pd.DataFrame, meta: dict, matrix_of: Callable[[object], np.ndarray],
                 size: int, write: Callable[[int, np.ndarray, np.ndarray], None]) -> RenderStats:
    """Render every row's face with `tool`'s matrix (source px -> face px) and hand it to `write(pos, image, matrix)`.

    From the source frame, exactly as the tool's extractor renders it
    (`tool_warp`). From the workspace crop when the frame cannot be had: the
    crop holds only the face and its margin, so the head crop's outer parts
    repeat the crop's edge pixels, except that what lies outside the original
    frame is black, as in the tool's own faces.
    """
    stats = RenderStats()
    for pos, frame in source_frames(rows, meta, stats):
        row = rows.iloc[pos]
        m_crop = np.asarray(row["align_matrix"], np.float64).reshape(2, 3)
        crop = cv2.imread(str(crop_file(ws, row["crop_path"])), cv2.IMREAD_COLOR)
        if crop is None:
            raise FormatError(f"crop {row['crop_path']} of face {row['face_id']} cannot be read; run `curator verify`")
        if frame is not None:
            again = cv2.warpAffine(frame, m_crop, (crop.shape[1], crop.shape[0]), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
            if float(np.abs(again.astype(np.int16) - crop.astype(np.int16)).mean()) > FRAME_MATCH_TOLERANCE:
                stats.note(f"{row['source']} frame {row['frame']}: does not match the workspace crop; "
                           "rendered from the crop")
                frame = None
        mat = matrix_of(row)
        if frame is not None:
            image = tool_warp(tool, frame, mat, size)
            stats.from_source += 1
        else:
            crop_to_face = _compose(mat, cv2.invertAffineTransform(m_crop))
            image = cv2.warpAffine(crop, crop_to_face, (size, size), flags=TOOL_INTERPOLATION[tool](crop_to_face),
                                   borderMode=cv2.BORDER_REPLICATE)
            image[outside_frame(int(row["frame_w"]), int(row["frame_h"]), mat, size)] = 0
            stats.from_crop += 1
        write(pos, image, mat)
    return stats


# ------------------------------------------------------------------ writers

def write_faceswap(ws: Workspace, rows: pd.DataFrame, names: list[str], meta: dict, dest: Path,
                   size: int = FACE_SIZE) -> tuple[list[str], dict]:
    faces_dir = dest / "faces"
    faces_dir.mkdir()
    files = [f"faces/{name}.png" for name in names]

    def write(pos: int, image: np.ndarray, mat: np.ndarray) -> None:
        row = rows.iloc[pos]
        file_name = f"{names[pos]}.png"
        ok, buf = cv2.imencode(".png", image)
        if not ok:
            raise FormatError(f"could not encode face {row['face_id']} as PNG")
        header = faceswap_header(row, file_name)
        inside(faces_dir, file_name).write_bytes(png_with_itxt(buf.tobytes(), "faceswap", str(header)))

    stats = render_faces("faceswap", ws, rows, meta, lambda r: faceswap_matrix(lmk68_of(r), size), size, write)
    info = {"folder": "faces", "size": size, "centering": "head", "alignments_version": FACESWAP_ALIGNMENTS_VERSION,
            "rendered_from_source": stats.from_source, "rendered_from_crop": stats.from_crop, "notes": stats.all_notes()}
    return files, info


def write_dfl(ws: Workspace, rows: pd.DataFrame, names: list[str], meta: dict, dest: Path,
              size: int = FACE_SIZE) -> tuple[list[str], dict]:
    aligned = dest / "aligned"
    aligned.mkdir()
    files = [f"aligned/{name}.jpg" for name in names]

    def write(pos: int, image: np.ndarray, mat: np.ndarray) -> None:
        row = rows.iloc[pos]
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, DFL_JPEG_QUALITY])
        if not ok:
            raise FormatError(f"could not encode face {row['face_id']} as JPEG")
        payload = pickle.dumps(dfl_dict(row, mat), protocol=DFL_PICKLE_PROTOCOL)
        inside(aligned, f"{names[pos]}.jpg").write_bytes(jpeg_with_app15(buf.tobytes(), payload))

    stats = render_faces("dfl", ws, rows, meta, lambda r: dfl_matrix(lmk68_of(r), size), size, write)
    info = {"folder": "aligned", "size": size, "face_type": DFL_FACE_TYPE, "jpeg_quality": DFL_JPEG_QUALITY,
            "rendered_from_source": stats.from_source, "rendered_from_crop": stats.from_crop, "notes": stats.all_notes()}
    return files, info


FLAG_TAGS = {"selected": "selected", "is_target": "target", "rejected": "rejected"}


@contextlib.contextmanager
def _quiet_fiftyone() -> Iterator[None]:
    """FiftyOne prints progress and INFO lines on stdout; keep --json output clean and stderr quiet."""
    logger = logging.getLogger("fiftyone")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logger.setLevel(level)


def write_fiftyone(ws: Workspace, rows: pd.DataFrame, names: list[str], dest: Path, emb: np.ndarray,
                   split: np.ndarray, provenance: dict) -> tuple[list[str], dict]:
    """A FiftyOneDataset export (FiftyOne's own exporter) of the workspace crops, every column a field."""
    try:
        with _quiet_fiftyone():
            import fiftyone as fo
            fo.config.show_progress_bars = False
            dataset = fo.Dataset(f"curator-export-{uuid.uuid4().hex[:12]}")
    except Exception as e:  # noqa: BLE001 - FiftyOne raises many kinds when its database is unreachable
        raise FormatError(f"FiftyOne cannot start ({type(e).__name__}: {e}); it needs its MongoDB database "
                          "(see docs/dependencies.md)") from None
    staging = Path(dest.parent / f".{dest.name}.media-{uuid.uuid4().hex[:8]}")
    try:
        with _quiet_fiftyone():
            staging.mkdir()
            columns = list(rows.columns)
            for column, ftype in _fiftyone_schema(rows, fo).items():
                dataset.add_sample_field(fiftyone_field_name(column), ftype, **(
                    {"subfield": fo.FloatField} if ftype is fo.ListField else {}))
            samples = []
            for pos in range(len(rows)):
                row = rows.iloc[pos]
                file_name = f"{names[pos]}.jpg"
                path = inside(staging, file_name)
                shutil.copyfile(crop_file(ws, row["crop_path"]), path)
                tags = [str(split[pos])] + [tag for col, tag in FLAG_TAGS.items()
                                            if col in rows and _py(row[col]) is True]
                sample = fo.Sample(filepath=str(path), tags=tags)
                for column in columns:
                    sample[fiftyone_field_name(column)] = _py(row[column])
                sample["embedding"] = np.asarray(emb[pos], np.float32)
                sample["landmarks"] = fo.Keypoints(keypoints=[_crop_keypoints(row, fo)])
                size = int(row["crop_size"])
                sample.metadata = fo.ImageMetadata(size_bytes=path.stat().st_size, mime_type="image/jpeg",
                                                   width=size, height=size, num_channels=3)
                samples.append(sample)
            dataset.add_samples(samples)
            dataset.info = {"curator_provenance": provenance}
            dataset.save()
            fresh = dest / f".fiftyone-{uuid.uuid4().hex[:8]}"  # FiftyOne warns when exporting into an existing folder
            dataset.export(export_dir=str(fresh), dataset_type=fo.types.FiftyOneDataset, export_media=True,
                           rel_dir=str(staging))
            for entry in fresh.iterdir():
                os.replace(entry, dest / entry.name)
            fresh.rmdir()
    finally:
        with _quiet_fiftyone():
            dataset.delete()
        shutil.rmtree(staging, ignore_errors=True)
    files = [f"data/{name}.jpg" for name in names]
    missing = [f for f in files if not (dest / f).is_file()]
    if missing:
        raise FormatError(f"FiftyOne did not export the media where expected (e.g. {missing[0]})")
    info = {"dataset_type": "fiftyone.types.FiftyOneDataset", "fiftyone_version": fo.__version__,
            "media": "workspace crops", "fields": [fiftyone_field_name(c) for c in columns],
            "embedding_field": "embedding", "landmarks_field": "landmarks", "tags": ["train", "val", *FLAG_TAGS.values()]}
    return files, info


def _crop_keypoints(row, fo):
    """The face's landmarks in its crop as a FiftyOne Keypoint (coordinates relative to the crop side)."""
    m = np.asarray(row["align_matrix"], np.float64).reshape(2, 3)
    lmk = row.get("lmk68")
    if lmk is not None and not (isinstance(lmk, float) and np.isnan(lmk)):
        pts, label = transform_points(np.asarray(lmk, np.float64).reshape(-1, 2), m), "lmk68"
    else:
        pts, label = transform_points(np.asarray(row["kps"], np.float64).reshape(-1, 2), m), "kps5"
    size = float(row["crop_size"])
    return fo.Keypoint(label=label, points=[(float(x) / size, float(y) / size) for x, y in pts])


def _fiftyone_schema(rows: pd.DataFrame, fo) -> dict:
    """A FiftyOne field type per column, from the Arrow type the table has (so all-null columns keep a field)."""
    import pyarrow as pa

    schema = pa.Schema.from_pandas(rows, preserve_index=False)
    out = {}
    for f in schema:
        t = f.type
        if pa.types.is_boolean(t):
            out[f.name] = fo.BooleanField
        elif pa.types.is_integer(t):
            out[f.name] = fo.IntField
        elif pa.types.is_floating(t):
            out[f.name] = fo.FloatField
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or f.name in LIST_COLUMNS:
            out[f.name] = fo.ListField
        else:
            out[f.name] = fo.StringField
    return out
