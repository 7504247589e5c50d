"""Curating for the video you will convert: `--for TARGET`.

A face swap draws person A's face over person B's in one video. What A's set
must teach is the poses, expressions and lighting B shows there, so with
`--for B` selection takes the target's needs first, with at most `share` of
the budget, and A's own diversity (curator/curate.py's levels) with the rest.
The target's needs, in two levels:

  needs:       one greedy weighted cover, where a target face newly covered
               is worth compare's gap weight (curator/reports/compare.py) of what
               covers it: 1 in pose (a selected face within the pose
               tolerance, the larger of the yaw and pitch differences at
               most 5°: compare's box), 0.5 in expression and 0.25 in
               lighting (a selected face within the tolerance of one
               descriptor, the weight split between the level's three), and
               CLOSE_WORTH more in pose within half the tolerance. So pose
               comes first, then expression, then lighting, each target face
               counting once: a pose that fills a third of B's video weighs a
               third of the cover.
  proportion:  more faces where the target has more faces: every target
               face within the pose tolerance of a candidate counts 1/(k+1)
               when k selected faces already reach it (D'Hondt's rule), and
               the level stops when no face is worth one whole target face.

A target face no candidate is within the pose tolerance of is served by the
nearest candidates there are (within STAND_IN_SLACK of the nearest): the best
stand-in the footage has, and what compare's "find footage of ..." sentences
then ask for.

Expression and lighting are covered one descriptor at a time, not jointly
with pose or with each other: measured on two different people they rarely
agree in several descriptors at once (on the shared clips one person's
candidates came within tolerance of another's faces in all three expression
descriptors for 21-83% of them, in all three lighting ones for 0-20%, but in
each descriptor alone for 74-100%), and compare's gap score measures them the
same way, per descriptor.

A need is the target's faces on a grid of a tenth of a tolerance. The face
taken next is the one whose gain (the worth of what it newly covers) is
largest, and among the faces within NEAR_BEST of that gain, the best
quality. The near-duplicate groups and the identity pool are curate's; the
same-picture rule of curate's selection applies to these picks too, and the
2 s same-track rule to the proportion level (curate's L1 is spared it too: a
turning head crosses poses within a second). curate's levels then run with
the target's picks taken first, so they build on what the picks cover.

Everything here is functions over tables and arrays, and writes nothing;
`load_target` reads (and for footage, extracts) the target and `record`
notes it in workspace.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .measure import metrics
from .errors import CuratorError, UsageError

POSE_TOLERANCE_DEG = 5.0  # compare.POSE_TOLERANCE_DEG: a box the size of a pose bin centred on the face
SHARE = 0.5  # of the budget, at most, for the target's levels; the rest keeps A's own diversity (docs/curation.md)
NEED_GRID = 0.1  # target faces within a tenth of a tolerance (0.5° of pose) in every unit are one need
CELL_GRID = 0.5  # candidates are considered per cell of half a tolerance ...
PER_CELL = 16  # ... the best this many by quality in each (bounded work on millions of candidates)
NEAR_BEST = 0.9  # a pick covers at least this share of the best pick's gain; among those, the best quality
DESCRIPTORS = ("yaw", "pitch", *metrics.EXPRESSION_COLUMNS, *metrics.LIGHT_COLUMNS)
MIN_PROPORTION_GAIN = 1.0  # the proportion level takes a face only while it stands for a whole target face
CLOSE_WORTH = 0.25  # a target face newly within half the pose tolerance (2.5°), next to compare's gap weights
# tolerances: a target face beyond every candidate's reach is served by one this close to the nearest one
STAND_IN_SLACK = 0.2


class TargetError(CuratorError):
    """The target cannot be used (no faces, a bad mix of inputs); one line naming it."""


# --- units -------------------------------------------------------------------------

def tolerances(source: pd.DataFrame, expression: bool = True) -> dict[str, float]:
    """One tolerance per descriptor, in its own units: a target face is covered in a descriptor by a source
    face within it. Pose: POSE_TOLERANCE_DEG. Expression: compare's (half the source's robust std), but at least
    one step of the descriptor (curate's floor: with 5 keypoints they move in steps). Lighting: compare's
    (curate's just-noticeable differences: 3 L*, 3 L*, 2)."""
    from .reports.compare import LIGHT_TOLERANCE, expression_tolerance
    from .curate import EXPRESSION_UNIT_FLOOR

    tol = {"yaw": POSE_TOLERANCE_DEG, "pitch": POSE_TOLERANCE_DEG}
    if expression:
        tol.update({c: max(v, EXPRESSION_UNIT_FLOOR[c]) for c, v in expression_tolerance(source).items()})
    tol.update(LIGHT_TOLERANCE)
    return tol


@dataclass(frozen=True)
class Cover:
    """One cover of the target's faces: by the descriptors `columns` (in tolerances times `scale`), each target
    face it newly covers worth `worth` (compare's gap weights: pose 1, expression 0.5, lighting 0.25, split
    between a level's descriptors). nearest: target faces no candidate is within tolerance of are covered by
    the nearest candidates there are (stand-ins)."""
    level: str
    columns: tuple
    worth: float = 1.0
    scale: float = 1.0
    nearest: bool = False


def plan(tol: dict) -> list[tuple[str, list[Cover]]]:
    """The target's levels in order: (name, its covers). The first level is one greedy cover over pose (yaw
    and pitch together), each expression descriptor and each lighting descriptor, a target face worth compare's
    weight of each; the second gives more places where the target has more faces (D'Hondt)."""
    from .reports.compare import GAP_WEIGHTS

    expression = [c for c in metrics.EXPRESSION_COLUMNS if c in tol]
    covers = [Cover("pose", ("yaw", "pitch"), GAP_WEIGHTS["pose"], nearest=True)]
    covers += [Cover("expression", (c,), GAP_WEIGHTS["expression"] / len(expression)) for c in expression]
    covers += [Cover("lighting", (c,), GAP_WEIGHTS["lighting"] / len(metrics.LIGHT_COLUMNS))
               for c in metrics.LIGHT_COLUMNS]
    # within the pose tolerance, closer is still better for the model: a target face newly within half of it
    # is worth a quarter of one newly within it (docs/curation.md has the runs that chose this)
    covers.append(Cover("pose_close", ("yaw", "pitch"), CLOSE_WORTH, scale=0.5))
    return [("needs", covers), ("proportion", [Cover("proportion", ("yaw", "pitch"))])]


def scaled(faces: pd.DataFrame, cols: list[str], tol: dict, fill: dict) -> np.ndarray:
    """Descriptors in tolerances: two faces cover each other when every coordinate differs by at most 1.
    A missing expression or lighting value takes `fill` (the source's median): it neither helps nor blocks."""
    out = np.empty((len(faces), len(cols)), np.float64)
    for k, c in enumerate(cols):
        v = faces[c].to_numpy(float)
        out[:, k] = (v if c in ("yaw", "pitch") else np.where(np.isfinite(v), v, fill.get(c, 0.0))) / tol[c]
    return out


def medians(faces: pd.DataFrame) -> dict[str, float]:
    """Each descriptor's median over `faces` (0 when it has no value): what a missing value is taken as."""
    out = {}
    for c in DESCRIPTORS:
        v = faces[c].to_numpy(float)
        out[c] = float(np.nanmedian(v)) if np.isfinite(v).any() else 0.0
    return out


# --- needs -------------------------------------------------------------------------

def needs(points: np.ndarray, grid: float = NEED_GRID) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Target faces on a grid of `grid` tolerances: (need centres [k, d], weights [k] = faces, need of each face).

    The cover is measured from a need's centre, so a face can be up to a grid
    cell from where its need is judged; the reported coverage is measured on
    the faces themselves (`covered`)."""
    if not len(points):
        return np.zeros((0, points.shape[1])), np.zeros(0), np.zeros(0, np.int64)
    keys = np.floor(points / grid).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    centres = np.zeros((len(counts), points.shape[1]))
    np.add.at(centres, inverse, points)
    return centres / counts[:, None], counts.astype(np.float64), inverse


def best_per_cell(points: np.ndarray, order: np.ndarray, keep: int = PER_CELL, grid: float = CELL_GRID) -> np.ndarray:
    """Of the rows in `order` (best first), the first `keep` of each grid cell, in that order."""
    if not len(order):
        return order
    keys = np.floor(points[order] / grid).astype(np.int64)
    _, cell = np.unique(keys, axis=0, return_inverse=True)
    cell = cell.reshape(-1)
    rank = pd.Series(np.arange(len(order))).groupby(cell).cumcount().to_numpy()
    return order[rank < keep]


def reach(points: np.ndarray, centres: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (point, need): every point within `radius[need]` of a need's centre (the larger of the coordinate
    differences, in tolerances)."""
    from scipy.spatial import cKDTree

    if not len(points) or not len(centres):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    near = cKDTree(points).query_ball_point(centres, r=radius + 1e-9, p=np.inf)
    lens = np.fromiter((len(x) for x in near), np.int64, len(near))
    n_of = np.repeat(np.arange(len(centres)), lens)
    a_of = np.concatenate([np.asarray(x, np.int64) for x in near]) if lens.sum() else np.zeros(0, np.int64)
    return a_of, n_of


def covered(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Whether each target point has a source point within 1 tolerance in every coordinate."""
    from scipy.spatial import cKDTree

    if not len(source) or not len(target):
        return np.zeros(len(target), bool)
    d, _ = cKDTree(source).query(target, k=1, p=np.inf)
    return d <= 1.0 + 1e-9


# --- the greedy cover ------------------------------------------------------------------

def greedy(n_cand: int, a_of: np.ndarray, n_of: np.ndarray, weight: np.ndarray, count: np.ndarray,
           quality_rank: np.ndarray, places: int, accept: Callable[[int], bool], proportional: bool = False,
           min_gain: float = 1e-9) -> list[tuple[int, np.ndarray]]:
    """Weighted greedy cover of needs by candidates; (a_of[k], n_of[k]): candidate a_of[k] reaches need n_of[k].

    `count[i]`: selected faces already reaching need i (updated in place). A
    candidate's gain is the weight of the needs it reaches that nothing reaches
    yet; `proportional`: every need it reaches counts weight/(k+1) when k
    selected faces reach it already (D'Hondt). Each round takes, among the
    candidates whose gain is at least NEAR_BEST of the largest, the best by
    `quality_rank` (lower is better) that `accept` allows (one refused is not
    asked again); it stops when no gain reaches `min_gain`. Returns
    (candidate, needs it was taken for) per pick.
    """
    if not len(a_of) or places <= 0:
        return []
    k_needs = len(weight)
    by_need = np.argsort(n_of, kind="stable")
    need_ptr = np.r_[0, np.cumsum(np.bincount(n_of, minlength=k_needs))]
    by_cand = np.argsort(a_of, kind="stable")
    cand_ptr = np.r_[0, np.cumsum(np.bincount(a_of, minlength=n_cand))]

    def value(k: np.ndarray) -> np.ndarray:
        return 1.0 / (k + 1.0) if proportional else (k == 0).astype(np.float64)

    gain = np.bincount(a_of, weights=weight[n_of] * value(count[n_of]), minlength=n_cand)
    alive = np.diff(cand_ptr) > 0
    out: list[tuple[int, np.ndarray]] = []
    while len(out) < places:
        g = np.where(alive, gain, 0.0)
        top = g.max(initial=0.0)
        if top < min_gain or top <= 1e-9:
            break
        near = np.flatnonzero(g >= NEAR_BEST * top - 1e-9)
        a = int(near[np.argmin(quality_rank[near])])
        alive[a] = False
        if not accept(a):
            continue
        mine = n_of[by_cand[cand_ptr[a]:cand_ptr[a + 1]]]
        took = mine if proportional else mine[count[mine] == 0]
        before = value(count[mine])
        count[mine] += 1
        delta = weight[mine] * (before - value(count[mine]))
        for i, d in zip(mine.tolist(), delta.tolist()):  # lower the gain of every candidate that reaches need i
            if d:
                gain[a_of[by_need[need_ptr[i]:need_ptr[i + 1]]]] -= d
        out.append((a, took))
    return out


class Taken:
    """Faces taken so far, with curate's rules for what nearly repeats one of them (curate._take_spread):
    the same picture to the recogniser (identity cosine >= same_picture, yaw and pitch within 5°) and, where
    asked, a face of the same track less than 2 s from a taken one."""

    def __init__(self, cands: pd.DataFrame, emb, same_picture: float):
        from .curate import MIN_GAP_S, SAME_PICTURE_DEG

        self.gap_s, self.deg, self.cos = MIN_GAP_S, SAME_PICTURE_DEG, same_picture
        self.emb = emb
        self.rows = cands["row"].to_numpy() if "row" in cands else np.arange(len(cands))
        self.yaw, self.pitch = cands["yaw"].to_numpy(float), cands["pitch"].to_numpy(float)
        self.track = cands["track_id"].to_numpy() if "track_id" in cands else np.arange(len(cands))
        self.time = cands["time_s"].to_numpy(float) if "time_s" in cands else np.full(len(cands), np.nan)
        self.mask = np.zeros(len(cands), bool)
        self.index: list[int] = []
        self.vectors: list[np.ndarray] = []

    def add(self, i: int) -> None:
        self.mask[i] = True
        self.index.append(i)
        if self.emb is not None:
            self.vectors.append(np.asarray(self.emb[self.rows[i]], np.float32))

    def repeats(self, i: int, use_time: bool) -> bool:
        if not self.index:
            return False
        t = np.asarray(self.index)
        if use_time and ((self.track[t] == self.track[i]) & (np.abs(self.time[t] - self.time[i]) < self.gap_s)).any():
            return True
        if self.emb is None:
            return False
        near = (np.abs(self.yaw[t] - self.yaw[i]) < self.deg) & (np.abs(self.pitch[t] - self.pitch[i]) < self.deg)
        if not near.any():
            return False
        e = np.asarray(self.emb[self.rows[i]], np.float32)
        return bool((np.stack([self.vectors[k] for k in np.flatnonzero(near)]) @ e >= self.cos).any())


@dataclass
class Pick:
    index: int  # into the candidates
    level: str
    column: str  # the descriptor of the cover it was taken in ("yaw" for pose)
    faces: np.ndarray  # target faces (rows) it was taken for
    stand_in: bool = False  # for target faces no candidate is within tolerance of: the nearest there is


@dataclass
class Level:
    """One level's covers as a single weighted cover: pairs (candidate, need) over the needs of all its covers."""
    a_of: np.ndarray
    n_of: np.ndarray
    weight: np.ndarray  # per need: the target faces it stands for, times its cover's worth
    count: np.ndarray
    members: list  # per need: the target rows it stands for
    cover: np.ndarray  # per need: its cover (index into the level's covers)
    stand_in: np.ndarray  # per need: no candidate is within tolerance of it


def build_level(covers: list[Cover], a_all: pd.DataFrame, pool: np.ndarray, taken: np.ndarray,
                t_faces: pd.DataFrame, t_rows: np.ndarray, tol: dict, fill: dict) -> Level:
    """The needs of a level's covers and which of `pool` (and of the faces already `taken`) reach each.

    A cover with `nearest` lets the candidates within STAND_IN_SLACK of the
    nearest one reach a need no candidate is within tolerance of (pose: the
    best stand-in the footage has)."""
    from scipy.spatial import cKDTree

    a_ofs, n_ofs, weights, counts, members, cover_of, stand = [], [], [], [], [], [], []
    offset = 0
    for k, cv in enumerate(covers):
        cols, ctol = list(cv.columns), {c: tol[c] * cv.scale for c in cv.columns}
        pts = scaled(a_all, cols, ctol, fill)
        centres, w, need_of = needs(scaled(t_faces, cols, ctol, fill))
        radius = np.ones(len(centres))
        if cv.nearest and len(centres):
            best = cKDTree(pts).query(centres, k=1, p=np.inf)[0]
            radius = np.maximum(1.0, best + STAND_IN_SLACK)
        a_of, n_of = reach(pts[pool], centres, radius)
        count = np.bincount(reach(pts[taken], centres, radius)[1], minlength=len(centres)).astype(np.float64)
        a_ofs.append(a_of)
        n_ofs.append(n_of + offset)
        weights.append(w * cv.worth)
        counts.append(count)
        order = np.argsort(need_of, kind="stable")
        members += np.split(t_rows[order], np.cumsum(np.bincount(need_of, minlength=len(centres)))[:-1])
        cover_of.append(np.full(len(centres), k))
        stand.append(radius > 1.0)
        offset += len(centres)
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
    return Level(cat(a_ofs, np.int64), cat(n_ofs, np.int64), cat(weights, np.float64), cat(counts, np.float64),
                 members, cat(cover_of, np.int64), cat(stand, bool))


@dataclass
class TargetSelection:
    chosen: np.ndarray  # bool per candidate
    codes: np.ndarray  # reason codes into labels
    labels: list[str]
    for_target: np.ndarray  # bool per candidate: taken for the target's needs
    before: np.ndarray  # bool per candidate: the selection of the same budget without the target
    picks: dict = field(default_factory=dict)  # level -> number of picks
    places: int = 0
    tol: dict = field(default_factory=dict)


def select_for(cands: pd.DataFrame, desc: pd.DataFrame, target: pd.DataFrame, budget: int, *, seed: int = 0,
               emb=None, same_picture: float | None = None, share: float = SHARE,
               expression: bool = True) -> TargetSelection:
    """curate's selection with the target's needs first (module docstring).

    cands: curate's candidates (group leaders; quality, pose_bin, expr_cluster,
    light_cluster, yaw, pitch, track_id, time_s, row, kept). desc: their
    DESCRIPTORS, row-aligned. target: the target's faces (DESCRIPTORS).
    expression: whether expression is compared (both sides measured it the
    same way). Returns the selection, reasons as codes into labels, which
    faces were taken for the target and, for the report, what the same
    budget selects without the target.
    """
    from .curate import _tiebreak_where_tied, select_codes
    from .models.recognisers import DEFAULT

    same_picture = DEFAULT.same_picture if same_picture is None else same_picture
    n = len(cands)
    before, _, _ = select_codes(cands, budget, seed, emb, same_picture)
    desc = desc.reset_index(drop=True)
    tol, fill = tolerances(desc, expression), medians(desc)
    kept = cands["kept"].to_numpy(bool) if "kept" in cands else np.zeros(n, bool)
    places = int(min(round(share * budget), max(budget - int(kept.sum()), 0), n))
    quality = cands["quality"].to_numpy(float)
    by_quality = np.lexsort((_tiebreak_where_tied(quality, cands["face_id"].to_numpy(object), seed), -quality))
    quality_rank = np.empty(n, np.int64)
    quality_rank[by_quality] = np.arange(n)
    ok_pose = np.isfinite(desc["yaw"].to_numpy(float)) & np.isfinite(desc["pitch"].to_numpy(float))
    t_rows = np.flatnonzero(np.isfinite(target["yaw"].to_numpy(float)) & np.isfinite(target["pitch"].to_numpy(float)))
    t_faces = target.iloc[t_rows]
    eligible = desc[ok_pose].reset_index(drop=True)  # candidates' rows in the level arrays below
    back = np.flatnonzero(ok_pose)  # level row -> candidate

    taken = Taken(cands, emb, same_picture)
    for i in np.flatnonzero(kept):
        taken.add(int(i))
    picks: list[Pick] = []
    for level, covers in plan(tol):
        left = places - len(picks)
        if left <= 0 or not len(t_rows) or not len(back):
            break
        proportional = level == "proportion"
        order = np.flatnonzero(~taken.mask[back])[np.argsort(quality_rank[back][~taken.mask[back]], kind="stable")]
        keep = max(PER_CELL, left) if proportional else PER_CELL  # proportion may give one pose many places
        pool = np.unique(np.concatenate([best_per_cell(scaled(eligible, list(cv.columns), tol, fill), order, keep)
                                         for cv in covers]))
        pool = pool[np.argsort(quality_rank[back[pool]], kind="stable")]
        lv = build_level(covers, eligible, pool, np.flatnonzero(taken.mask[back]), t_faces, t_rows, tol, fill)

        def accept(k: int) -> bool:
            # curate's rules for near repeats; the 2 s rule spares pose picks, as curate's L1 spares each pose
            # bin's best (a turning head crosses poses within a second)
            return not taken.repeats(int(back[pool[k]]), use_time=level == "proportion")

        for k, took in greedy(len(pool), lv.a_of, lv.n_of, lv.weight, lv.count, quality_rank[back[pool]], left, accept,
                              proportional=proportional, min_gain=MIN_PROPORTION_GAIN if proportional else 1e-9):
            i = int(back[pool[k]])
            taken.add(i)
            # what the pick is for: the cover it added the most to
            main = int(np.argmax(np.bincount(lv.cover[took], weights=lv.weight[took], minlength=len(covers))))
            took = took[lv.cover[took] == main]
            faces = np.unique(np.concatenate([lv.members[j] for j in took])) if len(took) else np.zeros(0, np.int64)
            cv = covers[main]
            picks.append(Pick(i, cv.level, cv.columns[0], faces, bool(len(took)) and bool(lv.stand_in[took].all())))

    # curate's levels with the target's picks taken first (as if kept): they build on what the picks cover.
    for_target = np.zeros(n, bool)
    for p in picks:
        for_target[p.index] = True
    with_picks = cands.copy()
    with_picks["kept"] = kept | for_target
    chosen, codes, labels = select_codes(with_picks, budget, seed, emb, same_picture)
    for p in picks:
        codes[p.index] = len(labels)
        labels.append(pick_reason(p, target, desc.iloc[p.index]))
    counts = {lv: sum(p.level == lv for p in picks) for lv in dict.fromkeys(c.level for _, cs in plan(tol) for c in cs)}
    return TargetSelection(chosen, codes, labels, for_target, before, counts, places, tol)


def pick_reason(p: Pick, target: pd.DataFrame, face: pd.Series) -> str:
    """What a pick was taken for: "selected for target: looking left 21° to 28° (pitch -3° to 2°), 31 target faces";
    "selected for target: smile 0.12 as in 9 target faces (near frontal (...))"."""
    sub = target.iloc[p.faces]
    n = f"{len(sub)} target face{'s' * (len(sub) != 1)}"
    if p.level in ("pose", "pose_close"):
        if p.stand_in:
            away = np.maximum(np.abs(sub["yaw"].to_numpy(float) - face["yaw"]),
                              np.abs(sub["pitch"].to_numpy(float) - face["pitch"]))
            return (f"selected for target: the nearest this footage has to {region_words(sub)}, {n}, "
                    f"{np.median(away):.0f}° away")
        return f"selected for target: {region_words(sub)}, {n}"
    if p.level == "proportion":
        return f"selected for target: more faces where the target has many, {region_words(sub)}, {n}"
    return f"selected for target: {p.column} {float(face[p.column]):.3g} as in {n} ({region_words(sub)})"


def region_words(sub: pd.DataFrame) -> str:
    """Where a group of target faces looks, in audit's words ("looking left 21° to 28° (pitch -3° to 2°)")."""
    from .reports.audit import direction
    from .reports.compare import pose_region_words

    if not len(sub):
        return "no target faces"
    d = direction(float(sub["yaw"].median()), float(sub["pitch"].median()))[0]
    return pose_region_words(d, sub)[0]


# --- which selected faces serve the target ---------------------------------------------

def serving(source: pd.DataFrame, target: pd.DataFrame, tol: dict) -> tuple[np.ndarray, np.ndarray]:
    """(target faces per source face, nearest source face per target face or -1).

    Each target face (of known pose) is served by one source face: among the
    source faces within the pose tolerance, the nearest over every compared
    descriptor (in tolerances, the largest difference); none when no source
    face is within the pose tolerance."""
    from scipy.spatial import cKDTree

    nearest = np.full(len(target), -1, np.int64)
    counts = np.zeros(len(source), np.int64)
    s_ok = np.isfinite(source["yaw"].to_numpy(float)) & np.isfinite(source["pitch"].to_numpy(float))
    t_ok = np.isfinite(target["yaw"].to_numpy(float)) & np.isfinite(target["pitch"].to_numpy(float))
    if not s_ok.any() or not t_ok.any():
        return counts, nearest
    fill = medians(source)
    cols = ["yaw", "pitch", *(c for c in metrics.EXPRESSION_COLUMNS if c in tol), *metrics.LIGHT_COLUMNS]
    s_rows, t_rows = np.flatnonzero(s_ok), np.flatnonzero(t_ok)
    s_all, t_all = scaled(source.iloc[s_rows], cols, tol, fill), scaled(target.iloc[t_rows], cols, tol, fill)
    within = cKDTree(s_all[:, :2]).query_ball_point(t_all[:, :2], r=1.0 + 1e-9, p=np.inf)
    for k, near in enumerate(within):
        if near:
            near = np.asarray(near, np.int64)
            d = np.abs(s_all[near] - t_all[k]).max(axis=1)
            nearest[t_rows[k]] = s_rows[near[np.argmin(d)]]
    np.add.at(counts, nearest[nearest >= 0], 1)
    return counts, nearest


# --- what the selection covers of the target, and what it cannot ------------------------

def coverage_report(sets: dict[str, pd.DataFrame], target: pd.DataFrame, tol: dict, main: str) -> dict:
    """Named sets of source faces against the target, `main` first among them.

    gap_score: compare's gap score (curator/reports/compare.py) of each set against the
    target; pose_distance_deg: mean over the target's faces of the distance
    (sqrt(dyaw² + dpitch²)) to the nearest face of the set; uncovered_share:
    the target's faces with no face of the set within the pose tolerance;
    covered_share: the target's faces covered in pose (yaw and pitch together)
    and in every expression and every lighting descriptor. The set
    "all_candidates" is what any selection from this footage can draw on:
    what it lacks is what to film, in compare's "find footage of ..."
    sentences (`look_for`). Its gap score is not a strict floor: compare
    scales expression by each set's own spread.
    """
    from .reports.compare import compare_sets

    target_set = _face_set(target, "target")
    compared = {k: compare_sets(_face_set(v, k), target_set) for k, v in sets.items()}
    t_ok = np.isfinite(target["yaw"].to_numpy(float)) & np.isfinite(target["pitch"].to_numpy(float))
    t_pose = target.loc[t_ok, ["yaw", "pitch"]].to_numpy(float)
    fill = medians(sets.get("all_candidates", sets[main]))

    def cover(faces: pd.DataFrame, level: str) -> float:
        """Share of the target's faces covered in every cover of `level` (pose: yaw and pitch together)."""
        ok = np.isfinite(faces["yaw"].to_numpy(float)) & np.isfinite(faces["pitch"].to_numpy(float))
        c = np.ones(int(t_ok.sum()), bool)
        for cv in (x for x in plan(tol)[0][1] if x.level == level):
            cols = list(cv.columns)
            c &= covered(scaled(faces[ok], cols, tol, fill), scaled(target[t_ok], cols, tol, fill))
        return round(float(c.mean()), 4) if len(c) else 1.0

    levels = [lv for lv in ("pose", "expression", "lighting") if any(x.level == lv for x in plan(tol)[0][1])]
    out = {
        "gap_score": {k: c["gap_score"] for k, c in compared.items()},
        "pose_distance_deg": {k: round(pose_distance(v, t_pose), 2) for k, v in sets.items()},
        "uncovered_share": {k: round(1.0 - cover(v, "pose"), 4) for k, v in sets.items()},
        "covered_share": {k: {lv: cover(v, lv) for lv in levels} for k, v in sets.items()},
        "expression_compared": compared[main]["expression_compared"],
        "notes": list(compared[main]["notes"]),
        "regions": [{k: g[k] for k in ("kind", "key", "words", "faces", "share", "weight", "look_for")}
                    for g in compared[main]["regions"]],
        # what no selection from this footage can cover: footage to find
        "look_for": compared.get("all_candidates", compared[main])["look_for"],
    }
    if "all_candidates" in sets:
        left_out = out["uncovered_share"][main] - out["uncovered_share"]["all_candidates"]
        if left_out > 1e-9:
            out["notes"].append(f"{left_out:.0%} of the target's faces have a candidate within {POSE_TOLERANCE_DEG:g}° "
                                "of pose that the selection left out: raise --budget or --for-share")
    return out


def pose_distance(faces: pd.DataFrame, t_pose: np.ndarray) -> float:
    """Mean over the target's poses of the distance in degrees to the nearest pose of `faces` (inf: none)."""
    from scipy.spatial import cKDTree

    pts = metrics.known_pose(faces)[["yaw", "pitch"]].to_numpy(float)
    if not len(t_pose):
        return 0.0
    if not len(pts):
        return float("inf")
    return float(cKDTree(pts).query(t_pose, k=1)[0].mean())


def _face_set(faces: pd.DataFrame, name: str):
    """compare's FaceSet of a table already in memory (compare reads its faces; its workspace only for a name)."""
    from .reports.audit import FaceSet
    from .workspace import Workspace

    return FaceSet(Workspace(Path(name)), faces, faces, name, faces)


def summary_line(r: dict) -> str:
    """The human lines of `curate --for` and `run --for`: the gap before and after, what is still uncovered."""
    g, u = r["gap_score"], r["uncovered_share"]
    lines = [f"for target ({r['target']['faces']} faces): {r['selected_for_target']} selected for it; gap score "
             f"{g['without_for']:.3f} without --for, {g['with_for']:.3f} with it ({g['all_candidates']:.3f} with every "
             f"candidate); {u['with_for']:.0%} of its faces have no selected face within {POSE_TOLERANCE_DEG:g}° of "
             f"pose ({u['without_for']:.0%} without --for, {u['all_candidates']:.0%} with every candidate)"]
    return "\n".join(lines + _look_for_lines(r))


def _look_for_lines(r: dict) -> list[str]:
    return [f"  {x}" for x in r["look_for"]] + [f"note: {x}" for x in r["notes"]]


SOURCE_COLUMNS = ["expression_method", "pose_method"]  # what curate reads besides its own columns, for compare's rules


def record(ws, target: Target | None, share: float) -> None:
    """workspace.json's `curated_for`: the target the selection was made for (export copies it into
    provenance.json); a curate without a target removes it. The caller holds the workspace's lock."""
    from .workspace import now, read_meta, write_meta

    meta = read_meta(ws)
    if target is None and "curated_for" not in meta:
        return
    meta.pop("curated_for", None)
    if target is not None:
        meta["curated_for"] = {**target.describe(), "share": share, "curated": now()}
    write_meta(ws, meta)


# --- audit --for ------------------------------------------------------------------------------

SHOWN_SERVING = 12  # selected faces shown in the audit report, those standing for the most target faces first


def audit_part(fs, target: Target) -> dict:
    """`audit --for`: which selected faces serve the target and how many of its faces each stands for (its
    nearest selected face within the pose tolerance, `serving`), the target's pose bins and how much of each
    is served, and what the selection and the footage lack (`coverage_report`). Before curate, the report's
    faces stand in for the selection."""
    from .reports.audit import _flag, bin_words, pose_bin_table

    table = fs.table
    chosen = fs.curated
    faces = table[_flag(table, "selected") & ~_flag(table, "rejected")] if chosen else fs.faces
    pool = fs.reference
    if "dup_group" in pool:  # curate's candidates are the near-duplicate groups' leaders: its units come from them
        pool = pool[pool["face_id"].to_numpy(object) == pool["dup_group"].astype(object).to_numpy()]
    tol = tolerances(pool, methods_match(pool, target.faces))
    counts, nearest = serving(faces, target.faces, tol)
    report = coverage_report({"selected": faces, "all_candidates": pool}, target.faces, tol, main="selected")
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]
    shown = faces.iloc[order[:SHOWN_SERVING]]
    t = target.faces
    bins = pose_bin_table(t)
    served = np.zeros(len(t), bool)
    served[nearest >= 0] = True
    t_bin = [metrics.pose_label(y, p) for y, p in zip(t["yaw"], t["pitch"])]
    per_bin = pd.DataFrame({"bin": t_bin, "served": served, "by": nearest}).groupby("bin")
    needs = []
    for _, b in bins.sort_values("faces", ascending=False).iterrows():
        g = per_bin.get_group(b["bin"])
        needs.append({"bin": b["bin"], "words": bin_words(b["yaw_from"], b["pitch_from"]),
                      "target_faces": int(b["faces"]),
                      "served": int(g["served"].sum()), "selected_faces": int(g.loc[g["served"], "by"].nunique())})
    return {
        "target": target.describe(), "set": "selected" if chosen else fs.name, "tolerance": tol,
        "faces_serving": int((counts > 0).sum()), "faces": int(len(faces)),
        "taken_for_target": int(_flag(faces, "for_target").sum()) if "for_target" in faces else None,
        "serving": [{"face_id": f, "target_faces": int(c), "for_target": bool(ft), "reason": str(r)}
                    for f, c, ft, r in zip(shown["face_id"], counts[order[:SHOWN_SERVING]],
                                           _flag(shown, "for_target"),
                                           shown["reason"] if "reason" in shown else [""] * len(shown))],
        "needs": needs, "_target_served": served, "_serving_rows": shown.index.to_numpy(), **report,
    }


def audit_pictures(fs, target: Target, part: dict) -> dict:
    """The section's pictures: the target's poses with the faces no selected face serves marked, and the
    selected faces standing for the most target faces, each with its count."""
    from .reports.audit import face_thumb
    from .reports.page import heatmap_png

    t = target.faces
    missing = t[~part["_target_served"]]
    heat = heatmap_png(t, f"target: {len(t)} faces (red ×: served by no {part['set']} face within "
                          f"±{POSE_TOLERANCE_DEG:g}°)", marks=missing)
    thumbs = []
    for row, s in zip(part["_serving_rows"], part["serving"]):
        thumb = face_thumb(fs.ws, fs.table.loc[row])
        if thumb:
            thumbs.append({**thumb, "title": f"{thumb['title']} · {s['target_faces']} target faces"})
    return {"heatmap": heat, "thumbs": thumbs}


def audit_line(r: dict) -> str:
    """`audit --for`'s lines."""
    u = r["uncovered_share"]
    lines = [f"for target ({r['target']['faces']} faces): {r['faces_serving']} of the {r['faces']} {r['set']} faces "
             f"serve it; gap score {r['gap_score']['selected']:.3f} ({r['gap_score']['all_candidates']:.3f} with every "
             f"candidate); {u['selected']:.0%} of its faces have no {r['set']} face within {POSE_TOLERANCE_DEG:g}° of "
             f"pose ({u['all_candidates']:.0%} with every candidate)"]
    return "\n".join(lines + _look_for_lines(r))


# --- the target itself ---------------------------------------------------------------------

@dataclass
class Target:
    ws: object  # curator.workspace.Workspace
    faces: pd.DataFrame  # the target's faces: every column but the wide ones
    given: list[str]  # what --for named
    sources: dict  # sha256 -> {"path", "faces"}
    identity: str  # how the target's person was chosen

    def describe(self) -> dict:
        return {"for": self.given, "workspace": str(self.ws.root), "faces": int(len(self.faces)),
                "identity": self.identity, "sources": self.sources}


def default_workspace(beside: Path) -> Path:
    """Where footage targets are extracted when --for-workspace is not given: BESIDE.for.workspace, beside an
    export folder or a workspace (a workspace's own ".workspace" left out, so `run --out set` and `curate -w
    set.workspace` share set.for.workspace)."""
    beside = Path(beside)
    name = beside.name[: -len(".workspace")] if beside.name.endswith(".workspace") else beside.name
    return beside.with_name(name + ".for.workspace")


def load_target(for_target: Sequence, *, for_ref=None, for_workspace=None, default: Path, source_ws: Path,
                models: str | None = None, fps: float | None = None, every: int | None = None,
                landmarks: str | None = None, on_problem=None, on_progress=None, on_total=None,
                extract: Callable = None) -> Target:
    """The target's faces: a workspace (its identified faces, or those like FOR_REF), or footage extracted into
    FOR_WORKSPACE (default `default`) whose faces of these files are the target (FOR_REF's person, else the largest
    identity among them). Several footage files are one target. `extract`: curator.api.extract, handed in by the
    api (this module sits below it), to extract footage into the target's workspace like `curator extract`."""
    from .workspace import is_workspace, open_workspace

    given = [str(p) for p in ([for_target] if isinstance(for_target, (str, os.PathLike)) else for_target)]
    if not given:
        raise UsageError("--for needs a workspace or footage")
    spaces = [p for p in given if is_workspace(Path(p).expanduser())]
    if spaces and len(given) > 1:
        raise UsageError(f"--for {spaces[0]} is a workspace: give one workspace, or footage files and folders, "
                         "not both or several workspaces")
    if spaces:
        if for_workspace is not None:
            raise UsageError("--for-workspace is where footage targets are extracted; --for names a workspace")
        ws = open_workspace(spaces[0])
        if ws.root == Path(source_ws).expanduser().resolve():
            raise UsageError(f"--for {spaces[0]} is the workspace being curated; give the video you will convert")
        return _target_faces(ws, given, None, for_ref, models)
    ws_path = Path(for_workspace if for_workspace is not None else default).expanduser().resolve()
    if ws_path == Path(source_ws).expanduser().resolve():
        raise UsageError(f"--for-workspace {ws_path} is the workspace being curated; the target needs its own")
    from . import media
    from .workspace import read_meta, source_sha256

    summary = extract(given, ws_path, models=models, fps=fps, every=every, landmarks=landmarks,
                          on_problem=on_problem, on_progress=on_progress, on_total=on_total)
    ws = open_workspace(ws_path)
    meta = read_meta(ws)
    found, _ = media.discover(given)
    shas = set()
    for item in found:
        try:
            shas.add(source_sha256(meta, item.path)[0])
        except OSError:
            continue
    if not shas or summary["new_files"] + summary["already_in_workspace"] == 0:
        raise TargetError(f"--for {' '.join(given)}: no footage could be read (see the lines above)")
    return _target_faces(ws, given, shas, for_ref, models)


def _target_faces(ws, given: list[str], shas: set | None, for_ref, models: str | None) -> Target:
    """The target's faces of workspace `ws` (of sources `shas` only, when given), identified in memory:
    the workspace itself is never written here."""
    from .models import faces as face_models
    from .models import recognisers
    from .reports.audit import WIDE_COLUMNS
    from .identify import identify as identify_table
    from .workspace import read_embeddings, read_meta, read_table, table_columns

    # bbox, for identify's tracks; the other wide columns are never needed here
    table = read_table(ws, [c for c in table_columns(ws) if c not in WIDE_COLUMNS or c == "bbox"])
    what = " ".join(given)
    if not len(table):
        raise TargetError(f"--for {what}: no faces found in the target (nothing to curate for)")
    rows = np.flatnonzero(table["source_sha256"].isin(shas).to_numpy()) if shas is not None else np.arange(len(table))
    if not len(rows):
        raise TargetError(f"--for {what}: no faces found in the target (nothing to curate for)")
    table = table.iloc[rows].reset_index(drop=True)
    meta = read_meta(ws)
    rec = recognisers.of_workspace(meta)
    if for_ref or shas is not None or "is_target" not in table:
        emb = np.asarray(read_embeddings(ws)[rows], np.float32)
        refs = None
        if for_ref:
            fm = face_models.load_models(models or (meta.get("models") or {}).get("path"))
            recognisers.check_same(meta, fm)
            refs = face_models.reference_embeddings(fm, [for_ref] if isinstance(for_ref, (str, os.PathLike)) else list(for_ref))
        result = identify_table(table.drop(columns=[c for c in ("track_id", "is_target", "identity_cluster",
                                                                 "identity_score") if c in table]),
                                emb, refs=refs, threshold=rec.same_person, track_link=rec.track_link)
        table = table.drop(columns=[c for c in result.table.columns if c != "face_id" and c in table]).merge(
            result.table, on="face_id", how="left")
        identity = "the reference photos (--for-ref)" if for_ref else "its largest identity"
    else:
        identity = "the workspace's own target (curator identify)"
    faces = table[table["is_target"].fillna(False).to_numpy(bool)].reset_index(drop=True)
    if not len(faces):
        raise TargetError(f"--for {what}: no faces of the target's person"
                          + (" like the --for-ref photos" if for_ref else ""))
    meta_sources = meta.get("sources", {})
    sources = {sha: {"path": meta_sources.get(sha, {}).get("path"), "sha256": sha, "faces": int(k)}
               for sha, k in faces.groupby("source_sha256", observed=True).size().items() if k}
    return Target(ws, faces, given, sources, identity)


def methods_match(source: pd.DataFrame, target: pd.DataFrame, column: str = "expression_method") -> bool:
    """Whether both sides measured a descriptor the same way (compare's rule for comparing expression)."""
    def m(t):
        return sorted(t[column].dropna().unique().tolist()) if column in t else []
    return bool(m(source)) and m(source) == m(target)


@dataclass(frozen=True)
class ForTarget:
    """What curate needs to select for a target, handed to it by the api: curate sits below this module, so it
    receives the target's faces with the functions that serve them instead of importing them."""

    faces: pd.DataFrame
    share: float = SHARE

    def select(self, cands: pd.DataFrame, desc: pd.DataFrame, budget: int, **options) -> "TargetSelection":
        return select_for(cands, desc, self.faces, budget, share=self.share, **options)

    def methods_match(self, source: pd.DataFrame) -> bool:
        return methods_match(source, self.faces)

    def serving(self, source: pd.DataFrame, tol: dict):
        return serving(source, self.faces, tol)

    def coverage_report(self, sets: dict, tol: dict, main: str) -> dict:
        return coverage_report(sets, self.faces, tol, main)
