"""`curator evaluate` on a real model trained from the shared clips.

The model: identity A is one man in two pc_avs interviews (12 faces at
64 px; the export splits by source, so one interview is its validation
split, which the trainer never reads), B the woman of
video_retalking/face_2.mp4, trained 300 steps with a tiny network. That
is enough to overfit A's training faces, so a face it trained on must
score better than one it never saw. Everything runs through the real
command line, the real face models and a real Chromium.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers import PACK, chromium_screenshot, clip, curator, curator_json, find_chromium, one_line_error, CHROMIUM_FLAGS
from curator.workspace import open_workspace, read_embeddings, read_table

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

STEPS = 300


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("evaluate")
    for name, videos, val in (("A", ["Audio_Source_00104.mp4", "Pose_Source_741400163.mp4"], "0.4"),
                              ("B", ["face_2.mp4"], "0.1")):
        ws = root / f"ws_{name}"
        curator("extract", *map(clip, videos), "-w", ws, "--size", "64", "--fps", "2", "-q", check=True)
        curator("curate", "-w", ws, "--budget", "12", check=True)
        curator("export", "-w", ws, "--out", root / name, "--val", val, check=True)
    proc = subprocess.run([sys.executable, "-m", "curator", "train", "--a", str(root / "A"), "--b", str(root / "B"),
                           "--out", str(root / "run"), "--resolution", "64", "--width", "8", "--latent", "64",
                           "--lr", "1e-3", "--batch", "4", "--steps", str(STEPS), "--save-every", "1000",
                           "--preview-every", "1000", "--quiet"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "run": root / "run", "A": root / "A", "B": root / "B", "ws_A": root / "ws_A"}


@pytest.fixture(scope="module")
def report_a(trained) -> dict:
    out = trained["root"] / "a.html"
    return {"json": curator_json("evaluate", "--model", trained["run"], "--faces", trained["A"], "--out", out),
            "html": out}


def test_counts_add_up_to_the_faces_given_per_bin_and_cell(trained, report_a):
    s = report_a["json"]
    manifest = pd.read_parquet(trained["A"] / "manifest.parquet")
    assert s["n_faces"] == len(manifest)
    assert sum(b["faces"] for b in s["pose_bins"]) == len(manifest)
    assert sum(c["faces"] for c in s["expression_cells"]) == len(manifest)
    assert sum(c["faces"] for c in s["lighting_cells"]) == len(manifest)
    # the bins are curate's: floor(yaw / 10), floor(pitch / 10) of the manifest's poses
    recount = manifest.groupby([np.floor(manifest.yaw / 10).astype(int) * 10,
                                np.floor(manifest.pitch / 10).astype(int) * 10]).size()
    got = {(b["yaw_from"], b["pitch_from"]): b["faces"] for b in s["pose_bins"] if b["bin"] != "unknown"}
    assert got == {k: int(v) for k, v in recount.items()}
    assert s["pose_bins_occupied"] == len(got)
    # every figure is a number for every bin (the swap found a face often enough to measure pose on it)
    for b in s["pose_bins"]:
        assert 0 <= b["l1"] <= 1 and -1 <= b["ssim"] <= 1 and -1 <= b["identity"] <= 1
        assert -1 <= b["swap_identity"] <= 1 and 0 <= b["face_found"] <= 1
    # the mean over bins weighs every bin once, the overall mean every face once
    assert s["mean_over_bins"]["l1"] == pytest.approx(np.mean([b["l1"] for b in s["pose_bins"]]), abs=1e-4)
    assert s["overall"]["l1"] == pytest.approx(sum(b["l1"] * b["faces"] for b in s["pose_bins"]) / len(manifest),
                                               abs=1e-3)


def test_side_is_told_by_identity_and_the_swap_looks_like_the_other_side(trained, report_a):
    s = report_a["json"]
    assert s["side"] == "a" and s["other"] == "b" and "identity" in s["side_by"]
    assert s["side_similarity"]["a"] > s["side_similarity"]["b"] + 0.3
    b = curator_json("evaluate", "--model", trained["run"], "--faces", trained["B"], "--out", trained["root"] / "b.html")
    assert b["side"] == "b" and b["side_similarity"]["b"] > b["side_similarity"]["a"] + 0.3
    forced = curator_json("evaluate", "--model", trained["run"], "--faces", trained["B"], "--side", "a",
                          "--out", trained["root"] / "b_as_a.html")
    assert forced["side"] == "a" and forced["side_by"].startswith("--side a")
    # a model asked to reconstruct B with A's decoder does worse than with B's own
    assert forced["overall"]["l1"] > b["overall"]["l1"]


def test_a_face_it_trained_on_scores_better_than_one_it_never_saw(trained, report_a):
    s = report_a["json"]
    manifest = pd.read_parquet(trained["A"] / "manifest.parquet")
    assert s["trained_on"] == int((manifest["split"] == "train").sum()) and 0 < s["trained_on"] < len(manifest)
    seen, unseen = s["seen"]["trained"], s["seen"]["not_trained"]
    assert seen["l1"] < 0.85 * unseen["l1"], (seen, unseen)
    assert seen["ssim"] > unseen["ssim"]


def test_a_workspace_is_evaluated_on_its_target_faces(trained):
    s = curator_json("evaluate", "--model", trained["run"], "--faces", trained["ws_A"], "--out",
                     trained["root"] / "ws.html")
    table = read_table(open_workspace(trained["ws_A"]))
    assert s["set_kind"] == "workspace" and s["side"] == "a"
    assert s["n_faces"] == int(table["is_target"].sum()) == sum(b["faces"] for b in s["pose_bins"])


def test_json_and_html_agree_and_the_report_renders(trained, report_a, tmp_path):
    s, out = report_a["json"], report_a["html"]
    assert Path(s["report"]) == out.resolve()
    html = out.read_text()
    assert html.startswith("<!doctype html>") and "<title>curator evaluate" in html
    assert not re.search(r"https?://|<script|<link|@import|url\(", html)  # opens offline, as one file
    dom = subprocess.run([find_chromium("the evaluate report"), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p1'}",
                          "--dump-dom", out.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    rows = re.findall(r'<tr data-bin="([^"]+)">(.*?)</tr>', dom, re.S)
    assert [r[0] for r in rows] == [b["bin"] for b in s["pose_bins"]]
    for (label, cells), b in zip(rows, s["pose_bins"]):
        values = dict(re.findall(r'<td data-key="([a-z_]+)">([^<]*)</td>', cells))
        assert int(values.pop("faces")) == b["faces"]
        for key, text in values.items():
            assert (b[key] is None and text == "–") or float(text) == pytest.approx(b[key], abs=5e-5), (label, key)
    for w in s["worst"]:
        assert w["words"].split(":")[0] in dom
    shot = tmp_path / "shot.png"
    proc = chromium_screenshot(out.resolve().as_uri(), shot, tmp_path / "p2", "1280,1800", purpose="the evaluate report")
    assert shot.is_file(), proc.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 800  # charts and faces, not a blank page


def test_the_recogniser_crop_is_the_training_template_mapped_onto_arcface(trained):
    # the fixed affine must put the crop's face where the recogniser expects it: embeddings of the 64 px crops
    # agree with the ones extract made from the full frames far better than with another person's
    from curator.reports import evaluate
    from curator.models import faces

    fm = faces.load_models(str(PACK))
    w = open_workspace(trained["ws_A"])
    table = read_table(w)
    emb = np.asarray(read_embeddings(w, len(table)))
    crops = np.stack([cv2.imread(str(trained["ws_A"] / p)) for p in table["crop_path"]])
    mine = evaluate.identity_embeddings(fm, crops, 0.3)
    same = np.sum(mine * emb, axis=1)
    assert np.median(same) > 0.6, same
    shifted = evaluate.identity_embeddings(fm, np.roll(crops, 8, axis=2), 0.3)  # misaligned by 8 px
    assert np.median(np.sum(shifted * emb, axis=1)) < np.median(same)


def test_pose_is_read_from_the_crops_as_extract_reads_it_from_frames(trained):
    # the swap's pose error compares poses found on crops, taken back into the source frame; on the input crops
    # they follow the poses extract found on the whole frames (yaw closely; pitch from 5 points is noisier)
    from curator.reports import evaluate
    from curator.models import faces

    fm = faces.load_models(str(PACK))
    table = read_table(open_workspace(trained["ws_A"]))
    where = evaluate.frame_geometry(table, 64, 64)
    est = []
    for k, path in enumerate(table["crop_path"]):
        crop = cv2.imread(str(trained["ws_A"] / path))
        est.append(evaluate.pose_and_expression(crop, evaluate.crop_keypoints(fm, crop), where[k])[:2])
    est = np.array(est)
    ok = np.isfinite(est[:, 0])
    assert ok.mean() > 0.95
    yaw = table["yaw"].to_numpy()[ok]
    assert np.median(np.abs(est[ok, 0] - yaw)) < 6.0 and np.corrcoef(est[ok, 0], yaw)[0, 1] > 0.9


# --- refusals --------------------------------------------------------------------------------

def test_a_folder_that_is_not_a_run_is_one_line(trained):
    one_line_error(curator("evaluate", "--model", trained["A"], "--faces", trained["A"]),
                   str(trained["A"]), "no model.safetensors")
    one_line_error(curator("evaluate", "--model", trained["run"], "--faces", trained["run"]),
                   "neither a curator export", "nor a workspace")
    one_line_error(curator("evaluate", "--model", trained["run"], "--faces", trained["A"], "--side", "c"),
                   "--side must be a or b")


def test_a_set_of_another_crop_size_or_margin_is_one_line(trained, tmp_path):
    small = tmp_path / "small"
    curator("extract", clip("face_1.mp4"), "-w", small, "--size", "48", "--fps", "1", "-q", check=True)
    one_line_error(curator("evaluate", "--model", trained["run"], "--faces", small, "--out", tmp_path / "r.html"),
                   str(small), "48 px", "smaller than the model's 64 px")

    # a workspace aligned with another margin (curator.extract's setting; the command line keeps the default)
    from curator.extract import ExtractSettings, extract
    from curator.workspace import open_workspace

    wide = tmp_path / "wide"
    extract(open_workspace(wide, create=True), [clip("face_1.mp4")], models=str(PACK),
            settings=ExtractSettings(fps=1, size=64, margin=0.4), explicit={"fps", "size", "margin"})
    one_line_error(curator("evaluate", "--model", trained["run"], "--faces", wide, "--out", tmp_path / "r.html"),
                   str(wide), "margin 0.4", "0.3")
    assert not (tmp_path / "r.html").exists()


def test_the_report_replaces_only_an_earlier_evaluate_report(trained, tmp_path):
    run, faces = trained["run"], trained["A"]
    one_line_error(curator("evaluate", "--model", run, "--faces", faces, "--out", run / "model.safetensors"),
                   "cannot write the report", "the model's weights")
    one_line_error(curator("evaluate", "--model", run, "--faces", faces, "--out", faces),
                   "cannot write the report")
    page = tmp_path / "mine.html"
    page.write_text("<!doctype html><title>my page</title>")
    one_line_error(curator("evaluate", "--model", run, "--faces", faces, "--out", page),
                   "not written by `curator evaluate`")
    assert page.read_text() == "<!doctype html><title>my page</title>"
