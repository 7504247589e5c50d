"""`curator extract` on real footage with the real InsightFace pack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import IMAGES, PACK, clip, curator, curator_json, has_table, one_line_error
from curator.models import faces
from curator import media
from curator.workspace import FORMAT_VERSION, locked, open_workspace, read_embeddings, read_meta, read_table, staged_progress

CONTRACT_COLUMNS = ["face_id", "source", "source_sha256", "frame", "time_s", "bbox", "kps", "det_score", "yaw",
                    "pitch", "roll", "pose_method", "sharpness", "face_px", "crop_path", "mouth_open", "eyes_open",
                    "smile", "lum", "contrast", "light_lr", "light_tb", "cast_a", "cast_b"]


@pytest.fixture(scope="session")
def ws_talking(tmp_path_factory) -> Path:
    """One person turning their head (LivePortrait driving clip) plus a stage clip with several people."""
    ws = tmp_path_factory.mktemp("talking") / "ws"
    curator("extract", clip("driving_d9.mp4"), clip("short_hamilton_clip.mp4"), "-w", ws, "-q", check=True)
    return ws


def test_table_contract(ws_talking):
    table = read_table(open_workspace(ws_talking))
    for col in CONTRACT_COLUMNS:
        assert col in table.columns, col
    assert table["face_id"].is_unique
    assert set(table["pose_method"]) == {"kps5_pnp"}
    emb = read_embeddings(open_workspace(ws_talking))
    assert emb.shape == (len(table), 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    for rel in table["crop_path"]:
        assert (ws_talking / rel).is_file()
    meta = json.loads((ws_talking / "workspace.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["models"]["files"]["mobilefacenet_128.onnx"] == media.sha256_file(PACK / "mobilefacenet_128.onnx")
    assert all(len(s) == 64 for s in table["source_sha256"])


def test_embeddings_are_row_aligned(ws_talking):
    """Row i's embedding is the embedding of row i's face: recompute a few from the source frames."""
    ws = open_workspace(ws_talking)
    table, emb = read_table(ws), read_embeddings(ws)
    fm = faces.load_models(str(PACK))
    rows = table[table["source"].str.endswith("short_hamilton_clip.mp4")].head(6)
    by_frame = {}
    for sf in media.sample_video(Path(rows["source"].iloc[0]), fps=None, every=1, static_threshold=-1.0):
        if sf.index in set(rows["frame"]):
            by_frame[sf.index] = sf.image
    for i, row in rows.iterrows():
        again = faces.embed(fm, by_frame[row["frame"]], np.asarray(row["kps"]).reshape(1, 5, 2))[0]
        assert float(again @ emb[i]) > 0.99


def test_single_person_clip_one_face_per_frame_with_head_turns(ws_talking):
    table = read_table(open_workspace(ws_talking))
    one = table[table["source"].str.endswith("driving_d9.mp4")]
    meta = read_meta(open_workspace(ws_talking))
    rec = meta["sources"][one["source_sha256"].iloc[0]]
    # ~2 frames per second of video on the clock (plus pose fill's extras), each with exactly one face.
    assert abs((one["sampled"] == "due").sum() - rec["duration_s"] * 2) <= 3
    assert set(one["sampled"]) <= {"due", "motion", "backfill"}
    assert one.groupby("frame").size().max() == 1
    assert one["yaw"].max() - one["yaw"].min() > 25 or one["pitch"].max() - one["pitch"].min() > 25


def test_pose_fill_adds_head_poses_between_clock_frames(ws_talking, tmp_path):
    """Pose fill only adds: the clock's frames are the same with and without it, and every back-filled frame
    lies between two clock (or motion) frames whose face jumped >= 2 pose bins."""
    plain = tmp_path / "plain"
    curator("extract", clip("driving_d9.mp4"), "-w", plain, "-q", "--no-pose-fill", check=True)
    base = read_table(open_workspace(plain))
    table = read_table(open_workspace(ws_talking))
    filled = table[table["source"].str.endswith("driving_d9.mp4")]
    assert set(base["sampled"]) == {"due"}
    assert set(base["frame"]) == set(filled.loc[filled["sampled"] == "due", "frame"])

    def bins(t):
        return set(zip(np.floor(t["yaw"] / 10), np.floor(t["pitch"] / 10)))

    assert bins(base) <= bins(filled)
    extra = filled[filled["sampled"] == "backfill"]
    assert len(extra) >= 1
    anchors = filled[filled["sampled"] != "backfill"].sort_values("frame")
    for f in extra["frame"]:
        a = anchors[anchors["frame"] < f].iloc[-1]
        b = anchors[anchors["frame"] > f].iloc[0]
        jump = max(abs(np.floor(a["yaw"] / 10) - np.floor(b["yaw"] / 10)),
                   abs(np.floor(a["pitch"] / 10) - np.floor(b["pitch"] / 10)))
        assert jump >= 2, (f, a["frame"], b["frame"])


def test_workers_change_speed_not_the_table(ws_talking, tmp_path):
    """Frames analysed side by side (the default on CI's 2 cores: 2 workers) give the table one worker gives,
    back-fill included: results are taken in frame order."""
    one = tmp_path / "one"
    curator("extract", clip("driving_d9.mp4"), "-w", one, "-q", "--workers", "1", check=True)
    a, ea = _table_snapshot(one)
    b, eb = _table_snapshot(ws_talking)
    keep = b["source"].str.endswith("driving_d9.mp4").to_numpy()
    b, eb = b[keep].reset_index(drop=True), eb[keep]
    assert (b["sampled"] == "backfill").any()
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5)
    np.testing.assert_allclose(ea, eb, atol=1e-5)
    bad = curator("extract", clip("driving_d9.mp4"), "-w", tmp_path / "bad", "--workers", "0")
    assert bad.returncode != 0 and "--workers must be positive" in bad.stderr


def test_stage_clip_has_several_people(ws_talking):
    ws = open_workspace(ws_talking)
    table, emb = read_table(ws), read_embeddings(ws)
    stage = table[table["source"].str.endswith("short_hamilton_clip.mp4")]
    assert stage.groupby("frame").size().max() >= 2
    # Two faces in one frame are two different people: their embeddings disagree.
    frame = stage.groupby("frame").size().idxmax()
    idx = stage.index[stage["frame"] == frame]
    sims = emb[idx] @ emb[idx].T
    assert sims[np.triu_indices(len(idx), 1)].max() < 0.5


def test_crowd_clip_without_faces_is_not_an_error(tmp_path):
    ws = tmp_path / "ws"
    out = curator_json("extract", clip("MOT20-05-raw_even_shorter.mp4"), "-w", ws, "-q")
    assert out["faces"] == 0 and out["failed"] == 0 and out["new_files"] == 1
    assert out["frames_decoded"] > 0
    meta = read_meta(open_workspace(ws))
    assert [s["status"] for s in meta["sources"].values()] == ["complete"]
    # A second run does not analyse it again.
    again = curator_json("extract", clip("MOT20-05-raw_even_shorter.mp4"), "-w", ws, "-q")
    assert again["already_in_workspace"] == 1 and again["frames_decoded"] == 0


def test_rerun_adds_only_new_files_and_images_in_folders(tmp_path):
    ws = tmp_path / "ws"
    first = curator_json("extract", clip("face_1.mp4"), "-w", ws, "-q")
    photos = IMAGES / "facenet_pytorch" / "test_images"
    second = curator_json("extract", clip("face_1.mp4"), photos, "-w", ws, "-q")
    n_photos = len([p for p in photos.rglob("*") if media.media_kind(p) == "image"])
    assert second["already_in_workspace"] == 1
    assert second["new_files"] == n_photos
    table = read_table(open_workspace(ws))
    assert table["face_id"].is_unique
    assert len(table) == first["rows_total"] + second["faces"]
    assert (table[table["source_kind"] == "image"]["frame"] == 0).all()


def test_bad_inputs_reported_one_line_each_rest_processed(tmp_path):
    bad = tmp_path / "bad dir ü"
    bad.mkdir()
    (bad / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    data = clip("face_2.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    notes = tmp_path / "notes.txt"
    notes.write_text("not footage")
    ws = tmp_path / "ws"
    proc = curator("extract", bad, notes, tmp_path / "missing.mp4", clip("face_3.mp4"), "-w", ws, "-q", "--json")
    assert proc.returncode == 0, proc.stderr  # something was processed
    lines = [l for l in proc.stderr.splitlines() if l.startswith("curator:")]
    for name in ("random.mp4", "broken.jpg", "notes.txt", "missing.mp4"):
        assert sum(name in l for l in lines) == 1, (name, lines)
    summary = json.loads(proc.stdout)
    assert summary["new_files"] >= 1
    assert {Path(p["file"]).name for p in summary["problems"]} >= {"random.mp4", "broken.jpg", "notes.txt", "missing.mp4"}
    table = read_table(open_workspace(ws))
    assert table["source"].str.endswith("face_3.mp4").sum() > 0


def test_broken_photo_among_photos_does_not_stop_the_others(tmp_path):
    """Photos go through the worker pool together; one that cannot be decoded is one line, the others are analysed."""
    photos = tmp_path / "photos"
    photos.mkdir()
    good = [IMAGES / "face_recognition" / "examples" / n for n in ("alex-lacamoire.png", "obama-480p.jpg")]
    (photos / "a.jpg").write_bytes(good[0].read_bytes())
    (photos / "b_broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    (photos / "c.jpg").write_bytes(good[1].read_bytes())
    proc = curator("extract", photos, "-w", tmp_path / "ws", "-q", "--json", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["new_files"] == 2 and summary["failed"] == 1
    assert [Path(p["file"]).name for p in summary["problems"]] == ["b_broken.jpg"]
    table = read_table(open_workspace(tmp_path / "ws"))
    assert sorted({Path(s).name for s in table["source"]}) == ["a.jpg", "c.jpg"]


def test_unusable_model_pack_is_one_line_with_no_empty_progress_bar(tmp_path):
    """The progress bar is on (no -q); it appears only once frames flow, so a refused pack is the only line."""
    empty = tmp_path / "empty pack"
    empty.mkdir()
    for pack, words in ((tmp_path / "no such pack", ("no such directory",)), (empty, ("no face detector",))):
        proc = curator("extract", clip("face_2.mp4"), "-w", tmp_path / "ws", "--models", pack)
        one_line_error(proc, str(pack), *words)


def test_nothing_processable_exits_nonzero(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 1000)
    proc = curator("extract", tmp_path / "junk.mp4", tmp_path / "nope", "-w", tmp_path / "ws", "-q")
    assert proc.returncode == 1
    assert "junk.mp4" in proc.stderr and "nope" in proc.stderr


def test_second_writer_refused(tmp_path):
    ws = open_workspace(tmp_path / "ws", create=True)
    with locked(ws, "curator extract (test holder)"):
        proc = curator("extract", clip("face_1.mp4"), "-w", ws.root, "-q")
    assert proc.returncode == 2
    assert "in use by `curator extract (test holder)`" in proc.stderr
    assert f"pid {os.getpid()}" in proc.stderr
    assert not has_table(ws.root)


def test_newer_workspace_format_refused(tmp_path):
    ws = open_workspace(tmp_path / "ws", create=True)
    meta = json.loads(ws.meta_path.read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    ws.meta_path.write_text(json.dumps(meta))
    before = ws.meta_path.read_bytes()
    proc = curator("extract", clip("face_1.mp4"), "-w", ws.root, "-q")
    assert proc.returncode == 2 and "newer curator" in proc.stderr
    assert ws.meta_path.read_bytes() == before


def test_changing_crop_size_on_a_workspace_is_refused(tmp_path):
    ws = tmp_path / "ws"
    curator("extract", clip("face_1.mp4"), "-w", ws, "-q", "--size", "128", check=True)
    proc = curator("extract", clip("face_2.mp4"), "-w", ws, "-q", "--size", "256")
    assert proc.returncode == 2 and "--size 128" in proc.stderr
    # Without --size the workspace's own size is used.
    curator("extract", clip("face_2.mp4"), "-w", ws, "-q", check=True)
    import cv2

    table = read_table(open_workspace(ws))
    assert {cv2.imread(str(ws / p)).shape[0] for p in table["crop_path"]} == {128}


def test_static_frames_skipped_before_any_network(tmp_path):
    """A real photo encoded as a 6 s still video: one analysed frame, the rest skipped as near-identical."""
    import av
    import cv2

    photo = cv2.imread(str(IMAGES / "face_recognition" / "examples" / "obama-480p.jpg"))
    h, w = (photo.shape[0] // 2) * 2, (photo.shape[1] // 2) * 2
    path = tmp_path / "still.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for _ in range(150):
            frame = av.VideoFrame.from_ndarray(photo[:h, :w], format="bgr24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    out = curator_json("extract", path, "-w", tmp_path / "ws", "-q")
    assert out["frames_decoded"] == 150
    assert out["frames_analysed"] == 1
    assert out["frames_skipped_static"] == 11  # 12 due frames at 2 fps over 6 s, all but the first identical
    assert out["faces"] == 1


def test_display_rotation_is_applied_and_undone(tmp_path):
    """Phone video stores portrait frames as landscape plus a display rotation: `media.to_bgr` turns them
    upright (what extract and convert analyse) and `media.rotate(-r)` gives back the stored picture exactly
    (what convert writes). The clip is made here with PyAV, rotation tag and all."""
    import av

    path = tmp_path / "rotated.mp4"
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:8, :8] = 255  # a mark in the stored picture's top-left corner
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(stored, format="bgr24")), *stream.encode()]:
            out.mux(packet)
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        plain = frame.to_ndarray(format="bgr24")
        assert media.display_rotation(frame) == 90
        upright = media.to_bgr(frame)
    assert upright.shape == (64, 32, 3)
    assert upright[-8:, :8].mean() > 200 and upright[:8, :8].mean() < 50  # turned a quarter counter-clockwise
    np.testing.assert_array_equal(media.rotate(upright, -90), plain)


def _table_snapshot(ws: Path) -> tuple[pd.DataFrame, np.ndarray]:
    w = open_workspace(ws)
    table = read_table(w).sort_values("face_id").reset_index(drop=True)
    emb = read_embeddings(w)[read_table(w).reset_index().set_index("face_id").loc[table["face_id"], "index"].to_numpy()]
    return table, emb


def test_resume_after_kill_gives_the_same_table(tmp_path):
    inputs = [clip("driving_d6.mp4"), clip("driving_d14.mp4"), clip("face_4.mp4")]
    reference = tmp_path / "reference"
    curator("extract", *inputs, "-w", reference, "-q", check=True)

    ws = tmp_path / "killed"
    cmd = [sys.executable, "-m", "curator", "extract", *map(str, inputs), "-w", str(ws), "-q", "--checkpoint-every", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    killed_mid_source = False
    while time.monotonic() < deadline and proc.poll() is None:
        if ws.joinpath("workspace.json").exists():
            progress = staged_progress(open_workspace(ws))
            if any(not p["complete"] and p["last_frame"] > 0 for p in progress.values()) and len(progress) >= 2:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_mid_source = True
                break
        time.sleep(0.05)
    proc.wait()
    assert killed_mid_source, "the run finished before it could be killed mid-source"
    assert not has_table(ws) or len(read_table(open_workspace(ws))) < len(read_table(open_workspace(reference)))

    resumed = curator_json("extract", *inputs, "-w", ws, "-q")
    assert resumed["resumed_files"] >= 1
    a, ea = _table_snapshot(reference)
    b, eb = _table_snapshot(ws)
    volatile = ["source"]  # identical here; kept out only to make the comparison about content
    pd.testing.assert_frame_equal(a.drop(columns=volatile), b.drop(columns=volatile), check_exact=False, rtol=1e-6)
    np.testing.assert_allclose(ea, eb, atol=1e-6)
    assert not list((ws / "staging").glob("*.parquet"))
    meta = read_meta(open_workspace(ws))
    assert all(s["status"] == "complete" for s in meta["sources"].values())


def test_consent_recorded_per_source(tmp_path):
    ws = tmp_path / "ws"
    curator("extract", clip("face_5.mp4"), "-w", ws, "-q", "--consent", "Subject X, signed release 2026-01-02", check=True)
    meta = read_meta(open_workspace(ws))
    (rec,) = meta["sources"].values()
    assert rec["consent"] == "Subject X, signed release 2026-01-02"
    assert meta["consent"][0]["sources"] == list(meta["sources"])


def test_help_has_examples():
    out = curator("extract", "--help", check=True).stdout
    assert "Examples" in out and "--workspace" in out and "--json" in out


def test_unwritable_workspace_is_one_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = curator("extract", clip("face_1.mp4"), "-w", blocker / "ws", "-q")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "cannot create workspace" in proc.stderr


def test_a_source_in_segments_is_complete_when_every_segment_is():
    """The staged progress of a file read in three segments (workspace.source_progress): complete only once all
    three are, `last_frame` is how far from the start every frame is done, a failed segment fails the file."""
    from curator.workspace import source_progress, unit_key

    sha = "a" * 64

    def rec(segment, last, complete, status=None, stop=None):
        return {"path": "film.mp4", "segments": 3, "segment_seconds": 300, "frames": (stop or 900),
                "unit": {"number": segment, "start": 300 * segment, "stop": stop}, "last_frame": last,
                "complete": complete, "status": status or ("complete" if complete else "partial"), "resume": {"index": last}}

    units = {unit_key(sha, 0, 3): rec(0, 299, True, stop=300), unit_key(sha, 2, 3): rec(2, 899, True)}
    state = source_progress(sha, units)
    assert not state["complete"] and state["status"] == "partial" and state["last_frame"] == 299
    assert state["resume"] is None and "unit" not in state and state["segments"] == 3
    units[unit_key(sha, 1, 3)] = rec(1, 450, False, stop=600)
    assert source_progress(sha, units)["last_frame"] == 450
    units[unit_key(sha, 1, 3)] = rec(1, 599, True, stop=600)
    done = source_progress(sha, units)
    assert done["complete"] and done["status"] == "complete" and done["last_frame"] == 899 and done["frames"] == 900
    units[unit_key(sha, 1, 3)] = {**rec(1, -1, False, status="failed", stop=600), "error": "broken"}
    failed = source_progress(sha, units)
    assert failed["status"] == "failed" and failed["error"] == "broken" and not failed["complete"]
    whole = {sha: {"path": "clip.mp4", "last_frame": 10, "complete": False, "status": "partial", "resume": None}}
    assert source_progress(sha, whole) == whole[sha]  # a file read whole: its own record
