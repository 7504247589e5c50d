"""Eye, mouth and covered-face states: on a real clip whose blinks were labelled by hand, through curate.

tests/data/states_labels.csv holds hand labels of every frame of
liveportrait/driving_d5 (a man who blinks 3 times in 148 frames: 2%) and two
other clips (bench/states.py measures the states on all of them).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import TESTDATA, clip, curator, curator_json
from curator.workspace import open_workspace, read_table

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

LABELS = pd.read_csv(__import__("pathlib").Path(__file__).parent / "data" / "states_labels.csv", comment="#")
BLINK_CLIP = "liveportrait/driving_d5"


@pytest.fixture(scope="module")
def blinks(tmp_path_factory):
    """The clip extracted with the default settings (every frame due), identified, its labels by frame."""
    ws = tmp_path_factory.mktemp("states") / "ws"
    curator("extract", clip(f"{BLINK_CLIP}.mp4"), "-w", ws, "--fps", "30", "-q", check=True)
    curator("identify", "-w", ws, check=True)
    labels = LABELS[LABELS["clip"] == BLINK_CLIP].set_index("frame")
    return ws, read_table(open_workspace(ws)), labels


def test_default_extract_has_the_states(blinks):
    ws, table, labels = blinks
    meta = json.loads((ws / "workspace.json").read_text())
    assert meta["settings"]["landmarks"] == "dlib"  # pack-small has no 3D-68 model: auto uses dlib's
    for column in ("eyes_closed", "eye_left_open", "eye_right_open", "mouth_open", "teeth", "smile", "occlusion",
                   "occluded_eyes", "occluded_mouth"):
        v = table[column].to_numpy(float)
        assert np.isfinite(v).all() and (v >= 0).all() and (v <= 1).all(), column
    assert set(table["states_method"]) == {"lmk68"}
    # against the hand labels: the closed-eye frames are called closed; most open ones open (this man's
    # squinting laugh, frames 108-123, has eyelids as near as dlib places a blink's: 14% of his open frames)
    t = table.set_index("frame").join(labels, how="inner")
    closed, open_ = t[t["eyes"] == "C"]["eyes_closed"], t[t["eyes"] == "O"]["eyes_closed"]
    assert len(closed) >= 2 and (closed > 0.5).all() and (open_ < 0.5).mean() > 0.8
    assert (open_ < closed.min()).mean() > 0.95
    mouth_open, mouth_closed = t[t["mouth"] == "O"]["mouth_open"], t[t["mouth"] == "C"]["mouth_open"]
    assert (mouth_open > 0.5).mean() > 0.9 and (mouth_closed < 0.5).mean() > 0.9
    assert (t["occluded_mouth"] < 0.5).all()  # nothing covers this face


def test_a_small_set_keeps_the_blink(blinks, tmp_path):
    """10 of the clip's faces (it has 22 distinct ones): at least one with the eyes closed (2% of the frames), its
    reason says why."""
    ws, table, labels = blinks
    summary = curator_json("curate", "-w", ws, "--budget", "10")
    assert summary["selected"] == 10
    t = read_table(open_workspace(ws)).set_index("frame").join(labels, how="left")
    chosen = t[t["selected"]]
    assert (chosen["eyes"] == "C").any(), chosen[["eyes", "eyes_closed", "reason"]]
    assert chosen["reason"].astype(str).str.contains("eyes closed").any()
    assert (chosen["mouth"] == "O").any()
    # a blink is another picture: no closed-eye face is a near-duplicate of an open-eye one
    lead = t.reset_index().set_index("face_id")
    for _, row in t[t["eyes"] == "C"].iterrows():
        if isinstance(row["dup_group"], str):
            assert lead.loc[row["dup_group"], "eyes_closed"] > 0.5


def test_max_occlusion_filters_and_names_the_region(blinks, tmp_path):
    """A face covered in the mouth region (its occluded_mouth set as a masked face scores) is ranked last without
    the option and left out with it, the reason naming the region."""
    import shutil

    from curator.workspace import update_columns

    ws, table, _ = blinks
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy)
    w = open_workspace(copy)
    t = read_table(w)
    covered = t["face_id"].iloc[:20]
    occluded = np.where(t["face_id"].isin(covered), 0.97, t["occluded_mouth"].to_numpy(float))
    update_columns(w, pd.DataFrame({"face_id": t["face_id"], "occluded_mouth": occluded,
                                    "occlusion": 0.45 * occluded}))
    curator_json("curate", "-w", copy, "--budget", "5")
    t = read_table(open_workspace(copy))
    c = t[t["face_id"].isin(covered)]
    assert not c["selected"].any()
    leaders = c[c["dup_group"].astype(str) == c["face_id"]]  # the others are near-duplicates of a leader
    assert len(leaders) and leaders["reason"].astype(str).str.contains(r"occluded \(mouth region\)").all()
    summary = curator_json("curate", "-w", copy, "--budget", "200", "--max-occlusion", "0.3")
    t = read_table(open_workspace(copy))
    c = t[t["face_id"].isin(covered)]
    assert not c["selected"].any() and summary["over_max_occlusion"] == 20
    assert c["reason"].astype(str).str.contains("over --max-occlusion 0.3").all()


@pytest.mark.pure
def test_a_face_at_the_crop_edge_has_unknown_states_and_no_warning():
    import warnings

    from curator.measure import states

    crop = np.full((128, 128, 3), 128, np.uint8)
    inside = np.array([[44, 52], [84, 52], [64, 72], [48, 94], [80, 94]], float)
    outside = inside + [0, 400]  # every keypoint below the crop: no skin between the eyes to compare with
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" reached users' terminals
        known = states.face_states(crop, inside, None, {"eyes_open": 0.2, "mouth_open": 0.0})
        unknown = states.face_states(crop, outside, None, {"eyes_open": 0.2, "mouth_open": 0.0})
    assert np.isfinite([known["occluded_mouth"], known["occluded_eyes"], known["occlusion"]]).all()
    assert np.isnan([unknown["occluded_mouth"], unknown["occluded_eyes"], unknown["occlusion"]]).all()


def test_a_workspace_extended_after_the_states_reads_each_row_on_its_own_scale(blinks):
    """Rows extracted before the states (no states_method, no eyes_closed, mouth_open and smile on the older
    descriptor scales) next to rows with them, as in a workspace extended after this version (made here from
    the real table: the older rows' scales put in place of half of its rows): audit's words count only rows
    with states and say how many have none, their expression cells are their own, curate runs on it."""
    from curator import curate
    from curator.measure import metrics
    from curator.reports import state_words

    _, table, _ = blinks
    t = table.copy()
    old = np.arange(len(t)) < len(t) // 2  # the first half "from before": mouth_open up to 0.95 on its scale
    t["states_method"] = t["states_method"].where(~old, None)
    for c in ("eyes_closed", "occlusion", "occluded_mouth", "occluded_eyes"):
        t.loc[old, c] = np.nan
    t.loc[old, "mouth_open"] = np.linspace(0.6, 0.95, old.sum())
    assert (metrics.with_states(t) == ~old).all()
    cells = metrics.expression_cells(t, t).to_numpy()
    assert (cells[old] >= metrics.STATE_CELLS).all() and (cells[~old] < metrics.STATE_CELLS).all()
    assert (metrics.state_cells(t).to_numpy()[old] == 0).all()  # an old-scale 0.9 is not "mouth open"
    # the rows with states alone get the cells they get in a table of their own
    assert (cells[~old] == metrics.expression_cells(t[~old], t[~old]).to_numpy()).all()

    states = {s["state"]: s for s in state_words.state_summary(t)}
    assert states["states_method"]["faces"] == old.sum() and "before eye, mouth" in states["states_method"]["words"]
    wide = (t["mouth_open"].to_numpy(float)[~old] >= 0.9).sum()
    assert states["mouth_open"]["faces"] == wide and states["mouth_open"]["of"] == (~old).sum()
    open_eyes = ~old & (t["eyes_closed"].to_numpy(float) < 0.5)
    assert [m["state"] for m in state_words.missing_states(t[open_eyes], t)] == ["eyes_closed"]
    assert not state_words.missing_states(t[old], t)  # a source without states: unknown, not "has none"
    assert curate.curate(t.assign(is_target=True), 10).summary["selected"] == 10
