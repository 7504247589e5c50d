"""Head pose (yaw, pitch, roll) from face keypoints.

Sign convention (the project's, used everywhere in curator), in degrees, with
0/0/0 a frontal, upright face. Check it on any picture:

* yaw   > 0: the head turns so that the nose points toward the IMAGE's right
             (the viewer sees more of the face's image-left cheek).
* pitch > 0: the face looks up (nose and chin rise in the image).
* roll  > 0: the head tilts counter-clockwise as seen in the image: the eye on
             the image's right is higher than the eye on the image's left.

As a rotation (camera looking at the face, x right, y down in the image),
the head is first pitched, then yawed, then rolled within the image plane:
R = Rroll @ Ryaw @ Rpitch. Because roll comes last it is the tilt of the eye
line seen in the picture (exactly so under orthographic projection), even
for strongly turned heads. Euler angles depend on that order: datasets that
compose differently (AFLW2000-3D / 300W-LP use Rpitch @ Ryaw @ Rroll, with
other signs) must be converted through the rotation matrix, not by renaming.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

NAN_POSE = (math.nan, math.nan, math.nan)

# Generic 3D face for the 5 InsightFace/SCRFD keypoints, in units of the
# distance between the eye centres, eye midpoint at the origin, OpenCV camera
# axes for a frontal face (x toward image right, y down, z away from the
# viewer, so the nose has negative z). Order: subject's right eye (image
# left), subject's left eye, nose tip, right mouth corner, left mouth corner.
# x, y: InsightFace's ArcFace alignment template (insightface.utils.face_align
#   .arcface_dst, the mean frontal layout of these very detector keypoints),
#   made left/right symmetric so mirrored faces give exactly mirrored angles.
# z: depths from InsightFace's 3D mean face (meanshape_68.pkl: eye contour
#   centres, landmark 30 nose tip, landmarks 48/54), derived offline once. Its
#   x, y are not used: its nose tip sits 0.33 eye-distances below the eyes,
#   against 0.57 in the template and ~0.55 in AFLW2000-3D's fitted 3D faces,
#   which would bias pitch by about 20 degrees.
MEAN_FACE_5 = np.array(
    [
        [-0.5000, 0.0000, 0.000],
        [0.5000, 0.0000, 0.000],
        [0.0000, 0.5715, -0.534],
        [-0.4140, 1.1546, -0.118],
        [0.4140, 1.1546, -0.118],
    ],
    dtype=np.float64,
)

# Below this, the keypoints span no usable 2D shape (coincident or collinear
# points); the value is relative to the face size, so it is scale-free.
_MIN_REL_AREA = 1e-3


def _camera(frame_size) -> np.ndarray | None:
    h, w = (float(v) for v in frame_size)
    if not (math.isfinite(h) and math.isfinite(w) and h > 0 and w > 0):
        return None
    # Focal length unknown: a field of view of ~53 degrees across the longer
    # side is typical of phones and webcams. Faces are small next to their
    # distance from the camera, so a guess off by 2x costs only a few degrees.
    f = max(h, w)
    return np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], dtype=np.float64)


def _euler_from_matrix(R: np.ndarray) -> tuple[float, float, float]:
    # Decompose R = Rz(a) @ Ry(b) @ Rx(c) in OpenCV axes; with y down and z
    # away from the viewer, every positive angle of our convention is a
    # negative right-handed rotation, hence the minus signs.
    c = math.atan2(R[2, 1], R[2, 2])
    b = math.atan2(-R[2, 0], math.hypot(R[0, 0], R[1, 0]))
    a = math.atan2(R[1, 0], R[0, 0])
    return -math.degrees(b), -math.degrees(c), -math.degrees(a)


def matrix_from_pose(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation (OpenCV camera axes) turning MEAN_FACE_5's frontal face to this pose."""
    y, p, r = (-math.radians(v) for v in (yaw, pitch, roll))
    cy, sy, cp, sp, cr, sr = math.cos(y), math.sin(y), math.cos(p), math.sin(p), math.cos(r), math.sin(r)
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def estimate_pose_kps5(kps, frame_size) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from 5 InsightFace keypoints.

    kps: (5, 2) pixel coordinates in InsightFace order (right eye, left eye,
    nose, right mouth corner, left mouth corner, "right"/"left" being the
    subject's). frame_size: (height, width) of the image they came from.
    Returns NaNs, never raises, when the points are non-finite or degenerate
    or frame_size is unusable (only kps not holding 10 numbers raises).
    A 5-point fit saturates for profile views (|yaw| beyond ~60 degrees),
    where the far eye and mouth corner are hidden or guessed by the detector.
    """
    pts = np.asarray(kps, dtype=np.float64).reshape(5, 2)
    K = _camera(frame_size)
    if K is None or not np.isfinite(pts).all():
        return NAN_POSE
    eye_mid = (pts[0] + pts[1]) / 2
    eye_vec = pts[1] - pts[0]
    down_vec = (pts[3] + pts[4]) / 2 - eye_mid
    size2 = max(eye_vec @ eye_vec, down_vec @ down_vec)
    # Coincident points have no size; collinear ones (eye line through the
    # mouth) have no area: neither fixes a 3D orientation.
    if size2 <= 1e-12 or abs(eye_vec[0] * down_vec[1] - eye_vec[1] * down_vec[0]) < _MIN_REL_AREA * size2:
        return NAN_POSE

    # A plain PnP fit: ratio heuristics (e.g. roll from the eye line) were
    # tried and did not beat it on AFLW2000-3D ground truth.
    # SQPnP finds the global minimum, so no initial guess is needed and the
    # mirrored (face-seen-from-behind) solution that near-planar points allow
    # loses to the true one; it is also ~5x faster than OpenCV's iterative LM.
    try:
        ok, rvec, tvec = cv2.solvePnP(MEAN_FACE_5, pts, K, None, flags=cv2.SOLVEPNP_SQPNP)
    except cv2.error:
        return NAN_POSE
    if not ok or not np.isfinite(rvec).all() or tvec[2, 0] <= 0:
        return NAN_POSE
    return _euler_from_matrix(cv2.Rodrigues(rvec)[0])


def estimate_pose_kps5_batch(kpss, frame_size) -> np.ndarray:
    """(N, 3) array of (yaw, pitch, roll) for (N, 5, 2) keypoints of one frame."""
    kpss = np.asarray(kpss, dtype=np.float64).reshape(-1, 5, 2)
    return np.array([estimate_pose_kps5(k, frame_size) for k in kpss], dtype=np.float64).reshape(-1, 3)


def pose_from_insightface(pose_pyr) -> tuple[float, float, float]:
    """Our (yaw, pitch, roll) from InsightFace's `face.pose` ([pitch, yaw, roll]).

    InsightFace (1k3d68 landmark model) fits its 3D mean face to the predicted
    landmarks in image axes (x right, y down, z toward the viewer) and reads
    matrix2angle's Rz @ Ry @ Rx angles: the same composition order as ours, so
    only signs differ. Established by rotating that mean face by known poses
    and running it through InsightFace's own transform functions (see
    tests/test_pose.py): its pitch and yaw already match ours, its roll is
    positive for a clockwise tilt in the image. Only the predicted x, y enter
    (P2sRt rebuilds the third row), so the model's depth sign cannot matter.
    """
    pitch, yaw, roll = (float(v) for v in np.asarray(pose_pyr, dtype=np.float64).reshape(3))
    return yaw, pitch, -roll
