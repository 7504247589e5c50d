"""A pack's 3D-68 landmark model through the real `curator extract` path: the pack interface only.

These tests check how curator routes and decodes a 3D-68 model that sits in a
model pack (`--landmarks auto`), using a GENERATED model that returns the same
face for every image. They say nothing about landmark accuracy, expression or
pose on real faces, nor do the faceswap/DFL export tests use this model any
more: real 68-point landmarks come from dlib's predictor
(`--landmarks dlib`, tests/test_dlib_landmarks.py, tests/test_formats.py).

InsightFace's default pack (buffalo_l) carries `1k3d68.onnx`, a 3D 68-point
landmark model; with it curator takes head pose from InsightFace's `face.pose`
(`pose_method = "landmark_3d68"`), expression from the landmarks
(`expression_method = "lmk68"`) and stores them (`lmk68`, 136 floats, x, y in
source pixels). A real model cannot be downloaded here (buffalo_l is not
available offline), so these tests GENERATE, with `onnx.helper`, a small ONNX
file with the same interface as 1k3d68.onnx: one float input [1, 3, 192, 192]
and one float output [1, 3309]. InsightFace recognises it exactly as it does
the real one (ModelRouter: a 192x192 input -> `model_zoo.landmark.Landmark`;
3309 outputs -> task `landmark_3d_68`, 68 3D points and `face.pose` from
fitting its 3D mean face), and curator loads it through the unchanged
`FaceAnalysis(name=<dir>)` path, next to the shared pack-small's detector and
recogniser.

The generated model ignores the picture (its output adds 0 * mean(input), so
the input is wired in) and always returns one known 3D face: InsightFace's own
mean face (`meanshape_68.pkl`), turned by a KNOWN pose in the project's
convention (curator/measure/pose.py), in the normalised [-1, 1] crop coordinates the
real model predicts. Landmark.get decodes the output as: reshape (-1, 3), keep
the LAST 68 points, x, y (and z) `+= 1; *= 96` into the 192 px crop, then map
back to the source image through the crop transform (centre = bbox centre,
crop side = 1.5 * the bbox's longer side). So every number curator stores is
predictable from the bbox it stores beside it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import IMAGES, PACK, clip, curator, curator_json, lmk68_in_box, one_line_error
from curator import media
from curator.measure import states
from curator.measure.descriptors import expression_from_lmk68
from curator.measure.pose import matrix_from_pose
from curator.workspace import open_workspace, read_table

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

CLIP = "driving_d0.mp4"  # one person, 3 s, 512x512: ~6 analysed frames at the default 2 fps
YAW = 30.0  # the known pose of the generated face: nose toward the image's right
LOWER_LIP = [56, 57, 58, 65, 66, 67]  # iBUG-68: outer (55-59) and inner (65-67) lower lip, corners excluded
MOUTH_DROP = 0.08  # how far the open-mouth model moves the lower lip down (normalised crop units)
FACE_SCALE = 0.7  # of InsightFace's mean face, in normalised crop units
NOSE_TIP, RIGHT_EYE, LEFT_EYE = 30, slice(36, 42), slice(42, 48)


# ------------------------------------------------------------ the model


def face_points(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, mouth_drop: float = 0.0) -> np.ndarray:
    """(68, 3) face in the 1k3d68 output frame: normalised crop x, y (right, down), z toward the viewer.

    InsightFace's mean face is already centred in that frame, about +-0.63
    across; scaled by FACE_SCALE it fits inside SCRFD's boxes, which are
    taller than wide (the crop side is 1.5x the box's LONGER side, so an
    unscaled face would stick out of a 1.4:1 box sideways). It is posed the
    way tests/test_pose.py established: our rotation (OpenCV axes, z away from
    the viewer) conjugated by a z flip.
    """
    from insightface.data import get_object

    pts = np.asarray(get_object("meanshape_68.pkl"), np.float64) * FACE_SCALE
    assert pts.shape == (68, 3)
    pts[LOWER_LIP, 1] += mouth_drop
    flip_z = np.diag([1.0, 1.0, -1.0])
    R = flip_z @ matrix_from_pose(yaw, pitch, roll) @ flip_z
    return pts @ R.T


def write_1k3d68(path: Path, points: np.ndarray) -> None:
    """An ONNX file with 1k3d68.onnx's interface whose prediction is always `points`."""
    assert points.shape == (68, 3)
    flat = np.zeros((1, 3309), np.float32)  # 1103 (x, y, z) triples; Landmark keeps the last 68
    flat[0, -68 * 3:] = points.astype(np.float32).reshape(-1)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["data"], ["image_mean"], keepdims=0),  # all axes -> scalar
            helper.make_node("Mul", ["image_mean", "zero"], ["nothing"]),
            helper.make_node("Add", ["face", "nothing"], ["fc1"]),
        ],
        "generated_1k3d68",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 192, 192])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 3309])],
        initializer=[numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                     numpy_helper.from_array(flat, "face")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="curator tests/test_landmarks68.py")
    model.ir_version = 8  # loadable by any onnxruntime of the last years
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def make_pack(root: Path, points: np.ndarray) -> Path:
    """pack-small's detector and recogniser plus a generated 1k3d68.onnx, in a fresh directory."""
    root.mkdir(parents=True)
    shared = sorted(PACK.glob("*.onnx"))
    assert [p.name for p in shared] == ["det_500m.onnx", "mobilefacenet_128.onnx"], shared
    for p in shared:
        shutil.copy2(p, root / p.name)
    write_1k3d68(root / "1k3d68.onnx", points)
    return root


def extract_with(tmp: Path, points: np.ndarray) -> tuple[Path, Path, dict]:
    pack = make_pack(tmp / "pack", points)
    ws = tmp / "ws"
    summary = curator_json("extract", clip(CLIP), "-w", ws, "--models", pack, "-q")
    return pack, ws, summary


@pytest.fixture(scope="module")
def turned(tmp_path_factory):
    """(pack, workspace, summary, table) for the generated model answering a face at yaw +30."""
    pack, ws, summary = extract_with(tmp_path_factory.mktemp("lmk68_turned"), face_points(yaw=YAW))
    table = read_table(open_workspace(ws))
    assert summary["faces"] > 0 and len(table) == summary["faces"], summary
    return pack, ws, summary, table


@pytest.fixture(scope="module")
def open_mouth(tmp_path_factory):
    """The table for a model that differs only in a lower lip moved down (mouth opened)."""
    _, ws, _ = extract_with(tmp_path_factory.mktemp("lmk68_open"), face_points(yaw=YAW, mouth_drop=MOUTH_DROP))
    return read_table(open_workspace(ws))


def expected_lmk(bbox, points: np.ndarray) -> np.ndarray:
    """Where Landmark.get puts normalised crop points in the source image, for this detector box."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    half_crop = 1.5 * max(x2 - x1, y2 - y1) / 2  # normalised 1.0 = half the 192 px crop
    return centre + points[:, :2] * half_crop


# ------------------------------------------------------------ the model itself


def test_generated_model_is_routed_and_decoded_like_1k3d68(tmp_path):
    """InsightFace's own router and decoder take the generated file for a 3D 68-point model."""
    from insightface.app.common import Face
    from insightface.model_zoo import model_zoo

    points = face_points(yaw=YAW)
    write_1k3d68(tmp_path / "1k3d68.onnx", points)
    model = model_zoo.get_model(str(tmp_path / "1k3d68.onnx"), providers=["CPUExecutionProvider"])
    assert type(model).__name__ == "Landmark"
    assert model.taskname == "landmark_3d_68" and model.require_pose
    assert model.input_size == (192, 192)
    model.prepare(-1)
    rng = np.random.default_rng(0)
    bbox = np.array([100.0, 80.0, 260.0, 280.0], np.float32)
    for image in (np.zeros((400, 400, 3), np.uint8), rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)):
        face = Face(bbox=bbox)
        pred = model.get(image, face)  # the picture does not matter, but it is fed through
        assert pred.shape == (68, 3)
        np.testing.assert_allclose(pred[:, :2], expected_lmk(bbox, points), atol=0.02)
        assert face["pose"][1] == pytest.approx(YAW, abs=0.1)  # InsightFace's [pitch, yaw, roll]


# ------------------------------------------------------------ curator extract with it


def test_workspace_records_the_landmark_model(turned):
    pack, ws, _, _ = turned
    meta = json.loads((ws / "workspace.json").read_text())
    models = meta["models"]
    assert models["tasks"]["landmark_3d_68"] is True
    assert models["tasks"]["landmark_2d_106"] is False
    assert models["path"] == str(pack.resolve())
    assert set(models["files"]) == {"det_500m.onnx", "mobilefacenet_128.onnx", "1k3d68.onnx"}
    assert models["files"]["1k3d68.onnx"] == media.sha256_file(pack / "1k3d68.onnx")
    assert models["embedding_dim"] == 128


def test_pose_comes_from_the_3d_landmarks(turned):
    table = turned[3]
    assert set(table["pose_method"]) == {"landmark_3d68"}
    # The face the model returns is turned by exactly yaw +30 (pitch 0, roll 0),
    # whatever the frame shows; the 3D fit recovers it through every step.
    np.testing.assert_allclose(table["yaw"], YAW, atol=1.0)
    np.testing.assert_allclose(table["pitch"], 0.0, atol=1.0)
    np.testing.assert_allclose(table["roll"], 0.0, atol=1.0)


def test_lmk68_in_source_pixels_within_the_face_box(turned):
    table = turned[3]
    points = face_points(yaw=YAW)
    for _, row in table.iterrows():
        lmk = lmk68_in_box(row, 0.1)
        # Exactly the model's points, mapped through the crop of this row's own box.
        np.testing.assert_allclose(lmk, expected_lmk(row["bbox"], points), atol=0.05)
        # Stored in the picture's own axes: at yaw +30 the nose tip lies to the image's
        # right of the eyes' midpoint (in the frontal mean face it is within 1% of it).
        eye_mid = (lmk[RIGHT_EYE].mean(0) + lmk[LEFT_EYE].mean(0)) / 2
        iod = np.linalg.norm(lmk[LEFT_EYE].mean(0) - lmk[RIGHT_EYE].mean(0))
        assert lmk[NOSE_TIP, 0] - eye_mid[0] > 0.2 * iod


def test_expression_from_the_landmarks(turned):
    table = turned[3]
    assert set(table["expression_method"]) == {"lmk68"}
    ratios = expression_from_lmk68(face_points(yaw=YAW))  # ratios: the same in crop or source pixels
    # The mean face's mouth is closed, its eyes open, its mouth narrower than the eye span.
    assert ratios["mouth_open"] < 0.1 and 0.15 < ratios["eyes_open"] < 0.5 and 0.3 < ratios["smile"] < 0.9
    # Since the states (curator/measure/states.py), mouth_open is the probability that the lips are apart, made
    # from the same inner-lip gap on the landmarks, and eyes_open and smile are 0-1 too.
    want_mouth = states.sigmoid((states.mouth_gap(face_points(yaw=YAW)[:, :2]) - states.MOUTH_GAP_OPEN) / states.MOUTH_GAP_SCALE)
    np.testing.assert_allclose(table["mouth_open"].to_numpy(np.float64), want_mouth, rtol=1e-3, atol=1e-4)
    for name in ("mouth_open", "eyes_open", "smile"):
        values = table[name].to_numpy(np.float64)
        assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all(), name
    assert (table["mouth_open"] < 0.5).all() and (table["eyes_open"] > 0.5).all()


def test_mouth_open_responds_to_the_landmarks(turned, open_mouth):
    closed = turned[3].set_index("face_id")
    opened = open_mouth.set_index("face_id")
    assert set(opened["expression_method"]) == {"lmk68"}
    assert list(opened.index) == list(closed.index)  # same frames, same faces: only the model differs
    assert (opened["mouth_open"] > closed["mouth_open"] + 0.2).all(), (closed["mouth_open"], opened["mouth_open"])
    gap = states.mouth_gap(face_points(yaw=YAW, mouth_drop=MOUTH_DROP)[:, :2])  # the states' lip gap, in the picture
    np.testing.assert_allclose(opened["mouth_open"], states.sigmoid((gap - states.MOUTH_GAP_OPEN) / states.MOUTH_GAP_SCALE),
                               rtol=1e-3)
    # Only the lower lip moved: the eyes are unchanged. (smile, a 0-1 state since curator/measure/states.py, reads
    # the lip gap too, so it is no longer expected to stay put.)
    np.testing.assert_allclose(opened["eyes_open"], closed["eyes_open"], rtol=1e-4)
    assert ((opened["smile"] >= 0) & (opened["smile"] <= 1)).all()


def test_pitch_and_roll_signs_through_extract(tmp_path):
    """A face turned every way at once: yaw, pitch and roll each keep their sign and size.

    At yaw +30 alone a flipped pitch or roll sign would still read 0; here
    all three are non-zero and distinct.
    """
    want = (-20.0, 15.0, 10.0)
    points = face_points(*want)
    _, ws, _ = extract_with(tmp_path, points)
    table = read_table(open_workspace(ws))
    assert len(table) and set(table["pose_method"]) == {"landmark_3d68"}
    for name, value in zip(("yaw", "pitch", "roll"), want):
        np.testing.assert_allclose(table[name], value, atol=1.0, err_msg=name)
    for _, row in table.iterrows():
        lmk = np.asarray(row["lmk68"], np.float64).reshape(68, 2)
        np.testing.assert_allclose(lmk, expected_lmk(row["bbox"], points), atol=0.05)
        # roll > 0 in our convention: the eye on the image's right is the higher one.
        assert lmk[LEFT_EYE, 1].mean() < lmk[RIGHT_EYE, 1].mean() - 5


def test_landmarks_option_routes_around_the_pack_model(turned, tmp_path):
    """auto records the pack's model as `3d68`; --landmarks dlib or none leave it unused; a workspace keeps its method."""
    pack, ws, _, table = turned
    assert json.loads((ws / "workspace.json").read_text())["settings"]["landmarks"] == "3d68"
    for option, method in (("dlib", "lmk68"), ("none", "kps5_appearance")):
        other = tmp_path / option
        curator_json("extract", clip(CLIP), "-w", other, "--models", pack, "--landmarks", option, "-q")
        t = read_table(open_workspace(other))  # other frames than `turned`'s: pose fill follows the other pose
        assert len(t) and set(t["pose_method"]) == {"kps5_pnp"} and set(t["expression_method"]) == {method}
        assert json.loads((other / "workspace.json").read_text())["settings"]["landmarks"] == option
        if option == "dlib":  # the picture's own landmarks, not the generated face
            generated = np.stack([expected_lmk(b, face_points(yaw=YAW)) for b in t["bbox"]])
            assert np.abs(np.stack(t["lmk68"].to_numpy()).reshape(-1, 68, 2) - generated).mean() > 5
        else:
            assert t["lmk68"].isna().all()
    proc = curator("extract", IMAGES / "face_recognition" / "examples" / "obama-480p.jpg", "-w", ws, "--models", pack,
                   "--landmarks", "dlib", "-q")
    one_line_error(proc, "--landmarks dlib", "3D-68")
