"""Coverage measures shared by curate, audit, compare and the benchmarks.

- pose bins: 10 deg x 10 deg cells of (yaw, pitch); the grid of them over the
  plausible pose range, with face counts or per-bin means, that the reports'
  heatmaps draw;
- expression cells: tertiles of mouth_open x eyes_open x smile (27 cells);
  with the eye and mouth states (curator/measure/states.py: `eyes_closed`), eyes
  closed or not x mouth open or not x tertiles of smile (12 cells), so a
  blink or an open mouth is a cell of its own however rare;
- lighting cells: tertiles of lum x light_lr x contrast (27 cells).

Tertile edges come from a *reference* set (normally all target faces of the
workspace), so "coverage" means: of the cells the footage occupies, how many
does this subset occupy.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

POSE_BIN = 10.0
EXPRESSION_COLUMNS = ("mouth_open", "eyes_open", "smile")
LIGHT_COLUMNS = ("lum", "light_lr", "contrast")
# The range of head poses a face model can plausibly need: beyond ~90 degrees of
# yaw the face is gone, beyond ~60 degrees of pitch detectors rarely fire.
PLAUSIBLE_YAW = 90.0
PLAUSIBLE_PITCH = 60.0


def pose_bins(table: pd.DataFrame, size: float = POSE_BIN) -> pd.Series:
    yaw, pitch = table["yaw"].to_numpy(float), table["pitch"].to_numpy(float)
    ok = np.isfinite(yaw) & np.isfinite(pitch)
    yb = np.floor(np.where(ok, yaw, 0.0) / size).astype("int64")  # NaN zeroed before the cast; masked below
    pb = np.floor(np.where(ok, pitch, 0.0) / size).astype("int64")
    # One integer per bin, (yaw bin + 500) * 1000 + (pitch bin + 500); -1 when the pose is unknown.
    return pd.Series(np.where(ok, (yb + 500) * 1000 + (pb + 500), -1), index=table.index)


def pose_bin_centre(code: int, size: float = POSE_BIN) -> tuple[float, float]:
    return ((code // 1000 - 500 + 0.5) * size, (code % 1000 - 500 + 0.5) * size)


def pose_label(yaw: float, pitch: float, size: float = POSE_BIN) -> str:
    if not (np.isfinite(yaw) and np.isfinite(pitch)):
        return "unknown"
    y0, p0 = int(np.floor(yaw / size) * size), int(np.floor(pitch / size) * size)
    return f"y{y0:+d}p{p0:+d}"


def pose_labels(table: pd.DataFrame, size: float = POSE_BIN) -> np.ndarray:
    """pose_label for every row, computed once per distinct bin (fast on a million rows)."""
    codes = pose_bins(table, size)
    labels = {c: (pose_label(*pose_bin_centre(c, size), size) if c >= 0 else "unknown") for c in codes.unique()}
    return codes.map(labels).to_numpy(dtype=object)


def known_pose(faces: pd.DataFrame) -> pd.DataFrame:
    return faces[np.isfinite(faces["yaw"].to_numpy(float)) & np.isfinite(faces["pitch"].to_numpy(float))]


def pose_grid(*sets: pd.DataFrame, size: float = POSE_BIN) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges covering the plausible range and any face outside it."""
    lo_y, hi_y, lo_p, hi_p = -PLAUSIBLE_YAW, PLAUSIBLE_YAW, -PLAUSIBLE_PITCH, PLAUSIBLE_PITCH
    for s in sets:
        k = known_pose(s)
        if len(k):
            lo_y, hi_y = min(lo_y, k["yaw"].min()), max(hi_y, k["yaw"].max())
            lo_p, hi_p = min(lo_p, k["pitch"].min()), max(hi_p, k["pitch"].max())
    edges = lambda lo, hi: np.arange(math.floor(lo / size) * size, math.ceil(hi / size) * size + 1e-9, size)
    return edges(lo_y, hi_y), edges(lo_p, hi_p)


def _grid_cells(faces: pd.DataFrame, yaw_edges: np.ndarray, pitch_edges: np.ndarray):
    """(pitch bin, yaw bin) of each face inside the grid, and which faces those are (unknown poses are outside)."""
    size = yaw_edges[1] - yaw_edges[0]
    with np.errstate(invalid="ignore"):
        yi = np.floor((faces["yaw"].to_numpy(float) - yaw_edges[0]) / size)
        pi = np.floor((faces["pitch"].to_numpy(float) - pitch_edges[0]) / size)
    inside = (yi >= 0) & (yi < len(yaw_edges) - 1) & (pi >= 0) & (pi < len(pitch_edges) - 1)  # NaN: False
    return pi[inside].astype(int), yi[inside].astype(int), inside


def pose_counts(faces: pd.DataFrame, yaw_edges: np.ndarray, pitch_edges: np.ndarray) -> np.ndarray:
    """Face counts [pitch bin, yaw bin] in bins [edge, next edge), like `pose_bins`; faces outside are left out."""
    pi, yi, _ = _grid_cells(faces, yaw_edges, pitch_edges)
    counts = np.zeros((len(pitch_edges) - 1, len(yaw_edges) - 1), np.int64)
    np.add.at(counts, (pi, yi), 1)
    return counts


def pose_means(faces: pd.DataFrame, values, yaw_edges: np.ndarray, pitch_edges: np.ndarray) -> np.ndarray:
    """Mean of a per-face value [pitch bin, yaw bin], over the faces with a finite value; NaN where a bin has none."""
    pi, yi, inside = _grid_cells(faces, yaw_edges, pitch_edges)
    v = np.asarray(values, float)[inside]
    ok = np.isfinite(v)
    sums = np.zeros((len(pitch_edges) - 1, len(yaw_edges) - 1))
    n = np.zeros_like(sums)
    np.add.at(sums, (pi[ok], yi[ok]), v[ok])
    np.add.at(n, (pi[ok], yi[ok]), 1)
    return np.divide(sums, n, out=np.full_like(sums, np.nan), where=n > 0)


def tertile_edges(reference: pd.DataFrame, columns) -> dict[str, np.ndarray]:
    edges = {}
    for c in columns:
        v = reference[c].to_numpy(float)
        v = v[np.isfinite(v)]
        edges[c] = np.quantile(v, [1 / 3, 2 / 3]) if len(v) else np.array([0.0, 0.0])
    return edges


def tertile_cells(table: pd.DataFrame, edges: dict[str, np.ndarray]) -> pd.Series:
    code = np.zeros(len(table), np.int64)
    for c, e in edges.items():
        v = np.nan_to_num(table[c].to_numpy(float), nan=float(np.median(e)))
        code = code * 3 + np.searchsorted(e, v, side="right")
    return pd.Series(code, index=table.index)


def with_states(table: pd.DataFrame) -> np.ndarray:
    """Per row: are its mouth_open, eyes_open and smile the 0-1 states (curator/measure/states.py)? Rows
    extracted before the states came (no `states_method`) keep the older expression scales, and a workspace
    extended since holds both kinds, so every reader asks per row."""
    if "states_method" in table:
        return table["states_method"].notna().to_numpy()
    if "eyes_closed" in table:  # tables made without extract (benchmarks, tests): the state columns say it
        return np.isfinite(table["eyes_closed"].to_numpy(float))
    return np.zeros(len(table), bool)


def has_states(table: pd.DataFrame) -> bool:
    return "eyes_closed" in table and "mouth_open" in table and bool(with_states(table).any())


def state_cells(table: pd.DataFrame) -> pd.Series:
    """0-3: eyes closed (2) or not, plus mouth open (1) or not, at the states' 0.5 (curator/measure/states.py);
    0 for rows without states (their mouth_open is on an older scale)."""
    known = with_states(table)
    closed = known & (np.nan_to_num(table["eyes_closed"].to_numpy(float), nan=0.0) >= 0.5)
    mouth = known & (np.nan_to_num(table["mouth_open"].to_numpy(float), nan=0.0) >= 0.5)
    return pd.Series(closed.astype(np.int64) * 2 + mouth, index=table.index)


STATE_CELLS = 12  # state cells (4) x smile tertiles (3); cells of rows without states come after them


def expression_cells(table: pd.DataFrame, reference: pd.DataFrame) -> pd.Series:
    """Expression cells of `table` with tertile edges from `reference`: for rows with states, the eye/mouth
    state cell x smile tertile; for rows without (extracted before them), tertiles of EXPRESSION_COLUMNS with
    edges from the reference's rows without states, numbered after the state cells, so a workspace that
    holds both kinds never reads one row on another's scale."""
    new, ref_new = with_states(table), with_states(reference)
    # No states in the reference (a workspace from before them), or none of the rows' kind in it: one scale.
    if not ref_new.any() or (not new.any() and not (~ref_new).any()):
        return tertile_cells(table, tertile_edges(reference, EXPRESSION_COLUMNS))
    cells = pd.Series(0, index=table.index, dtype=np.int64)
    if new.any():
        part = table[new]
        cells[new] = (state_cells(part) * 3 + tertile_cells(part, tertile_edges(reference[ref_new], ["smile"]))).to_numpy()
    if (~new).any():
        old_ref = reference[~ref_new] if (~ref_new).any() else table[~new]
        part = table[~new]
        cells[~new] = (STATE_CELLS + tertile_cells(part, tertile_edges(old_ref, EXPRESSION_COLUMNS))).to_numpy()
    return cells


def coverage(subset: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """Shares of the reference's occupied pose bins, expression cells and lighting cells that `subset` occupies."""
    if not len(reference):
        return {"pose_bins": 0, "pose_coverage": 0.0, "expression_coverage": 0.0, "light_coverage": 0.0}
    distinct = lambda cells: set(np.unique(cells.to_numpy()).tolist())  # noqa: E731  (fast on millions of rows)
    ref_pose = distinct(pose_bins(reference))
    sub_pose = distinct(pose_bins(subset)) & ref_pose
    le = tertile_edges(reference, LIGHT_COLUMNS)
    ref_e, sub_e = distinct(expression_cells(reference, reference)), distinct(expression_cells(subset, reference))
    ref_l, sub_l = distinct(tertile_cells(reference, le)), distinct(tertile_cells(subset, le))
    return {
        "pose_bins": len(ref_pose),
        "pose_bins_covered": len(sub_pose),
        "pose_coverage": round(len(sub_pose) / len(ref_pose), 4),
        "expression_coverage": round(len(sub_e & ref_e) / len(ref_e), 4),
        "light_coverage": round(len(sub_l & ref_l) / len(ref_l), 4),
    }


# --- thresholds shared by curate, audit, review and evaluate (they mean the same everywhere) ---

MIN_FACE_PX = 40.0

# A pose bin with fewer faces than max(FEW_MIN, FEW_SHARE * faces) is "thin" (audit's words, review's "rare poses").
FEW_MIN = 3
FEW_SHARE = 0.005

# Expression descriptors have method-specific scales, so their unit (one just-noticeable step, curate's near-duplicate
# tolerance and evaluate's error unit) is half a robust std of the workspace's values...
EXPRESSION_UNIT_STD = 0.5
# ...but never less than one step of the descriptor: with 5 keypoints mouth_open moves in
# one-pixel-row steps of ~0.04, and a target who keeps their mouth closed has a robust std
# near 0.014, which would make two encodings of one moment look like different expressions.
EXPRESSION_UNIT_FLOOR = {"mouth_open": 0.04, "eyes_open": 0.04, "smile": 0.02}


def thin_bin_faces(faces: int) -> int:
    """Fewer faces than this in a pose bin, out of `faces`, make the bin thin."""
    return max(FEW_MIN, math.ceil(FEW_SHARE * faces))


def quality_score(table: pd.DataFrame) -> np.ndarray:
    """Sharper, larger, more confidently detected is better: sum of robust z-scores.

    log(sharpness) and log(face_px) because both span orders of magnitude.
    """
    parts = [np.log1p(table["sharpness"].to_numpy(float)), np.log(table["face_px"].to_numpy(float).clip(1)),
             table["det_score"].to_numpy(float)]
    return np.nan_to_num(sum(_robust_z(p) for p in parts), nan=-10.0)


def _robust_z(v: np.ndarray) -> np.ndarray:
    med = np.nanmedian(v) if np.isfinite(v).any() else 0.0
    iqr = np.subtract(*np.nanpercentile(v, [75, 25])) if np.isfinite(v).any() else 0.0
    return (v - med) / (iqr / 1.349 if iqr > 1e-9 else (np.nanstd(v) or 1.0))

