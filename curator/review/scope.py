"""Which faces go into the review dataset: `curator review --faces SCOPE` (docs/review.md, "Which faces").

A thousand hours of footage is some ten million faces; the App, its
embeddings panel and a person reviewing need a few tens of thousands, the
ones that decide the training set. The scopes:

- `selected`: the faces curate selected;
- `context`: the selection and what a reviewer judges it against: the best
  other members of each selected face's near-duplicate group (the frames it
  was chosen over), the best target faces left out in the pose bins the
  selection covers thinly (what could be kept instead), and the faces whose
  identity is in doubt (not the target by their track, yet scoring like it);
- `target`: every face of the target identity;
- `all`: every face;
- `auto` (the default): every face when the table has at most LIMIT rows;
  above that `context` once curate has run, else `target` once identify has,
  else `all`, cut to LIMIT faces spread evenly over the table with a note
  saying how to ask for more.

Faces tagged `keep` or `reject` (in the table or in the dataset) are in every
scope. Everything here is vectorised over the few columns `read_faces` reads:
at 10 million rows it is a few seconds of numpy, no Python loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..measure import metrics
from ..workspace import Workspace, read_columns, table_columns
from .db import ReviewError

SCOPES = ("auto", "selected", "context", "target", "all")
DEFAULT_SCOPE = "auto"
# The most faces `auto` puts into the dataset. What it costs (docs/review.md, bench/review.py): the first
# sync of this many faces stays well under a minute on 2 cores, and the App's embeddings panel draws
# this many points and still pans, zooms and lassos at once (FiftyOne draws every point of a map).
LIMIT = 50_000
NEAR_DUPLICATES = 2           # other members shown per selected face's near-duplicate group, best quality first
ALTERNATIVES_PER_BIN = 10     # left-out target faces shown per thinly covered pose bin, best quality first
DOUBTFUL_MAX = 2_000          # faces whose identity is in doubt, highest identity score first

# Columns the scopes, the derived fields and the saved views need for every row; the rest of a face's
# columns are read only for the faces in the dataset.
CHOICE_COLUMNS = ("face_id", "dup_group", "selected", "is_target", "identity_score", "quality", "sharpness",
                  "face_px", "yaw", "pitch", "rejected", "kept", "crop_missing")
NUMERIC = ("identity_score", "quality", "sharpness", "face_px", "yaw", "pitch")
FLAGS = ("selected", "is_target", "rejected", "kept", "crop_missing")


@dataclass
class Faces:
    """The choice columns of every row: `raw` as read (Arrow), numbers as float arrays (NaN = null), flags as
    bool (null = False), ids and near-duplicate groups as Arrow strings (hashed, never turned into Python)."""
    n: int
    columns: set[str]          # every column the table has (not only these)
    raw: pa.Table              # the choice columns as read, nulls and all
    face_id: pa.ChunkedArray
    dup_group: pa.ChunkedArray | None  # the group leader's face_id; None before curate
    leader: np.ndarray         # the row leads its group (dup_group == face_id)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    _bins: np.ndarray | None = None

    def flag(self, name: str) -> np.ndarray:
        return self.values.get(name, np.zeros(self.n, bool))

    def number(self, name: str) -> np.ndarray:
        return self.values.get(name, np.full(self.n, np.nan))

    @property
    def bins(self) -> np.ndarray:
        """Each row's 10° yaw x pitch bin code (metrics.pose_bins; -1: no pose), computed once."""
        if self._bins is None:
            self._bins = metrics.pose_bins(pd.DataFrame({"yaw": self.number("yaw"),
                                                         "pitch": self.number("pitch")})).to_numpy()
        return self._bins

    @property
    def curated(self) -> bool:
        return "selected" in self.columns

    @property
    def identified(self) -> bool:
        return "is_target" in self.columns

    def frame(self) -> pd.DataFrame:
        """The numbers and flags as a DataFrame (no strings: cheap at 10M rows); `dup_group` as 'has a group'."""
        out = {k: v for k, v in self.values.items()}
        if self.dup_group is not None:
            out["dup_group"] = _flags(pc.is_valid(self.dup_group))
        return pd.DataFrame(out, index=pd.RangeIndex(self.n))

    def group_sizes(self, rows: np.ndarray) -> np.ndarray:
        """Members of each of these rows' near-duplicate groups, over the whole table (NaN: no group)."""
        out = np.full(len(rows), np.nan)
        if self.dup_group is None or not len(rows):
            return out
        mine = self.dup_group.take(pa.array(rows))
        groups = pc.unique(mine.drop_null())
        if not len(groups):
            return out
        members = self.dup_group.filter(pc.is_in(self.dup_group, value_set=groups))  # a few rows of 10 million
        counts = pc.value_counts(members)
        size = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
        return np.array([size.get(g, np.nan) if g is not None else np.nan for g in mine.to_pylist()], float)


@dataclass
class Scope:
    asked: str
    used: str
    rows: np.ndarray                   # sorted row numbers of the faces that belong in the dataset
    parts: dict[str, int]              # how many faces each part brought (a face counts in its first part)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"asked": self.asked, "used": self.used, "faces": int(len(self.rows)), "parts": self.parts}


def read_faces(ws: Workspace) -> Faces:
    """The choice columns of the whole table: a few columns, each column group file read once."""
    have = table_columns(ws)
    t = read_columns(ws, [c for c in CHOICE_COLUMNS if c in have])
    n = t.num_rows
    face_id = t.column("face_id").cast(pa.large_string())
    values: dict[str, np.ndarray] = {}
    for c in NUMERIC:
        if c in t.column_names:
            values[c] = _floats(t.column(c))
    for c in FLAGS:
        if c in t.column_names:
            values[c] = _flags(t.column(c))
    dup_group, leader = None, np.zeros(n, bool)
    if "dup_group" in t.column_names:
        dup_group = t.column("dup_group").cast(pa.large_string())
        leader = _flags(pc.equal(dup_group, face_id))
    return Faces(n, set(have), t, face_id, dup_group, leader, values)


def _floats(col) -> np.ndarray:
    if pa.types.is_null(col.type):
        return np.full(len(col), np.nan)
    return np.asarray(pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy(), np.float64)


def _flags(col) -> np.ndarray:
    if pa.types.is_null(col.type):
        return np.zeros(len(col), bool)
    return np.asarray(pc.fill_null(col.cast(pa.bool_()), False).to_numpy(), bool)


def check_scope(faces: str) -> str:
    if faces not in SCOPES:
        raise ReviewError(f"--faces must be one of {', '.join(SCOPES)}, not {faces!r}")
    return faces


def resolve(asked: str, n: int, columns, ws_root: str = "WS") -> str:
    """The scope `asked` stands for on a table of n rows with these columns; refuses one the table cannot give."""
    check_scope(asked)
    curated, identified = "selected" in columns, "is_target" in columns
    used = asked
    if asked == "auto":
        used = "all" if n <= LIMIT else "context" if curated else "target" if identified else "all"
    if used in ("selected", "context") and not curated:
        raise ReviewError(f"--faces {used} needs the selection: run `curator curate -w {ws_root}` first "
                          "(or use --faces target or --faces all)")
    if used == "target" and not identified:
        raise ReviewError(f"--faces target needs the target identity: run `curator identify -w {ws_root}` "
                          "(or `curator curate`) first, or use --faces all")
    return used


def choose(f: Faces, asked: str, pinned: np.ndarray, *, same_person: float, ws_root: str = "WS") -> Scope:
    """The rows of the faces that belong in the dataset for scope `asked`; `pinned` rows (keep / reject) always."""
    used = resolve(asked, f.n, f.columns, ws_root)
    parts: list[tuple[str, np.ndarray]] = []  # (name, rows in the order they are worth keeping)
    if used == "all":
        parts.append(("all", np.arange(f.n)))
    elif used == "target":
        parts.append(("target", np.flatnonzero(f.flag("is_target"))))
    else:
        parts.append(("selected", np.flatnonzero(f.flag("selected"))))
        if used == "context":
            parts += [("near_duplicates", near_duplicates(f)), ("alternatives", alternatives(f)),
                      ("doubtful", doubtful(f, same_person))]
    taken = np.zeros(f.n, bool)
    counts: dict[str, int] = {}
    notes: list[str] = []
    # Only `auto` is cut to LIMIT (never the selection, never a face tagged keep or reject, which count
    # against it first); a scope asked for by name is given whole.
    room = LIMIT - int(pinned.sum()) if asked == "auto" and f.n > LIMIT else None
    for name, rows in parts:
        rows = rows[~taken[rows]]
        if room is not None and name != "selected":
            free = rows[~pinned[rows]]
            if len(free) > max(room, 0):
                keep = _spread(free, max(room, 0)) if name in ("all", "target") else free[:max(room, 0)]
                notes.append(_cut_note(name, used, len(free) - len(keep), ws_root))
                rows = np.union1d(keep, rows[pinned[rows]])
        taken[rows] = True
        counts[name] = int(len(rows))
        if room is not None:
            room -= int((~pinned[rows]).sum())
    if room is not None and room < 0:
        notes.append(f"the selection alone has {counts.get('selected', 0)} faces, more than the {LIMIT} a review "
                     "shows by default; all of them are in it")
    counts["pinned"] = int((pinned & ~taken).sum())  # tagged keep or reject, in no part of the scope
    taken |= pinned
    return Scope(asked, used, np.flatnonzero(taken), counts, notes)


def _spread(rows: np.ndarray, k: int) -> np.ndarray:
    """k of these rows, evenly spaced (the table is in footage order, so every source keeps its share)."""
    if k <= 0:
        return rows[:0]
    return rows[np.unique(np.linspace(0, len(rows) - 1, k).round().astype(np.int64))]


def _cut_note(part: str, used: str, left: int, ws_root: str) -> str:
    if part in ("all", "target"):
        return (f"the review shows {LIMIT} of the {'' if part == 'all' else 'target '}faces, spread evenly over "
                f"the footage ({left} left out to keep the App quick); `curator review -w {ws_root} --faces "
                f"{part}` shows every one, or curate first for a review of the selection in its context")
    return (f"{left} {part.replace('_', ' ')} faces left out to keep the review at {LIMIT} faces; "
            f"`curator review -w {ws_root} --faces {used}` shows them all")


def near_duplicates(f: Faces) -> np.ndarray:
    """Up to NEAR_DUPLICATES other members of each selected face's group, best quality first: what it was chosen over."""
    if f.dup_group is None:
        return np.zeros(0, np.int64)
    sel = f.flag("selected")
    groups = pc.unique(f.dup_group.filter(pa.array(sel)).drop_null())
    members = np.flatnonzero(_flags(pc.is_in(f.dup_group, value_set=groups)) & ~sel)  # hashed, not sorted
    key = f.dup_group.take(pa.array(members)).combine_chunks().dictionary_encode().indices.to_numpy()
    return _best_per(members, key, f.number("quality")[members], NEAR_DUPLICATES)


def alternatives(f: Faces) -> np.ndarray:
    """The best target faces curate could have selected but left out, in the pose bins the selection covers thinly.

    A bin is thin as `curator audit` says (fewer than max(3, 0.5%) of the
    selected faces), counted over the selection; candidates are what curate
    selects from (group leaders of the target, not rejected, big enough).
    """
    sel = f.flag("selected")
    bins = f.bins
    few = metrics.thin_bin_faces(int(sel.sum()))
    candidate = (f.flag("is_target") & f.leader & ~sel & ~f.flag("rejected") & ~f.flag("crop_missing")
                 & (f.number("face_px") >= metrics.MIN_FACE_PX) & (bins >= 0))
    have = np.bincount(bins[sel & (bins >= 0)], minlength=int(bins.max()) + 1 if len(bins) else 0)
    rows = np.flatnonzero(candidate)
    rows = rows[have[bins[rows]] < few]
    return _best_per(rows, bins[rows], f.number("quality")[rows], ALTERNATIVES_PER_BIN)


def doubtful(f: Faces, same_person: float) -> np.ndarray:
    """Faces their track calls not the target though they score like it, highest score first (misses or look-alikes)."""
    score = f.number("identity_score")
    rows = np.flatnonzero(~f.flag("is_target") & (score >= same_person))
    return rows[np.argsort(-score[rows], kind="stable")][:DOUBTFUL_MAX]


def _best_per(rows: np.ndarray, key: np.ndarray, quality: np.ndarray, k: int) -> np.ndarray:
    """The k best-quality rows of each key, all the firsts before the seconds (so a cut keeps one per key first).

    One float sort and a running count per key (pandas' cumcount): at 10M rows
    a few million candidates, where a two-key lexsort took seconds.
    """
    if not len(rows):
        return rows
    q = np.where(np.isfinite(quality), quality, -np.inf)
    order = np.argsort(-q, kind="stable")
    rank = pd.Series(key[order]).groupby(key[order], sort=False).cumcount().to_numpy()
    keep = order[rank < k]
    rank = rank[rank < k]
    return rows[keep[np.lexsort((-q[keep], rank))]]
