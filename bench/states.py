"""Eyes, mouth, smile and covered faces against labels: ROC AUC per state and method.

    python bench/states.py [--data /work/data] [--pack DIR] [--fit] [--fit-thresholds] [--out bench/results/states.json]

Every face goes through curator's own pipeline as `curator extract` runs it:
the pack's SCRFD detector (the largest face of the image or frame), the
landmarks of each method, the 128 px analysis crop, and
`curator.measure.states.describe_states` (the function extract calls). Methods:
`dlib` (dlib's 68 points, what extract uses by default on a pack without a
3D-68 model) and `none` (5 keypoints only). The pack's 3D-68 model
(buffalo_l) cannot be had offline, so it is not measured.

Data (none of it is in the repository; docs/benchmarks.md names each source):
  frames     hand-labelled frames of shared clips (tests/data/states_labels.csv):
             eyes closed per video frame (both eyes), mouth open (lips apart);
  smile      SMILEsmileD (hromi/SMILEsmileD: SMILEs/positives, negatives; 64 px
             faces from LFW labelled smiling / not), padded by a third of their
             side with replicated borders and upscaled 3x so the detector sees a face;
  masks      chandrikadeb7/Face-Mask-Detection dataset/with_mask, without_mask:
             a covered lower face;
  eyes       jesusmartinoza/Open-eyes-using-Pix2Pix closed_eyes_dataset (the 1,192 faces
             of CEW, Closed Eyes In the Wild, high-resolution crops: eyes closed) against
             regular_faces (UTKFace 200 px faces: NOT labelled for eyes, open by
             presumption); the crops are tight, so each gets a replicated border of a
             third of its side (no upscaling: the faces are 90-800 px);
  mouth      Muneeb-Ahmed-Khan/Yawn-Detection dataset_noisy/yawn, no-yawn (the Kaggle
             drowsiness set's yawn / no_yawn: 640x480 in-car frames, YawDD-like):
             yawning (mouth wide open) or not;
  sunglasses shreyas0906/Selfies-with-sunglasses selfies-sunglasses/selfies_* (web selfies with
             sunglasses; no per-image labels) against Face-Mask-Detection's without_mask faces
             that `masks` does not sample (presumed without sunglasses): occluded_eyes and occlusion,
             with the share of faces above 0.5 there, on the frames and on the masks set.
SAMPLE images per class are taken from each public set (a hash of the file
name picks them, so runs agree). The fitted states (smile, occluded_mouth,
occluded_eyes) are fitted on fold 0 (hash parity) and scored on fold 1 only
(occluded_eyes' intercept then lowered until at most EYES_FALSE_ALARM of fold 0's
bare faces score above 0.5); `--fit` prints
the coefficients curator/measure/states.py carries and writes them to
bench/results/states_fit.json. `--fit-thresholds` chooses the eye and mouth thresholds
(EAR_CLOSED, MOUTH_GAP_OPEN) with dlib's points: on a grid, the value that maximises
balanced accuracy (the mean of the shares of each class called right at the 0.5 point)
averaged over the data sets (the shared frames, and fold 0 of the public eyes or mouth
set), so that no one set dominates; it reports the shares called right on fold 1 of the
public set and on the frames at the threshold read off the frames alone before (PREVIOUS)
and at the chosen one, and the log-loss of a few logistic widths, into the same file.
AUC of the eye and mouth states is over every labelled frame and every found face of the
eyes and mouth sets (a threshold moves no ranking).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from curator.measure import descriptors  # noqa: E402
from curator.models import faces  # noqa: E402
from curator import media  # noqa: E402
from curator.measure import states  # noqa: E402
from curator.measure.align import DEFAULT_MARGIN, align_matrix  # noqa: E402

TESTDATA = ROOT.parent / "shared" / "testdata"
LABELS = ROOT / "tests" / "data" / "states_labels.csv"
SAMPLE = 500
METHODS = ("dlib", "none")
FIT = ROOT / "bench" / "results" / "states_fit.json"
# the thresholds read off the shared frames alone, before --fit-thresholds: "before" in its report
PREVIOUS = {"EAR_CLOSED": 0.17, "MOUTH_GAP_OPEN": 0.05}
# OCCLUDED_EYES' intercept is lowered after the fit until at most this share of fold 0's bare faces scores above 0.5
# (the logistic is fitted on about as many sunglasses as bare faces; sunglasses are rarer than that in footage)
EYES_FALSE_ALARM = 0.02


def auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC (Mann-Whitney), ties counted half; None without both classes."""
    y = np.asarray(y, bool)
    s = np.asarray(score, float)
    ok = np.isfinite(s)
    y, s = y[ok], s[ok]
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return None
    order = np.argsort(np.r_[pos, neg], kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    allv = np.r_[pos, neg]
    # average ranks of ties
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, ranks)
    ranks = (sums / counts)[inv]
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def fold(name: str) -> int:
    return zlib.crc32(name.encode()) % 2


def sample(paths: list[Path], n: int) -> list[Path]:
    return sorted(paths, key=lambda p: zlib.crc32(p.name.encode()))[:n]


def analyse(fm, image: np.ndarray) -> dict | None:
    """The largest face's states and descriptors, as extract computes them."""
    boxes, kpss = faces.detect(fm, image)
    if not len(boxes):
        return None
    i = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    kps = kpss[i]
    lmk = faces.landmarks(fm, image, boxes[i], kps).get("lmk68")
    m = align_matrix(kps, descriptors.ANALYSIS_SIZE, DEFAULT_MARGIN)
    out = states.describe_states(image, kps, m, lmk)
    crop = descriptors.analysis_crop(image, m)
    from curator.measure.align import transform_points
    k = transform_points(kps, m)
    lk = None if lmk is None else transform_points(np.asarray(lmk)[:, :2], m)
    if lk is not None:
        out["f_smile"] = states.smile_features(lk)
        # the raw measures behind eyes_closed (the more open eye's EAR) and mouth_open, for --fit-thresholds
        out["f_ear"] = max(states.eye_aspect_ratio(lk, 36), states.eye_aspect_ratio(lk, 42))
        out["f_gap"] = states.mouth_gap(lk)
    out["f_smile5"] = states.smile_features_kps5(k)
    out["f_occ"] = states.occlusion_features(crop, k, lk)
    out["f_eyes"] = states.eye_cover_features(crop, k, lk)
    out["f_dark"] = dark_eye_band(crop, k)  # occluded_eyes' single feature before OCCLUDED_EYES
    return out


def dark_eye_band(crop_bgr: np.ndarray, kps: np.ndarray) -> float:
    """Share of the eye band darker than 0.35 of the skin's lightness (measured on the nose bridge): the fixed
    rule `occluded_eyes` was before `states.eye_cover_features`, kept here only to report it as "before"."""
    lab = cv2.cvtColor(crop_bgr.astype(np.float32) / 255.0, cv2.COLOR_BGR2LAB)
    r = states.regions(kps, None)
    if not r["skin_ref"].any() or not r["eye_band"].any():  # keypoints at or past the crop's edge: unknown
        return float("nan")
    L0 = float(np.median(lab[..., 0][r["skin_ref"]]))
    return float((lab[..., 0][r["eye_band"]] < 0.35 * L0).mean())


def padded(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    image = cv2.copyMakeBorder(image, h // 3, h // 3, w // 3, w // 3, cv2.BORDER_REPLICATE)
    return cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)


def bordered(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.copyMakeBorder(image, h // 3, h // 3, w // 3, w // 3, cv2.BORDER_REPLICATE)


def frames_set(fm) -> pd.DataFrame:
    labels = pd.read_csv(LABELS, comment="#")
    rows = []
    for clip, g in labels.groupby("clip"):
        want = dict(zip(g["frame"], zip(g["eyes"], g["mouth"])))
        container, stream = media.open_video(TESTDATA / "videos" / f"{clip}.mp4")
        for n, frame in enumerate(container.decode(stream)):
            if n in want:
                found = analyse(fm, media.to_bgr(frame))
                if found is not None:
                    rows.append({"set": "frames", "name": f"{clip}#{n}", "clip": clip, "eyes": want[n][0],
                                 "mouth": want[n][1], **found})
        container.close()
    return pd.DataFrame(rows)


def image_set(fm, name: str, folders: dict[str, Path | list[Path]], prep=None, skip: dict | None = None) -> pd.DataFrame:
    """SAMPLE images of each label, each through `prep` (padded, bordered) if given. A label's images are one
    folder's, or the union of a list of folders' (named folder/file then, byte-identical copies once); `skip`
    (label: count) passes over that many of a label's hash order first, to sample other images of a folder that
    another set samples."""
    rows = []
    for label, where in folders.items():
        if isinstance(where, Path):
            named = {p.name: p for p in where.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
        else:
            named, seen = {}, set()
            for folder in where:
                for p in sorted(folder.iterdir()):
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png") and (h := zlib.crc32(p.read_bytes())) not in seen:
                        seen.add(h)
                        named[f"{folder.name}/{p.name}"] = p
        first = (skip or {}).get(label, 0)
        for key in sorted(named, key=lambda k: zlib.crc32(k.encode()))[first:first + SAMPLE]:
            image = cv2.imread(str(named[key]))
            if image is None:
                continue
            found = analyse(fm, prep(image) if prep else image)
            rows.append({"set": name, "name": key, "label": label, "found": found is not None, **(found or {})})
    return pd.DataFrame(rows)


def public_auc(t: pd.DataFrame, state: str, positive: str) -> dict:
    """AUC of `state` over every found face of an unfitted public set, and the images without a face per label."""
    f = t.query("found")
    return {"auc": auc(f["label"] == positive, f[state]), "faces": len(f), positive: int((f["label"] == positive).sum()),
            "images": len(t), "no_face": {k: int((~g["found"]).sum()) for k, g in t.groupby("label")}}


def fit_logistic(x: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression

    mean, std = x.mean(0), x.std(0) + 1e-9
    lr = LogisticRegression(C=1.0, max_iter=1000).fit((x - mean) / std, y)
    return {"mean": [round(float(v), 5) for v in mean], "std": [round(float(v), 5) for v in std],
            "coef": [round(float(lr.intercept_[0]), 5), *[round(float(v), 5) for v in lr.coef_[0]]]}


def write_fit(entries: dict) -> None:
    """Add `entries` to states_fit.json, keeping what the other option wrote there."""
    fitted = json.loads(FIT.read_text()) if FIT.exists() else {}
    fitted.update(entries)
    FIT.write_text(json.dumps(fitted, indent=1) + "\n")


def called_right(x: np.ndarray, positive: np.ndarray, at: float, below: bool) -> dict:
    """Shares of the positive class (closed eyes: measure <= at; open mouth: >= at) and of the other called
    right at the 0.5 point, i.e. the measure against the threshold itself."""
    x, positive = np.asarray(x, float), np.asarray(positive, bool)
    call = x <= at if below else x >= at
    return {"positive": round(float(call[positive].mean()), 4), "negative": round(float((~call[~positive]).mean()), 4),
            "balanced": round(float((call[positive].mean() + (~call[~positive]).mean()) / 2), 4),
            "n_positive": int(positive.sum()), "n_negative": int((~positive).sum())}


def log_loss(x: np.ndarray, positive: np.ndarray, at: float, scale: float, below: bool) -> float:
    """Mean of the two classes' log-loss of the logistic states.py applies (centre `at`, width `scale`)."""
    x, positive = np.asarray(x, float), np.asarray(positive, bool)
    p = np.clip(states.sigmoid(((at - x) if below else (x - at)) / scale), 1e-6, 1 - 1e-6)
    return float(-(np.log(p[positive]).mean() + np.log(1 - p[~positive]).mean()) / 2)


def fit_thresholds(t: dict) -> dict:
    """EAR_CLOSED and MOUTH_GAP_OPEN by the rule in the module's docstring, from dlib's tables `t`."""
    f = t["frames"]
    out = {}
    for name, measure, grid, below, scale, frames, public, pos in (
            ("EAR_CLOSED", "f_ear", np.arange(0.10, 0.3001, 0.005), True, "EAR_SCALE",
             f[f["eyes"].isin(["O", "C"])].assign(y=lambda d: d["eyes"] == "C"), t["eyes"], "closed"),
            ("MOUTH_GAP_OPEN", "f_gap", np.arange(0.01, 0.2001, 0.005), False, "MOUTH_GAP_SCALE",
             f[f["mouth"].isin(["O", "C"])].assign(y=lambda d: d["mouth"] == "O"), t["mouth"], "open")):
        pub = public.query("found").assign(y=lambda d: d["label"] == pos)
        folds = {k: pub[[fold(n) == k for n in pub["name"]]] for k in (0, 1)}
        fit_sets = {"frames": frames, "public_fold0": folds[0]}
        grid = np.round(grid, 4)
        mean_ba = [float(np.mean([called_right(d[measure], d["y"], g, below)["balanced"] for d in fit_sets.values()]))
                   for g in grid]
        chosen = float(grid[int(np.argmax(mean_ba))])  # the lowest, on a tie
        before = PREVIOUS[name]
        width = getattr(states, scale)
        out[name] = {
            "chosen": chosen, "before": before, "rule": "max over the grid of balanced accuracy averaged over the "
            "frames and fold 0 of the public set", "grid": [float(grid[0]), float(grid[-1]), 0.005],
            "mean_balanced_accuracy_fold0": {"chosen": round(max(mean_ba), 4),
                                             "before": round(mean_ba[int(np.argmin(abs(grid - before)))], 4)},
            "held_out": {where: {"before": called_right(d[measure], d["y"], before, below),
                                 "chosen": called_right(d[measure], d["y"], chosen, below)}
                         for where, d in (("public_fold1", folds[1]), ("frames", frames))},
            "width": {"name": scale, "value": width, "mean_log_loss_fold0": {
                str(w): round(float(np.mean([log_loss(d[measure], d["y"], chosen, w, below) for d in fit_sets.values()])), 4)
                for w in sorted({width, *np.round(np.arange(0.005, 0.0501, 0.005), 4)})}},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/work/data", help="folder holding smilesmiled/, face-mask-detection/, cew-closed-utkface/, yawdd-yawn/")
    ap.add_argument("--pack", default=str(TESTDATA / "models" / "pack-small"))
    ap.add_argument("--fit", action="store_true", help="fit smile and occluded_mouth on fold 0 and print them")
    ap.add_argument("--fit-thresholds", action="store_true",
                    help="choose EAR_CLOSED and MOUTH_GAP_OPEN on the frames and fold 0 of the public sets")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "states.json"))
    args = ap.parse_args()
    data = Path(args.data)
    t0 = time.time()
    result: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "pack": Path(args.pack).name, "sample_per_class": SAMPLE, "methods": {}}
    tables = {}
    for method in METHODS:
        fm = faces.load_models(args.pack, device="cpu", landmarks=method)
        tables[method] = {
            "frames": frames_set(fm),
            "smile": image_set(fm, "smile", {"smile": data / "smilesmiled/SMILEs/positives/positives7",
                                             "neutral": data / "smilesmiled/SMILEs/negatives/negatives7"}, padded),
            "masks": image_set(fm, "masks", {"covered": data / "face-mask-detection/dataset/with_mask",
                                             "bare": data / "face-mask-detection/dataset/without_mask"}),
            "eyes": image_set(fm, "eyes", {"closed": data / "cew-closed-utkface/closed_eyes_dataset",
                                           "open": data / "cew-closed-utkface/regular_faces"}, bordered),
            "mouth": image_set(fm, "mouth", {"open": data / "yawdd-yawn/dataset_noisy/yawn",
                                             "closed": data / "yawdd-yawn/dataset_noisy/no-yawn"}),
            # the bare faces are the next SAMPLE of without_mask in the hash order "masks" samples: none is in both
            "sunglasses": image_set(fm, "sunglasses", {
                "sunglasses": sorted((data / "selfies-sunglasses/selfies-sunglasses").glob("selfies_*")),
                "bare": data / "face-mask-detection/dataset/without_mask"}, skip={"bare": SAMPLE}),
        }
    if args.fit:
        fitted = {}
        d = tables["dlib"]["smile"].query("found")
        tr = d[[fold(n) == 0 for n in d["name"]]]
        fitted["SMILE_LMK68"] = fit_logistic(np.stack(tr["f_smile"]), (tr["label"] == "smile").to_numpy())
        d = tables["none"]["smile"].query("found")
        tr = d[[fold(n) == 0 for n in d["name"]]]
        fitted["SMILE_KPS5"] = fit_logistic(np.stack(tr["f_smile5"]), (tr["label"] == "smile").to_numpy())
        d = tables["dlib"]["masks"].query("found")
        tr = d[[fold(n) == 0 for n in d["name"]]]
        fitted["OCCLUDED_MOUTH"] = fit_logistic(np.stack(tr["f_occ"]), (tr["label"] == "covered").to_numpy())
        d = tables["dlib"]["sunglasses"].query("found")
        tr = d[[fold(n) == 0 for n in d["name"]]]
        eyes = fit_logistic(np.stack(tr["f_eyes"]), (tr["label"] == "sunglasses").to_numpy())
        logit = [np.log(p / (1 - p)) for p in (states.logistic(eyes, x) for x in tr.query("label == 'bare'")["f_eyes"])]
        shift = max(float(np.quantile(logit, 1 - EYES_FALSE_ALARM)), 0.0)
        eyes["coef"][0] = round(eyes["coef"][0] - shift, 5)
        fitted["OCCLUDED_EYES"] = eyes
        fitted["OCCLUDED_EYES_INTERCEPT_LOWERED_BY"] = round(shift, 5)
        write_fit(fitted)
        print(json.dumps(fitted, indent=1))
    if args.fit_thresholds:
        chosen = fit_thresholds(tables["dlib"])
        write_fit({"THRESHOLDS": chosen})
        print(json.dumps(chosen, indent=1))
    for method, t in tables.items():
        f = t["frames"]
        eyes = f[f["eyes"].isin(["O", "C"])]
        mouth = f[f["mouth"].isin(["O", "C"])]
        held = {k: t[k][[fold(n) == 1 for n in t[k]["name"]]] for k in ("smile", "masks")}
        sm, ms = held["smile"], held["masks"]
        r = {
            "eyes_closed_per_frame": {"auc": auc(eyes["eyes"] == "C", eyes["eyes_closed"]),
                                      "frames": len(eyes), "closed": int((eyes["eyes"] == "C").sum()),
                                      "per_clip": {c: auc(g["eyes"] == "C", g["eyes_closed"])
                                                   for c, g in eyes.groupby("clip")}},
            "mouth_open": {"auc": auc(mouth["mouth"] == "O", mouth["mouth_open"]), "frames": len(mouth),
                           "open": int((mouth["mouth"] == "O").sum())},
            "smile": {"auc": auc(sm.query("found")["label"] == "smile", sm.query("found")["smile"]),
                      "faces": int(sm["found"].sum()), "images": len(sm), "fold": 1},
            "covered_lower_face": {"auc": auc(ms.query("found")["label"] == "covered",
                                              ms.query("found")["occluded_mouth"]),
                                   "auc_occlusion": auc(ms.query("found")["label"] == "covered",
                                                        ms.query("found")["occlusion"]),
                                   "faces": int(ms["found"].sum()), "images": len(ms), "fold": 1,
                                   "missed_covered": int((~ms["found"] & (ms["label"] == "covered")).sum())},
        }
        for key, t_key, state, pos in (("eyes_closed_cew_utkface", "eyes", "eyes_closed", "closed"),
                                       ("mouth_open_yawn", "mouth", "mouth_open", "open")):
            r[key] = public_auc(t[t_key], state, pos)
        # occluded_eyes is fitted on fold 0 of the sunglasses set: scored on fold 1, with the fixed rule of before
        # (the dark share of the eye band) on the same faces, and the share of faces above 0.5 in the fold and on
        # the faces of sets where nobody is meant to wear sunglasses (the frames; the masks set, where some do)
        sg = t["sunglasses"][[fold(n) == 1 for n in t["sunglasses"]["name"]]]
        r["sunglasses_occluded_eyes"] = public_auc(sg, "occluded_eyes", "sunglasses")
        r["sunglasses_occluded_eyes"]["fold"] = 1
        r["sunglasses_occluded_eyes"]["auc_occlusion"] = public_auc(sg, "occlusion", "sunglasses")["auc"]
        r["sunglasses_occluded_eyes"]["auc_before"] = public_auc(sg, "f_dark", "sunglasses")["auc"]
        sf = sg.query("found")
        mf = t["masks"].query("found")
        r["sunglasses_occluded_eyes"]["above_half"] = {
            where: {"share": round(float((g["occluded_eyes"] > 0.5).mean()), 4), "faces": len(g)} for where, g in (
                ("sunglasses_fold1", sf[sf["label"] == "sunglasses"]), ("bare_fold1", sf[sf["label"] == "bare"]),
                ("frames", f), ("masks_covered", mf[mf["label"] == "covered"]), ("masks_bare", mf[mf["label"] == "bare"]))}
        # winks: one eye closed; the per-eye columns should say which (image-left eye is the subject's right)
        winks = f[f["eyes"].isin(["L", "R"])]
        r["winks"] = {"frames": len(winks), "right_eye_lower": int(sum(
            (row.eye_right_open < row.eye_left_open) == (row.eyes == "L") for row in winks.itertuples()))} \
            if method == "dlib" else {}
        result["methods"][method] = r
    result["seconds"] = round(time.time() - t0, 1)
    Path(args.out).write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(json.dumps(result["methods"], indent=1, default=float))


if __name__ == "__main__":
    main()
