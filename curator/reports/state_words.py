"""Eye, mouth and covered-face states in words, for audit and compare (curator/measure/states.py measures them).

"no faces with the eyes closed", "3 of 2,000 faces with the mouth wide open",
"412 faces partly covered (mouth region)": each with a few example face ids.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..measure.metrics import with_states
from ..measure.states import CLOSED_AT, OCCLUDED_AT, REGION_NAMES

EXAMPLES = 4
# (column, at, the words for faces in that state); mouth wide open: the lips clearly apart
STATES = (("eyes_closed", CLOSED_AT, "with the eyes closed"), ("mouth_open", 0.9, "with the mouth wide open"))


def _count_words(n: int, total: int, what: str) -> str:
    if n == 0:
        return f"no faces {what}"
    return f"{n:,} of {total:,} faces {what}"


def state_summary(faces: pd.DataFrame) -> list[dict]:
    """One entry per state: {state, faces, of, words, examples}; empty for workspaces without state columns."""
    if "eyes_closed" not in faces or "states_method" not in faces:
        return []
    out = []
    known = with_states(faces)
    if not known.all():  # a workspace extended after the states came: its older rows have none
        n = int((~known).sum())
        out.append({"state": "states_method", "faces": n, "of": len(faces), "examples": faces["face_id"][~known].head(EXAMPLES).tolist(),
                    "words": f"{n:,} of {len(faces):,} faces were extracted before eye, mouth and covered-face "
                             "states: they are not counted below (extract their footage into a new workspace to measure them)"})
        faces = faces[known]
    total = len(faces)
    for column, at, what in STATES:
        hit = np.nan_to_num(faces[column].to_numpy(float), nan=0.0) >= at
        out.append({"state": column, "faces": int(hit.sum()), "of": total, "words": _count_words(int(hit.sum()), total, what),
                    "examples": _examples(faces, hit, column)})
    for column, region in REGION_NAMES.items():
        hit = np.nan_to_num(faces[column].to_numpy(float), nan=0.0) >= OCCLUDED_AT
        n = int(hit.sum())
        words = f"no faces covered in the {region}" if n == 0 else f"{n:,} faces partly covered ({region})"
        out.append({"state": column, "faces": n, "of": total, "words": words, "examples": _examples(faces, hit, column)})
    return out


def _examples(faces: pd.DataFrame, hit: np.ndarray, column: str) -> list[str]:
    sub = faces[hit]
    order = np.argsort(-sub[column].to_numpy(float), kind="stable")[:EXAMPLES]
    return sub["face_id"].iloc[order].tolist()


def missing_states(source: pd.DataFrame, target: pd.DataFrame) -> list[dict]:
    """Target faces in an eye or mouth state the source set has no face in: {state, target_faces, words}."""
    if "eyes_closed" not in target or "eyes_closed" not in source:
        return []
    target, source = target[with_states(target)], source[with_states(source)]
    if not len(source) or not len(target):  # no states measured on one side: unknown, not "none"
        return []
    out = []
    for column, at, what in ((c, CLOSED_AT if c == "eyes_closed" else 0.5, w) for c, _, w in STATES):
        t = int((np.nan_to_num(target[column].to_numpy(float), nan=0.0) >= at).sum())
        s = int((np.nan_to_num(source[column].to_numpy(float), nan=0.0) >= at).sum())
        if t and not s:
            what = what.replace(" wide", "")
            out.append({"state": column, "target_faces": t,
                        "words": f"{t:,} target faces {what}; the source set has none"})
    return out
