"""`curator evaluate`: how well a trained face swap draws a face set, per head pose, expression and lighting.

A `curator train` run folder and a face set (an export, or a workspace's
target faces) in; per face, two passes of the model:

- reconstruction, its own side (A -> A when the set is identity A): the
  masked L1 and masked SSIM between the crop and the drawn face over the
  trainer's face mask (`trainer.data.face_mask`, what the loss weighs), and
  the recogniser's cosine between the two (does it still look like them);
- the swap (A -> B): the recogniser's cosine of the drawn face to B's
  identity (the mean embedding of B's training crops) and to A's own
  (what leaks through), and how much of A's head pose and expression it
  keeps: keypoints detected on the input crop and on the drawn face (each
  padded so the detector sees a whole face), pose from them
  (`pose.estimate_pose_kps5`), expression from them
  (`descriptors.expression_from_kps5`), input against output.

Then the same numbers per 10° pose bin (the set's own yaw and pitch, as
curate bins them), per expression cell and per lighting cell (tertiles of
the set), with counts; the bins the model draws worst, in words; and an
offline HTML report in the audit's style.

Crops are framed exactly as the training crops were: the same alignment
margin, resized to the model's resolution as `trainer.data.load_set` does.
A set aligned otherwise, or with crops smaller than the model's resolution,
is refused in one line. Which side the set is comes from identity (its mean
embedding against the mean of each of the run's exports, all embedded here
the same way) or from `--side`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..measure import metrics
from ..measure.align import ARCFACE_112, DEFAULT_MARGIN, align_matrix, similarity, template, transform_points
from ..fs.atomic import inside
from .audit import bin_words, direction
from ..errors import ConvertError, CuratorError
from ..workspace import is_workspace
from .page import check_out, heatmap_png, render_page, write_report

BATCH = 32
REFERENCE_FACES = 200  # crops of each side's export embedded for its identity (evenly spread; enough for a mean)
DETECT_PX = 128  # crops are scaled to this side and centred on a canvas twice as wide for the detector
WORST = 3  # poses named in words
METRICS = {  # key: (label, better when higher)
    "l1": ("masked L1", False),
    "ssim": ("masked SSIM", True),
    "identity": ("identity kept (cosine)", True),
    "swap_identity": ("swap: cosine to the other identity", True),
    "swap_own_identity": ("swap: cosine to its own identity", False),
    "pose_error_deg": ("swap: pose error (°)", False),
    "expression_error": ("swap: expression error (units)", False),
    "face_found": ("swap: face found in the output", True),
}


class EvaluateError(CuratorError):
    """The run or the face set cannot be evaluated; the message says which file and why."""


# --- the face set ---------------------------------------------------------------------

@dataclass
class FaceSet:
    path: Path
    kind: str                 # "export" or "workspace"
    table: pd.DataFrame       # one row per face: face_id, yaw, pitch, expression and lighting columns
    files: list[Path]         # the crop of each row
    margin: float             # alignment margin of the crops
    size: int                 # side of the crops
    models: str | None        # the face-model pack the set was made with, if recorded
    keep: dict                # what the report may never replace: the set and, for a workspace, its inputs


def load_faces(path: str | os.PathLike) -> FaceSet:
    """An export folder (every face in its manifest) or a workspace (its target faces, all before identify)."""
    path = Path(path).expanduser().resolve()
    if (path / "manifest.parquet").is_file():
        return _export_faces(path)
    if is_workspace(path):
        return _workspace_faces(path)
    what = "no such folder" if not path.exists() else "neither a curator export (no manifest.parquet) " \
                                                      "nor a workspace (no workspace.json)"
    raise EvaluateError(f"{path}: {what}")


def _export_faces(path: Path) -> FaceSet:
    try:
        table = pd.read_parquet(path / "manifest.parquet")
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise EvaluateError(f"{path / 'manifest.parquet'}: cannot read it ({type(e).__name__}: {e})") from None
    prov = _json(path / "provenance.json")
    if prov.get("format", "folder") != "folder":
        raise EvaluateError(f"{path}: a {prov['format']} export; evaluate reads curator's own folder export "
                            "(`curator export --format folder`), which the trainer reads too")
    if "file" not in table or not len(table):
        raise EvaluateError(f"{path}: its manifest lists no face files")
    try:
        files = [inside(path, f) for f in table["file"]]  # a tampered manifest cannot make us read elsewhere
    except ValueError as e:
        raise EvaluateError(f"{path / 'manifest.parquet'}: {e}") from None
    settings = prov.get("settings") or {}
    return FaceSet(path, "export", table.reset_index(drop=True), files,
                   float(settings.get("margin", DEFAULT_MARGIN)), _crop_size(files),
                   (prov.get("models") or {}).get("path"), {path: "the face set being evaluated"})


def _workspace_faces(path: Path) -> FaceSet:
    from .audit import AuditError, load_faces as target_faces
    from ..workspace import inputs_of, open_workspace, read_meta

    ws = open_workspace(path)
    try:
        faces = target_faces(ws, "default").faces
    except AuditError as e:
        raise EvaluateError(str(e)) from None
    if "crop_missing" in faces:  # marked by `curator verify --repair`: nothing to read
        faces = faces[~faces["crop_missing"].fillna(False).to_numpy(bool)]
    meta = read_meta(ws)
    settings = meta.get("settings") or {}
    files = [inside(ws.root, c) for c in faces["crop_path"]]
    return FaceSet(path, "workspace", faces.reset_index(drop=True), files,
                   float(settings.get("margin", DEFAULT_MARGIN)), _crop_size(files),
                   (meta.get("models") or {}).get("path"), {**inputs_of(ws)})


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as e:
        raise EvaluateError(f"{path}: cannot read it ({e})") from None


def _crop_size(files: list[Path]) -> int:
    """The crops' side: the first crop's, which every other must share (checked as they are read)."""
    img = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
    if img is None:
        raise EvaluateError(f"{files[0]}: missing or not an image")
    return int(img.shape[0])


def check_framing(fs: FaceSet, run) -> list[str]:
    """Refuse a set the model would see framed otherwise than its training crops; notes on what is adapted."""
    if abs(fs.margin - run.margin) > 1e-6:
        raise EvaluateError(f"{fs.path}: its crops are aligned with margin {fs.margin:g}, the run's training crops "
                            f"with {run.margin:g}; evaluate the model on faces extracted with the same settings")
    r = int(run.config["resolution"])
    if fs.size < r:
        raise EvaluateError(f"{fs.path}: its crops are {fs.size} px, smaller than the model's {r} px: they would be "
                            f"upscaled and judged blurry; extract the faces with --size {max(r, run.crop_size)}")
    return [] if fs.size == r else [f"crops of {fs.size} px resized to the model's {r} px, as the trainer does"]


def read_crops(files: list[Path], size: int, resolution: int) -> np.ndarray:
    """BGR uint8 [n, R, R, 3]: each crop read and resized as trainer.data.load_set resizes training crops."""
    out = np.empty((len(files), resolution, resolution, 3), np.uint8)
    for i, f in enumerate(files):
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise EvaluateError(f"{f}: missing or not an image")
        if img.shape[:2] != (size, size):
            raise EvaluateError(f"{f}: crop is {img.shape[1]}x{img.shape[0]}, the set's others {size}x{size}; "
                                "a set must be made with one --size")
        if size != resolution:
            img = cv2.resize(img, (resolution, resolution),
                             interpolation=cv2.INTER_AREA if size > resolution else cv2.INTER_CUBIC)
        out[i] = img
    return out


# --- which side the set is ----------------------------------------------------------------

def side_identities(run, fm, margin: float) -> dict[str, np.ndarray | None]:
    """Each side's identity: the mean embedding of its export's training crops, made here as the set's are."""
    out = {}
    for side in ("a", "b"):
        folder = Path(run.config.get(side) or "")
        manifest = folder / "manifest.parquet"
        if not manifest.is_file():
            out[side] = None
            continue
        table = pd.read_parquet(manifest, columns=["file", "split"])
        files = [inside(folder, f) for f in table.loc[table["split"] == "train", "file"]] or \
                [inside(folder, f) for f in table["file"]]
        pick = np.unique(np.linspace(0, len(files) - 1, min(REFERENCE_FACES, len(files))).round().astype(int))
        chosen = [files[i] for i in pick]
        size = _crop_size(chosen)
        crops = read_crops(chosen, size, int(run.config["resolution"]))
        out[side] = unit(identity_embeddings(fm, crops, margin).mean(0))
    return out


def choose_side(set_identity: np.ndarray, sides: dict, side: str | None) -> tuple[str, str, dict]:
    """(side, how it was chosen in words, {side: cosine of the set's mean embedding to it})."""
    sims = {s: float(set_identity @ e) for s, e in sides.items() if e is not None}
    said = ", ".join(f"{v:.2f} to {s.upper()}'s export" for s, v in sims.items())
    if side is not None:
        return side, f"--side {side}" + (f" (the set's mean embedding: cosine {said})" if sims else ""), sims
    if len(sims) < 2:
        gone = [s.upper() for s, e in sides.items() if e is None]
        raise EvaluateError(f"cannot tell which identity the set is: identity {' and '.join(gone)}'s export, "
                            "recorded in the run, is not here; pass --side a or --side b")
    best = max(sims, key=sims.get)
    return best, f"identity: the set's mean embedding has cosine {said}", sims


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


# --- measuring ------------------------------------------------------------------------------

def recognition_matrix(size: int, margin: float, out: int = 112) -> np.ndarray:
    """The fixed affine from a training crop to the recogniser's crop: template to ArcFace template."""
    return similarity(template(size, margin), ARCFACE_112 * (out / 112.0))


def identity_embeddings(fm, crops_bgr: np.ndarray, margin: float) -> np.ndarray:
    """L2-normalised identity embeddings [n, dim] of aligned BGR crops (no detection: the template says where)."""
    if not len(crops_bgr):
        return np.zeros((0, fm.embedding_dim), np.float32)
    side = fm.recognizer.input_size[0]
    m = recognition_matrix(crops_bgr.shape[1], margin, side)
    rec = [cv2.warpAffine(c, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
           for c in crops_bgr]
    from ..models.faces import recognise

    feats = recognise(fm, rec)  # in batch, on the runtime the models were loaded for
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


def crop_keypoints(fm, crop_bgr: np.ndarray) -> np.ndarray | None:
    """The 5 keypoints [5, 2] of the face in an aligned crop (crop pixels), or None when none is found.

    The crop is scaled to DETECT_PX and centred on a grey canvas twice its
    side: the detector was trained on faces with surroundings, and a crop
    filled edge to edge by a face is not what it expects. Of several faces,
    the one nearest the centre.
    """
    from ..models import faces

    scale = DETECT_PX / crop_bgr.shape[0]
    img = cv2.resize(crop_bgr, (DETECT_PX, DETECT_PX), interpolation=cv2.INTER_LINEAR)
    pad = DETECT_PX // 2
    canvas = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(127, 127, 127))
    boxes, kps = faces.detect(fm, canvas, 2 * DETECT_PX)
    if not len(boxes):
        return None
    centre = np.array([DETECT_PX, DETECT_PX], np.float32)
    i = int(np.argmin(np.linalg.norm((boxes[:, :2] + boxes[:, 2:4]) / 2 - centre, axis=1)))
    return (kps[i] - pad) / scale


def frame_geometry(table: pd.DataFrame, resolution: int, size: int) -> list[tuple[np.ndarray, tuple] | None]:
    """Per face: the affine from a crop at the model's resolution back into its source frame, and the frame's
    (height, width); None where the table does not record them (extract's `align_matrix`, `frame_w`, `frame_h`)."""
    if not all(c in table for c in ("align_matrix", "frame_w", "frame_h")):
        return [None] * len(table)
    up = np.diag([size / resolution, size / resolution, 1.0])  # model-resolution crop -> extract's crop
    out = []
    for m, w, h in zip(table["align_matrix"], table["frame_w"], table["frame_h"]):
        try:
            to_crop = np.vstack([np.asarray(m, float).reshape(2, 3), [0, 0, 1]])
            out.append((np.linalg.inv(to_crop) @ up, (float(h), float(w))))
        except (TypeError, ValueError, np.linalg.LinAlgError):
            out.append(None)
    return out


def pose_and_expression(crop_bgr: np.ndarray, kps: np.ndarray | None, geometry=None) -> np.ndarray:
    """[yaw, pitch, mouth_open, eyes_open, smile] of a face in a crop from its keypoints (NaNs without them).

    Pose as extract measures it: the keypoints taken back into the source
    frame (`geometry`, from `frame_geometry`) and fitted with that frame's
    camera; without it, as if the crop sat in the middle of a frame four
    crops wide. Input and output go through the same procedure, so what the
    detector makes of a small crop cancels in their difference. Expression
    on the 128 px analysis crop extract describes faces on.
    """
    from ..measure import descriptors, pose

    if kps is None:
        return np.full(5, np.nan)
    side = crop_bgr.shape[0]
    if geometry is not None:
        back, frame_size = geometry
        yaw, pitch, _ = pose.estimate_pose_kps5(transform_points(kps, back[:2]), frame_size)
    else:
        yaw, pitch, _ = pose.estimate_pose_kps5(kps + 1.5 * side, (4 * side, 4 * side))
    m = align_matrix(kps, descriptors.ANALYSIS_SIZE, DEFAULT_MARGIN)
    expr = descriptors.expression_from_kps5(descriptors.analysis_crop(crop_bgr, m), transform_points(kps, m))
    return np.array([yaw, pitch, expr["mouth_open"], expr["eyes_open"], expr["smile"]], float)


def masked_errors(inputs_rgb: np.ndarray, drawn_rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per face: masked L1 and masked SSIM (the trainer's SSIM), weighted by the face mask; images float in [0, 1]."""
    import torch

    from trainer.loss import ssim_map

    x = torch.from_numpy(np.ascontiguousarray(inputs_rgb, np.float32)).permute(0, 3, 1, 2)
    y = torch.from_numpy(np.ascontiguousarray(drawn_rgb, np.float32)).permute(0, 3, 1, 2)
    w = torch.from_numpy(mask)[None, None]
    total = w.sum() * 3
    l1 = ((x - y).abs() * w).sum((1, 2, 3)) / total
    ssim = (ssim_map(x, y) * w).sum((1, 2, 3)) / total
    return l1.numpy().astype(float), ssim.numpy().astype(float)


def expression_units(table: pd.DataFrame) -> np.ndarray:
    """curate's expression unit per descriptor (half a robust std of the set, at least one descriptor step)."""
    from ..measure.metrics import EXPRESSION_UNIT_FLOOR, EXPRESSION_UNIT_STD

    units = []
    for c in metrics.EXPRESSION_COLUMNS:
        v = table[c].to_numpy(float) if c in table else np.array([np.nan])
        iqr = np.subtract(*np.nanpercentile(v, [75, 25])) if np.isfinite(v).any() else 0.0
        units.append(max(iqr / 1.349 * EXPRESSION_UNIT_STD, EXPRESSION_UNIT_FLOOR[c]))
    return np.array(units)


def measure(run, fm, crops_bgr: np.ndarray, side: str, margin: float, identities: dict,
            geometry: list | None = None, on_progress=None) -> pd.DataFrame:
    """Every per-face figure of the module docstring, one row per crop (crops already at the model's resolution)."""
    from trainer.data import face_mask

    from ..swap.swapper import swap_faces

    other = "b" if side == "a" else "a"
    mask = face_mask(crops_bgr.shape[1], margin)
    rows = []
    for s in range(0, len(crops_bgr), BATCH):
        bgr = crops_bgr[s:s + BATCH]
        rgb = [np.ascontiguousarray(c[:, :, ::-1]) for c in bgr]
        inputs = np.stack(rgb).astype(np.float32) / 255.0
        recon, _ = swap_faces(run, rgb, side)
        swapped, _ = swap_faces(run, rgb, other)
        l1, ssim = masked_errors(inputs, recon, mask)
        as_bgr = lambda faces: np.clip(np.rint(faces[..., ::-1] * 255), 0, 255).astype(np.uint8)  # noqa: E731
        recon_bgr, swap_bgr = as_bgr(recon), as_bgr(swapped)
        e_in, e_rec, e_swap = (identity_embeddings(fm, c, margin) for c in (bgr, recon_bgr, swap_bgr))
        for k in range(len(bgr)):
            kin, kout = crop_keypoints(fm, bgr[k]), crop_keypoints(fm, swap_bgr[k])
            where = geometry[s + k] if geometry else None
            rows.append({
                "l1": l1[k], "ssim": ssim[k], "identity": float(e_in[k] @ e_rec[k]),
                "swap_identity": float(e_swap[k] @ identities[other]) if identities.get(other) is not None else np.nan,
                "swap_own_identity": float(e_swap[k] @ identities[side]) if identities.get(side) is not None else np.nan,
                "face_found": float(kout is not None),
                "_in": pose_and_expression(bgr[k], kin, where), "_out": pose_and_expression(swap_bgr[k], kout, where),
            })
        if on_progress:
            on_progress(len(bgr), "")
    return pd.DataFrame(rows)


def kept_pose_and_expression(per_face: pd.DataFrame, units: np.ndarray) -> pd.DataFrame:
    """From the input's and the swap's [yaw, pitch, 3 expression] to pose_error_deg and expression_error.

    Pose error: the larger of the yaw and pitch differences (compare's pose
    miss). Expression error: the mean over mouth_open, eyes_open and smile of
    the difference in curate's expression units. NaN where either face's
    keypoints were not found.
    """
    a = np.stack(per_face.pop("_in").to_numpy()) if len(per_face) else np.zeros((0, 5))
    b = np.stack(per_face.pop("_out").to_numpy()) if len(per_face) else np.zeros((0, 5))
    d = np.abs(b - a)
    per_face["pose_error_deg"] = np.max(d[:, :2], axis=1)
    per_face["expression_error"] = np.mean(d[:, 2:] / units, axis=1)
    return per_face


# --- per bin and cell ---------------------------------------------------------------------

def means(values: pd.DataFrame) -> dict:
    """Each metric's mean over the faces where it is known (None when none is), rounded for JSON."""
    out = {}
    for k in METRICS:
        v = values[k].to_numpy(float) if k in values else np.array([])
        v = v[np.isfinite(v)]
        out[k] = round(float(v.mean()), 4) if len(v) else None
    return out


def per_pose_bin(table: pd.DataFrame, values: pd.DataFrame) -> list[dict]:
    """One record per occupied 10° bin (curate's bins; faces without a pose in bin "unknown"), rows then columns."""
    labels = metrics.pose_labels(table)
    out = []
    for label, idx in pd.Series(np.arange(len(table))).groupby(labels):
        rec = {"bin": label, "faces": int(len(idx))}
        if label != "unknown":
            first = int(idx.iloc[0])
            y0 = float(np.floor(table["yaw"].iloc[first] / metrics.POSE_BIN) * metrics.POSE_BIN)
            p0 = float(np.floor(table["pitch"].iloc[first] / metrics.POSE_BIN) * metrics.POSE_BIN)
            rec.update({"yaw_from": int(y0), "yaw_to": int(y0 + 10), "pitch_from": int(p0), "pitch_to": int(p0 + 10),
                        "direction": direction(y0 + 5, p0 + 5)[0], "words": bin_words(y0, p0)})
        else:
            rec["words"] = "faces without a pose estimate"
        rec.update(means(values.iloc[idx.to_numpy()]))
        out.append(rec)
    return sorted(out, key=lambda r: (r["bin"] == "unknown", -r.get("pitch_from", 0), r.get("yaw_from", 0)))


CELL_WORDS = ("low", "mid", "high")


def per_cell(table: pd.DataFrame, values: pd.DataFrame, columns) -> list[dict]:
    """One record per occupied tertile cell of `columns` (edges from the set itself), most faces first."""
    if not all(c in table for c in columns):
        return []
    edges = metrics.tertile_edges(table, columns)
    codes = metrics.tertile_cells(table, edges).to_numpy()
    out = []
    for code, idx in pd.Series(np.arange(len(table))).groupby(codes):
        parts, c = [], int(code)
        for col in reversed(columns):
            parts.append(f"{col} {CELL_WORDS[c % 3]}")
            c //= 3
        out.append({"cell": " · ".join(reversed(parts)), "faces": int(len(idx)), **means(values.iloc[idx.to_numpy()])})
    return sorted(out, key=lambda r: -r["faces"])


def mean_over_bins(bins: list[dict]) -> dict:
    """Each metric averaged over the pose bins (every pose counts the same, however many faces it has)."""
    known = [b for b in bins if b["bin"] != "unknown"]
    out = {}
    for k in METRICS:
        v = [b[k] for b in known if b[k] is not None]
        out[k] = round(float(np.mean(v)), 4) if v else None
    return out


def worst_poses(bins: list[dict], k: int = WORST) -> list[dict]:
    """The pose bins with the highest reconstruction error, in words, with how far above the median bin."""
    known = [b for b in bins if b["bin"] != "unknown" and b["l1"] is not None]
    if len(known) < 2:
        return []
    median = float(np.median([b["l1"] for b in known]))
    out = []
    for b in sorted(known, key=lambda b: -b["l1"])[:k]:
        ratio = b["l1"] / median if median > 0 else float("nan")
        out.append({"bin": b["bin"], "faces": b["faces"], "l1": b["l1"], "times_median": round(ratio, 2),
                    "words": f"{b['words']}: masked L1 {b['l1']:.3f}, {ratio:.1f}x the median bin's; "
                             f"SSIM {_num(b['ssim'], 2)}, identity {_num(b['identity'], 2)}"
                             f" ({b['faces']} face{'s' if b['faces'] != 1 else ''})"})
    return out


def _num(v, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


# --- the report -----------------------------------------------------------------------------

def image_uri(bgr: np.ndarray, px: int = 72) -> str:
    import base64

    ok, buf = cv2.imencode(".jpg", cv2.resize(bgr, (px, px), interpolation=cv2.INTER_AREA if bgr.shape[0] > px
                                              else cv2.INTER_CUBIC), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode() if ok else ""


COLUMNS = ("l1", "ssim", "identity", "swap_identity", "swap_own_identity", "pose_error_deg", "expression_error",
           "face_found")

EVALUATE_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>curator evaluate: {{ s.run_id }} on {{ s.faces }}</title>
<style>{{ css }}</style></head><body>
<h1>Model evaluation</h1>
<div class="sub">{{ s.model }} ({{ s.run_id }}, {{ s.resolution }} px) on {{ s.faces }} ({{ s.set_kind }})
 · curator {{ version }} · {{ when }}</div>
<div class="nums">
 <div class="num"><b>{{ s.n_faces }}</b><span>faces</span></div>
 <div class="num"><b>{{ s.side | upper }}</b><span>side of the run</span></div>
 <div class="num"><b>{{ s.pose_bins_occupied }}</b><span>pose bins</span></div>
 {% for k in cols %}<div class="num"><b data-key="{{ k }}">{{ f4(s.overall[k]) }}</b><span>{{ labels[k] }}</span></div>
 {% endfor %}
</div>
<div class="sub">Side: {{ s.side_by }}. Reconstruction is {{ s.side|upper }} → {{ s.side|upper }}, the swap
{{ s.side|upper }} → {{ s.other|upper }}. Face models: {{ s.face_models }}.
{% if s.trained_on %}{{ s.trained_on }} of these faces were in the run's training set
({{ s.seen.words }}).{% endif %}</div>
{% for n in s.notes %}<div class="note">{{ n }}</div>{% endfor %}

<h2>Poses the model draws worst</h2>
{% if s.worst %}<ul class="holes">{% for w in s.worst %}<li>{{ w.words }}</li>{% endfor %}</ul>
{% else %}<p>Fewer than two pose bins: nothing to rank.</p>{% endif %}
<div class="sub">Mean over pose bins (every pose counts the same): masked L1 {{ f4(s.mean_over_bins.l1) }},
SSIM {{ f4(s.mean_over_bins.ssim) }}, identity {{ f4(s.mean_over_bins.identity) }}.</div>

<h2>Reconstruction error by head pose</h2>
<div class="pair"><img class="chart" alt="masked L1 per pose bin" src="{{ heat_l1 }}">
<img class="chart" alt="faces per pose bin" src="{{ heat_n }}"></div>
<div class="pair"><img class="chart" alt="swap identity per pose bin" src="{{ heat_swap }}">
<img class="chart" alt="swap pose error per pose bin" src="{{ heat_pose }}"></div>
<div class="sub">Left and right as seen in the picture: “looking left” = nose toward the image's left (yaw &lt; 0);
pitch &gt; 0 = looking up. Bins are the set's own head poses (10°), as curate and audit bin them.</div>

<h2>Per pose bin</h2>
<table id="pose-bins"><tr><th>bin</th><th>pose</th><th>faces</th>{% for k in cols %}<th>{{ labels[k] }}</th>{% endfor %}</tr>
{% for b in s.pose_bins %}<tr data-bin="{{ b.bin }}"><td>{{ b.bin }}</td><td>{{ b.words }}</td>
<td data-key="faces">{{ b.faces }}</td>{% for k in cols %}<td data-key="{{ k }}">{{ f4(b[k]) }}</td>{% endfor %}</tr>
{% endfor %}</table>

<h2>Per expression cell</h2>
<table id="expression-cells"><tr><th>cell</th><th>faces</th>{% for k in cols %}<th>{{ labels[k] }}</th>{% endfor %}</tr>
{% for c in s.expression_cells %}<tr><td>{{ c.cell }}</td><td>{{ c.faces }}</td>
{% for k in cols %}<td>{{ f4(c[k]) }}</td>{% endfor %}</tr>{% endfor %}</table>

<h2>Per lighting cell</h2>
<table id="lighting-cells"><tr><th>cell</th><th>faces</th>{% for k in cols %}<th>{{ labels[k] }}</th>{% endfor %}</tr>
{% for c in s.lighting_cells %}<tr><td>{{ c.cell }}</td><td>{{ c.faces }}</td>
{% for k in cols %}<td>{{ f4(c[k]) }}</td>{% endfor %}</tr>{% endfor %}</table>
<div class="sub">Cells are tertiles (low / mid / high) of the set's own expression and lighting descriptors,
curate's cells.</div>

<h2>Examples from the worst poses</h2>
<div class="sub">Each triple: the face, the model's reconstruction ({{ s.side|upper }} → {{ s.side|upper }}),
the swap ({{ s.side|upper }} → {{ s.other|upper }}).</div>
{% for st in strips %}<div class="strip"><div class="lab"><b>{{ st.bin }}</b><br><span class="sub">{{ st.words }}</span></div>
{% for t in st.triples %}<img src="{{ t[0] }}" alt="face"><img src="{{ t[1] }}" alt="reconstruction"><img src="{{ t[2] }}" alt="swap">&nbsp;
{% endfor %}</div>{% endfor %}

<h2>What the figures mean</h2>
<ul>
<li>masked L1: mean absolute difference of RGB values (0–1) between the face and the reconstruction over the
trainer's face mask (lower is better); masked SSIM: the trainer's SSIM averaged over the same mask (1 = identical).</li>
<li>identity kept: the recogniser's cosine between the face and its reconstruction.</li>
<li>swap: cosine of the drawn face to the other identity (the mean of its training crops; higher = more like them)
and to its own (lower = less of the original shows through); pose error: the larger of the yaw and pitch differences
between the face and the swap, from keypoints found on both; expression error: mean difference of mouth_open,
eyes_open and smile in curate's units; face found: share of swaps in which the detector finds a face.</li>
</ul>
</body></html>
"""


def render(s: dict, per_face: pd.DataFrame, table: pd.DataFrame, crops: np.ndarray, drawn: dict) -> str:
    labels = {k: v[0] for k, v in METRICS.items()}
    swap_label = "cosine to " + s["other"].upper()
    strips = []
    labels_of = metrics.pose_labels(table)
    for w in s["worst"]:
        idx = np.flatnonzero(labels_of == w["bin"])[:4]
        strips.append({"bin": w["bin"], "words": w["words"],
                       "triples": [(image_uri(crops[i]), image_uri(drawn["recon"][i]), image_uri(drawn["swap"][i]))
                                   for i in idx if i in drawn["recon"]]})
    return render_page(
        EVALUATE_TEMPLATE, s=s, cols=COLUMNS, labels=labels, strips=strips,
        f4=lambda v: "–" if v is None else f"{v:.4f}",
        heat_l1=heatmap_png(table, "masked L1 by head pose (lower is better)", values=per_face["l1"].to_numpy(),
                            value_label="mean masked L1 per 10° bin"),
        heat_n=heatmap_png(table, f"{len(table)} faces by head pose"),
        heat_swap=heatmap_png(table, f"swap: {swap_label} (higher is better)",
                              values=per_face["swap_identity"].to_numpy(), value_label=f"mean {swap_label}"),
        heat_pose=heatmap_png(table, "swap: pose error (°, lower is better)",
                              values=per_face["pose_error_deg"].to_numpy(), value_label="mean pose error (°)"),
    )


def examples(run, crops: np.ndarray, table: pd.DataFrame, worst: list[dict], side: str) -> dict:
    """The drawn faces (BGR uint8) of the faces the report shows, {"recon": {i: img}, "swap": {i: img}}."""
    from ..swap.swapper import swap_faces

    labels = metrics.pose_labels(table)
    idx = [i for w in worst for i in np.flatnonzero(labels == w["bin"])[:4]]
    out = {"recon": {}, "swap": {}}
    if not idx:
        return out
    rgb = [np.ascontiguousarray(crops[i][:, :, ::-1]) for i in idx]
    for key, to in (("recon", side), ("swap", "b" if side == "a" else "a")):
        faces, _ = swap_faces(run, rgb, to)
        for i, f in zip(idx, faces):
            out[key][i] = np.clip(np.rint(f[..., ::-1] * 255), 0, 255).astype(np.uint8)
    return out


# --- the command's body -------------------------------------------------------------------------

def evaluate(model: str | os.PathLike, faces: str | os.PathLike, *, side: str | None = None,
             out: str | os.PathLike | None = None, models: str | None = None, device: str = "auto",
             on_total=None, on_progress=None) -> dict:
    """Measure run MODEL on face set FACES; write the HTML report (default MODEL/evaluate.html); the summary."""
    from ..models import faces as face_models
    from ..swap.swapper import load_run, run_inputs

    started = time.perf_counter()
    if side is not None and side not in ("a", "b"):
        raise EvaluateError(f"--side must be a or b, not {side!r}")
    model_path = Path(model).expanduser().resolve()
    fs = load_faces(faces)
    keep = {model_path: "the model run folder", model_path / "model.safetensors": "the model's weights",
            **{Path(p): what for p, what in run_inputs(model_path).items()}, **fs.keep}
    out = check_out(out or model_path / "evaluate.html", "evaluate", keep)
    try:
        run = load_run(model_path, device)
    except ConvertError as e:
        raise EvaluateError(str(e)) from None
    notes = check_framing(fs, run)
    resolution = int(run.config["resolution"])
    pack = models or (fs.models if fs.models and Path(fs.models).is_dir() else None)
    fm = face_models.load_models(pack, device="cpu" if device == "cpu" else "auto")
    if on_total:
        on_total(len(fs.files))
    crops = read_crops(fs.files, fs.size, resolution)
    identities = side_identities(run, fm, fs.margin)
    set_identity = unit(identity_embeddings(fm, crops, fs.margin).mean(0))
    side, side_by, sims = choose_side(set_identity, identities, side)
    other = "b" if side == "a" else "a"
    if identities.get(other) is None:
        notes.append(f"identity {other.upper()}'s export is not where the run recorded it: the swap's identity "
                     "is not measured")

    per_face = measure(run, fm, crops, side, fs.margin, identities, frame_geometry(fs.table, resolution, fs.size),
                       on_progress)
    per_face = kept_pose_and_expression(per_face, expression_units(fs.table))
    table = fs.table
    trained = _trained_on(run, side, table)
    bins = per_pose_bin(table, per_face)
    summary = {
        "model": str(run.path), "run_id": run.run_id, "step": run.step, "resolution": resolution,
        "faces": str(fs.path), "set_kind": fs.kind, "n_faces": int(len(table)),
        "side": side, "other": other, "side_by": side_by, "side_similarity": {k: round(v, 4) for k, v in sims.items()},
        "face_models": f"{fm.pack} ({', '.join(fm.files)})",
        "crop_size": fs.size, "margin": fs.margin,
        "pose_bins_occupied": sum(b["bin"] != "unknown" for b in bins),
        "overall": means(per_face), "mean_over_bins": mean_over_bins(bins),
        "pose_bins": bins,
        "expression_cells": per_cell(table, per_face, metrics.EXPRESSION_COLUMNS),
        "lighting_cells": per_cell(table, per_face, metrics.LIGHT_COLUMNS),
        "worst": worst_poses(bins),
        "trained_on": int(trained.sum()) if trained is not None else None,
        "seen": _seen_words(per_face, trained),
        "notes": notes,
        "_per_face": per_face,
    }
    drawn = examples(run, crops, table, summary["worst"], side)
    summary["report"] = str(write_report(out, render(summary, per_face, table, crops, drawn)))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def _trained_on(run, side: str, table: pd.DataFrame) -> np.ndarray | None:
    """Which faces of the set were in the run's training split of that side (by face_id), or None if unknown."""
    folder = Path(run.config.get(side) or "")
    if "face_id" not in table or not (folder / "manifest.parquet").is_file():
        return None
    m = pd.read_parquet(folder / "manifest.parquet", columns=["face_id", "split"])
    return table["face_id"].isin(set(m.loc[m["split"] == "train", "face_id"])).to_numpy()


def _seen_words(per_face: pd.DataFrame, trained: np.ndarray | None) -> dict | None:
    if trained is None or not trained.any():
        return None
    seen, unseen = means(per_face[trained]), means(per_face[~trained]) if (~trained).any() else None
    words = f"masked L1 {seen['l1']:.3f} on those, " + \
            (f"{unseen['l1']:.3f} on the {int((~trained).sum())} it never saw" if unseen else "and it saw all of them")
    return {"trained": seen, "not_trained": unseen, "words": words}


def evaluate_line(s: dict) -> str:
    o = s["overall"]
    lines = [f"{s['n_faces']} faces of identity {s['side'].upper()} ({s['side_by']}) in {s['pose_bins_occupied']} "
             f"pose bins; model {s['run_id']}, {s['resolution']} px",
             f"  reconstruction {s['side'].upper()}→{s['side'].upper()}: masked L1 {_num(o['l1'], 3)}, "
             f"SSIM {_num(o['ssim'], 3)}, identity {_num(o['identity'], 2)}",
             f"  swap {s['side'].upper()}→{s['other'].upper()}: cosine to {s['other'].upper()} "
             f"{_num(o['swap_identity'], 2)} (to {s['side'].upper()} {_num(o['swap_own_identity'], 2)}), "
             f"pose error {_num(o['pose_error_deg'], 1)}°, expression error {_num(o['expression_error'], 2)}, "
             f"face found in {_num(None if o['face_found'] is None else 100 * o['face_found'], 0)}%"]
    if s["seen"]:
        lines.append(f"  {s['trained_on']} faces were in its training set: {s['seen']['words']}")
    lines += [f"  worst: {w['words']}" for w in s["worst"]]
    lines += [f"note: {n}" for n in s["notes"]]
    return "\n".join(lines + [f"report: {s['report']}"])

