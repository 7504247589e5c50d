"""`--for TARGET` (issue 24): curating a face set for the video it will be drawn into, on real clips.

A is liveportrait/driving_d9 (one man, mostly frontal, nodding far up and
down), B is liveportrait/driving_d12 (another man turning his head left and
right), both extracted at 2 fps. Every curate here runs the real command
line; extraction, the slow part, happens once per module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import clip, curator, curator_json, one_line_error, save_frame, table, table_files
from curator.workspace import open_workspace, read_meta

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

ENV_TRAIN = {"OMP_NUM_THREADS": "1"}
REASON = re.compile(r"^selected for target: .*\b(\d+) target faces?\b")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def copy(ws: Path, to: Path) -> Path:
    shutil.copytree(ws, to)
    return to


def pose(faces: pd.DataFrame) -> np.ndarray:
    return faces[["yaw", "pitch"]].to_numpy(float)


def uncovered(selected: pd.DataFrame, target: pd.DataFrame, deg: float = 5.0) -> np.ndarray:
    """Target faces with no selected face within `deg` in both yaw and pitch (compare's box)."""
    d = np.abs(pose(target)[:, None, :] - pose(selected)[None, :, :]).max(axis=2)
    return d.min(axis=1) > deg + 1e-9


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("for_target")
    a, b = root / "A", root / "B"
    curator("extract", clip("driving_d9.mp4"), "-w", a, "--fps", "2", "-q", check=True)
    curator("identify", "-w", a, check=True)
    curator("extract", clip("driving_d12.mp4"), "-w", b, "--fps", "2", "-q", check=True)
    curator("identify", "-w", b, check=True)
    return a, b


@pytest.fixture(scope="module")
def curated_for(pair, tmp_path_factory) -> tuple[Path, dict, pd.DataFrame]:
    """A curated for B (a workspace), and the selection the same budget makes without --for."""
    a, b = pair
    ws = copy(a, tmp_path_factory.mktemp("curated") / "A")
    curator("curate", "-w", ws, "--budget", "10", check=True)
    plain = table(ws)
    summary = curator_json("curate", "-w", ws, "--budget", "10", "--for", b)
    return ws, summary, plain[plain["selected"]]


def test_curate_for_a_workspace_takes_the_targets_needs_first(pair, curated_for):
    a, b = pair
    ws, s, plain = curated_for
    ft = s["for_target"]
    t, target = table(ws), table(b)
    target = target[target["is_target"]]
    assert ft["target"]["workspace"] == str(b.resolve()) and ft["target"]["faces"] == len(target)
    assert ft["target"]["identity"] == "the workspace's own target (curator identify)"
    assert s["selected"] == 10 and t["selected"].sum() == 10

    # The faces taken for the target say so, and what they cover, in words and numbers.
    taken = t[t["for_target"]]
    assert len(taken) == ft["selected_for_target"] == sum(ft["picks"].values()) >= 1
    assert taken["selected"].all() and len(taken) <= ft["places"] == 5  # half the budget at most
    assert (t["reason"].astype(str).str.startswith("selected for target") == t["for_target"]).all()
    for reason in taken["reason"].astype(str):
        assert REASON.match(reason), reason
    assert ft["picks"]["pose"] >= 1 and any("looking" in r or "frontal" in r for r in taken["reason"].astype(str))

    # "without_for" is today's selection of the same budget; the target's poses come first with --for.
    chosen = t[t["selected"]]
    assert ft["uncovered_share"]["without_for"] == pytest.approx(uncovered(plain, target).mean(), abs=1e-4)
    assert ft["uncovered_share"]["with_for"] == pytest.approx(uncovered(chosen, target).mean(), abs=1e-4)
    assert ft["uncovered_share"]["with_for"] <= ft["uncovered_share"]["without_for"]
    assert ft["pose_distance_deg"]["with_for"] <= ft["pose_distance_deg"]["without_for"]
    # every target face within reach of the footage is served, by its nearest selected face: target_faces
    served = int(t["target_faces"].sum())
    assert served == len(target) - int(uncovered(chosen, target).sum())
    assert (t.loc[~t["selected"], "target_faces"] == 0).all()
    assert set(ft["gap_score"]) == {"without_for", "with_for", "all_candidates"}

    # The target is recorded (export copies it), and a curate without --for forgets it.
    (sha,) = read_meta(open_workspace(b))["sources"]
    assert read_meta(open_workspace(ws))["curated_for"]["sources"] == {
        sha: {"path": str(clip("driving_d12.mp4").resolve()), "sha256": sha, "faces": len(target)}}
    again = copy(ws, ws.parent / "again")
    curator("curate", "-w", again, "--budget", "10", check=True)
    assert "curated_for" not in read_meta(open_workspace(again))
    assert not table(again)["for_target"].any() and (table(again)["target_faces"] == 0).all()


def test_run_for_footage_extracts_the_target_beside_the_export(tmp_path):
    out = tmp_path / "faceset"
    target = clip("driving_d12.mp4")
    s = curator_json("run", clip("driving_d9.mp4"), "--out", out, "--budget", "8", "--fps", "2", "--for", target,
                     "-q")
    where = tmp_path / "faceset.for.workspace"
    assert s["curate"]["for_target"]["target"]["workspace"] == str(where)
    assert sha256(target) in read_meta(open_workspace(where))["sources"]
    provenance = json.loads((out / "provenance.json").read_text())
    assert list(provenance["curated_for"]["sources"]) == [sha256(target)]
    assert provenance["curated_for"]["sources"][sha256(target)]["sha256"] == sha256(target)
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert {"for_target", "target_faces"} <= set(manifest.columns) and manifest["for_target"].any()
    assert manifest["target_faces"].sum() > 0


def test_several_target_files_are_one_target_and_for_ref_picks_its_person(pair, tmp_path):
    a, _ = pair
    ws = copy(a, tmp_path / "A")
    where = tmp_path / "T"
    one, two = clip("Audio_Source_00104.mp4"), clip("Pose_Source_741400163.mp4")  # one man, two interviews
    s = curator_json("curate", "-w", ws, "--budget", "8", "--for", one, "--for", two, "--for-workspace", where)
    sources = s["for_target"]["target"]["sources"]
    assert set(sources) == {sha256(one), sha256(two)}
    assert s["for_target"]["target"]["faces"] == sum(v["faces"] for v in sources.values())

    # Another file of another person into the same target workspace: only the files named are the target,
    # and --for-ref chooses between the people in them.
    other = clip("face_2.mp4")
    ref = save_frame(other, 30, tmp_path / "her.png")
    s = curator_json("curate", "-w", ws, "--budget", "8", "--for", one, "--for", other, "--for-workspace", where,
                     "--for-ref", ref)
    assert set(s["for_target"]["target"]["sources"]) == {sha256(other)}
    assert s["for_target"]["target"]["identity"] == "the reference photos (--for-ref)"
    assert len(read_meta(open_workspace(where))["sources"]) == 3  # the earlier file stays, not in the target


def test_a_target_without_faces_is_one_clear_line(pair, tmp_path):
    a, _ = pair
    ws = copy(a, tmp_path / "A")
    before = table_files(ws)
    crowd = clip("MOT20-05-raw_even_shorter.mp4")
    proc = curator("curate", "-w", ws, "--budget", "5", "--for", crowd, "--for-workspace", tmp_path / "T", "-q")
    one_line_error(proc, str(crowd), "no faces")
    assert table_files(ws) == before  # nothing curated
    proc = curator("curate", "-w", ws, "--budget", "5", "--for-ref", crowd)
    one_line_error(proc, "--for-ref", "--for")


def test_poses_the_footage_lacks_are_reported_in_words(pair, tmp_path):
    """face_1 is a man facing the camera a little from the right; d9 nods far down: no footage of A has that."""
    _, _ = pair
    ws = tmp_path / "frontal"
    curator("extract", clip("face_1.mp4"), "-w", ws, "--fps", "2", "-q", check=True)
    target = clip("driving_d9.mp4")
    proc = curator("curate", "-w", ws, "--budget", "5", "--for", target, "--for-workspace", tmp_path / "T", check=True)
    s = curator_json("curate", "-w", ws, "--budget", "5", "--for", tmp_path / "T")
    ft = s["for_target"]
    assert ft["uncovered_share"]["all_candidates"] > 0.3  # most of d9's poses are beyond this footage
    assert any(x.startswith("find footage of the person looking down") for x in ft["look_for"]), ft["look_for"]
    for sentence in ft["look_for"]:
        assert f"  {sentence}" in proc.stdout
    assert re.search(r"\d+% of its faces have no selected face within 5° of pose", proc.stdout), proc.stdout
    # the stand-ins: faces taken as the nearest this footage has to poses it lacks
    reasons = table(ws)["reason"].astype(str)
    assert reasons.str.contains("selected for target: the nearest this footage has to").any()


def test_audit_for_shows_which_selected_faces_serve_the_target(pair, curated_for):
    _, b = pair
    ws, _, _ = curated_for
    s = curator_json("audit", "-w", ws, "--for", b, "--out", ws.parent / "audit_for.html")
    part, t = s["for_target"], table(ws)
    chosen = t[t["selected"]]
    assert part["faces"] == len(chosen) and part["faces_serving"] == int((chosen["target_faces"] > 0).sum())
    assert part["taken_for_target"] == int(chosen["for_target"].sum())
    counts = dict(zip(chosen["face_id"], chosen["target_faces"]))
    assert [x["target_faces"] for x in part["serving"]] == sorted((counts[x["face_id"]] for x in part["serving"]),
                                                                  reverse=True)
    assert all(x["target_faces"] == counts[x["face_id"]] for x in part["serving"])
    assert sum(n["target_faces"] for n in part["needs"]) == table(b)["is_target"].sum()
    assert sum(n["served"] for n in part["needs"]) == int(chosen["target_faces"].sum())
    html = (ws.parent / "audit_for.html").read_text()
    assert "For the target" in html and "target faces" in html


def test_review_dataset_carries_for_target(curated_for):
    import fiftyone as fo

    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        pytest.fail("this test needs MongoDB: run it after `eval \"$(../shared/ci/mongod.sh start)\"` (README)")
    ws, _, _ = curated_for
    name = f"for-target-{os.getpid()}"
    try:
        curator("review", "-w", ws, "--no-app", "--dataset", name, "--json", check=True)
        ds = fo.load_dataset(name)
        t = table(ws).set_index("face_id")
        ids, flags, counts = ds.values("face_id"), ds.values("for_target"), ds.values("target_faces")
        assert flags == t.loc[ids, "for_target"].tolist() and any(flags)
        assert counts == t.loc[ids, "target_faces"].tolist()
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_trainer_draws_a_set_by_its_target_weights(tmp_path):
    from trainer.data import EVEN_SHARE, sample, target_weights

    out = tmp_path / "faceset"
    curator("run", clip("driving_d9.mp4"), "--out", out, "--budget", "10", "--fps", "2", "--size", "64",
            "--for", clip("driving_d12.mp4"), "-q", check=True)
    train = pd.read_parquet(out / "manifest.parquet").query("split == 'train'")
    counts = train["target_faces"].to_numpy(float)
    w = target_weights(counts)
    assert counts.sum() > 0 and (counts == 0).any()  # some faces stand for the target, some for nothing
    assert np.allclose(w, (1 - EVEN_SHARE) * counts / counts.sum() + EVEN_SHARE / len(counts))
    drawn = np.bincount(sample(len(w), 40000, torch.from_numpy(w).float(), torch.Generator().manual_seed(0),
                               "cpu").numpy(), minlength=len(w)) / 40000
    assert np.allclose(drawn, w, atol=0.01)
    assert target_weights(np.zeros(3)) is None and target_weights(None) is None

    # Through the command line: a short run with --for-weights, and one clear line when no set carries weights.
    env = {**os.environ, **ENV_TRAIN}
    import subprocess
    import sys

    base = [sys.executable, "-m", "curator", "train", "--resolution", "64", "--width", "8", "--latent", "64",
            "--batch", "4", "--steps", "2", "--quiet"]
    proc = subprocess.run([*base, "--a", out, "--b", out, "--out", tmp_path / "run", "--for-weights"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    plain = copy(out, tmp_path / "plain")
    manifest = pd.read_parquet(plain / "manifest.parquet")
    manifest["target_faces"] = 0
    manifest.to_parquet(plain / "manifest.parquet")
    proc = subprocess.run([*base, "--a", plain, "--b", plain, "--out", tmp_path / "run2", "--for-weights"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "--for-weights: neither export carries target weights" in proc.stderr, proc.stderr
