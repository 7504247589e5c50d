"""Real-world footage: 10-bit HEVC, variable frame rate, spliced streams, 4K, long files.

Each kind of file is made here from the shared clips with PyAV (the `av`
wheel's own FFmpeg: libx265 for HEVC, libx264, the MPEG-TS muxer), so the
tests need nothing beyond ../shared/testdata. docs/reliability.md lists what
each one checks and the figures measured on such files.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd

from conftest import clip, curator_json
from curator import media
from curator.workspace import open_workspace, read_table


def reencode(src: Path, dst: Path, codec: str, pix_fmt: str, options: dict | None = None, *,
             container: str | None = None, times: list[float] | None = None) -> None:
    """Decode `src` and encode every frame again with `codec` in `pix_fmt`, keeping the source's timestamps, or
    showing frame i at `times[i]` seconds (then only len(times) frames are written)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=container) as out:
        ins = inp.streams.video[0]
        stream = out.add_stream(codec, rate=ins.average_rate or 25)
        stream.width, stream.height, stream.pix_fmt = ins.codec_context.width, ins.codec_context.height, pix_fmt
        time_base = Fraction(1, 1000) if times else ins.time_base
        stream.time_base = stream.codec_context.time_base = time_base
        stream.options = options or {}
        for i, frame in enumerate(inp.decode(ins)):
            if times is not None and i >= len(times):
                break
            new = frame.reformat(format=pix_fmt)
            new.pts = round(times[i] * 1000) if times else frame.pts
            new.time_base = time_base
            for packet in stream.encode(new):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


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
