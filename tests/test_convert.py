"""`curator convert` (issue 8): a tiny model trained here on faces exported from the shared clips,
then real conversions of shared clips, read back with PyAV.

The model is far too small and short-trained to draw a convincing face; what
these tests check is everything around it: which face is replaced, the
output's frames, timing, audio and labels, pixel-exact pass-through, and that
failures leave nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from helpers import PACK, clip, ctrl_c_enabled, curator
from curator.models import recognisers

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
CLIP_A = "face_1.mp4"      # identity A of the run; the clip converted
CLIP_B = "face_2.mp4"      # identity B
OTHER = "face_3.mp4"       # a third person, never to be replaced
NO_FACES = "MOT20-05-raw_even_shorter.mp4"  # a night crowd from above, no detectable face, no audio
NO_AUDIO = "driving_d0.mp4"  # one person, no audio stream


def cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curator", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def convert_json(*args) -> dict:
    proc = cli("convert", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("curator: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_video(path: Path) -> dict:
    """Everything the tests compare, read with PyAV independently of curator's code."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"rate": v.average_rate, "width": v.codec_context.width, "height": v.codec_context.height,
                "metadata": {k.lower(): v for k, v in c.metadata.items()},  # Matroska writes keys in capitals
                "audio": [(a.codec_context.name, a.codec_context.sample_rate, a.codec_context.channels)
                          for a in c.streams.audio]}
        frames, times, end = [], [], 0.0
        for packet in c.demux(v):
            if packet.size:
                end = max(end, float((packet.pts + packet.duration) * packet.time_base))
            for frame in packet.decode():
                frames.append(frame.to_ndarray())  # the frame's own pixel format (yuv420p): no colour conversion
                times.append(frame.time)
        info.update(frames=frames, times=times, video_end=end)
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(*c.streams.audio) if p.size] if c.streams.audio else []
        audio = [bytes(p) for p in packets]
        ends = [float((p.pts + p.duration) * p.time_base) for p in packets]
    info.update(audio_packets=audio, audio_end=max(ends) if ends else None)
    return info


def bgr_frames(path: Path, count: int | None = None) -> list[np.ndarray]:
    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="bgr24"))
            if count and len(out) >= count:
                break
    return out


def assert_marked(original: np.ndarray, marked: np.ndarray) -> None:
    """The label's dark box with white letters is in the bottom-right corner of `marked` (BGR)."""
    corner_in, corner_out = original[-25:, -200:].astype(int), marked[-25:, -200:].astype(int)
    assert np.abs(corner_out - corner_in).mean() > 20
    letters = (corner_out.min(axis=2) > 200) & (corner_in.max(axis=2) < 150)
    assert letters.sum() > 50


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    """Exports of two people from shared clips and a tiny model trained on them with `curator train` (conftest)."""
    return tiny_run


@pytest.fixture(scope="module")
def mixed_clip(tmp_path_factory) -> Path:
    """10 frames of A, 15 frames with no face, 10 frames of a third person, 700x700 at 25 fps.

    No shared clip has both the model's person and frames without them, so
    one is cut from three shared clips here (PyAV, libx264).
    """
    path = tmp_path_factory.mktemp("mixed") / "mixed.mp4"
    parts = [bgr_frames(clip(CLIP_A), 10), bgr_frames(clip(NO_FACES), 15), bgr_frames(clip(OTHER), 10)]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = 700
        s.pix_fmt = "yuv420p"
        for i, img in enumerate(f for part in parts for f in part):
            h, w = img.shape[:2]
            side = min(h, w)
            square = img[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(cv2.resize(square, (700, 700))), format="bgr24")
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


# --- whole conversions ----------------------------------------------------------------------


def test_shared_clip_keeps_size_rate_frames_audio_and_is_labelled(run_dir, tmp_path):
    src, out = clip(CLIP_A), tmp_path / "swapped.mp4"
    summary = convert_json(src, "--model", run_dir, "--out", out)
    before, after = read_video(src), read_video(out)

    # Same picture size, frame rate, frame count and frame times as the input.
    assert (after["width"], after["height"]) == (before["width"], before["height"]) == (700, 700)
    assert after["rate"] == before["rate"] == Fraction(1350, 61)  # an odd rate, from variable frame durations
    assert len(after["frames"]) == len(before["frames"]) == summary["frames"] == 135
    assert after["times"] == before["times"]
    assert summary["frames_swapped"] >= 0.9 * summary["frames"]

    # The audio is the input's, packet for packet (copied, not re-encoded).
    assert after["audio"] == before["audio"] == [("aac", 44100, 2)]
    assert after["audio_packets"] == before["audio_packets"]

    # Labelled: container metadata and a sidecar that describes exactly these two files.
    assert "SYNTHETIC" in after["metadata"]["comment"] and summary["run_id"] in after["metadata"]["comment"]
    assert "faces replaced" in after["metadata"]["description"]
    side = json.loads((tmp_path / "swapped.mp4.synthetic.json").read_text())
    assert Path(summary["sidecar"]) == tmp_path / "swapped.mp4.synthetic.json"
    assert side["synthetic"] is True
    assert side["input"]["sha256"] == sha256(src) and side["output"]["sha256"] == sha256(out)
    assert side["model"]["run_id"] == summary["run_id"] and side["model"]["run"] == str(run_dir)
    assert side["model"]["direction"] == "a2b" and side["identity"]["replaced"] == "A"
    assert side["settings"]["mask"] == "predicted" and side["visible_mark"] is True
    assert side["frames"] == 135 and side["frames_swapped"] == summary["frames_swapped"]
    assert leftovers(tmp_path, {"swapped.mp4", "swapped.mp4.synthetic.json"}) == []

    # The face changed; the background far from it did not (beyond H.264's loss); the mark is in the corner.
    first_in, first_out = (bgr_frames(p, 1)[0].astype(int) for p in (src, out))
    face = np.abs(first_in[150:450, 220:480] - first_out[150:450, 220:480]).mean()
    background = np.abs(first_in[:80, :80] - first_out[:80, :80]).mean()
    assert face > 4 * background and background < 2, (face, background)
    assert_marked(first_in, first_out)


def test_lossless_frames_without_the_face_are_pixel_identical(run_dir, mixed_clip, tmp_path):
    out = tmp_path / "mixed_swapped.mkv"
    summary = convert_json(mixed_clip, "--model", run_dir, "--out", out, "--lossless", "--no-visible-mark")
    before, after = read_video(mixed_clip), read_video(out)
    assert len(after["frames"]) == len(before["frames"]) == 35
    same = [np.array_equal(a, b) for a, b in zip(before["frames"], after["frames"])]
    # Frames 10-24 have no face, 25-34 another person: untouched, bit for bit.
    assert all(same[10:]), same
    # A's frames were swapped, and in them only pixels near the face changed.
    assert not any(same[:10]) and summary["frames_swapped"] == 10, (same, summary)
    for a, b in zip(before["frames"][:10], after["frames"][:10]):
        changed = a[:700] != b[:700]  # the luma plane
        # The face crop (the face and its margin) spans columns ~200-600 and rows 0-480 here.
        assert 0 < changed.mean() < 0.5 and not changed[:, :150].any() and not changed[550:700].any()
    assert after["audio"] == [] and summary["notes"] == ["the input has no audio stream, so neither has the output"]
    # --no-visible-mark removes only the mark: metadata and sidecar are still there.
    assert "SYNTHETIC" in after["metadata"]["comment"]
    side = json.loads((tmp_path / "mixed_swapped.mkv.synthetic.json").read_text())
    assert side["visible_mark"] is False and side["output"]["lossless"] is True


def test_visible_mark_is_on_by_default_and_touches_only_its_corner(run_dir, mixed_clip, tmp_path):
    out = tmp_path / "marked.mkv"
    convert_json(mixed_clip, "--model", run_dir, "--out", out, "--lossless", "--max-frames", "20")
    before, after = read_video(mixed_clip), read_video(out)
    assert len(after["frames"]) == 20
    # The label's own box (its size follows the frame, and OpenCV's font metrics differ between versions):
    from curator.swap.synthetic import visible_mark

    grey = np.full((700, 700, 3), 128, np.uint8)
    box_rows, box_cols = np.nonzero((visible_mark(grey) != grey).any(2))
    assert box_rows.min() > 700 * 0.9 and box_cols.min() > 700 * 0.3  # a strip along the bottom, at the right
    for a, b in zip(before["frames"][10:20], after["frames"][10:20]):  # frames with no face
        rows, cols = np.nonzero(a[:700] != b[:700])
        assert rows.size > 500  # the label is there...
        assert rows.min() >= box_rows.min() - 2 and cols.min() >= box_cols.min() - 2  # ...and nothing else changed
        assert np.array_equal(a[:box_rows.min() - 2], b[:box_rows.min() - 2])


def test_clip_without_audio_with_reference_photo(run_dir, tmp_path):
    src = clip(NO_AUDIO)
    ref = tmp_path / "ref.png"
    cv2.imwrite(str(ref), bgr_frames(src, 1)[0])  # the person in the clip, who is neither A nor B
    out = tmp_path / "out.mp4"
    # Without --ref, A's embedding matches nobody here: a clear refusal.
    one_error_line(cli("convert", src, "--model", run_dir, "--out", out, "--max-frames", "12", "-q"),
                   str(src), "no face of identity A")
    summary = convert_json(src, "--model", run_dir, "--out", out, "--max-frames", "12", "--ref", ref)
    after = read_video(out)
    assert summary["frames"] == len(after["frames"]) == 12 and summary["frames_swapped"] >= 10
    assert after["audio"] == [] and summary["audio_streams"] == 0
    assert any("no audio" in n for n in summary["notes"])
    side = json.loads(Path(summary["sidecar"]).read_text())
    assert side["identity"]["chosen_by"].startswith("reference photos") and str(ref) in side["identity"]["chosen_by"]


def test_direction_b2a_replaces_identity_b(run_dir, tmp_path):
    src = clip(CLIP_B)
    one_error_line(cli("convert", src, "--model", run_dir, "--out", tmp_path / "a2b.mp4", "--max-frames", "6", "-q"),
                   "no face of identity A")
    summary = convert_json(src, "--model", run_dir, "--out", tmp_path / "b2a.mp4", "--max-frames", "6",
                           "--direction", "b2a")
    assert summary["frames_swapped"] == 6
    side = json.loads(Path(summary["sidecar"]).read_text())
    assert side["identity"]["replaced"] == "B" and side["identity"]["drawn"] == "A"


def test_frames_out_and_max_frames_trim_video_and_audio(run_dir, tmp_path):
    src, out, frames = clip(CLIP_A), tmp_path / "short.mp4", tmp_path / "frames"
    summary = convert_json(src, "--model", run_dir, "--out", out, "--frames-out", frames, "--max-frames", "8")
    after = read_video(out)
    assert summary["frames"] == len(after["frames"]) == 8
    names = sorted(p.name for p in frames.iterdir())
    # the frames, the label, and the output marker (docs/security.md) listing exactly those files
    assert names == [".curator-output.json"] + [f"frame_{i:06d}.png" for i in range(8)] + ["synthetic.json"]
    assert json.loads((frames / ".curator-output.json").read_text())["files"] == names[1:]
    assert json.loads((frames / "synthetic.json").read_text())["synthetic"] is True
    # The audio ends with the 8th frame (within one AAC packet), not with the clip.
    assert 0 <= after["audio_end"] - after["video_end"] <= 1024 / 44100, (after["audio_end"], after["video_end"])
    # A PNG is the swapped frame itself: away from the face it is the input, exactly.
    inputs = bgr_frames(src, 8)
    for i, original in enumerate(inputs):
        png = cv2.imread(str(frames / f"frame_{i:06d}.png"))
        assert png.shape == original.shape
        assert np.array_equal(png[:80, :80], original[:80, :80])
        assert not np.array_equal(png[150:450, 220:480], original[150:450, 220:480])


def test_preview_writes_original_and_swapped_side_by_side(run_dir, tmp_path):
    src, out = clip(CLIP_A), tmp_path / "preview"
    summary = convert_json(src, "--model", run_dir, "--out", out, "--preview", "3")
    assert summary["previews"] == 3 and len(summary["files"]) == 3
    assert sorted(p.name for p in out.iterdir()) == sorted(summary["files"] + ["synthetic.json", ".curator-output.json"])
    inputs = bgr_frames(src)
    for name in summary["files"]:
        index = int(name.split("_")[1].split(".")[0])
        image = cv2.imread(str(out / name))
        gap = image.shape[1] - 2 * 700
        assert image.shape[0] == 700 and gap > 0
        left, right = image[:, :700], image[:, 700 + gap:]
        assert np.array_equal(left, inputs[index])  # the original frame, untouched
        assert not np.array_equal(right[150:450, 220:480], left[150:450, 220:480])  # the swap
        assert_marked(left, right)
    one_error_line(cli("convert", src, "--model", run_dir, "--out", tmp_path / "p.mp4", "--preview", "3", "-q"),
                   "p.mp4", "folder")


# --- refusals leave nothing behind ------------------------------------------------------------


def _no_checkpoint(tmp: Path) -> Path:
    (tmp / "empty_run").mkdir()
    return tmp / "empty_run"


def _random_bytes(tmp: Path) -> Path:
    (tmp / "junk_run").mkdir()
    (tmp / "junk_run" / "model.safetensors").write_bytes(os.urandom(4096))
    return tmp / "junk_run"


def _foreign_safetensors(tmp: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    (tmp / "foreign_run").mkdir()
    save_file({"x": torch.zeros(3)}, str(tmp / "foreign_run" / "model.safetensors"))
    return tmp / "foreign_run"


@pytest.mark.parametrize("make, needle", [(_no_checkpoint, "no model.safetensors"),
                                          (_random_bytes, "not a readable safetensors file"),
                                          (_foreign_safetensors, "not a curator face-swap checkpoint")])
def test_run_folder_without_a_usable_checkpoint(tmp_path, make, needle):
    run = make(tmp_path)
    out = tmp_path / "out" / "o.mp4"
    one_error_line(cli("convert", clip(CLIP_A), "--model", run, "--out", out), str(run), needle)
    assert not out.exists() and leftovers(out.parent, set()) == []


def test_video_without_a_matching_face_leaves_nothing(run_dir, tmp_path):
    out = tmp_path / "crowd.mp4"
    line = one_error_line(cli("convert", clip(NO_FACES), "--model", run_dir, "--out", out, "--frames-out",
                              tmp_path / "frames", "--max-frames", "40"),
                          str(clip(NO_FACES)), "no face of identity A", "40 frames")
    assert "--ref" in line
    assert leftovers(tmp_path, set()) == []  # no video, no sidecar, no frames folder, no temporary files


def test_unwritable_existing_and_misnamed_outputs(run_dir, tmp_path):
    src = clip(CLIP_A)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    one_error_line(cli("convert", src, "--model", run_dir, "--out", blocker / "o.mp4"), "o.mp4", "cannot write")
    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"keep me")
    one_error_line(cli("convert", src, "--model", run_dir, "--out", existing), "existing.mp4", "--force")
    assert existing.read_bytes() == b"keep me"
    one_error_line(cli("convert", src, "--model", run_dir, "--out", tmp_path / "o.avi"), "o.avi", ".mp4")
    one_error_line(cli("convert", tmp_path / "missing.mp4", "--model", run_dir, "--out", tmp_path / "o.mp4"),
                   "missing.mp4", "no such file")
    one_error_line(cli("convert", src, "--model", run_dir), "--out")
    one_error_line(cli("convert", src, "--model", run_dir, "--out", tmp_path / "o.mp4", "--mask", "oval"),
                   "--mask", "predicted, landmark, both")
    assert leftovers(tmp_path, {"a_file", "existing.mp4"}) == []


def test_interrupt_mid_conversion_leaves_nothing(run_dir, tmp_path):
    out = tmp_path / "o.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "curator", "convert", str(clip(CLIP_A)), "--model", str(run_dir),
                             "--out", str(out), "--batch", "2", "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, preexec_fn=ctrl_c_enabled)
    deadline = time.monotonic() + 120
    # Interrupt while frames are being converted: the temporary output exists.
    while not list(tmp_path.glob(".o.mp4.*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(1.0)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted; nothing was written" in err
    assert leftovers(tmp_path, set()) == []


# --- the pieces ------------------------------------------------------------------------------


def test_smoothing_steadies_still_points_follows_motion_and_resets_on_cuts():
    from curator.swap.swapper import smooth_track

    rng = np.random.default_rng(0)
    base = np.array([[100, 100], [140, 100], [120, 120], [105, 140], [135, 140], [80, 70], [160, 170]], float)
    fps, state, raw, smooth = 25.0, None, [], []
    for i in range(100):  # a still face, detector noise of 1.5 px
        noisy = base + rng.normal(0, 1.5, base.shape)
        out, state = smooth_track(noisy, i / fps, state)
        raw.append(noisy)
        smooth.append(out)
    jitter = lambda xs: np.abs(np.diff(np.array(xs[10:]), axis=0)).mean()  # noqa: E731
    assert jitter(smooth) < jitter(raw) / 3

    state, lag = None, []
    for i in range(50):  # a steady pan of 200 px/s (8 px per frame)
        pos = base + [8.0 * i, 0]
        out, state = smooth_track(pos, i / fps, state)
        lag.append(np.abs(out - pos).max())
    assert max(lag[10:]) < 4  # less than half a frame behind

    cut = base + [300, 0]  # the next shot: a jump far beyond any head motion
    out, state = smooth_track(cut, 50 / fps, state)
    assert np.array_equal(out, cut)
    out, _ = smooth_track(base, 10.0, state)  # after a long gap, also no pull from the past
    assert np.array_equal(out, base)


def test_color_match_moves_colour_statistics_onto_the_target():
    from curator.swap.swapper import color_match

    rng = np.random.default_rng(1)
    target = np.clip(rng.normal([0.7, 0.5, 0.4], 0.08, (64, 64, 3)), 0, 1).astype(np.float32)
    face = np.clip(rng.normal([0.3, 0.4, 0.6], 0.03, (64, 64, 3)), 0, 1).astype(np.float32)
    weight = np.ones((64, 64), np.float32)
    lab = lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2Lab).reshape(-1, 3)  # noqa: E731
    out = color_match(face, target, weight, "lab")
    assert np.abs(lab(out).mean(0) - lab(target).mean(0)).max() < 1.5
    assert np.abs(lab(out).mean(0) - lab(target).mean(0)).max() < 0.1 * np.abs(lab(face).mean(0) - lab(target).mean(0)).max()
    out = color_match(face, target, weight, "hist")
    assert np.abs(out.mean((0, 1)) - target.mean((0, 1))).max() < 0.01
    assert np.abs(np.percentile(out, 90, axis=(0, 1)) - np.percentile(target, 90, axis=(0, 1))).max() < 0.02
    assert color_match(face, target, weight, "none") is face


def test_blend_mask_erodes_feathers_and_clears_the_crop_border():
    from curator.swap.swapper import blend_mask
    from trainer.data import face_mask

    landmark = face_mask(128, 0.3)
    full = np.ones((128, 128), np.float32)
    plain = blend_mask(full, landmark, "predicted", erode=0, feather=0)
    assert plain[0].max() == 0 and plain[:, -1].max() == 0 and plain[64, 64] == 1  # border cleared, rest kept
    ellipse = blend_mask(landmark, landmark, "predicted", erode=0, feather=0)
    eroded = blend_mask(landmark, landmark, "predicted", erode=0.05, feather=0)
    assert eroded.sum() < 0.8 * ellipse.sum() and np.all(eroded <= ellipse)
    soft = blend_mask(full, landmark, "predicted", erode=0, feather=0.1)
    assert ((soft > 0.05) & (soft < 0.95)).sum() > 5 * ((plain > 0.05) & (plain < 0.95)).sum()
    both = blend_mask(full, landmark, "both", erode=0, feather=0)
    assert np.allclose(both[4:-4, 4:-4], landmark[4:-4, 4:-4])
    assert np.array_equal(blend_mask(None, landmark, "predicted", 0, 0), blend_mask(full, landmark, "landmark", 0, 0))


def test_choose_face_by_identity_and_keeps_a_track_through_poor_embeddings():
    from curator.swap.swapper import choose_face

    target = np.array([[1.0, 0, 0]], np.float32)
    boxes = np.array([[0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.9]], np.float32)
    emb = np.array([[0.2, 0.98, 0], [0.9, 0.0, 0.436]], np.float32)
    assert choose_face(boxes, emb, target, 0.5)[0] == 1
    assert choose_face(boxes, emb, target, 0.95)[0] is None
    assert choose_face(boxes[:0], emb[:0], target, 0.5)[0] is None
    # Below the threshold (a profile, say), the face where the tracked one was, looking like it, continues.
    last = (np.array([1, 1, 11, 11], np.float32), np.array([0.3, 0.95, 0], np.float32))
    assert choose_face(boxes, emb, target, 0.95, last)[0] == 0
    stranger = (last[0], np.array([0, 0, 1.0], np.float32))  # same place, different-looking face: a cut
    assert choose_face(boxes, emb, target, 0.95, stranger)[0] is None
    # How alike is alike enough is the recogniser's track link (curator.recognisers): 0.991 here is not 0.995.
    assert choose_face(boxes, emb, target, 0.95, last, keep_sim=0.995)[0] is None


def test_keypoints_jitter_less_with_smoothing_on_a_real_clip(run_dir):
    from dataclasses import replace

    from curator.swap.convert import ConvertSettings, load_swapper
    from curator.swap.swapper import find_face

    frames = bgr_frames(clip(CLIP_A), 40)
    paths = {}
    loaded, identity = load_swapper(run_dir, models=str(PACK), device="cpu")
    shared = recognisers.MOBILEFACENET_128  # the pack's recogniser gives the swap its numbers
    assert (loaded.threshold, loaded.keep_sim, identity["threshold"]) == (shared.same_person, shared.track_link,
                                                                          shared.same_person)
    for smooth in (False, True):
        sw = replace(loaded, settings=ConvertSettings(smooth=smooth))
        track, centres = None, []
        for i, image in enumerate(frames):
            matrix, track = find_face(sw, image, i / 22.13, track)
            inv = cv2.invertAffineTransform(matrix)
            centres.append(inv @ [32, 32, 1])  # where the crop's centre sits in the frame
        paths[smooth] = np.array(centres)
    accel = {k: np.abs(np.diff(v, 2, axis=0)).mean() for k, v in paths.items()}  # frame-to-frame jitter
    assert accel[True] < 0.6 * accel[False], accel
    assert np.abs(paths[True] - paths[False]).max() < 10  # and the face stays where it is


def test_inference_needs_only_the_weights_file(run_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    from trainer.checkpoint import load_for_inference

    copy = tmp_path / "weights_only"
    copy.mkdir()
    shutil.copy(run_dir / "model.safetensors", copy / "model.safetensors")  # no state.pt: nothing is unpickled
    model, config, info = load_for_inference(copy)
    assert (config["resolution"], config["width"], config["latent"]) == (64, 8, 64) and info["step"] == 20
    saved = load_file(str(run_dir / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert not model.training
