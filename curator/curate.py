"""`curator curate`: no near-duplicates, then the most diverse N target faces.

1. Candidates: target faces (from `identify`), not rejected in review, at
   least `min_face_px` source pixels; and every face kept in review (tag
   `keep`), which is always selected.
2. Near-duplicates: faces whose pose, expression, lighting *and* 8x8
   appearance all match (module `dedupe_features` gives the units) form a
   group around a leader, the best-quality face; groups are bounded (every
   member is within the radius of its leader, no chaining), so a slow head
   turn is not collapsed into one face. Groups are built per source (a
   footage file and its tracks; sources in parallel on large tables): a
   first pass runs along each track in time order (cheap, and where most
   duplicates are), a second one across the source's tracks with a KD-tree
   (repeated segments, looped footage); a face those passes put out of its
   leader's reach joins the best leader in reach, or is grouped again with
   the others left over. Repeats across sources are left to selection's
   same-picture rule below.
3. Selection, in priority levels, each level taking the best-quality face of
   every cell it has not covered yet:
      L1 each 10-degree yaw x pitch bin (rare poses are kept),
      L2 each (pose bin, expression cell),
      L3 each (pose bin, expression cell, lighting cell),
      then round-robin over L3 cells by quality rank until the budget is met.
   Within a level, when the budget runs out first, pose bins are taken
   farthest-first from the most common pose and other cells rarest-first.
   Faces that would nearly repeat a chosen one (same track within 2 s, or the
   same picture to the recogniser: its `same_picture` cosine, from
   curator.recognisers) wait until nothing else is left.

Every face gets `dup_group` (the face_id of its group's leader), `selected`
and a one-line `reason`; nothing is dropped from the table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .measure import metrics
from .measure.metrics import EXPRESSION_UNIT_FLOOR, EXPRESSION_UNIT_STD, MIN_FACE_PX, quality_score  # noqa: F401
from .errors import UsageError
from .models.recognisers import DEFAULT
from .measure.states import OCCLUDED_AT, REGION_NAMES
from .workspace import WorkspaceError

# The states curate reads when the workspace has them (curator/measure/states.py): eye and mouth states are expression
# cells of their own; a face more likely covered than not in a region is ranked last.
STATE_COLUMNS = ["eyes_closed", "occlusion", "occluded_mouth", "occluded_eyes"]

MIN_GAP_S = 2.0  # faces closer in time than this in one track are taken only if the budget needs them
# Faces the recogniser sees as the same picture (its `same_picture` cosine, curator.recognisers, and pose
# within this many degrees) are taken only if the budget needs them.
SAME_PICTURE_DEG = 5.0
DEDUPE_RADIUS = 1.5
APPEARANCE_RADIUS = 0.35  # Euclidean distance between unit 8x8 appearance vectors (cos ~0.94)

# One unit in the dedupe space: a just-noticeable difference for training.
POSE_UNIT_DEG = 4.0
LIGHT_UNITS = {"lum": 3.0, "contrast": 2.0, "light_lr": 3.0, "light_tb": 3.0, "cast_a": 2.0, "cast_b": 2.0}


@dataclass
class CurateResult:
    columns: pd.DataFrame  # face_id + the columns curate writes
    summary: dict


def dedupe_features(table: pd.DataFrame) -> np.ndarray:
    """Pose, expression and lighting in just-noticeable-difference units (12 columns)."""
    cols = [table[c].to_numpy(float) / POSE_UNIT_DEG for c in ("yaw", "pitch", "roll")]
    states = metrics.with_states(table)
    for c in metrics.EXPRESSION_COLUMNS:
        v = table[c].to_numpy(float).copy()
        for rows in (states, ~states):  # rows with states and rows from before them: each on its own scale
            if rows.any():
                iqr = np.subtract(*np.nanpercentile(v[rows], [75, 25])) if np.isfinite(v[rows]).any() else 0.0
                v[rows] /= max(iqr / 1.349 * EXPRESSION_UNIT_STD, EXPRESSION_UNIT_FLOOR[c])
        cols.append(v)
    cols += [table[c].to_numpy(float) / unit for c, unit in LIGHT_UNITS.items()]
    return np.nan_to_num(np.stack(cols, axis=1), nan=0.0).astype(np.float32)


def appearance_matrix(table: pd.DataFrame) -> np.ndarray:
    if "appearance" not in table:
        return np.zeros((len(table), 1), np.float32)
    return np.stack(table["appearance"].to_numpy()).astype(np.float32)


class _AppearanceRows:
    """The table's `appearance` column indexed by rows, stacked only for the rows asked for."""

    def __init__(self, table: pd.DataFrame):
        self.values = table["appearance"].to_numpy() if "appearance" in table else None
        self.n = len(table)

    def __getitem__(self, rows) -> np.ndarray:
        if self.values is None:
            return np.zeros((len(rows), 1), np.float32)
        return np.stack(self.values[rows]).astype(np.float32) if len(rows) else np.zeros((0, 1), np.float32)


PARALLEL_MIN_FACES = 200_000  # below this, starting worker processes costs more than it saves


def groups_by_source(features: np.ndarray, appearance, quality: np.ndarray, track: np.ndarray,
                     time_order: np.ndarray, source: np.ndarray, rows: np.ndarray, workers: int = 1) -> np.ndarray:
    """`near_duplicate_groups` run on each source's faces alone; leader index (into the inputs) of each face.

    Near-duplicates are local to a source and its tracks, so this finds what
    the tracks and the source's own repeats hold while each run stays small,
    and sources can go to `workers` processes. `appearance[rows[i]]` is face
    i's appearance vector (an array, or the workspace's lazy column, read
    source by source in row order so each shard is read once); `source`
    labels each face's source.
    """
    n = len(features)
    lead = np.arange(n, dtype=np.int64)
    if not n:
        return lead
    order = np.lexsort((rows, source))
    cut = np.flatnonzero(np.r_[True, source[order][1:] != source[order][:-1], True])
    chunks = sorted((order[a:b] for a, b in zip(cut[:-1], cut[1:])), key=lambda c: rows[c[0]])
    _SOURCES.update(chunks=chunks, features=features, appearance=appearance, quality=quality, track=track,
                    time_order=time_order, rows=rows)
    try:
        if workers > 1 and len(chunks) > 1 and n >= PARALLEL_MIN_FACES and _can_fork():
            results = _in_processes(_batches(chunks), workers)
        else:
            results = _group_sources(range(len(chunks)))
        for k, local in results:
            lead[chunks[k]] = chunks[k][local]
    finally:
        _SOURCES.clear()
    return lead


# What `_group_sources` works on. Set before worker processes are forked, so they inherit the arrays
# (and the lazy appearance column) instead of receiving copies through a pipe.
_SOURCES: dict = {}
BATCH_FACES = 100_000  # sources given to a worker at once: about a shard's rows, so a worker reads a shard at a time


def _group_sources(keys) -> list:
    """(k, near_duplicate_groups of source chunk k) for each k."""
    d, out = _SOURCES, []
    for k in keys:
        c = d["chunks"][k]
        out.append((k, near_duplicate_groups(d["features"][c], np.asarray(d["appearance"][d["rows"][c]], np.float32),
                                             d["quality"][c], d["track"][c], d["time_order"][c])))
    return out


def _batches(chunks: list) -> list[list[int]]:
    """Consecutive source chunks grouped into batches of about BATCH_FACES faces."""
    out, size = [[]], 0
    for k, c in enumerate(chunks):
        if size >= BATCH_FACES:
            out.append([])
            size = 0
        out[-1].append(k)
        size += len(c)
    return out


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _in_processes(batches: list[list[int]], workers: int):
    """`_group_sources` of each batch in `workers` forked processes, results as they come.

    Forked, not spawned: a spawned process would import the caller's main
    script again (a script without a `__main__` guard would run twice), and
    forked ones share the parent's arrays until they write to them.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for f in as_completed([pool.submit(_group_sources, b) for b in batches]):
            yield from f.result()


def near_duplicate_groups(features: np.ndarray, appearance: np.ndarray, quality: np.ndarray, track: np.ndarray,
                          time_order: np.ndarray, radius: float = DEDUPE_RADIUS,
                          app_radius: float = APPEARANCE_RADIUS) -> np.ndarray:
    """Leader index (into the inputs) of each face's near-duplicate group.

    Every member is within `radius` (dedupe features) and `app_radius`
    (appearance) of its leader, the group's best-quality face, so groups do
    not chain. Grouping runs in rounds over the faces not placed yet: each
    round proposes a leader for every face (`_proposed_leaders`: runs along
    tracks, then the runs' best faces across everything). A face its proposed
    leader does not reach joins the best leader placed so far that reaches
    it and is at least as good, or else waits for the next round with the
    others left over. A leader reaches itself, so every round places faces;
    on bench/curate.py's synthetic table 4% of the faces wait for a second
    round and 0.015% for a third.

    Vectorised so a million faces take seconds, not minutes (bench/curate.py).
    """
    n = len(features)
    leader = np.full(n, -1, np.int64)
    pending = np.arange(n)
    while len(pending):
        proposed = pending[_proposed_leaders(features[pending], appearance[pending], quality[pending], track[pending],
                                             time_order[pending], radius, app_radius)]
        ok = _within_reach(features, appearance, pending, proposed, radius, app_radius)
        leader[pending[ok]] = proposed[ok]
        pending = pending[~ok]
        if len(pending):
            adopted = _best_leader_within_reach(features, appearance, quality, leader, pending, radius, app_radius)
            leader[pending] = adopted
            pending = pending[adopted < 0]
    return leader


def _best_leader_within_reach(features: np.ndarray, appearance: np.ndarray, quality: np.ndarray, leader: np.ndarray,
                              faces: np.ndarray, radius: float, app_radius: float) -> np.ndarray:
    """For each of `faces`, the best leader placed so far that reaches it and is at least as good (-1: none).

    Candidates come from a KD-tree of the leaders on all feature columns: the
    faces asked about are few (the 4% a round left out of reach), and with
    every column the tree returns about one candidate each, where the 5 of
    pass 2 returned 40 (bench/curate.py's synthetic table).
    """
    from scipy.spatial import cKDTree

    leaders = np.flatnonzero(leader == np.arange(len(leader)))
    out = np.full(len(faces), -1, np.int64)
    if not len(leaders):
        return out
    near = cKDTree(features[leaders].astype(np.float64)).query_ball_point(features[faces].astype(np.float64), radius)
    counts = np.fromiter((len(x) for x in near), np.int64, len(near))
    if not counts.sum():
        return out
    face = np.repeat(np.arange(len(faces)), counts)
    cand = leaders[np.concatenate([x for x in near if x]).astype(np.int64)]
    ok = (_within_reach(features, appearance, faces[face], cand, radius, app_radius)
          & (quality[cand] >= quality[faces[face]]))
    face, cand = face[ok], cand[ok]
    best = np.lexsort((cand, -quality[cand], face))  # per face: best quality first, ties to the lowest index
    first = np.r_[True, face[best][1:] != face[best][:-1]] if len(best) else np.zeros(0, bool)
    out[face[best][first]] = cand[best][first]
    return out


def _within_reach(features: np.ndarray, appearance: np.ndarray, i: np.ndarray, j: np.ndarray, radius: float,
                  app_radius: float) -> np.ndarray:
    """Whether face i[k] is a near-duplicate of face j[k]: features within `radius`, appearance within `app_radius`."""
    df = np.linalg.norm(features[j] - features[i], axis=1) <= radius
    da = np.linalg.norm(appearance[j] - appearance[i], axis=1) <= app_radius
    return df & da


def _proposed_leaders(features: np.ndarray, appearance: np.ndarray, quality: np.ndarray, track: np.ndarray,
                      time_order: np.ndarray, radius: float, app_radius: float) -> np.ndarray:
    """One round of grouping: a leader for each face, which `near_duplicate_groups` keeps only where it reaches.

    Pass 1 cuts each track, in time order, into runs whose faces are all
    within reach of the run's first face (cheap, and where most duplicates
    are). Pass 2 takes each run's best face, best quality first, and lets it
    absorb the runs whose best faces are within its reach (repeated segments,
    looped footage); candidate pairs come from a KD-tree on the 5 widest
    feature columns (dropping columns never makes a distance larger, so no
    true pair is missed). A run's faces can be up to twice the radius from
    its best face, and three times from the face that absorbed it: that is
    why the caller checks every face against its proposed leader.
    """
    from scipy.spatial import cKDTree

    n = len(features)
    run = _runs(features, appearance, track, time_order, radius, app_radius)

    # The run's best face represents it in pass 2 (ties: lowest index).
    srt = np.lexsort((np.arange(n), -quality, run))
    first = np.r_[True, run[srt][1:] != run[srt][:-1]]
    run_ids, reps = run[srt][first], srt[first]

    # Pass 2: across everything, best quality first, each leader absorbs what is within reach.
    feats = features[reps].astype(np.float64)
    dims = np.argsort(-feats.std(0))[: min(5, feats.shape[1])]
    pairs = cKDTree(feats[:, dims]).query_pairs(radius, output_type="ndarray")
    keep = np.zeros(len(pairs), bool)
    for c0 in range(0, len(pairs), 2_000_000):  # bounded memory for dense clouds of pairs
        a, b = pairs[c0:c0 + 2_000_000, 0], pairs[c0:c0 + 2_000_000, 1]
        d = feats[a] - feats[b]
        okf = np.flatnonzero(np.einsum("ij,ij->i", d, d) <= radius * radius)
        oka = np.linalg.norm(appearance[reps[b[okf]]] - appearance[reps[a[okf]]], axis=1) <= app_radius
        keep[c0 + okf[oka]] = True
    pairs = pairs[keep]
    m = len(reps)
    src = np.r_[pairs[:, 0], pairs[:, 1]]
    dst = np.r_[pairs[:, 1], pairs[:, 0]][np.argsort(src, kind="stable")]
    indptr = np.r_[0, np.cumsum(np.bincount(src, minlength=m))]
    owner = np.full(m, -1)
    for i in np.lexsort((reps, -quality[reps])).tolist():
        if owner[i] >= 0:
            continue
        owner[i] = i
        cand = dst[indptr[i]:indptr[i + 1]]
        if len(cand):
            owner[cand[owner[cand] < 0]] = i
    # Every face takes its run representative's group leader.
    return reps[owner][np.searchsorted(run_ids, run)]


def _runs(features: np.ndarray, appearance: np.ndarray, track: np.ndarray, time_order: np.ndarray, radius: float,
          app_radius: float) -> np.ndarray:
    """Pass 1: each face's run, named by the run's first face; a run's faces are all within reach of its first face.

    For every position p (tracks in time order) find the first later position
    of its track not within reach of p, comparing p with p+1, p+2, ... only
    while still close; then walk from run start to run start.
    """
    n = len(features)
    o = np.lexsort((time_order, track))
    tr = track[o]
    end = np.r_[np.flatnonzero(tr[1:] != tr[:-1]) + 1, n]
    track_end = np.repeat(end, np.diff(np.r_[0, end]))
    nxt = np.full(n, -1)
    pending = np.arange(n)
    k = 1
    while len(pending):
        q = pending + k
        at_end = q >= track_end[pending]
        nxt[pending[at_end]] = track_end[pending[at_end]]
        pending, q = pending[~at_end], q[~at_end]
        ok = _within_reach(features, appearance, o[pending], o[q], radius, app_radius)
        nxt[pending[~ok]] = q[~ok]
        pending = pending[ok]
        k += 1
    is_start = np.zeros(n, bool)
    nxt_l = nxt.tolist()
    for s0, e0 in zip(np.r_[0, end[:-1]].tolist(), end.tolist()):
        while s0 < e0:
            is_start[s0] = True
            s0 = nxt_l[s0]
    run_start = np.maximum.accumulate(np.where(is_start, np.arange(n), 0))
    run = np.empty(n, np.int64)
    run[o] = o[run_start]
    return run


def _tiebreak(face_ids, seed: int) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{f}".encode(), digest_size=8).digest(), "big")
                     for f in face_ids], dtype=np.uint64)


def _tiebreak_where_tied(values: np.ndarray, face_ids: np.ndarray, seed: int) -> np.ndarray:
    """`_tiebreak` for the faces whose value another face shares, 0 for the rest: sorting by (value, this) orders
    them as (value, _tiebreak) does, and a million candidates do not each hash their id."""
    tb = np.zeros(len(values), np.uint64)
    tied = pd.Series(values).duplicated(keep=False).to_numpy()
    tb[tied] = _tiebreak(face_ids[tied], seed)
    return tb


def _lazy_order(level: np.ndarray, within: np.ndarray, face_ids: np.ndarray, seed: int):
    """Indices in (level, within, _tiebreak) order, each run of equal (level, within) hashed only when reached:
    selection usually stops after the budget's first few thousand."""
    prim = np.lexsort((within, level))
    lv, wi = level[prim], within[prim]
    cut = np.flatnonzero(np.r_[True, (lv[1:] != lv[:-1]) | (wi[1:] != wi[:-1]), True])
    for a, b in zip(cut[:-1].tolist(), cut[1:].tolist()):
        run = prim[a:b]
        if b - a > 1:
            run = run[np.argsort(_tiebreak(face_ids[run], seed), kind="stable")]
        yield from run.tolist()


STATE_NAMES = {0: "the eyes open and the mouth closed", 1: "the mouth open", 2: "the eyes closed",
               3: "the eyes closed and the mouth open"}
SELECTED_LABELS = {0: "selected: kept in review", 1: "selected: best face of its pose bin",
                   2: "selected: best face of its pose x expression cell",
                   3: "selected: best face of its pose x expression x lighting cell"}


def select(cands: pd.DataFrame, budget: int, seed: int = 0, emb: np.ndarray | None = None,
           same_picture: float = DEFAULT.same_picture) -> tuple[np.ndarray, list[str]]:
    """Choose `budget` rows of `cands` (needs quality, pose_bin, expr_cluster, light_cluster, yaw, pitch; optional
    track_id, time_s, and row: the row of `emb`, the identity embeddings); returns (mask, reasons).
    `same_picture`: the recogniser's same-picture cosine (curator.recognisers)."""
    chosen, codes, labels = select_codes(cands, budget, seed, emb, same_picture)
    return chosen, list(np.asarray(labels, dtype=object)[codes])


def select_codes(cands: pd.DataFrame, budget: int, seed: int = 0, emb: np.ndarray | None = None,
                 same_picture: float = DEFAULT.same_picture) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`select` with the reasons as codes into a list of labels (a million candidates share a few dozen)."""
    n = len(cands)
    if n == 0 or budget <= 0:
        return np.zeros(n, bool), np.zeros(n, np.int64), ["over budget"]
    face_ids = cands["face_id"].to_numpy(object)
    by_quality = np.lexsort((_tiebreak_where_tied(cands["quality"].to_numpy(), face_ids, seed),
                             -cands["quality"].to_numpy()))
    pose = cands["pose_bin"].to_numpy()
    keys = {
        1: pose,
        2: pose * 100 + cands["expr_cluster"].to_numpy(),
        3: (pose * 100 + cands["expr_cluster"].to_numpy()) * 100 + cands["light_cluster"].to_numpy(),
    }
    level = np.full(n, 99, np.int64)
    within = np.zeros(n, np.float64)  # order inside a level
    # Faces a person kept in review come first, always, and the levels build on what they cover.
    taken = cands["kept"].to_numpy(bool, copy=True) if "kept" in cands else np.zeros(n, bool)
    level[taken] = 0
    budget = max(budget, int(taken.sum()))
    covered = (cands["occluded"].to_numpy(object) != "") if "occluded" in cands else np.zeros(n, bool)
    # Eyes closed and mouth open are what sets most lack (a blink is 2-4% of a clip): the best uncovered face of
    # each eye/mouth state the footage has is taken before any pose bin, never deferred as a near repeat.
    state_pick = np.zeros(n, bool)
    if "state" in cands:
        state = cands["state"].to_numpy()
        # Among a state's faces, one in the pose bin with the fewest candidates (best quality inside it): that
        # bin would take a place of its own anyway, so at a small budget the state costs no pose bin.
        _, bin_inverse, bin_counts = np.unique(pose, return_inverse=True, return_counts=True)
        rarest_first = by_quality[np.argsort(bin_counts[bin_inverse][by_quality], kind="stable")]
        free = rarest_first[~taken[rarest_first] & ~covered[rarest_first]]
        _, first = np.unique(state[free], return_index=True)
        best = free[first]
        best = best[~np.isin(state[best], state[taken])]
        # the commonest state (open eyes, closed mouth) needs no place of its own: pose bins will give it faces
        common = np.bincount(state).argmax()
        best = best[state[best] != common]
        state_pick[best] = True
        taken[best] = True
        level[best] = 0
    pose_order = _pose_order(cands)
    for lvl in (1, 2, 3):
        key = keys[lvl]
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        # Each cell that holds no taken face yet gives its best face (the first in quality order).
        free = by_quality[~taken[by_quality] & ~covered[by_quality]]
        _, first = np.unique(key[free], return_index=True)
        best = free[first]
        best = best[~np.isin(key[best], key[taken])]
        taken[best] = True
        level[best] = lvl
        if lvl == 1:
            within[best] = pd.Series(pose[best]).map(pose_order).fillna(0).to_numpy()
        else:
            within[best] = counts[inverse[best]]  # rarest cells first
    # Round-robin fill: quality rank inside the L3 cell, rarest cells first at each rank.
    rest = ~taken
    rank = pd.Series(-cands["quality"].to_numpy()).groupby(keys[3]).rank(method="first").to_numpy()
    level[rest] = 10 + rank[rest].astype(np.int64)
    _, inverse3, counts3 = np.unique(keys[3], return_inverse=True, return_counts=True)
    within[rest] = counts3[inverse3[rest]]
    # Covered faces come after every uncovered one: used only when the budget cannot be met otherwise.
    level[rest & covered] += 1_000_000
    order = _lazy_order(level, within, face_ids, seed)
    chosen = np.zeros(n, bool)
    chosen[_take_spread(order, cands, budget, level, emb=emb, same_picture=same_picture)] = True
    labels = ["over budget", *SELECTED_LABELS.values()]
    codes = np.where(chosen & (level < 10), np.minimum(level, 3) + 1, 0)
    ranked = np.flatnonzero(chosen & (level >= 10))
    if len(ranked):
        ranks, where = np.unique(rank[ranked].astype(np.int64), return_inverse=True)
        codes[ranked] = len(labels) + where
        labels += [f"selected: quality rank {r} in its pose x expression x lighting cell" for r in ranks.tolist()]
    for cell in np.unique(cands["state"].to_numpy()[chosen & state_pick]).tolist() if "state" in cands else []:
        at = chosen & state_pick & (cands["state"].to_numpy() == cell)
        codes[at] = len(labels)
        labels.append(f"selected: best face with {STATE_NAMES[cell]}")
    # Covered faces say so: ranked last, the region named.
    if covered.any():
        region = cands["occluded"].to_numpy(object)
        for name in np.unique(region[covered]).tolist():
            out = covered & (region == name) & ~chosen
            codes[out] = len(labels)
            labels.append(f"occluded ({name}): ranked last, over budget")
            sel = covered & (region == name) & chosen
            for code in np.unique(codes[sel]).tolist():
                at = sel & (codes == code)
                codes[at] = len(labels)
                labels.append(f"{labels[code]} (occluded: {name})")
    return chosen, codes, labels


def _take_spread(order, cands: pd.DataFrame, budget: int, level: np.ndarray,
                 emb: np.ndarray | None = None, gap_s: float = MIN_GAP_S,
                 same_picture: float = DEFAULT.same_picture) -> np.ndarray:
    """Take `order` (an iterable of indices) up to the budget, deferring faces that would nearly repeat one
    already taken.

    Two kinds of repeat survive dedupe, because the descriptors differ a little
    while the picture does not:
    - a face within `gap_s` of one taken from its track (bench/curate.py: 10-15%
      of faces 0.5 s apart are near-identical to the recogniser, 0.4% of faces
      2 s apart);
    - a face the recogniser sees as the same picture as a taken one: identity
      embeddings at cosine >= `same_picture` and yaw and pitch within
      SAME_PICTURE_DEG (looped footage, a re-used shot, a speaker who returns
      to one pose). Faces of one person are usually far less similar than that
      (median 0.78 within a clip, 2 s or more apart, with the shared recogniser).
    Deferred faces are used only when the budget cannot be met otherwise.
    Faces kept in review (level 0) are never deferred; each pose bin's best
    (level 1) is not deferred for time, since a turning head crosses bins
    within a second.
    """
    if budget >= len(cands):
        return np.arange(len(cands))
    track = cands["track_id"].to_numpy() if "track_id" in cands else np.arange(len(cands))
    time_s = cands["time_s"].to_numpy(float) if "time_s" in cands else np.full(len(cands), np.nan)
    yaw, pitch = cands["yaw"].to_numpy(float), cands["pitch"].to_numpy(float)
    rows = cands["row"].to_numpy() if "row" in cands else np.arange(len(cands))
    # Taken faces by coarse pose cell: with cells at least SAME_PICTURE_DEG wide, a face within
    # SAME_PICTURE_DEG lies in its own or a neighbouring cell. (A face without a pose, NaN, gets a cell of
    # its own far from every real one; it never matches anyway.)
    side = 2 * SAME_PICTURE_DEG
    cell = np.nan_to_num(np.stack([np.floor(yaw / side), np.floor(pitch / side)], 1), nan=1e6).astype(np.int64)
    by_cell: dict = {}
    taken_times: dict = {}
    out: list = []
    # The embeddings of taken faces, read once each (a memory map is read row by row otherwise).
    taken_emb = np.zeros((budget, emb.shape[1] if emb is not None else 0), np.float32)
    slot: dict = {}
    # Three passes over what is left, each with fewer rules: both, then only the same-picture rule (a
    # face near in time still differs more than the same picture does), then none.
    for use_time, use_emb in ((True, True), (False, True), (False, False)):
        deferred = []
        for i in order:
            if (use_time and level[i] > 1 and any(abs(time_s[i] - t) < gap_s for t in taken_times.get(track[i], ()))) \
                    or (use_emb and level[i] > 0 and emb is not None
                        and _same_picture(i, emb, rows, yaw, pitch, cell, by_cell, same_picture, taken_emb, slot)):
                deferred.append(i)
                continue
            taken_times.setdefault(track[i], []).append(time_s[i])
            by_cell.setdefault((cell[i, 0], cell[i, 1]), []).append(i)
            if emb is not None:
                slot[i] = len(out)
                taken_emb[len(out)] = emb[rows[i]]
            out.append(i)
            if len(out) == budget:
                return np.array(out)
        order = deferred
    return np.array(out, dtype=np.int64)


def _same_picture(i, emb, rows, yaw, pitch, cell, by_cell, cos, taken_emb, slot) -> bool:
    near = [j for dy in (-1, 0, 1) for dp in (-1, 0, 1) for j in by_cell.get((cell[i, 0] + dy, cell[i, 1] + dp), ())]
    if not near:
        return False
    near = np.array(near)
    near = near[(np.abs(yaw[near] - yaw[i]) < SAME_PICTURE_DEG) & (np.abs(pitch[near] - pitch[i]) < SAME_PICTURE_DEG)]
    if not len(near):
        return False
    e = np.asarray(emb[rows[i]], np.float32)
    return bool((taken_emb[[slot[j] for j in near.tolist()]] @ e >= cos).any())


def _pose_order(cands: pd.DataFrame) -> dict:
    """Pose bins in farthest-first order from the most common one, so a small budget spreads over angles."""
    bins = cands["pose_bin"].value_counts()
    centres = {b: np.array(metrics.pose_bin_centre(b)) for b in bins.index}
    order, rest = [bins.index[0]], list(bins.index[1:])
    dist = {b: np.linalg.norm(centres[b] - centres[order[0]]) for b in rest}
    while rest:
        nxt = max(rest, key=lambda b: (dist[b], -rest.index(b)))
        rest.remove(nxt)
        order.append(nxt)
        for b in rest:
            dist[b] = min(dist[b], np.linalg.norm(centres[b] - centres[nxt]))
    return {b: i for i, b in enumerate(order)}


# The columns `curate` reads (besides what review and verify may have added); `curator.api.curate` reads
# only these, and the appearance vectors shard by shard.
COLUMNS = ["face_id", "source_sha256", "frame", "time_s", "face_px", "sharpness", "det_score", "yaw", "pitch", "roll",
           *metrics.EXPRESSION_COLUMNS, *LIGHT_UNITS, "track_id", "is_target"]
OPTIONAL_COLUMNS = ["rejected", "kept", "crop_missing", *STATE_COLUMNS]


def curate(table: pd.DataFrame, budget: int, *, seed: int = 0, min_face_px: float = MIN_FACE_PX,
           emb: np.ndarray | None = None, same_picture: float = DEFAULT.same_picture, appearance=None,
           workers: int = 1, max_occlusion: float | None = None, for_target=None) -> CurateResult:
    """Dedupe and select on a face table that has identify's columns. Pure: reads nothing, writes nothing.

    `emb`: the identity embeddings aligned with the table's rows (a memory map
    is fine: only the rows compared are read); without them, selection cannot
    tell faces the recogniser sees as the same picture. `same_picture`: the
    cosine at which that recogniser sees two faces as one picture
    (curator.recognisers; `curator.api.curate` passes the workspace's).
    `appearance`: the 8x8 appearance vectors by row (`appearance[rows]` gives
    a [len(rows), 64] array), when the table does not carry the column; read
    a source at a time. `workers`: processes for the per-source groups (same
    result for any number). `max_occlusion`: faces whose `occlusion` is above
    it are not candidates (reason names the region); without it, covered
    faces are candidates ranked last. `for_target`: a curator.target.ForTarget
    (`--for`, handed in by the caller: curate sits below it): selection takes
    the target's needs first, with at most its share of the budget, and the
    summary says what they still lack.
    """
    if not len(table):
        raise WorkspaceError("the workspace has no faces")
    if "is_target" not in table:
        raise WorkspaceError("no target identity chosen yet: run `curator identify` first")
    t = table.reset_index(drop=True)
    n = len(t)
    quality = quality_score(t)
    rejected = _flag(t, "rejected")
    # Set by `curator verify --repair`: a face whose crop is gone has nothing to train on.
    gone = _flag(t, "crop_missing")
    # Set by `curator review`: a person's "keep" overrides identity and size (never a rejection).
    kept = _flag(t, "kept") & ~rejected & ~gone
    target = t["is_target"].fillna(False).to_numpy(bool)
    big = t["face_px"].to_numpy(float) >= min_face_px
    region = occluded_region(t)
    over = (np.nan_to_num(t["occlusion"].to_numpy(float), nan=0.0) > max_occlusion) \
        if max_occlusion is not None and "occlusion" in t else np.zeros(n, bool)
    pool = (target & ~rejected & ~gone & big & ~over) | kept

    # Reasons as codes into LABELS (and labels made per group below): ten million rows share a few strings.
    labels = ["", "not the target identity", "rejected in review", "crop file missing",
              f"face too small (< {min_face_px:g} px)"]
    reason = np.select([~target, rejected, gone, ~big], [1, 2, 3, 4], 0).astype(np.int64)
    for name in np.unique(region[over & (reason == 0)]).tolist():
        at = over & (reason == 0) & (region == name)
        reason[at] = len(labels)
        labels.append(f"occluded ({name or 'face'}): occlusion over --max-occlusion {max_occlusion:g}")
    idx = np.flatnonzero(pool)
    if not len(idx):
        raise WorkspaceError("no faces of the target identity to curate (see `curator identities`)")
    sub = t[[c for c in COLUMNS if c in t]].iloc[idx]
    track = sub["track_id"].to_numpy() if "track_id" in sub else np.arange(len(sub))
    source = pd.factorize(sub["source_sha256"])[0] if "source_sha256" in sub else np.zeros(len(sub), np.int64)
    # Kept faces lead their groups (a group's leader is its best-quality face).
    lead = groups_by_source(dedupe_features(sub), appearance if appearance is not None else _AppearanceRows(t),
                            quality[idx] + 1e6 * kept[idx], track, sub["frame"].to_numpy(), source, idx, workers)
    is_leader = lead == np.arange(len(idx))
    leaders = idx[is_leader]
    # dup_group: the leader's face_id, as a code into the leaders (-1, null: not a candidate).
    group_code = np.full(n, -1, np.int64)
    group_code[idx] = np.searchsorted(leaders, idx[lead])
    face_ids = t["face_id"]
    leader_ids = pd.Index(face_ids.iloc[leaders].to_numpy())
    members = np.flatnonzero(~is_leader)
    led = np.unique(group_code[idx[members]])  # leaders with members: one "near-duplicate of" label each
    dup_label = np.full(len(leaders), -1, np.int64)
    dup_label[led] = len(labels) + np.arange(len(led))
    labels += ("near-duplicate of " + pd.Series(leader_ids[led])).tolist()
    reason[idx[members]] = dup_label[group_code[idx[members]]]

    # Clusters are defined over the whole pool, so cell membership does not depend on dedupe.
    light_edges = metrics.tertile_edges(sub, metrics.LIGHT_COLUMNS)
    pose_bin = np.full(n, -1)
    pose_bin[idx] = metrics.pose_bins(sub).to_numpy()
    expr = np.full(n, -1)
    states_sub = t.iloc[idx]
    expr[idx] = metrics.expression_cells(states_sub, states_sub).to_numpy()
    light = np.full(n, -1)
    light[idx] = metrics.tertile_cells(sub, light_edges).to_numpy()

    cands = pd.DataFrame({"face_id": leader_ids.to_numpy(), "quality": quality[leaders],
                          "pose_bin": pose_bin[leaders], "expr_cluster": expr[leaders], "light_cluster": light[leaders],
                          "track_id": t["track_id"].to_numpy()[leaders] if "track_id" in t else leaders,
                          "time_s": t["time_s"].to_numpy()[leaders],
                          "yaw": t["yaw"].to_numpy(float)[leaders], "pitch": t["pitch"].to_numpy(float)[leaders],
                          "row": leaders, "kept": kept[leaders],
                          "state": (metrics.state_cells(t.iloc[leaders]).to_numpy() if metrics.has_states(t)
                                    else np.zeros(len(leaders), np.int64)),
                          "occluded": region[leaders]})
    if emb is not None and len(emb) != n:
        raise WorkspaceError(f"{len(emb)} embeddings for {n} faces")
    if for_target is None:
        chosen, codes, select_labels = select_codes(cands, budget, seed, emb, same_picture)
    else:
        picked = for_target.select(cands, t.iloc[leaders], budget, seed=seed, emb=emb, same_picture=same_picture,
                                   expression=for_target.methods_match(t))
        chosen, codes, select_labels = picked.chosen, picked.codes, picked.labels
    del cands
    selected = np.zeros(n, bool)
    selected[leaders] = chosen
    reason[leaders] = len(labels) + codes
    labels += select_labels
    extra = np.flatnonzero(kept & ~selected)  # a kept face inside another kept face's group
    selected[extra] = True
    for j in extra:
        reason[j] = len(labels)
        labels.append(f"selected: kept in review (near-duplicate of {leader_ids[group_code[j]]})")

    columns = pd.DataFrame({
        "face_id": face_ids, "quality": quality.astype(np.float32),
        "dup_group": pd.Categorical.from_codes(group_code, categories=leader_ids),
        "pose_cluster": _pose_clusters(t), "expr_cluster": expr, "light_cluster": light,
        "selected": selected, "reason": _categorical(reason, labels),
        "for_target": np.zeros(n, bool), "target_faces": np.zeros(n, np.int32),
    })
    ref = t.iloc[idx][[c for c in ("yaw", "pitch", *metrics.EXPRESSION_COLUMNS, "eyes_closed", *metrics.LIGHT_COLUMNS)
                       if c in t]]
    summary = {
        "faces": n, "target_faces": int(target.sum()), "rejected": int(rejected.sum()),
        "too_small": int((target & ~rejected & ~big).sum()), "kept": int(kept.sum()), "candidates": len(idx),
        "near_duplicate_groups": int(is_leader.sum()), "near_duplicates_removed": int((~is_leader).sum()),
        "budget": int(budget), "selected": int(selected.sum()), "over_max_occlusion": int(over.sum()),
        "occluded_candidates": int((region[idx] != "").sum()),
        "coverage_before": metrics.coverage(ref, ref),
        "coverage_after": metrics.coverage(t.loc[selected, ref.columns], ref),
    }
    if budget > is_leader.sum():
        summary["note"] = f"budget {budget} is more than the {int(is_leader.sum())} distinct target faces; all are selected"
    if for_target is not None:  # which faces serve the target, and what it still lacks
        columns.loc[leaders[picked.for_target], "for_target"] = True
        columns.loc[selected, "target_faces"] = for_target.serving(t[selected], picked.tol)[0].astype(np.int32)
        summary["for_target"] = {
            "share": for_target.share, "places": picked.places,
            "selected_for_target": int(picked.for_target.sum()), "picks": picked.picks, "tolerance": picked.tol,
            **for_target.coverage_report({"with_for": t[selected], "without_for": t.iloc[leaders[picked.before]],
                                          "all_candidates": t.iloc[leaders]}, picked.tol, main="with_for")}
    return CurateResult(columns, summary)


def occluded_region(table: pd.DataFrame) -> np.ndarray:
    """Per face, the region that is more likely covered than not ("mouth region", "eye region", both joined by
    " and "), or "" (also for workspaces without the state columns)."""
    out = np.full(len(table), "", dtype=object)
    for column, name in REGION_NAMES.items():
        if column in table:
            hit = np.nan_to_num(table[column].to_numpy(float), nan=0.0) >= OCCLUDED_AT
            out[hit] = np.where(out[hit] == "", name, out[hit] + " and " + name)
    return out


def _flag(table: pd.DataFrame, column: str) -> np.ndarray:
    return table[column].fillna(False).to_numpy(bool) if column in table else np.zeros(len(table), bool)


def _categorical(codes: np.ndarray, labels: list[str]) -> pd.Categorical:
    """Strings as codes into labels; labels may repeat (two reasons can read alike), codes are remapped."""
    inverse, uniq = pd.factorize(pd.Index(labels, dtype=object))
    return pd.Categorical.from_codes(inverse[codes], categories=pd.Index(uniq, dtype=object))


def _pose_clusters(table: pd.DataFrame) -> pd.Categorical:
    """metrics.pose_labels as a categorical: one label per distinct bin, a code per row."""
    codes = metrics.pose_bins(table).to_numpy()
    bins, inverse = np.unique(codes, return_inverse=True)
    names = [metrics.pose_label(*metrics.pose_bin_centre(c)) if c >= 0 else "unknown" for c in bins.tolist()]
    return _categorical(inverse, names)


def budget_from(budget: int | None, minutes: float | None, fps: float) -> int:
    if (budget is None) == (minutes is None):
        raise UsageError("give exactly one of --budget or --minutes")
    return int(budget) if budget is not None else int(round(minutes * 60 * fps))
