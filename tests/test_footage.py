"""Real-world footage: 10-bit HEVC, variable frame rate, spliced streams, 4K, long files.

Each kind of file is made here from the shared clips with PyAV (the `av`
wheel's own FFmpeg: libx265 for HEVC, libx264, the MPEG-TS muxer), so the
tests need nothing beyond ../shared/testdata. docs/reliability.md lists what
each one checks and the figures measured on such files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pandas as pd
import pytest

from helpers import clip, curator_json, letterbox, loop_video
from curator import media
from curator.extract.units import BACKFILL_KEEP
from curator.workspace import open_workspace, read_embeddings, read_table, staged_progress, staged_units

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')


def reencode(src: Path, dst: Path, codec: str, pix_fmt: str, options: dict | None = None, *,
             container: str | None = None, times: list[float] | None = None) -> None:
    """Decode `src` and encode it again with `codec` in `pix_fmt`, keeping the source's timestamps; or, with
    `times`, a clip whose frame i is shown at `times[i]` seconds and shows the source's picture at that time
    (what a camera that changes its frame rate records)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=container) as out:
        ins = inp.streams.video[0]
        stream = out.add_stream(codec, rate=ins.average_rate or 25)
        stream.width, stream.height, stream.pix_fmt = ins.codec_context.width, ins.codec_context.height, pix_fmt
        time_base = Fraction(1, 1000) if times else ins.time_base
        stream.time_base = stream.codec_context.time_base = time_base
        stream.options = options or {}
        frames = inp.decode(ins)
        if times is None:
            shots = ((frame, frame.pts) for frame in frames)
        else:
            shots = zip(_shown_at(frames, times), (round(t * 1000) for t in times))
        for frame, pts in shots:
            new = frame.reformat(format=pix_fmt)
            new.pts, new.time_base = pts, time_base
            for packet in stream.encode(new):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _shown_at(frames, times: list[float]):
    """For each of `times`, the source frame on screen then: the last one that starts at or before it."""
    frames = iter(frames)
    current, upcoming = next(frames), next(frames, None)
    for t in times:
        while upcoming is not None and upcoming.time <= t + 1e-6:
            current, upcoming = upcoming, next(frames, None)
        yield current


def first_frame(path: Path):
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        return frame, c.streams.video[0].codec_context.name


def analysed(ws: Path) -> pd.DataFrame:
    return read_table(open_workspace(ws)).sort_values(["frame", "face_index"]).reset_index(drop=True)


# --- 10-bit -------------------------------------------------------------------------

def test_luma_thumb_reads_high_bit_depth_planes():
    """The thumbnail that static-frame skipping and motion sampling compare is read straight from the luma
    plane in 8-bit grey levels, whatever the bit depth and layout (planar, semi-planar, samples in the low
    bits like yuv420p10le or in the high bits like p010le, either byte order)."""
    frame, _ = first_frame(clip("driving_d12.mp4"))
    ref = media.luma_thumb(frame)
    for fmt in ("yuv420p10le", "yuv420p10be", "p010le", "p010be", "yuv422p10le", "yuv444p12le", "nv20le",
                "p210le", "yuv420p9le", "yuv444p16le", "p016le", "nv12"):
        other = frame.reformat(format=fmt)
        assert media.luma_plane(other) is not None, fmt  # no conversion on the way
        np.testing.assert_allclose(media.luma_thumb(other), ref, atol=1.0, err_msg=fmt)
    grey = frame.reformat(format="gray")  # full range: compared with its own 8-bit version
    np.testing.assert_allclose(media.luma_thumb(frame.reformat(format="gray10le")), media.luma_thumb(grey), atol=1.0)
    assert media.luma_plane(frame.reformat(format="yuyv422")) is None  # packed: converted instead


def test_10bit_hevc_gives_the_faces_of_its_8bit_encode(tmp_path):
    """HDR phone video is 10-bit HEVC (yuv420p10le). The same clip encoded by libx265 in 10 and in 8 bits gives
    the same analysed frames and the same faces. Tolerances: the two encodes differ by their quantisation, so a
    motion frame chosen where the picture change sits at the threshold may move by one frame (at most 2 of ~60
    frames differ); on faces of ~290 px, boxes agree within 2 px, keypoints within 3 px (median 0.5), head pose
    within 2.5 degrees (median 0.5)."""
    src = clip("driving_d12.mp4")  # fast head turns: many frames chosen by picture change and back-fill
    x265 = {"preset": "ultrafast", "crf": "16", "x265-params": "log-level=error"}
    ten, eight = tmp_path / "ten.mp4", tmp_path / "eight.mp4"
    reencode(src, ten, "libx265", "yuv420p10le", x265)
    reencode(src, eight, "libx265", "yuv420p", x265)
    frame10, codec = first_frame(ten)
    frame8, _ = first_frame(eight)
    assert codec == "hevc" and frame10.format.name == "yuv420p10le" and frame8.format.name == "yuv420p"
    assert abs(media.luma_thumb(frame10) - media.luma_thumb(frame8)).mean() < 1.0

    tables = {}
    for name, path in (("ten", ten), ("eight", eight)):
        curator_json("extract", path, "-w", tmp_path / name, "-q")
        tables[name] = analysed(tmp_path / name)
    a, b = tables["ten"], tables["eight"]
    frames_a, frames_b = set(a["frame"]), set(b["frame"])
    assert len(frames_b) >= 40 and (b["sampled"] == "motion").sum() >= 20
    assert len(frames_a ^ frames_b) <= 2, sorted(frames_a ^ frames_b)
    assert set(a.loc[a["sampled"] == "due", "frame"]) == set(b.loc[b["sampled"] == "due", "frame"])
    a = a[a["frame"].isin(frames_b)].reset_index(drop=True)
    b = b[b["frame"].isin(frames_a)].reset_index(drop=True)
    assert list(a["frame"]) == list(b["frame"])  # the same faces in each common frame
    assert np.abs(np.stack(a["bbox"]) - np.stack(b["bbox"])).max() <= 2.0
    kps = np.abs(np.stack(a["kps"]) - np.stack(b["kps"]))
    assert kps.max() <= 3.0 and np.median(kps) <= 0.5
    for angle in ("yaw", "pitch", "roll"):
        diff = np.abs(a[angle] - b[angle])
        assert diff.max() <= 2.5 and diff.median() <= 0.5, angle


# --- variable frame rate, timestamps that jump back -------------------------------

def test_variable_frame_rate_is_sampled_by_presentation_time(tmp_path):
    """Phone video changes its frame rate with the light. A clip made of 1.5 s at 60 fps, 6 s of frames shown
    0.75 s each, then 1.5 s at 30 fps: the --fps 2 clock follows presentation time, so each stretch gets its
    seconds x 2 frames (a clock counting frames at the average rate would take 10 from the fast stretch and 1
    from the slow one), every frame shown longer than the period is analysed once and none twice, and time_s
    is the time the file shows the frame."""
    times = [i / 60 for i in range(90)] + [1.5 + 0.75 * i for i in range(8)] + [7.5 + i / 30 for i in range(45)]
    path = tmp_path / "vfr.mp4"
    reencode(clip("driving_d9.mp4"), path, "libx264", "yuv420p", times=times)
    with av.open(str(path)) as c:
        shown = [round(float(f.time), 3) for f in c.decode(video=0)]
    assert shown == [round(t, 3) for t in times]

    out = curator_json("extract", path, "-w", tmp_path / "ws", "-q", "--no-pose-fill")
    assert out["frames_decoded"] == len(times) and out["frames_skipped_static"] == 0
    t = analysed(tmp_path / "ws").drop_duplicates("frame")
    assert set(t["sampled"]) == {"due"}
    np.testing.assert_allclose(t["time_s"], [times[f] for f in t["frame"]], atol=1e-3)
    fast, slow, normal = t[t["frame"] < 90], t[(t["frame"] >= 90) & (t["frame"] < 98)], t[t["frame"] >= 98]
    assert list(fast["frame"]) == [0, 30, 60]
    assert list(slow["frame"]) == list(range(90, 98))
    assert len(normal) == 3
    assert np.diff(t["time_s"]).min() >= 0.5 - 1e-3  # never two frames in one period


def test_spliced_stream_whose_timestamps_restart_is_sampled_in_both_parts(tmp_path):
    """Two recordings joined into one MPEG-TS (byte concatenation, as capture tools and `cat` make them): the
    second part's timestamps start again near 0, and its frames are larger. The clock runs on across the jump
    back, so the second part is sampled like the first instead of waiting for the first part's times to come
    round again (which skipped all of it); frame numbers keep counting, so face ids stay distinct."""
    parts = [tmp_path / "a.ts", tmp_path / "b.ts"]
    reencode(clip("driving_d5.mp4"), parts[0], "libx264", "yuv420p", container="mpegts")
    reencode(clip("face_5.mp4"), parts[1], "libx264", "yuv420p", container="mpegts")
    spliced = tmp_path / "spliced.ts"
    spliced.write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
    with av.open(str(spliced)) as c:
        shown = [(float(f.time), f.width) for f in c.decode(video=0)]
    first = next(i for i in range(1, len(shown)) if shown[i][0] < shown[i - 1][0])
    assert shown[first][0] < 0.5 < shown[first - 1][0] - 4 and shown[first][1] != shown[0][1]

    out = curator_json("extract", spliced, "-w", tmp_path / "ws", "-q", "--no-pose-fill")
    assert out["frames_decoded"] == len(shown)
    t = analysed(tmp_path / "ws")
    one, two = t[t["frame"] < first], t[t["frame"] >= first]
    seconds = [shown[first - 1][0] - shown[0][0], shown[-1][0] - shown[first][0]]
    for part, length in ((one, seconds[0]), (two, seconds[1])):
        assert abs(part["frame"].nunique() - 2 * length) <= 2, (part["frame"].nunique(), length)
    assert set(two["frame_w"]) == {shown[first][1]} and t["face_id"].is_unique
    assert two["frame"].min() == first  # the clock's next tick falls on the first frame after the splice
    # A timestamp after the splice may name two frames: a run stopped there resumes from the start, not by seeking.
    points = {sf.index: sf.resume for sf in media.sample_video(spliced, fps=2)}
    assert all(points[i] is not None for i in points if i < first)
    assert all(points[i] is None for i in points if i >= first)


# --- 4K: frames held are bounded by bytes -------------------------------------------

def fit(src: Path, dst: Path, width: int, height: int, seconds: float = 1e9) -> None:
    """The first `seconds` of `src` scaled to fit width x height, centred on black (an upscaled 4K or 720p copy)."""
    size = SimpleNamespace(width=width, height=height)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ins = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=ins.average_rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "20"}
        for frame in inp.decode(ins):
            if frame.time >= seconds:
                break
            for packet in stream.encode(av.VideoFrame.from_ndarray(letterbox(frame, size), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def info(width: int, height: int, pix_fmt: str = "yuv420p") -> media.VideoInfo:
    return media.VideoInfo(width, height, 25.0, 0, 0.0, "h264", pix_fmt)


def test_hold_plan_bounds_bytes_at_4k_and_keeps_the_count_below():
    """16 kept frames are what back-fill keeps at 720p and 1080p under the default 1024 MiB; at 4K (12 MB a
    frame, 25 MB in 10 bits) fewer are kept and the bound stays within the budget. The kept count does not
    depend on the number of workers (the table must not); read-ahead and workers shrink to fit instead."""
    budget = 1024 << 20
    for w, h in ((1280, 720), (1920, 1080)):
        plan = media.hold_plan(budget, info(w, h), keep_max=BACKFILL_KEEP, workers=2)
        assert (plan.keep, plan.ahead, plan.workers, plan.batch) == (BACKFILL_KEEP, 2, 2, 1) and plan.bound <= budget
    k8 = media.hold_plan(budget, info(3840, 2160), keep_max=BACKFILL_KEEP, workers=2)
    k10 = media.hold_plan(budget, info(3840, 2160, "yuv420p10le"), keep_max=BACKFILL_KEEP, workers=2)
    assert 0 < k10.keep < k8.keep < BACKFILL_KEEP and k8.bound <= budget and k10.bound <= budget
    for workers in (1, 4, 8):
        plan = media.hold_plan(budget, info(3840, 2160), keep_max=BACKFILL_KEEP, workers=workers)
        assert plan.keep == k8.keep and plan.bound <= budget and 1 <= plan.workers <= workers
    for batch in (8, 32):  # a GPU's batches: the kept count stays, the batch shrinks to fit
        plan = media.hold_plan(budget, info(3840, 2160), keep_max=BACKFILL_KEEP, workers=2, batch=batch)
        assert plan.keep == k8.keep and plan.bound <= budget and 1 <= plan.batch < batch
    gpu = media.hold_plan(budget, info(1280, 720), keep_max=0, workers=2, batch=32)  # every frame: none kept
    assert (gpu.keep, gpu.batch) == (0, 32) and gpu.bound <= budget
    assert media.hold_plan(budget, info(3840, 2160), keep_max=0, workers=2).keep == 0  # --no-pose-fill
    tiny = media.hold_plan(16 << 20, info(3840, 2160), keep_max=BACKFILL_KEEP, workers=4, batch=8)
    assert (tiny.keep, tiny.ahead, tiny.workers, tiny.batch) == (0, 1, 1, 1)  # one frame at each stage, whatever the budget


def test_frames_held_at_4k_stay_within_the_byte_budget(tmp_path):
    """A 4K clip (a shared clip upscaled, with fast head turns) under --frame-memory 400: the bytes of decoded
    frames and images alive at once, counted as they are made and freed (summary frames_held_peak_mb), never
    pass 400 MiB, where 16 kept frames alone would be 200 MB and each frame in flight carries its own."""
    path = tmp_path / "uhd.mp4"
    fit(clip("driving_d12.mp4"), path, 3840, 2160, seconds=2.0)
    plan = media.hold_plan(400 << 20, info(3840, 2160), keep_max=BACKFILL_KEEP, workers=2)
    assert 0 < plan.keep < BACKFILL_KEEP
    out = curator_json("extract", path, "-w", tmp_path / "ws", "-q", "--frame-memory", "400")
    assert out["frames_analysed"] >= 4 and out["faces"] >= 4
    assert 3 * 3840 * 2160 / 2**20 < out["frames_held_peak_mb"] <= 400


def test_count_bound_unchanged_below_4k(tmp_path):
    """At 720p the default budget is not reached: the table is the one the count bound alone gives (an
    unbounded budget), back-filled frames included."""
    path = tmp_path / "hd.mp4"
    fit(clip("driving_d12.mp4"), path, 1280, 720)
    tables = []
    for name, budget in (("default", None), ("unbounded", "1000000")):
        extra = ["--frame-memory", budget] if budget else []
        out = curator_json("extract", path, "-w", tmp_path / name, "-q", *extra)
        assert out["frames_held_peak_mb"] <= 1024
        tables.append(_table(tmp_path / name))
    (a, ea), (b, eb) = tables
    assert (a["sampled"] == "backfill").any()
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(ea, eb)


# --- long files: resume seeks -----------------------------------------------------

POSE_FILL = {"fps": 2.0, "motion_threshold": 50.0, "keep_between": BACKFILL_KEEP}  # extract's defaults


def chosen(path: Path, **kw) -> list[tuple]:
    return [(sf.index, sf.reason, [pf.index for pf in sf.between]) for sf in media.sample_video(path, **POSE_FILL, **kw)]


def test_sampler_resumes_by_seeking_to_the_same_frames():
    """From any analysed frame of a clip with a keyframe every 250 frames, a resumed sampler seeks to the keyframe
    before it, finds the frame by its timestamp and thumbnail, and chooses exactly the frames (and back-fill
    candidates) an uninterrupted run chooses after it, decoding only from that keyframe. A resume point that
    does not match the file (here a wrong thumbnail checksum) falls back to decoding from the start, with the
    same result."""
    path = clip("driving_d6.mp4")
    full = list(media.sample_video(path, **POSE_FILL))
    frames = 1008
    listed = [(sf.index, sf.reason, [pf.index for pf in sf.between]) for sf in full]
    for k in (len(full) // 3, 2 * len(full) // 3, len(full) - 3):
        index, point = full[k].index, full[k].resume
        assert point is not None and point.index == index
        stats = media.SampleStats()
        assert chosen(path, resume_after=index, resume_at=point.as_dict(), stats=stats) == listed[k + 1:]
        assert stats.seeked and stats.frames == frames
        assert stats.decoded == frames - index // 250 * 250, (index, stats.decoded)
    index, point = full[len(full) // 2].index, full[len(full) // 2].resume
    stats = media.SampleStats()
    wrong = {**point.as_dict(), "thumb_crc": point.thumb_crc ^ 1}
    assert chosen(path, resume_after=index, resume_at=wrong, stats=stats) == listed[len(full) // 2 + 1:]
    assert not stats.seeked and stats.decoded > frames
    for other in ({**point.as_dict(), "added_later": 1}, {"index": index}, None):  # another version's: from the start
        stats = media.SampleStats()
        assert chosen(path, resume_after=index, resume_at=other, stats=stats)[:3] == listed[len(full) // 2 + 1:][:3]
        assert not stats.seeked and stats.decoded == frames


def _table(ws: Path) -> tuple[pd.DataFrame, np.ndarray]:
    w = open_workspace(ws)
    table = read_table(w)
    order = np.argsort(table["face_id"].to_numpy())
    return table.iloc[order].reset_index(drop=True), read_embeddings(w, len(table))[order]


def test_resume_on_a_long_file_seeks_instead_of_decoding_from_the_start(tmp_path):
    """A clip looped 8 times (1184 frames, a keyframe every 148) is extracted, killed past its middle, and
    extracted again: the resumed run decodes only from the keyframe before the last staged frame (summary's
    frames_decoded), and the table and embeddings are those of an uninterrupted run."""
    long = tmp_path / "long.mp4"
    loop_video(clip("driving_d5.mp4"), long, 8)
    frames, gop = 8 * 148, 148
    reference = tmp_path / "reference"
    assert curator_json("extract", long, "-w", reference, "-q")["frames_decoded"] == frames

    ws = tmp_path / "killed"
    cmd = [sys.executable, "-m", "curator", "extract", str(long), "-w", str(ws), "-q", "--checkpoint-every", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, stopped_at = time.monotonic() + 120, None
    while time.monotonic() < deadline and proc.poll() is None:
        if ws.joinpath("workspace.json").exists():
            progress = [p for p in staged_progress(open_workspace(ws)).values() if not p["complete"]]
            if progress and progress[0]["last_frame"] >= frames // 2:
                os.killpg(proc.pid, signal.SIGKILL)
                stopped_at = progress[0]
                break
        time.sleep(0.05)
    proc.wait()
    assert stopped_at is not None, "the run finished before it could be killed past its middle"
    assert stopped_at["resume"]["index"] == stopped_at["last_frame"]

    resumed = curator_json("extract", long, "-w", ws, "-q")
    assert resumed["resumed_files"] == 1
    # The staged point may have moved on between the check and the kill: the bound only gets looser.
    assert resumed["frames_decoded"] <= frames - stopped_at["last_frame"] + gop
    a, ea = _table(reference)
    b, eb = _table(ws)
    pd.testing.assert_frame_equal(a.drop(columns=["source"]), b.drop(columns=["source"]), check_exact=False, rtol=1e-6)
    np.testing.assert_allclose(ea, eb, atol=1e-6)
    assert (a["sampled"] == "backfill").any() or (a["sampled"] == "motion").any()


# --- long files: segments split at keyframes ---------------------------------------

def decoded_pts(path: Path) -> list:
    with av.open(str(path)) as c:
        return [f.pts for f in c.decode(video=0)]


def qualified_keyframes(path: Path) -> list:
    container, stream = media.open_video(path)
    try:
        return media.split_keyframes(container, stream)[0]
    finally:
        container.close()


def test_split_keyframes_number_frames_as_decoding_does(tmp_path):
    """On every shared clip (and a looped one), each keyframe the packet scan lets a segment start at is the frame
    of that index in a full decode, and seeking to it gives the full decode's frames from there on. The two clips
    whose MP4 edit lists mark packets to be discarded (obama.mp4, RD_Radio10_0_clip_0.mp4: frames decoded but not
    shown, so packets and frames no longer pair up) give none: they are read as one segment."""
    long = tmp_path / "long.mp4"
    loop_video(clip("driving_d5.mp4"), long, 8)
    checked = 0
    for path in sorted(media.discover([clip("driving_d5.mp4").parents[1]])[0], key=lambda f: f.path) + [
            media.Footage(long, "video")]:
        keys = qualified_keyframes(path.path)
        if path.path.name in ("obama.mp4", "RD_Radio10_0_clip_0.mp4"):
            assert keys == [], path.path.name
            continue
        assert keys and keys[0].index == 0, path.path.name
        full = decoded_pts(path.path)
        for key in keys:
            assert full[key.index] == key.pts, (path.path.name, key)
            container, stream = media.open_video(path.path)
            segment = media.Segment(1, key.index, key.pts, None, key.time_s)
            found = media.seek_segment(container, stream, segment, media.SampleStats())
            after = [(i, f.pts) for (i, f), _ in zip(found, range(12))]
            container.close()
            assert after == list(enumerate(full[key.index:key.index + 12], start=key.index)), (path.path.name, key)
            checked += 1
    assert checked >= 70


def encode(src: Path, dst: Path, x264: str, frames: int = 300) -> None:
    """The first `frames` frames of `src` encoded by libx264 with `x264` parameters, timestamps kept."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ins = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=ins.average_rate)
        stream.width, stream.height, stream.pix_fmt = ins.codec_context.width, ins.codec_context.height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = ins.time_base
        stream.options = {"preset": "ultrafast", "x264-params": x264}
        for frame, _ in zip(inp.decode(ins), range(frames)):
            new = frame.reformat(format="yuv420p")
            new.pts, new.time_base = frame.pts, ins.time_base
            for packet in stream.encode(new):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_open_gop_keyframes_are_not_split_points(tmp_path):
    """In an open GOP the pictures after a keyframe in decode order include some shown before it, which need the
    frames before it: counting packets before such a keyframe does not give its frame's index (57 packets before
    the keyframe shown as frame 60 here). The scan lets segments start only at closed-GOP keyframes (x264's IDR
    frames), so a file encoded with open GOPs is read as one segment, and the same file with closed GOPs splits
    at every keyframe."""
    gop = "keyint=60:min-keyint=60:bframes=3:scenecut=0"
    opened, closed = tmp_path / "open.mp4", tmp_path / "closed.mp4"
    encode(clip("driving_d6.mp4"), opened, gop + ":open-gop=1")
    encode(clip("driving_d6.mp4"), closed, gop)
    with av.open(str(opened)) as c:
        packets = [(p.pts, p.is_keyframe) for p in c.demux(video=0) if p.size]
    keyframes = [i for i, (_, key) in enumerate(packets) if key]
    shown_at = {i: sum(pts < packets[i][0] for pts, _ in packets) for i in keyframes}
    assert len(keyframes) == 5 and any(shown_at[i] != i for i in keyframes[1:])  # open: the count is off
    assert [k.index for k in qualified_keyframes(opened)] == [0]
    assert media.segments(opened, 2.0) == [media.Segment(0)]
    with av.open(str(closed)) as c:
        closed_keyframes = [i for i, p in enumerate(p for p in c.demux(video=0) if p.size) if p.is_keyframe]
    assert [k.index for k in qualified_keyframes(closed)] == closed_keyframes
    assert [s.start for s in media.segments(closed, 2.0)] == [0, 60, 120, 180, 240]  # the nearest to 2, 4, 6, 8 s


def cut(src: Path, dst: Path, start: int, stop: int | None) -> None:
    """Packets `start` to `stop` of `src` (decode order), copied into a file of their own whose first frame is
    shown at 0 s."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ins = inp.streams.video[0]
        outs = out.add_stream_from_template(ins)
        packets = [p for p in inp.demux(ins) if p.size][start:stop]
        shift = packets[0].pts
        for packet in packets:
            packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
            packet.stream = outs
            out.mux(packet)


def test_segments_are_sampled_as_files_of_their_own(tmp_path):
    """A 39 s file in segments of 8 s starts a segment at the keyframe nearest to every 8 s, and each segment is
    sampled exactly as the same packets cut into a file of their own would be (clock and near-duplicate skip
    start afresh, back-fill candidates stay inside it), with frames numbered as in the whole file. When seeking
    does not find the keyframe (here a wrong timestamp), the file is decoded up to it instead, with the same
    result."""
    long = tmp_path / "long.mp4"
    loop_video(clip("driving_d5.mp4"), long, 8)
    parts = media.segments(long, 8.0)
    assert [s.start for s in parts] == [0, 296, 444, 740, 888]  # keyframes every 148 frames (4.93 s)
    assert [s.stop for s in parts] == [296, 444, 740, 888, None] and parts[1].pts is not None
    assert media.segments(long, 60.0) == [media.Segment(0)]  # shorter than a segment: one
    for seg in parts:
        own = tmp_path / f"cut{seg.number}.mp4"
        cut(long, own, seg.start, seg.stop)
        alone = [(sf.index + seg.start, sf.reason, [pf.index + seg.start for pf in sf.between])
                 for sf in media.sample_video(own, **POSE_FILL)]
        stats = media.SampleStats()
        assert chosen(long, segment=seg, stats=stats) == alone, seg
        assert stats.frames == (seg.stop or 1184)
        assert stats.decoded <= (seg.stop or 1184) - seg.start + 4  # from its keyframe on, not from the start
    wrong = media.Segment(2, parts[2].start, parts[2].pts + 1, parts[2].stop)
    stats = media.SampleStats()
    assert chosen(long, segment=wrong, stats=stats) == chosen(long, segment=parts[2])
    assert stats.decoded >= parts[2].stop


def test_a_killed_run_resumes_inside_segments(tmp_path):
    """The local engine on a file in segments, killed with one segment done and the next part-way, resumes: the
    done segment is not read again, the other resumes after its last staged frame, and the table is an
    uninterrupted run's."""
    long = tmp_path / "long.mp4"
    loop_video(clip("driving_d5.mp4"), long, 8)
    options = ["--segment-seconds", "8", "--checkpoint-every", "2"]
    reference = curator_json("extract", long, "-w", tmp_path / "reference", "-q", *options)
    assert reference["units"] == 5
    ws = tmp_path / "killed"
    cmd = [sys.executable, "-m", "curator", "extract", str(long), "-w", str(ws), "-q", *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, done = time.monotonic() + 120, None
    while time.monotonic() < deadline and proc.poll() is None:
        if ws.joinpath("workspace.json").exists():
            units = staged_units(open_workspace(ws))
            finished = [k for k, u in units.items() if u["complete"]]
            if len(finished) >= 2 and any(not u["complete"] and u["last_frame"] > u["unit"]["start"] for u in units.values()):
                os.killpg(proc.pid, signal.SIGKILL)
                done = finished
                break
        time.sleep(0.02)
    proc.wait()
    assert done is not None, "the run finished before it could be killed inside a segment"
    resumed = curator_json("extract", long, "-w", ws, "-q", *options)
    assert resumed["resumed_files"] == 1 and resumed["units"] <= 5 - len(done) and resumed["units_resumed"] >= 1
    a, ea = _table(tmp_path / "reference")
    b, eb = _table(ws)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
    np.testing.assert_allclose(ea, eb, atol=1e-6)
