"""`curator audit` and `curator compare`: what a face set covers, and what it lacks.

audit:   one workspace -> a self-contained HTML report (pose heatmap, expression,
         lighting and quality distributions, example faces per pose bin, holes
         in plain words) and the same numbers as a dict for `--json`.
compare: a SOURCE set (the faces a model learns from) against a TARGET (the
         video to convert): where the target has faces that the source lacks,
         in pose first, in expression and lighting where comparable, with one
         gap score and what footage to look for.

Everything here reads workspaces and never writes them (no lock is taken, so
an audit can run while another command works); the only file written is the
report, whole, through `curator.atomic.atomic_path`.

Directions are as seen in the image (docs/workspace.md): yaw > 0 = the nose
points to the image's right = "looking right"; pitch > 0 = "looking up".
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CuratorError
from . import __version__, metrics
from .atomic import atomic_path
from .workspace import Workspace, read_table

# The range of head poses a face model can plausibly need: beyond ~90 degrees of
# yaw the face is gone, beyond ~60 degrees of pitch detectors rarely fire.
PLAUSIBLE_YAW = 90.0
PLAUSIBLE_PITCH = 60.0
FRONTAL_DEG = 10.0  # a pose component smaller than this is not named ("near frontal")
FEW_MIN = 3  # a pose bin with fewer faces than max(FEW_MIN, FEW_SHARE * faces) is "thin"
FEW_SHARE = 0.005
THUMB_PX = 72
THUMBS_PER_STRIP = 6

# compare: a target face is covered in pose when the source has a face inside the
# 10 x 10 degree box centred on it: the size of a curate pose bin, without bin edges.
POSE_TOLERANCE_DEG = metrics.POSE_BIN / 2
# Gap weights: a pose the model never saw fails worst (it cannot invent an unseen
# side of the head); an expression out of range degrades more gracefully; lighting
# least, since swap pipelines colour-match their output.
GAP_WEIGHTS = {"pose": 1.0, "expression": 0.5, "lighting": 0.25}

# column: {side: (what the target has that the source lacks, "find footage of the person ...")}
DESCRIPTOR_WORDS = {
    "mouth_open": {"low": ("mouth more closed", "with the mouth closed"),
                   "high": ("mouth open wider", "with the mouth wide open")},
    "eyes_open": {"low": ("eyes more closed", "with the eyes closed or narrowed"),
                  "high": ("eyes opened wider", "with the eyes wide open")},
    "smile": {"low": ("mouth narrower (pursed or tense)", "with pursed or tense lips"),
              "high": ("wider smile", "smiling broadly")},
    "lum": {"low": ("darker face", "in darker light"), "high": ("brighter face", "in brighter light")},
    "light_lr": {"low": ("lit more strongly from the image's left", "lit from the image's left"),
                 "high": ("lit more strongly from the image's right", "lit from the image's right")},
    "contrast": {"low": ("flatter, softer light", "in flat, soft light"),
                 "high": ("harder, more contrasty light", "in hard, contrasty light")},
}
# compare's tolerance around the source's range, in each descriptor's units: lighting
# uses curate's just-noticeable differences; expression half the source's robust std
# (curate's unit too, because expression scales depend on the method).
LIGHT_TOLERANCE = {"lum": 3.0, "light_lr": 3.0, "contrast": 2.0}
EXPRESSION_TOLERANCE_STD = 0.5
# A miss of one tolerance is the edge of a gap; at three it counts in full (15 degrees for pose).
FULL_GAP_UNITS = 3.0


class AuditError(CuratorError):
    """A problem with the input the user can act on; the message says what."""


# --- which faces ----------------------------------------------------------------

@dataclass
class FaceSet:
    ws: Workspace
    table: pd.DataFrame  # the whole table
    faces: pd.DataFrame  # the faces this report is about
    name: str  # "selected", "target" or "all"
    reference: pd.DataFrame  # curate's candidates (target, not rejected, big enough), or the target's faces

    @property
    def curated(self) -> bool:
        return bool(_flag(self.table, "selected").any())


def _flag(table: pd.DataFrame, column: str) -> np.ndarray:
    return table[column].fillna(False).to_numpy(bool) if column in table else np.zeros(len(table), bool)


def load_faces(ws: Workspace, which: str = "default") -> FaceSet:
    """The faces to report on. which: "default" (the target's faces if identify has run, else all),
    "selected" (only selected), or "source" (selected if curated, else default minus faces rejected in review)."""
    table = read_table(ws)
    if not len(table):
        raise AuditError(f"{ws.root} has no faces: run `curator extract FOOTAGE -w {ws.root}` on footage with faces first")
    from .curate import MIN_FACE_PX

    identified = "is_target" in table
    target = _flag(table, "is_target") if identified else np.ones(len(table), bool)
    rejected, selected = _flag(table, "rejected"), _flag(table, "selected")
    # curate's candidate pool, so that coverage numbers here equal `curate --json`'s
    pool = target & ~rejected & (table["face_px"].to_numpy(float) >= MIN_FACE_PX)
    ref = table[pool] if pool.any() else table[target]
    if which == "selected" or (which == "source" and selected.any()):
        if "selected" not in table:
            raise AuditError(f"{ws.root} has not been curated, so no faces are selected: "
                             f"run `curator curate -w {ws.root} --budget N` first, or leave out --selected")
        if not selected.any():
            raise AuditError(f"no faces are selected in {ws.root}: re-run `curator curate` with a budget, or leave out --selected")
        return FaceSet(ws, table, table[selected & ~rejected], "selected", ref)
    if not target.any():
        raise AuditError(f"{ws.root} has no faces of the target identity (see `curator identities`)")
    # a source set leaves out faces a person rejected in review; an audit shows the footage as it is
    keep = target & ~rejected if which == "source" else target
    return FaceSet(ws, table, table[keep], "target" if identified else "all", ref)


# --- pose: bins, directions, holes --------------------------------------------------

def direction(yaw, pitch) -> np.ndarray:
    """Plain-words direction of each pose as seen in the image: "left", "up-right", ... or "frontal".

    A component is named when it is at least FRONTAL_DEG and more than tan(22.5°)
    of the other one, so (yaw 12, pitch -8) is "right" and (12, -16) "down-right".
    """
    y, p = np.atleast_1d(np.asarray(yaw, float)), np.atleast_1d(np.asarray(pitch, float))
    ratio = math.tan(math.radians(22.5))
    with np.errstate(invalid="ignore"):
        horiz = np.where((np.abs(y) >= FRONTAL_DEG) & (np.abs(y) >= ratio * np.abs(p)), np.where(y < 0, "left", "right"), "")
        vert = np.where((np.abs(p) >= FRONTAL_DEG) & (np.abs(p) >= ratio * np.abs(y)), np.where(p < 0, "down", "up"), "")
    return np.array([f"{v}-{h}" if v and h else (v or h or "frontal") for v, h in zip(vert, horiz)], dtype=object)


# Signs that turn (yaw, pitch) into "how far that way": left = -yaw, up = +pitch, ...
AXES = {"left": (-1, 0), "right": (1, 0), "up": (0, 1), "down": (0, -1)}
AXIS_LIMIT = {"left": PLAUSIBLE_YAW, "right": PLAUSIBLE_YAW, "up": PLAUSIBLE_PITCH, "down": PLAUSIBLE_PITCH}
DIAGONALS = (("up", "left"), ("up", "right"), ("down", "left"), ("down", "right"))


def how_far(faces: pd.DataFrame, d: str) -> np.ndarray:
    """Degrees each face is turned toward axis direction d (negative: the other way)."""
    sy, sp = AXES[d]
    return sy * faces["yaw"].to_numpy(float) + sp * faces["pitch"].to_numpy(float)


def _known_pose(faces: pd.DataFrame) -> pd.DataFrame:
    return faces[np.isfinite(faces["yaw"].to_numpy(float)) & np.isfinite(faces["pitch"].to_numpy(float))]


def pose_grid(*sets: pd.DataFrame, size: float = metrics.POSE_BIN) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges covering the plausible range and any face outside it."""
    lo_y, hi_y, lo_p, hi_p = -PLAUSIBLE_YAW, PLAUSIBLE_YAW, -PLAUSIBLE_PITCH, PLAUSIBLE_PITCH
    for s in sets:
        k = _known_pose(s)
        if len(k):
            lo_y, hi_y = min(lo_y, k["yaw"].min()), max(hi_y, k["yaw"].max())
            lo_p, hi_p = min(lo_p, k["pitch"].min()), max(hi_p, k["pitch"].max())
    edges = lambda lo, hi: np.arange(math.floor(lo / size) * size, math.ceil(hi / size) * size + 1e-9, size)
    return edges(lo_y, hi_y), edges(lo_p, hi_p)


def pose_counts(faces: pd.DataFrame, yaw_edges: np.ndarray, pitch_edges: np.ndarray) -> np.ndarray:
    """Face counts [pitch bin, yaw bin] in bins [edge, next edge), like `metrics.pose_bins`; faces outside are left out."""
    k = _known_pose(faces)
    size = yaw_edges[1] - yaw_edges[0]
    yi = np.floor((k["yaw"].to_numpy(float) - yaw_edges[0]) / size).astype(int)
    pi = np.floor((k["pitch"].to_numpy(float) - pitch_edges[0]) / size).astype(int)
    inside = (yi >= 0) & (yi < len(yaw_edges) - 1) & (pi >= 0) & (pi < len(pitch_edges) - 1)
    counts = np.zeros((len(pitch_edges) - 1, len(yaw_edges) - 1), np.int64)
    np.add.at(counts, (pi[inside], yi[inside]), 1)
    return counts


def pose_bin_table(faces: pd.DataFrame) -> pd.DataFrame:
    """Occupied 10 degree bins: label (curate's `pose_cluster` form), yaw and pitch ranges, faces, direction."""
    cols = ["bin", "yaw_from", "yaw_to", "pitch_from", "pitch_to", "faces", "direction"]
    k = _known_pose(faces)
    if not len(k):
        return pd.DataFrame(columns=cols)
    size = metrics.POSE_BIN
    y0 = np.floor(k["yaw"].to_numpy(float) / size) * size
    p0 = np.floor(k["pitch"].to_numpy(float) / size) * size
    t = pd.DataFrame({"yaw_from": y0, "pitch_from": p0}).value_counts().rename("faces").reset_index()
    t["yaw_to"], t["pitch_to"] = t["yaw_from"] + size, t["pitch_from"] + size
    t["bin"] = [metrics.pose_label(y, p) for y, p in zip(t["yaw_from"], t["pitch_from"])]
    t["direction"] = direction(t["yaw_from"] + size / 2, t["pitch_from"] + size / 2)
    t = t.sort_values(["pitch_from", "yaw_from"], ascending=[False, True]).reset_index(drop=True)
    for c in ("yaw_from", "yaw_to", "pitch_from", "pitch_to", "faces"):
        t[c] = t[c].astype(int)
    return t[cols]


def _deg(v: float) -> str:
    return f"{v:+.0f}°" if v else "0°"


def bin_words(yaw_from: float, pitch_from: float, size: float = metrics.POSE_BIN) -> str:
    d = direction(yaw_from + size / 2, pitch_from + size / 2)[0]
    where = "near frontal" if d == "frontal" else f"looking {d}"
    return f"{where} (yaw {_deg(yaw_from)} to {_deg(yaw_from + size)}, pitch {_deg(pitch_from)} to {_deg(pitch_from + size)})"


def _round_up(v: float, step: float = 5.0) -> int:
    return int(math.ceil(v / step - 1e-9) * step)


def _round_down(v: float, step: float = 5.0) -> int:
    return int(math.floor(v / step + 1e-9) * step)


def pose_holes(faces: pd.DataFrame) -> list[dict]:
    """Where in the plausible pose range the set has no or few faces, in plain words.

    - "beyond": "no faces looking left beyond 25°" = no face has yaw < -25
      (right: yaw > 25, up: pitch > 25, down: pitch < -25), for each direction
      whose plausible range (|yaw| <= 90, |pitch| <= 60) goes on; "no faces
      looking up-left beyond 15°" = no face is more than 15° up and 15° left at
      once, said only when that corner is at least a bin emptier than both its
      sides (otherwise the sides already say it);
    - "frontal": no face within 10° of frontal in both yaw and pitch;
    - "inner": empty 10° bins between occupied bins of the same row or column;
    - "thin": occupied bins with fewer than max(3, 0.5% of the faces).
    """
    k = _known_pose(faces)
    n = len(k)
    holes: list[dict] = []
    if not ((k["yaw"].abs() < FRONTAL_DEG) & (k["pitch"].abs() < FRONTAL_DEG)).any():
        holes.append({"kind": "frontal", "direction": "frontal", "beyond_deg": None,
                      "words": f"no near-frontal faces (yaw and pitch both within ±{FRONTAL_DEG:.0f}°)"})
    extent = {d: max(float(how_far(k, d).max()) if n else 0.0, 0.0) for d in AXES}
    for d in AXES:
        if extent[d] < AXIS_LIMIT[d] - metrics.POSE_BIN / 2:
            edge = max(_round_up(extent[d]), 5)
            holes.append({"kind": "beyond", "direction": d, "beyond_deg": edge,
                          "words": f"no faces looking {d} beyond {edge}°"
                                   + (" (none turned that way)" if extent[d] < FRONTAL_DEG / 2 else "")})
    for v, h in DIAGONALS:
        e = max(float(np.minimum(how_far(k, v), how_far(k, h)).max()) if n else 0.0, 0.0)
        if e < min(extent[v], extent[h]) - metrics.POSE_BIN:
            edge = max(_round_up(e), 5)
            holes.append({"kind": "beyond", "direction": f"{v}-{h}", "beyond_deg": edge,
                          "words": f"no faces looking {v}-{h} beyond {edge}° (more than {edge}° {v} and {h} at once), "
                                   f"although some faces look {extent[h]:.0f}° {h} and some {extent[v]:.0f}° {v}"})
    if not n:
        return holes
    size = metrics.POSE_BIN
    yaw_edges = np.arange(-PLAUSIBLE_YAW, PLAUSIBLE_YAW + 1e-9, size)
    pitch_edges = np.arange(-PLAUSIBLE_PITCH, PLAUSIBLE_PITCH + 1e-9, size)
    occ = pose_counts(k, yaw_edges, pitch_edges) > 0
    # an empty bin is "inner" when its row, or its column, has occupied bins on both sides of it
    left, right = np.maximum.accumulate(occ, axis=1), np.maximum.accumulate(occ[:, ::-1], axis=1)[:, ::-1]
    below, above = np.maximum.accumulate(occ, axis=0), np.maximum.accumulate(occ[::-1], axis=0)[::-1]
    inner = ~occ & ((left & right) | (below & above))
    for pi, yi in sorted(zip(*np.nonzero(inner)), key=lambda t: (-t[0], t[1])):
        y0, p0 = float(yaw_edges[yi]), float(pitch_edges[pi])
        holes.append({"kind": "inner", "direction": direction(y0 + size / 2, p0 + size / 2)[0], "beyond_deg": None,
                      "bin": metrics.pose_label(y0, p0), "words": f"no faces {bin_words(y0, p0)}, between poses that have faces"})
    few = max(FEW_MIN, math.ceil(FEW_SHARE * n))
    bins = pose_bin_table(k)
    for _, b in bins[bins["faces"] < few].sort_values(["faces", "bin"]).iterrows():
        holes.append({"kind": "thin", "direction": b["direction"], "beyond_deg": None, "bin": b["bin"],
                      "faces": int(b["faces"]),
                      "words": f"only {int(b['faces'])} face{'s' if b['faces'] != 1 else ''} "
                               f"{bin_words(b['yaw_from'], b['pitch_from'])}"})
    return holes


# --- expression, lighting, quality ----------------------------------------------------

def tertile_summary(faces: pd.DataFrame, reference: pd.DataFrame, columns) -> dict:
    """Per descriptor: the reference's tertile edges (curate's cells) and how many faces fall low / mid / high."""
    edges = metrics.tertile_edges(reference, columns)
    out = {}
    for c in columns:
        v = faces[c].to_numpy(float)
        ok = np.isfinite(v)
        idx = np.searchsorted(edges[c], v[ok], side="right")
        out[c] = {"edges": [round(float(e), 4) for e in edges[c]],
                  "low": int((idx == 0).sum()), "mid": int((idx == 1).sum()), "high": int((idx == 2).sum()),
                  "unknown": int((~ok).sum())}
    return {"columns": out, "cells_occupied": int(metrics.tertile_cells(faces, edges).nunique()), "cells": 27}


QUALITY_COLUMNS = ("sharpness", "face_px", "det_score")


def quality_summary(faces: pd.DataFrame) -> dict:
    out = {}
    for c in QUALITY_COLUMNS:
        v = faces[c].to_numpy(float)
        v = v[np.isfinite(v)]
        q = np.quantile(v, [0, 0.1, 0.5, 0.9, 1]) if len(v) else [np.nan] * 5
        out[c] = dict(zip(("min", "p10", "median", "p90", "max"), (float(f"{x:.4g}") for x in q)))
    return out


# --- audit ------------------------------------------------------------------------

def audit_summary(fs: FaceSet) -> dict:
    """Headline numbers and the tables behind the report (what `curator audit --json` prints)."""
    table, faces = fs.table, fs.faces
    clusters = table["identity_cluster"].to_numpy() if "identity_cluster" in table else None
    known = _known_pose(faces)
    return {
        "workspace": str(fs.ws.root),
        "set": fs.name,
        "faces": int(len(table)),
        "target_faces": int(_flag(table, "is_target").sum()) if "is_target" in table else None,
        "identities": int(len(set(clusters[clusters >= 0]))) if clusters is not None else None,
        "selected": int(_flag(table, "selected").sum()) if "selected" in table else None,
        "report_faces": int(len(faces)),
        "sources": int(faces["source_sha256"].nunique()),
        "pose_unknown": int(len(faces) - len(known)),
        "pose_bins_occupied": int(metrics.pose_bins(known).nunique()),
        # coverage as curate defines it: the selection against the target's candidate faces
        "coverage": metrics.coverage(table[_flag(table, "selected")], fs.reference) if fs.curated else None,
        "pose_method": sorted(faces["pose_method"].dropna().unique().tolist()),
        "expression_method": sorted(faces["expression_method"].dropna().unique().tolist()),
        "pose_bins": pose_bin_table(faces).to_dict("records"),
        "expression": tertile_summary(faces, fs.reference, metrics.EXPRESSION_COLUMNS),
        "lighting": tertile_summary(faces, fs.reference, metrics.LIGHT_COLUMNS),
        "quality": quality_summary(faces),
        "holes": pose_holes(faces),
    }


# --- compare ------------------------------------------------------------------------

def pose_miss(source: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
    """For each target face: degrees to the nearest source face, the larger of the yaw and pitch
    differences (Chebyshev). 0 for target faces of unknown pose (nothing can be said about them);
    inf when the source has no face of known pose."""
    from sklearn.neighbors import KDTree

    s = _known_pose(source)[["yaw", "pitch"]].to_numpy(float)
    t = target[["yaw", "pitch"]].to_numpy(float)
    ok = np.isfinite(t).all(axis=1)
    miss = np.zeros(len(t))
    if not len(s):
        miss[ok] = np.inf
    elif ok.any():
        miss[ok] = KDTree(s, metric="chebyshev").query(t[ok], k=1)[0][:, 0]
    return miss


def descriptor_miss(source: pd.DataFrame, target: pd.DataFrame, columns, tolerance: dict) -> dict[str, np.ndarray]:
    """Per (column, side): how far each target face lies outside the source's range [min, max],
    in units of the column's tolerance (0 inside). {"mouth_open:high": array over the target, ...}"""
    out = {}
    for c in columns:
        s = source[c].to_numpy(float)
        s = s[np.isfinite(s)]
        if not len(s):
            continue
        t = target[c].to_numpy(float)
        out[f"{c}:low"] = np.nan_to_num((s.min() - t) / tolerance[c], nan=0.0).clip(0)
        out[f"{c}:high"] = np.nan_to_num((t - s.max()) / tolerance[c], nan=0.0).clip(0)
    return out


def gap_weight(miss_units: np.ndarray) -> np.ndarray:
    """0 up to one tolerance (covered), rising linearly to 1 at three tolerances (clearly missing)."""
    return ((np.asarray(miss_units, float) - 1.0) / (FULL_GAP_UNITS - 1.0)).clip(0, 1)


def expression_tolerance(source: pd.DataFrame) -> dict:
    tol = {}
    for c in metrics.EXPRESSION_COLUMNS:
        v = source[c].to_numpy(float)
        v = v[np.isfinite(v)]
        iqr = float(np.subtract(*np.percentile(v, [75, 25]))) if len(v) else 0.0
        tol[c] = max(iqr / 1.349 * EXPRESSION_TOLERANCE_STD, 1e-3)
    return tol


def _methods(faces: pd.DataFrame, column: str) -> list[str]:
    return sorted(faces[column].dropna().unique().tolist()) if column in faces else []


def _span(v: np.ndarray) -> str:
    lo, hi = float(np.min(v)), float(np.max(v))
    return f"{lo:.0f}°" if round(lo) == round(hi) else f"{lo:.0f}° to {hi:.0f}°"


def pose_region_words(d: str, sub: pd.DataFrame) -> tuple[str, str]:
    """(what the region is, what to look for) for target faces of one direction."""
    if d == "frontal":
        where = f"yaw {_span(sub['yaw'])}, pitch {_span(sub['pitch'])}"
        return f"near frontal ({where})", f"facing the camera ({where})"
    parts = d.split("-")
    if len(parts) == 1:
        other = "pitch" if d in ("left", "right") else "yaw"
        return (f"looking {d} {_span(how_far(sub, d))} ({other} {_span(sub[other])})",
                f"looking {d} beyond {max(_round_down(how_far(sub, d).min()), 5)}°")
    v, h = parts
    amounts = {x: max(_round_down(how_far(sub, x).min()), 5) for x in parts}
    return (f"looking {d}: {_span(how_far(sub, h))} {h}, {_span(how_far(sub, v))} {v}",
            f"looking {d}, more than {amounts[h]}° {h} and {amounts[v]}° {v}")


def compare_sets(source: FaceSet, target: FaceSet) -> dict:
    """Gaps of the source against the target, as regions with counts, examples and words."""
    S, T = source.faces, target.faces.reset_index(drop=True)
    n = len(T)
    s_expr, t_expr = _methods(S, "expression_method"), _methods(T, "expression_method")
    expression_comparable = bool(s_expr) and s_expr == t_expr
    notes = []
    if not expression_comparable:
        notes.append(f"expression not compared: the source's expression_method is {', '.join(s_expr) or 'unknown'} "
                     f"and the target's {', '.join(t_expr) or 'unknown'}, and their scales differ (docs/workspace.md)")
    s_pose, t_pose = _methods(S, "pose_method"), _methods(T, "pose_method")
    if s_pose != t_pose:
        notes.append(f"pose estimated differently (source {', '.join(s_pose)}, target {', '.join(t_pose)}): "
                     "small pose differences may be estimator bias")

    pose_units = pose_miss(S, T) / POSE_TOLERANCE_DEG
    expr = descriptor_miss(S, T, metrics.EXPRESSION_COLUMNS, expression_tolerance(S)) if expression_comparable else {}
    light = descriptor_miss(S, T, metrics.LIGHT_COLUMNS, LIGHT_TOLERANCE)
    zero = np.zeros(n)
    expr_units = np.maximum.reduce([zero, *expr.values()])
    light_units = np.maximum.reduce([zero, *light.values()])
    pose_gap, expr_gap, light_gap = pose_units > 1, expr_units > 1, light_units > 1
    weight = np.maximum.reduce([GAP_WEIGHTS["pose"] * gap_weight(pose_units),
                                GAP_WEIGHTS["expression"] * gap_weight(expr_units),
                                GAP_WEIGHTS["lighting"] * gap_weight(light_units)])
    expr = {k: v > 1 for k, v in expr.items()}
    light = {k: v > 1 for k, v in light.items()}

    aspect_weight = {"pose": GAP_WEIGHTS["pose"] * gap_weight(pose_units),
                     "expression": GAP_WEIGHTS["expression"] * gap_weight(expr_units),
                     "lighting": GAP_WEIGHTS["lighting"] * gap_weight(light_units)}
    regions = []
    d = direction(T["yaw"], T["pitch"])
    for name in dict.fromkeys(d[pose_gap]):
        m = pose_gap & (d == name)
        words, look = pose_region_words(name, T[m])
        # name the expression the region's faces share when it is itself a gap
        also = [DESCRIPTOR_WORDS[key.split(":")[0]][key.split(":")[1]][1] for key, g in expr.items() if g[m].mean() >= 0.5]
        regions.append(_region("pose", name, m, T, words, ", ".join([look, *also]),
                               nearest_source_deg=[round(float(pose_units[m].min() * POSE_TOLERANCE_DEG), 1),
                                                   round(float(pose_units[m].max() * POSE_TOLERANCE_DEG), 1)]))
    for kind, gaps in (("expression", expr), ("lighting", light)):
        for key, m in gaps.items():
            if m.any():
                col, side = key.split(":")
                what, look = DESCRIPTOR_WORDS[col][side]
                regions.append(_region(kind, key, m, T, f"{what} than anywhere in the source ({col})", look))
    for g in regions:
        # what the region's faces weigh in the gap score: the order to go looking in
        m = T["face_id"].isin(g["face_ids"]).to_numpy()
        g["weight"] = round(float(aspect_weight[g["kind"]][m].sum() / n), 4)
    # pose first (it is what a model cannot make up), then by weight
    regions.sort(key=lambda g: (-GAP_WEIGHTS[g["kind"]], -g["weight"], -g["faces"], g["key"]))
    return {
        "source": {"workspace": str(source.ws.root), "set": source.name, "faces": int(len(S)),
                   "pose_method": s_pose, "expression_method": s_expr},
        "target": {"workspace": str(target.ws.root), "set": target.name, "faces": int(n),
                   "pose_method": t_pose, "expression_method": t_expr},
        "gap_score": round(float(weight.mean()), 4) if n else 0.0,
        "pose_gap_faces": int(pose_gap.sum()),
        "expression_gap_faces": int(expr_gap.sum()),
        "lighting_gap_faces": int(light_gap.sum()),
        "expression_compared": expression_comparable,
        "pose_tolerance_deg": POSE_TOLERANCE_DEG,
        "full_gap_tolerances": FULL_GAP_UNITS,
        "weights": GAP_WEIGHTS,
        "notes": notes,
        "regions": regions,
        "look_for": [f"find footage of the person {g['look_for']} ({g['faces']} target face{'s' if g['faces'] != 1 else ''})"
                     for g in regions],
        "_gap_masks": {"pose": pose_gap, "expression": expr_gap, "lighting": light_gap},
    }


def _region(kind: str, key: str, mask: np.ndarray, T: pd.DataFrame, words: str, look: str, **extra) -> dict:
    sub = T[mask]
    return {"kind": kind, "key": key, "faces": int(mask.sum()), "share": round(float(mask.mean()), 4),
            "words": words, "look_for": look, **extra,
            "yaw_range": [round(float(sub["yaw"].min()), 1), round(float(sub["yaw"].max()), 1)],
            "pitch_range": [round(float(sub["pitch"].min()), 1), round(float(sub["pitch"].max()), 1)],
            "examples": _spread(sub).tolist(), "face_ids": sub["face_id"].tolist()}


def _spread(sub: pd.DataFrame, k: int = THUMBS_PER_STRIP) -> np.ndarray:
    """face_ids of up to k faces spread evenly over the region in source and time order."""
    ordered = sub.sort_values(["source", "time_s", "face_index"])
    if not len(ordered):
        return np.array([], dtype=object)
    idx = np.unique(np.linspace(0, len(ordered) - 1, min(k, len(ordered))).round().astype(int))
    return ordered["face_id"].to_numpy()[idx]


# --- pictures -----------------------------------------------------------------------

def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def heatmap_png(faces: pd.DataFrame, title: str, yaw_edges=None, pitch_edges=None, marks: pd.DataFrame | None = None) -> str:
    """Yaw x pitch face counts in 10 degree bins, empty bins grey; `marks` faces drawn as red crosses."""
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if yaw_edges is None:
        yaw_edges, pitch_edges = pose_grid(faces)
    counts = pose_counts(faces, yaw_edges, pitch_edges)
    fig = Figure(figsize=(0.42 * len(yaw_edges) + 1.6, 0.42 * len(pitch_edges) + 1.0))
    ax = fig.add_subplot()
    ax.set_facecolor("#e6e6e6")
    top = max(int(counts.max()), 1)
    norm = LogNorm(vmin=1, vmax=top) if top >= 30 else Normalize(vmin=0, vmax=top)
    mesh = ax.pcolormesh(yaw_edges, pitch_edges, np.ma.masked_equal(counts, 0), cmap="viridis", norm=norm,
                         edgecolors="white", linewidth=0.5)
    for (pi, yi), c in np.ndenumerate(counts):
        if c:
            rgba = mesh.cmap(mesh.norm(c))
            ax.text((yaw_edges[yi] + yaw_edges[yi + 1]) / 2, (pitch_edges[pi] + pitch_edges[pi + 1]) / 2, str(c),
                    ha="center", va="center", fontsize=6.5, color="white" if sum(rgba[:3]) < 1.6 else "black")
    if marks is not None and len(marks):
        ax.scatter(marks["yaw"], marks["pitch"], marker="x", s=22, linewidths=1.3, color="#e0201b", zorder=3)
    ax.add_patch(Rectangle((-PLAUSIBLE_YAW, -PLAUSIBLE_PITCH), 2 * PLAUSIBLE_YAW, 2 * PLAUSIBLE_PITCH, fill=False,
                           edgecolor="#888888", linestyle="--", linewidth=0.8))
    ax.set_xticks(yaw_edges[::2])
    ax.set_yticks(pitch_edges[::2])
    ax.tick_params(labelsize=7)
    ax.set_xlabel("yaw (°)   ← looking left  ·  looking right →", fontsize=8)
    ax.set_ylabel("pitch (°)   ↓ down  ·  up ↑", fontsize=8)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    cb = fig.colorbar(mesh, ax=ax, fraction=0.03, pad=0.02)
    cb.set_label("faces per 10° bin", fontsize=7)
    cb.ax.tick_params(labelsize=6)
    return _png(fig)


def histograms_png(faces: pd.DataFrame, columns, edges: dict | None = None, log: tuple = (), titles: dict | None = None) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(columns), 2.3))
    for i, c in enumerate(columns):
        ax = fig.add_subplot(1, len(columns), i + 1)
        v = faces[c].to_numpy(float)
        v = v[np.isfinite(v)]
        if c in log:
            v = v[v > 0]
            bins = np.geomspace(max(v.min(), 1e-3), max(v.max(), v.min() * 1.01 + 1e-3), 30) if len(v) else 10
            ax.set_xscale("log")
        else:
            bins = 30
        if len(v):
            ax.hist(v, bins=bins, color="#3b6ea5")
        for e in (edges or {}).get(c, []):
            ax.axvline(e, color="#d62728", linestyle="--", linewidth=1)
        ax.set_title((titles or {}).get(c, c), fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_ylabel("faces", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def thumbnail(ws: Workspace, crop_path: str, px: int = THUMB_PX) -> str | None:
    import cv2

    img = cv2.imread(str(ws.root / crop_path)) if isinstance(crop_path, str) else None
    if img is None:
        return None
    ok, buf = cv2.imencode(".jpg", cv2.resize(img, (px, px), interpolation=cv2.INTER_AREA),
                           [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode() if ok else None


def _examples_per_bin(faces: pd.DataFrame, k: int = THUMBS_PER_STRIP) -> dict[str, list]:
    """Per pose bin: up to k faces, best quality first, taking turns between sources so a strip shows variety."""
    from .curate import quality_score

    f = _known_pose(faces).copy()
    if not len(f):
        return {}
    f["_q"] = quality_score(f)
    f["_bin"] = [metrics.pose_label(y, p) for y, p in zip(f["yaw"], f["pitch"])]
    f["_rank"] = f.groupby(["_bin", "source_sha256"])["_q"].rank(ascending=False, method="first")
    f = f.sort_values(["_bin", "_rank", "_q"], ascending=[True, True, False])
    return {b: g.head(k).to_dict("records") for b, g in f.groupby("_bin", sort=False)}


# --- HTML ---------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;font-size:12px} .nums{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.num{background:#f4f6f9;border-radius:6px;padding:8px 14px;min-width:90px} .num b{display:block;font-size:20px}
.num span{font-size:11px;color:#555;text-transform:uppercase;letter-spacing:.03em}
.big b{color:#b22} ul.holes li{margin:3px 0} .thin{color:#666}
table{border-collapse:collapse;font-size:12px} td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
.strip{display:flex;align-items:center;gap:4px;margin:3px 0} .strip .lab{width:250px;font-size:12px}
.strip img{width:72px;height:72px;border-radius:3px} figure{margin:6px 0} figcaption{font-size:11px;color:#666;max-width:72px}
.region{margin:12px 0;padding:8px 12px;background:#fafafa;border-left:4px solid #d62728}
.region.expression{border-color:#ff7f0e} .region.lighting{border-color:#bcbd22} .row{display:flex;gap:6px;flex-wrap:wrap}
.note{background:#fff8e1;padding:6px 10px;border-radius:4px;font-size:12px;margin:6px 0}
img.chart{max-width:100%} .pair{display:flex;gap:8px} .pair img{width:50%;min-width:0;object-fit:contain}
"""

AUDIT_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>curator audit: {{ s.workspace }}</title>
<style>{{ css }}</style></head><body>
<h1>Face set audit</h1>
<div class="sub">{{ s.workspace }} · {{ set_words }} · curator {{ version }} · {{ when }}</div>
<div class="nums">
 <div class="num"><b>{{ s.report_faces }}</b><span>faces in this report</span></div>
 <div class="num"><b>{{ s.faces }}</b><span>faces in workspace</span></div>
 <div class="num"><b>{{ na(s.target_faces) }}</b><span>target faces</span></div>
 <div class="num"><b>{{ na(s.identities) }}</b><span>identities</span></div>
 <div class="num"><b>{{ na(s.selected) }}</b><span>selected</span></div>
 <div class="num"><b>{{ s.pose_bins_occupied }}</b><span>pose bins occupied</span></div>
 {% if s.coverage %}
 <div class="num"><b>{{ pct(s.coverage.pose_coverage) }}</b><span>pose coverage</span></div>
 <div class="num"><b>{{ pct(s.coverage.expression_coverage) }}</b><span>expression coverage</span></div>
 <div class="num"><b>{{ pct(s.coverage.light_coverage) }}</b><span>lighting coverage</span></div>
 {% endif %}
</div>
{% if s.coverage %}<div class="sub">Coverage: of the 10° pose bins, expression cells and lighting cells that the target's
candidate faces occupy, the share the selected faces occupy (the same numbers as <code>curator curate --json</code>).</div>{% endif %}

<h2>Head pose</h2>
<img class="chart" alt="yaw x pitch heatmap" src="{{ heatmap }}">
<div class="sub">Left and right as seen in the picture: “looking left” = nose toward the image's left (yaw &lt; 0);
pitch &gt; 0 = looking up. Dashed box: the plausible range (|yaw| ≤ {{ py }}°, |pitch| ≤ {{ pp }}°).
{% if s.pose_unknown %}{{ s.pose_unknown }} face(s) have no pose estimate.{% endif %}</div>

<h2>Holes</h2>
{% if holes %}<ul class="holes">
{% for h in holes %}<li class="{{ 'thin' if h.kind == 'thin' else '' }}">{{ h.words }}</li>
{% endfor %}</ul>{% else %}<p>No holes in the plausible pose range.</p>{% endif %}

<h2>Expression</h2>
<img class="chart" alt="expression histograms" src="{{ expression }}">
<div class="sub">Method {{ s.expression_method | join(', ') }} (the scale depends on it). Dashed lines: tertile edges
(curate's expression cells); {{ s.expression.cells_occupied }} of 27 cells occupied.
{{ tertiles(s.expression) }}</div>

<h2>Lighting</h2>
<img class="chart" alt="lighting histograms" src="{{ lighting }}">
<div class="sub">lum: mean L* of the face (0–100); light_lr: right half minus left half of the face in L*
(&gt; 0 lit from the image's right); contrast: std of L*. {{ s.lighting.cells_occupied }} of 27 lighting cells occupied.
{{ tertiles(s.lighting) }}</div>

<h2>Quality</h2>
<img class="chart" alt="quality histograms" src="{{ quality }}">
<div class="sub">{% for c, q in s.quality.items() %}{{ c }}: median {{ q.median }}, 10–90% {{ q.p10 }}–{{ q.p90 }}.
{% endfor %}</div>

<h2>Examples per pose bin</h2>
<div class="sub">Up to {{ per }} faces per bin, best quality first, taking turns between source files.</div>
{% for b in strips %}<div class="strip"><div class="lab"><b>{{ b.bin }}</b> · {{ b.faces }} face(s)<br>
<span class="sub">{{ b.words }}</span></div>
{% for t in b.thumbs %}<img src="{{ t.src }}" title="{{ t.title }}" alt="{{ t.title }}">{% endfor %}</div>
{% endfor %}
</body></html>
"""

COMPARE_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>curator compare</title><style>{{ css }}</style></head><body>
<h1>Source vs target</h1>
<div class="sub">source {{ c.source.workspace }} ({{ c.source.set }} faces) · target {{ c.target.workspace }}
({{ c.target.set }} faces) · curator {{ version }} · {{ when }}</div>
<div class="nums">
 <div class="num big"><b>{{ '%.3f' % c.gap_score }}</b><span>gap score (0 = no gaps)</span></div>
 <div class="num"><b>{{ c.source.faces }}</b><span>source faces</span></div>
 <div class="num"><b>{{ c.target.faces }}</b><span>target faces</span></div>
 <div class="num"><b>{{ c.pose_gap_faces }}</b><span>target faces in pose gaps</span></div>
 <div class="num"><b>{{ c.expression_gap_faces if c.expression_compared else 'n/a' }}</b><span>expression gaps</span></div>
 <div class="num"><b>{{ c.lighting_gap_faces }}</b><span>lighting gaps</span></div>
</div>
<div class="sub">Gap score: the mean over target faces of each face's gap. A face misses the source in pose by the
distance to the nearest source face (the larger of the yaw and pitch differences), and in expression and lighting by how far
it lies outside the source's range; a miss of more than one tolerance (±{{ c.pose_tolerance_deg|int }}° for pose) is a gap,
counting from 0 there up to full at {{ c.full_gap_tolerances|int }} tolerances. A face's gap is the largest of pose × {{ c.weights.pose }},
expression × {{ c.weights.expression }} and lighting × {{ c.weights.lighting }}. 0 = no gaps; 1 = every target face is at
least {{ (c.pose_tolerance_deg * c.full_gap_tolerances)|int }}° from any source pose. See docs/audit.md.</div>
{% for n in c.notes %}<div class="note">{{ n }}</div>{% endfor %}
{% if c.expression_compared %}<div class="sub">Expression compared: both sets use {{ c.source.expression_method|join(', ') }}.
Lighting is always compared (measured the same way by every extract).</div>{% endif %}

<h2>What to look for</h2>
{% if c.look_for %}<ul>{% for l in c.look_for %}<li>{{ l }}</li>{% endfor %}</ul>
{% else %}<p>Nothing: the source has faces near every target face's pose{{ ', expression' if c.expression_compared else '' }} and lighting.</p>{% endif %}

<h2>Head pose</h2>
<div class="pair"><img alt="source heatmap" src="{{ source_map }}"><img alt="target heatmap" src="{{ target_map }}"></div>
<div class="sub">Red ×: target faces with no source face within ±{{ c.pose_tolerance_deg|int }}° of both their yaw and pitch.
“Looking left” = nose toward the image's left (yaw &lt; 0); pitch &gt; 0 = looking up.</div>

<h2>Gaps</h2>
{% for g in regions %}<div class="region {{ g.kind }}"><b>{{ g.kind }}: {{ g.words }}</b> · weight {{ '%.3f' % g.weight }} · {{ g.faces }} target face(s),
{{ pct(g.share) }} · yaw {{ g.yaw_range[0] }}° to {{ g.yaw_range[1] }}°, pitch {{ g.pitch_range[0] }}° to {{ g.pitch_range[1] }}°{% if g.get('nearest_source_deg') %}
· nearest source pose {{ g.nearest_source_deg[0] }}° to {{ g.nearest_source_deg[1] }}° away{% endif %}
<div class="row">{% for t in g.thumbs %}<figure><img src="{{ t.src }}" alt="{{ t.title }}" width="72" height="72">
<figcaption>{{ t.title }}</figcaption></figure>{% endfor %}</div></div>
{% else %}<p>No gaps.</p>{% endfor %}
</body></html>
"""


def _env():
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.globals.update(
        na=lambda v: "–" if v is None else v,
        pct=lambda v: f"{100 * v:.0f}%",
        tertiles=lambda t: " ".join(f"{c}: {v['low']} low / {v['mid']} mid / {v['high']} high."
                                    for c, v in t["columns"].items()),
        css=CSS, version=__version__, py=int(PLAUSIBLE_YAW), pp=int(PLAUSIBLE_PITCH), per=THUMBS_PER_STRIP,
        when=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    )
    return env


def render_audit(fs: FaceSet, summary: dict) -> str:
    faces = fs.faces
    exp_edges = {c: v["edges"] for c, v in summary["expression"]["columns"].items()}
    light_edges = {c: v["edges"] for c, v in summary["lighting"]["columns"].items()}
    examples = _examples_per_bin(faces)
    strips = []
    for b in summary["pose_bins"]:
        thumbs = [{"src": src, "title": f"{Path(str(f['source'])).name} t={f['time_s']:.1f}s "
                                        f"yaw {f['yaw']:.0f} pitch {f['pitch']:.0f}"}
                  for f in examples.get(b["bin"], []) if (src := thumbnail(fs.ws, f["crop_path"]))]
        strips.append({**b, "words": bin_words(b["yaw_from"], b["pitch_from"]), "thumbs": thumbs})
    set_words = {"selected": "selected faces only", "target": "the target identity's faces",
                 "all": "all faces (no target identity chosen yet)"}[fs.name]
    return _env().from_string(AUDIT_TEMPLATE).render(
        s=summary, set_words=set_words, holes=summary["holes"], strips=strips,
        heatmap=heatmap_png(faces, f"{len(faces)} faces by head pose (10° bins)"),
        expression=histograms_png(faces, metrics.EXPRESSION_COLUMNS, exp_edges),
        lighting=histograms_png(faces, metrics.LIGHT_COLUMNS, light_edges),
        quality=histograms_png(faces, QUALITY_COLUMNS, log=("sharpness",),
                               titles={"sharpness": "sharpness (log)", "face_px": "face_px (source pixels)",
                                       "det_score": "det_score"}),
    )


def render_compare(source: FaceSet, target: FaceSet, c: dict) -> str:
    T = target.faces.reset_index(drop=True)
    by_id = T.set_index("face_id")
    regions = []
    for g in c["regions"]:
        thumbs = []
        for fid in g["examples"]:
            f = by_id.loc[fid]
            if src := thumbnail(target.ws, f["crop_path"]):
                thumbs.append({"src": src, "title": f"{Path(str(f['source'])).name} t={f['time_s']:.1f}s "
                                                    f"yaw {f['yaw']:.0f} pitch {f['pitch']:.0f}"})
        regions.append({**g, "thumbs": thumbs})
    ye, pe = pose_grid(source.faces, T)
    gaps = T[c["_gap_masks"]["pose"]]  # the faces themselves: coverage is a box around each face, not a bin
    return _env().from_string(COMPARE_TEMPLATE).render(
        c=c, regions=regions,
        source_map=heatmap_png(source.faces, f"source: {len(source.faces)} faces", ye, pe),
        target_map=heatmap_png(T, f"target: {len(T)} faces (red ×: no source face within ±{POSE_TOLERANCE_DEG:.0f}°)", ye, pe, marks=gaps),
    )


def check_out(out: str | os.PathLike) -> Path:
    """Refuse an output path under a file before any work is done (a full render takes seconds)."""
    out = Path(out).expanduser().absolute()
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise AuditError(f"cannot write the report to {out}: {blocker} is a file, not a folder")
    return out


def write_report(out: str | os.PathLike, text: str) -> Path:
    """Write the whole report or nothing: any failure leaves no partial or temporary file behind."""
    out = check_out(out)
    try:
        with atomic_path(out) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as e:
        raise AuditError(f"cannot write the report to {out}: {e.strerror or e}") from None
    return out.resolve()


# --- the two commands' bodies (the CLI stays thin) -------------------------------------------

def public(d: dict) -> dict:
    """A summary without its private arrays (keys starting with _), for JSON."""
    return {k: v for k, v in d.items() if not k.startswith("_")}


def audit(ws: Workspace, *, selected: bool = False, out: str | os.PathLike | None = None) -> dict:
    out = check_out(out or ws.root / "audit.html")
    fs = load_faces(ws, "selected" if selected else "default")
    summary = audit_summary(fs)
    summary["report"] = str(write_report(out, render_audit(fs, summary)))
    return summary


def compare(source_ws: Workspace, target_ws: Workspace, *, out: str | os.PathLike | None = None) -> dict:
    out = check_out(out or target_ws.root / "compare.html")
    source, target = load_faces(source_ws, "source"), load_faces(target_ws, "default")
    result = compare_sets(source, target)
    result["report"] = str(write_report(out, render_compare(source, target, result)))
    return public(result)


def audit_line(s: dict) -> str:
    cov = s["coverage"]
    holes = [h["words"] for h in s["holes"] if h["kind"] != "thin"]
    return (f"{s['report_faces']} {s['set']} faces in {s['pose_bins_occupied']} pose bins"
            + (f"; selection covers {cov['pose_coverage']:.0%} of pose bins, {cov['expression_coverage']:.0%} of "
               f"expression and {cov['light_coverage']:.0%} of lighting cells" if cov else "")
            + "".join(f"\n  {h}" for h in holes[:8]) + f"\nreport: {s['report']}")


def compare_line(c: dict) -> str:
    return (f"gap score {c['gap_score']:.3f}: {c['pose_gap_faces']} of {c['target']['faces']} target faces in pose gaps, "
            f"{c['expression_gap_faces'] if c['expression_compared'] else 'n/a'} in expression gaps, "
            f"{c['lighting_gap_faces']} in lighting gaps"
            + "".join(f"\n  {x}" for x in c["look_for"]) + "".join(f"\nnote: {n}" for n in c["notes"])
            + f"\nreport: {c['report']}")

