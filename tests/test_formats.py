"""`curator export --format faceswap|dfl|fiftyone`, read back by independent readers.

Every format is written by the real command line from a real workspace and
read back here WITHOUT curator's code: the faceswap PNG header is parsed with
struct/zlib and `ast.literal_eval` (as faceswap's lib/image.py png_read_meta
does), the DeepFaceLab APP15 segment by walking the JPEG segments with struct
(as DFLIMG/DFLJPG.py load_raw does), the FiftyOne dataset by FiftyOne itself.
The geometry faceswap and DFL re-derive from the stored landmarks is
re-implemented here from their sources (see docs/formats.md for the files and
commits), so a face rendered with the wrong crop fails even if its header is
right.

The 68-point workspace has real landmarks: dlib's 68-point shape predictor
(`curator extract --landmarks dlib`, the iBUG 300-W scheme faceswap and
DeepFaceLab use) on pack-small's detections.
"""

from __future__ import annotations

import ast
import json
import pickle
import pickletools
import shutil
import struct
import uuid
import zlib
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest

from helpers import IMAGES, clip, curator, curator_json
from curator.workspace import open_workspace, read_embeddings, read_table, update_columns, write_table

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

CLIP = "driving_d0.mp4"  # one person, 3 s, 512x512: ~10 analysed frames, mouth closed and open
CONSENT = "test footage, public research clips; export format tests"
PHOTO = IMAGES / "face_recognition" / "examples" / "obama-480p.jpg"  # a still: a second person, an image source
FACE_SIZE = 512


# ------------------------------------------------------------------ workspaces


@pytest.fixture(scope="module")
def ws68(tmp_path_factory):
    """A curated workspace with real lmk68 columns; one selected and one unselected face rejected in review."""
    root = tmp_path_factory.mktemp("formats68")
    ws = root / "ws"
    curator("extract", clip(CLIP), PHOTO, "-w", ws, "--landmarks", "dlib", "--consent", CONSENT, "-q", check=True)
    curator("curate", "-w", ws, "--budget", "10", check=True)
    w = open_workspace(ws)
    t = read_table(w)
    assert t["lmk68"].notna().all() and (t["source_kind"] == "image").sum() >= 1
    assert json.loads((ws / "workspace.json").read_text())["settings"]["landmarks"] == "dlib"
    selected = t.index[t["selected"]]
    assert len(selected) >= 2, t[["face_id", "selected", "reason"]]
    rejected = np.zeros(len(t), bool)
    rejected[selected[-1]] = True
    rejected[t.index[~t["selected"]][0]] = True
    update_columns(w, pd.DataFrame({"face_id": t["face_id"], "rejected": rejected}))
    return ws, read_table(w)


@pytest.fixture(scope="module")
def ws5(tmp_path_factory):
    """A curated workspace from the plain pack: 5 detector keypoints only (lmk68 null)."""
    ws = tmp_path_factory.mktemp("formats5") / "ws"
    curator("extract", PHOTO, "-w", ws, "--landmarks", "none", "-q", check=True)
    curator("curate", "-w", ws, "--budget", "5", check=True)
    t = read_table(open_workspace(ws))
    assert len(t) and t["lmk68"].isna().all()
    return ws


def export(ws: Path, out: Path, fmt: str, *extra: str) -> dict:
    return curator_json("export", "-w", ws, "--out", out, "--format", fmt, *extra)


def expected_ids(table: pd.DataFrame, include_all: bool) -> set[str]:
    keep = ~table["rejected"] & (True if include_all else table["selected"])
    return set(table.loc[keep, "face_id"])


def check_provenance(out: Path, fmt: str, table: pd.DataFrame, ids: set[str]) -> None:
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["format"] == fmt and prov["faces"] == len(ids)
    shas = set(table.loc[table["face_id"].isin(ids), "source_sha256"])
    assert set(prov["sources"]) == shas and all(prov["sources"][s]["sha256"] == s for s in shas)
    assert prov["consent"][0]["text"] == CONSENT


def crop_of(ws: Path, row) -> tuple[np.ndarray, np.ndarray]:
    crop = cv2.imread(str(ws / row["crop_path"]))
    return crop, np.asarray(row["align_matrix"], np.float64).reshape(2, 3)


def to3(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def pixel_difference(face: np.ndarray, ws: Path, row, source_to_face: np.ndarray) -> float:
    """Mean |face - workspace crop| over the part of the face the crop covers, the crop taken there by source_to_face.

    Only where the crop shows the frame: beyond the frame's edge the workspace crop repeats edge pixels, and the
    tools' faces are black (test_pixels_are_the_tools_own_black_beyond_the_frame)."""
    crop, m_crop = crop_of(ws, row)
    crop_to_face = (to3(source_to_face) @ np.linalg.inv(to3(m_crop)))[:2]
    size = face.shape[0]
    expected = cv2.warpAffine(crop, crop_to_face, (size, size), flags=cv2.INTER_LINEAR)
    covered = cv2.warpAffine(np.full(crop.shape[:2], 255, np.uint8), crop_to_face, (size, size), flags=cv2.INTER_NEAREST)
    in_frame = cv2.warpAffine(np.full((int(row["frame_h"]), int(row["frame_w"])), 255, np.uint8), source_to_face,
                              (size, size), flags=cv2.INTER_NEAREST)
    covered = cv2.erode(np.minimum(covered, in_frame), np.ones((9, 9), np.uint8)) > 0
    assert covered.mean() > 0.3  # the crop covers a good part of the tool's face
    return float(np.abs(face.astype(np.float64) - expected)[covered].mean())


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity src -> dst (Umeyama 1991, as skimage / faceswap / DFL estimate it), 2x3."""
    n = len(src)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a = (dst - mu_d).T @ (src - mu_s) / n
    d = np.ones(2)
    if np.linalg.det(a) < 0:
        d[1] = -1
    u, s, vt = np.linalg.svd(a)
    r = u @ np.diag(d) @ vt
    scale = (s * d).sum() / ((src - mu_s) ** 2).sum() * n
    m = np.zeros((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = mu_d - scale * r @ mu_s
    return m


def no_escape(root: Path, out: Path, before: set[Path]) -> None:
    """Nothing was created under `root` except inside `out`."""
    created = {p for p in root.rglob("*")} - before
    outside = [p for p in created if p != out and out not in p.parents]
    assert not outside, outside


# ------------------------------------------------------------------ faceswap

# faceswap lib/align/constants.py _MEAN_FACE[LM_2D_51] (iBUG 17-67, unit box) and [LM_3D_26];
# lib/align/pose.py: PnP points, camera, head centre; EXTRACT_RATIOS["head"] = 0.625.
FS_MEAN_51 = np.array([
    [0.010086, 0.106454], [0.085135, 0.038915], [0.191003, 0.018748], [0.300643, 0.034489], [0.403270, 0.077391],
    [0.596729, 0.077391], [0.699356, 0.034489], [0.808997, 0.018748], [0.914864, 0.038915], [0.989913, 0.106454],
    [0.500000, 0.203352], [0.500000, 0.307009], [0.500000, 0.409805], [0.500000, 0.515625], [0.376753, 0.587326],
    [0.435909, 0.609345], [0.500000, 0.628106], [0.564090, 0.609345], [0.623246, 0.587326], [0.131610, 0.216423],
    [0.196995, 0.178758], [0.275698, 0.179852], [0.344479, 0.231733], [0.270791, 0.245099], [0.192616, 0.244077],
    [0.655520, 0.231733], [0.724301, 0.179852], [0.803005, 0.178758], [0.868389, 0.216423], [0.807383, 0.244077],
    [0.729208, 0.245099], [0.264022, 0.780233], [0.350858, 0.745405], [0.438731, 0.727388], [0.500000, 0.742578],
    [0.561268, 0.727388], [0.649141, 0.745405], [0.735977, 0.780233], [0.652032, 0.864805], [0.566594, 0.902192],
    [0.500000, 0.909281], [0.433405, 0.902192], [0.347967, 0.864805], [0.300252, 0.784792], [0.437969, 0.778746],
    [0.500000, 0.785343], [0.562030, 0.778746], [0.699747, 0.784792], [0.563237, 0.824182], [0.500000, 0.831803],
    [0.436763, 0.824182]])
FS_MEAN_3D_26 = np.array([
    [4.056931, -11.432347, 1.636229], [1.833492, -12.542305, 4.061275], [0.0, -12.901019, 4.070434],
    [-1.833492, -12.542305, 4.061275], [-4.056931, -11.432347, 1.636229], [6.825897, 1.275284, 4.402142],
    [1.330353, 1.636816, 6.903745], [-1.330353, 1.636816, 6.903745], [-6.825897, 1.275284, 4.402142],
    [1.930245, -5.060977, 5.914376], [0.746313, -5.136947, 6.263227], [0.0, -5.485328, 6.76343],
    [-0.746313, -5.136947, 6.263227], [-1.930245, -5.060977, 5.914376], [5.311432, 0.0, 3.987654],
    [1.78993, -0.091703, 4.413414], [-1.78993, -0.091703, 4.413414], [-5.311432, 0.0, 3.987654],
    [2.774015, -7.566103, 5.048531], [0.509714, -7.056507, 6.566167], [0.0, -7.131772, 6.704956],
    [-0.509714, -7.056507, 6.566167], [-2.774015, -7.566103, 5.048531], [-0.589441, -8.443925, 6.109526],
    [0.0, -8.601736, 6.097667], [0.589441, -8.443925, 6.109526]])
FS_PNP = [6, 7, 8, 9, 10, 17, 21, 22, 26, 31, 32, 33, 34, 35, 36, 39, 42, 45, 48, 50, 51, 52, 54, 56, 57, 58]


def faceswap_head_matrix(landmarks_xy: np.ndarray, size: int) -> np.ndarray:
    """What faceswap's AlignedFace(landmarks, centering="head", size=size) uses to cut the face out of the frame."""
    legacy = umeyama(landmarks_xy[17:], FS_MEAN_51)
    norm = apply(legacy, landmarks_xy)
    cam = np.array([[4.0, 0, 0.5], [0, 4.0, 0.5], [0, 0, 1]])
    _, rvec, tvec = cv2.solvePnP(FS_MEAN_3D_26, norm[FS_PNP], cam, np.zeros((4, 1)), flags=cv2.SOLVEPNP_ITERATIVE)
    centre = cv2.projectPoints(np.array([[0.0, 0.0, -2.3]]), rvec, tvec, cam, np.zeros((4, 1)))[0].reshape(2)
    matrix = legacy.copy()
    matrix[:, 2] -= centre - 0.5
    padding = round(size * 0.625 / 2)
    adjusted = matrix * (size - 2 * padding)
    adjusted[:, 2] += padding
    return adjusted


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """PNG chunks (type, data), every CRC checked (PNG spec 5.3)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[-1][0] == b"IEND"
    return chunks


def faceswap_meta(data: bytes) -> dict:
    """The `faceswap` iTXt chunk, decoded as faceswap's png_read_meta does (keyword, 4 bytes, literal_eval)."""
    chunks = png_chunks(data)
    kinds = [k for k, _ in chunks]
    found = [body for kind, body in chunks if kind == b"iTXt" and body.split(b"\0", 1)[0] == b"faceswap"]
    assert len(found) == 1
    # read_image_meta stops at the first IDAT, so the header must come before the image data.
    assert kinds.index(b"iTXt") < kinds.index(b"IDAT")
    keyword, rest = found[0].split(b"\0", 1)
    compressed, method = rest[0], rest[1]
    language, rest = rest[2:].split(b"\0", 1)
    translated, text = rest.split(b"\0", 1)
    assert (compressed, method, language, translated) == (0, 0, b"", b"")  # faceswap reads value[4:] verbatim
    return ast.literal_eval(text.decode("utf-8"))


def test_faceswap_png_header_round_trip(ws68, tmp_path):
    ws, table = ws68
    out = tmp_path / "faceswap"
    summary = export(ws, out, "faceswap", "--all")
    ids = expected_ids(table, include_all=True)
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert set(manifest["face_id"]) == ids and summary["faces"] == len(ids) and summary["format"] == "faceswap"
    assert sorted(p.name for p in (out / "faces").iterdir()) == sorted(Path(f).name for f in manifest["file"])
    check_provenance(out, "faceswap", table, ids)
    rows = table.set_index("face_id")
    for file, face_id in zip(manifest["file"], manifest["face_id"]):
        row = rows.loc[face_id]
        data = (out / file).read_bytes()
        meta = faceswap_meta(data)
        # lib/align/objects.py PNGHeader.from_dict: keys must be a subset of the dataclass fields, required ones present.
        assert set(meta) == {"alignments", "source"}
        assert {"x", "y", "w", "h", "landmarks_xy"} <= set(meta["alignments"]) <= {
            "x", "y", "w", "h", "landmarks_xy", "mask", "identity"}
        assert set(meta["source"]) == {"alignments_version", "original_filename", "face_index", "source_filename",
                                       "source_is_video", "source_frame_dims"}
        src, aln = meta["source"], meta["alignments"]
        assert src["alignments_version"] == 2.4
        assert src["original_filename"] == Path(file).name and src["face_index"] == row["face_index"]
        assert src["source_frame_dims"] == (row["frame_h"], row["frame_w"])
        name = Path(row["source"]).name
        if row["source_kind"] == "video":
            assert src["source_is_video"] is True
            assert src["source_filename"] == f"{Path(name).stem}_{row['frame'] + 1:06d}{Path(name).suffix}"
        else:
            assert src["source_is_video"] is False and src["source_filename"] == name
        x1, y1, x2, y2 = row["bbox"]
        assert (aln["x"], aln["y"], aln["w"], aln["h"]) == (round(x1), round(y1), round(x2 - x1), round(y2 - y1))
        assert all(isinstance(aln[k], int) for k in "xywh")
        # 68 iBUG points in source-frame pixels: exactly the workspace's lmk68.
        landmarks = np.asarray(aln["landmarks_xy"], np.float64)
        assert landmarks.shape == (68, 2)
        np.testing.assert_allclose(landmarks, np.asarray(row["lmk68"]).reshape(68, 2), atol=1e-6)
        # The pixels are faceswap's head-centred extract of this frame.
        face = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert face.shape == (FACE_SIZE, FACE_SIZE, 3)
        matrix = faceswap_head_matrix(landmarks, FACE_SIZE)
        right = pixel_difference(face, ws, row, matrix)
        shifted = matrix.copy()
        shifted[:, 2] += 0.06 * FACE_SIZE
        assert right < 8 and pixel_difference(face, ws, row, shifted) > 3 * right, face_id


def test_faceswap_from_workspace_crops_when_the_footage_is_gone(ws68, tmp_path):
    """Moved or deleted footage: faces are rendered from the workspace crops, and the export says so."""
    src, _ = ws68
    ws = tmp_path / "ws"
    shutil.copytree(src, ws)
    w = open_workspace(ws)
    t = read_table(w)
    t["source"] = [str(tmp_path / "moved-away" / Path(s).name) for s in t["source"]]
    write_table(w, t)
    out = tmp_path / "faceswap"
    proc = curator("export", "-w", ws, "--out", out, "--format", "faceswap", "--all", "--json", check=True)
    summary = json.loads(proc.stdout)
    assert "rendered from the workspace crops" in proc.stderr and summary["notes"]
    prov = json.loads((out / "provenance.json").read_text())["faceswap"]
    assert prov["rendered_from_crop"] == summary["faces"] and prov["rendered_from_source"] == 0
    manifest = pd.read_parquet(out / "manifest.parquet")
    rows = t.set_index("face_id")
    for file, face_id in zip(manifest["file"], manifest["face_id"]):
        data = (out / file).read_bytes()
        landmarks = np.asarray(faceswap_meta(data)["alignments"]["landmarks_xy"], np.float64)
        face = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert pixel_difference(face, ws, rows.loc[face_id], faceswap_head_matrix(landmarks, FACE_SIZE)) < 4


def source_frame(row) -> np.ndarray:
    """The decoded frame (or photo) a workspace row came from, decoded independently of the export."""
    if row["source_kind"] == "image":
        return cv2.imread(str(row["source"]), cv2.IMREAD_COLOR)
    with av.open(str(row["source"])) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == row["frame"]:
                return frame.to_ndarray(format="bgr24")
    raise AssertionError(f"{row['source']} has no frame {row['frame']}")


@pytest.mark.parametrize("fmt", ["faceswap", "dfl"])
def test_pixels_are_the_tools_own_black_beyond_the_frame(ws68, tmp_path, fmt):
    """faceswap's extractor warps the frame with OpenCV's constant (black) border and its own interpolation
    (cubic when enlarging, else area); DFL's passes INTER_LANCZOS4 where warpAffine takes `dst`, so bilinear and
    black. Rendered the same way from the frame, our faces must be those exact pixels (PNG) or their JPEG at DFL's
    quality, and black wherever the tool's crop passes the frame's edge (the 512 px head crops of this 512 px clip
    do)."""
    ws, table = ws68
    out = tmp_path / fmt
    export(ws, out, fmt, "--all")
    manifest = pd.read_parquet(out / "manifest.parquet")
    rows = table.set_index("face_id")
    edges = 0
    for file, face_id in zip(manifest["file"], manifest["face_id"]):
        row = rows.loc[face_id]
        face = cv2.imread(str(out / file), cv2.IMREAD_COLOR)
        landmarks = np.asarray(row["lmk68"], np.float64).reshape(68, 2)
        frame = source_frame(row)
        if fmt == "faceswap":
            matrix = faceswap_head_matrix(landmarks, FACE_SIZE)
            scale = np.hypot(matrix[0, 0], matrix[0, 1])
            expected = cv2.warpAffine(frame, matrix, (FACE_SIZE, FACE_SIZE),
                                      flags=cv2.INTER_CUBIC if scale >= 1 else cv2.INTER_AREA)
            assert np.array_equal(face, expected), face_id  # lossless PNG: bit for bit
        else:
            matrix = dfl_whole_face_matrix(landmarks, FACE_SIZE)
            expected = cv2.warpAffine(frame, matrix, (FACE_SIZE, FACE_SIZE))
            assert np.abs(face.astype(int) - expected).mean() < 2.0, face_id  # JPEG at quality 90
        beyond = cv2.warpAffine(np.full(frame.shape[:2], 255, np.uint8), matrix, (FACE_SIZE, FACE_SIZE)) == 0
        beyond = cv2.erode(beyond.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # away from the edge's blur
        if beyond.sum() > 100:
            edges += 1
            assert face[beyond].max() <= (0 if fmt == "faceswap" else 8), face_id  # black there, not repeated edges
    # faceswap's head crops of this 512 px clip pass its edge, so the border rule is tested there; DFL's smaller
    # whole-face crops may stay inside (the same warp, tool_warp, renders both).
    assert edges >= (1 if fmt == "faceswap" else 0)


# ------------------------------------------------------------------ DeepFaceLab

# DFL facelib/LandmarksProcessor.py landmarks_2D_new (iBUG 17-48 and 54, unit box) and get_transform_mat.
DFL_2D_NEW = np.array([
    [0.000213256, 0.106454], [0.0752622, 0.038915], [0.18113, 0.0187482], [0.29077, 0.0344891],
    [0.393397, 0.0773906], [0.586856, 0.0773906], [0.689483, 0.0344891], [0.799124, 0.0187482],
    [0.904991, 0.038915], [0.98004, 0.106454], [0.490127, 0.203352], [0.490127, 0.307009],
    [0.490127, 0.409805], [0.490127, 0.515625], [0.36688, 0.587326], [0.426036, 0.609345],
    [0.490127, 0.628106], [0.554217, 0.609345], [0.613373, 0.587326], [0.121737, 0.216423],
    [0.187122, 0.178758], [0.265825, 0.179852], [0.334606, 0.231733], [0.260918, 0.245099],
    [0.182743, 0.244077], [0.645647, 0.231733], [0.714428, 0.179852], [0.793132, 0.178758],
    [0.858516, 0.216423], [0.79751, 0.244077], [0.719335, 0.245099], [0.254149, 0.780233],
    [0.726104, 0.780233]])


def dfl_whole_face_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    mat = umeyama(np.concatenate([landmarks[17:49], landmarks[54:55]]), DFL_2D_NEW)
    g_p = apply(cv2.invertAffineTransform(mat), np.array([(0, 0), (1, 0), (1, 1), (0, 1), (0.5, 0.5)], float))
    g_c = g_p[4]
    tb = (g_p[2] - g_p[0]) / np.linalg.norm(g_p[2] - g_p[0])
    bt = (g_p[1] - g_p[3]) / np.linalg.norm(g_p[1] - g_p[3])
    mod = np.linalg.norm(g_p[0] - g_p[2]) * (0.40 * np.sqrt(2.0) + 0.5)  # WHOLE_FACE padding 0.40
    vec = g_p[0] - g_p[3]
    g_c = g_c + vec / np.linalg.norm(vec) * np.linalg.norm(vec) * 0.07  # WHOLE_FACE: 7% more forehead
    src = np.float32([g_c - tb * mod, g_c + bt * mod, g_c + tb * mod])
    return cv2.getAffineTransform(src, np.float32([(0, 0), (size, 0), (size, size)]))


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of every segment before the entropy-coded data (JPEG: FF xx, 2-byte big-endian length)."""
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    pos, segments = 2, []
    while True:
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        segments.append((marker, data[pos + 4:pos + 2 + length]))
        pos += 2 + length
        if marker == 0xDA:  # SOS: image data follows
            return segments


def dfl_dict(data: bytes) -> dict:
    segments = jpeg_segments(data)
    markers = [m for m, _ in segments]
    assert markers[0] == 0xE0 and segments[0][1][:5] == b"JFIF\0"  # DFLJPG.load requires the JFIF APP0
    app15 = [payload for marker, payload in segments if marker == 0xEF]
    assert len(app15) == 1
    # After the APPn segments, before the tables, where DFLJPG.dump inserts it.
    last_app = max(i for i, m in enumerate(markers) if 0xE0 <= m <= 0xEF)
    assert markers[last_app] == 0xEF and all(m < 0xE0 or m > 0xEF for m in markers[last_app + 1:])
    # The payload is a pickle, as DFL stores it. We unpickle ONLY this file, which curator wrote in this
    # very test; first we check it references no importable global at all (builtins only: loadable by
    # DFL's Python 3.6 + NumPy 1.x, and nothing can execute on load), and that DFL's Python can read it.
    ops = list(pickletools.genops(app15[0]))
    assert ops[0][0].name == "PROTO" and ops[0][1] <= 3
    assert not {op.name for op, _, _ in ops} & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "BUILD"}
    return pickle.loads(app15[0])


def test_dfl_jpeg_app15_round_trip(ws68, tmp_path):
    ws, table = ws68
    out = tmp_path / "dfl"
    summary = export(ws, out, "dfl")  # selected faces only: selected minus rejected
    ids = expected_ids(table, include_all=False)
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert set(manifest["face_id"]) == ids and summary["faces"] == len(ids) >= 1
    assert sorted(p.name for p in (out / "aligned").iterdir()) == sorted(Path(f).name for f in manifest["file"])
    check_provenance(out, "dfl", table, ids)
    rows = table.set_index("face_id")
    for file, face_id in zip(manifest["file"], manifest["face_id"]):
        row = rows.loc[face_id]
        data = (out / file).read_bytes()
        d = dfl_dict(data)
        assert set(d) == {"face_type", "landmarks", "source_filename", "source_rect", "source_landmarks",
                          "image_to_face_mat"}
        assert d["face_type"] == "whole_face"
        lmk68 = np.asarray(row["lmk68"]).reshape(68, 2)
        np.testing.assert_allclose(np.asarray(d["source_landmarks"]), lmk68, atol=1e-6)
        mat = np.asarray(d["image_to_face_mat"], np.float64)
        assert mat.shape == (2, 3)
        # DFL re-derives this matrix from source_landmarks (merger, faceset resize): it must be its own.
        np.testing.assert_allclose(mat, dfl_whole_face_matrix(lmk68, FACE_SIZE), atol=1e-3)
        # Aligned-space landmarks: lmk68 mapped into the aligned image.
        landmarks = np.asarray(d["landmarks"], np.float64)
        assert landmarks.shape == (68, 2)
        np.testing.assert_allclose(landmarks, apply(mat, lmk68), atol=1e-4)
        assert (landmarks > 0).all() and (landmarks < FACE_SIZE).all()
        assert d["source_filename"] == f"{row['frame'] + 1:05d}.png"  # DFL's own frame names (VideoEd)
        assert d["source_rect"] == [round(v) for v in row["bbox"]]
        face = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert face.shape == (FACE_SIZE, FACE_SIZE, 3)
        right = pixel_difference(face, ws, row, mat)
        shifted = mat.copy()
        shifted[:, 2] += 0.06 * FACE_SIZE
        assert right < 8 and pixel_difference(face, ws, row, shifted) > 3 * right, face_id


# ------------------------------------------------------------------ FiftyOne


def same_value(got, want) -> bool:
    if want is None or (isinstance(want, float) and np.isnan(want)):
        return got is None or (isinstance(got, float) and np.isnan(got))
    if isinstance(want, (list, tuple, np.ndarray)):
        return got is not None and np.allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), atol=1e-9)
    if isinstance(want, (float, np.floating)):
        return got is not None and abs(float(got) - float(want)) <= 1e-9 * max(1.0, abs(float(want)))
    return got == (want.item() if hasattr(want, "item") else want)


def test_fiftyone_dataset_imports_elsewhere(ws68, tmp_path):
    import fiftyone as fo

    ws, table = ws68
    out = tmp_path / "fo_export"
    export(ws, out, "fiftyone", "--all")
    ids = expected_ids(table, include_all=True)
    check_provenance(out, "fiftyone", table, ids)
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("face_id")
    # "Another machine": the folder moved, the original gone, nothing may point back at either.
    moved = tmp_path / "elsewhere" / "faces_dataset"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    dataset = fo.Dataset.from_dir(str(moved), dataset_type=fo.types.FiftyOneDataset, name=f"t-{uuid.uuid4().hex}")
    try:
        assert len(dataset) == len(ids)
        emb = read_embeddings(open_workspace(ws), len(table))
        info = dataset.info["curator_provenance"]
        assert info["consent"][0]["text"] == CONSENT and set(info["sources"]) == set(
            table.loc[table["face_id"].isin(ids), "source_sha256"])
        seen = set()
        for sample in dataset:
            face_id = sample["face_id"]
            seen.add(face_id)
            i = int(np.flatnonzero(table["face_id"].to_numpy() == face_id)[0])
            row = table.iloc[i]
            assert Path(sample.filepath).is_file() and moved in Path(sample.filepath).parents
            assert Path(sample.filepath).read_bytes() == (ws / row["crop_path"]).read_bytes()
            for column in table.columns:
                assert same_value(sample[column], row[column]), (face_id, column, sample[column], row[column])
            np.testing.assert_allclose(sample["embedding"], emb[i], atol=0)
            # Tags: the split, and boolean flags as tags (rejected faces never get here).
            tags = set(sample.tags)
            assert manifest.loc[face_id, "split"] in tags
            assert ("selected" in tags) == bool(row["selected"]) and ("target" in tags) == bool(row["is_target"])
            assert "rejected" not in tags and not sample["rejected"]
            # Landmarks as Keypoints, relative to the crop: lmk68 mapped into crop coords via align_matrix.
            (kp,) = sample["landmarks"].keypoints
            _, m_crop = crop_of(ws, row)
            want = apply(m_crop, np.asarray(row["lmk68"]).reshape(68, 2)) / row["crop_size"]
            assert kp.label == "lmk68"
            np.testing.assert_allclose(np.asarray(kp.points), want, atol=1e-6)
        assert seen == ids
    finally:
        dataset.delete()


# ------------------------------------------------------------------ refusals and safety


def test_five_keypoint_workspace_is_refused_and_nothing_written(ws5, tmp_path):
    out = tmp_path / "faceset"
    before = set(tmp_path.rglob("*"))
    for fmt in ("faceswap", "dfl"):
        proc = curator("export", "-w", ws5, "--out", out, "--format", fmt)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and "68-point" in proc.stderr and "lmk68" in proc.stderr, proc.stderr
        assert proc.stdout == "" and set(tmp_path.rglob("*")) == before  # no folder, no temporary left behind
    # An existing export is left exactly as it was, even with --force.
    curator("export", "-w", ws5, "--out", out, check=True)
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = curator("export", "-w", ws5, "--out", out, "--format", "dfl", "--force")
    assert proc.returncode == 2 and "68-point" in proc.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faceset"]


def test_unknown_format_is_a_usage_error(ws5, tmp_path):
    proc = curator("export", "-w", ws5, "--out", tmp_path / "x", "--format", "tfrecord")
    assert proc.returncode == 2 and "faceswap" in proc.stderr and not (tmp_path / "x").exists()


@pytest.mark.parametrize("fmt", ["folder", "faceswap", "dfl"])
def test_face_ids_with_path_characters_stay_inside(ws68, tmp_path, fmt):
    src, _ = ws68
    root = tmp_path / "root"
    ws = root / "deep" / "ws"
    shutil.copytree(src, ws)
    w = open_workspace(ws)
    t = read_table(w)
    keep = ~t["rejected"]
    hostile = ["../../../escaped", "a/b", "a_b", "/tmp/abs", "..", "A_B"]
    idx = t.index[keep][: len(hostile)]
    t.loc[idx, "face_id"] = hostile[: len(idx)]
    write_table(w, t)  # crafted by hand, as a tampered or hostile table would be
    out = root / "deep" / "out"
    before = set(root.rglob("*"))
    summary = export(ws, out, fmt, "--all")
    no_escape(root, out, before)
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert summary["faces"] == len(manifest) == keep.sum()
    files = list(manifest["file"])
    assert len(set(f.lower() for f in files)) == len(files)  # distinct files, even for a/b vs a_b vs A_B
    for f in files:
        path = (out / f).resolve()
        assert out.resolve() in path.parents and path.is_file() and not Path(f).name.startswith(".")
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/abs.png").exists()
