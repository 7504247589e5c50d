"""Video in and out for `curator convert`: demuxing (audio included), frame conversion and H.264 writing.

Reading goes front to back (never seeking) with the audio packets handed on
in file order, so they can be copied into the output unchanged. Writing uses
PyAV (FFmpeg's libraries, in the `av` wheel; no ffmpeg binary): libx264 in
the input's pixel format, the input's frame times, and, in a changed frame,
new values only for the pixels that changed (`bgr_to_frame`), so the rest of
the picture skips an RGB round trip. Decoding for `extract` is curator.media.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from . import footage as media
from ..errors import ConvertError

# OUT's suffix -> the container format it is written in.
VIDEO_SUFFIXES = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}

_PLANAR_YUV = {"yuv420p": (2, 2), "yuvj420p": (2, 2), "yuv422p": (2, 1), "yuvj422p": (2, 1),
               "yuv444p": (1, 1), "yuvj444p": (1, 1)}


def bgr_to_frame(bgr: np.ndarray, like, fmt: str, before: np.ndarray | None = None):
    """A VideoFrame in pixel format `fmt` showing `bgr`, with `like`'s timing and colour tags.

    When `before` (the BGR image `like` decodes to) is given and `like` is
    planar YUV in `fmt`, only the pixels where `bgr` differs from `before` get
    new values (a chroma sample when any pixel it covers changed): every
    other value is `like`'s own, bit for bit, instead of passing through
    YUV -> RGB -> YUV. Only the boxes around the changes are converted.
    """
    kw = {}
    if like.colorspace in (1, 4, 5, 6, 7, 9):  # the matrices swscale knows; others mean "unspecified" (BT.601)
        kw["dst_colorspace"] = like.colorspace
    if like.color_range:
        kw["dst_color_range"] = like.color_range
    sub = _PLANAR_YUV.get(fmt)
    if before is None or sub is None or like.format.name != fmt:
        new = _from_bgr(bgr, fmt, kw)
    else:
        d = cv2.absdiff(bgr, before)
        changed = (d[..., 0] | d[..., 1] | d[..., 2]) != 0  # 15x faster than np.any(..., axis=2)
        planes = [_plane_array(p).copy() for p in like.planes]
        for y0, y1, x0, x1 in _changed_boxes(changed, 16):
            roi = _from_bgr(bgr[y0:y1, x0:x1], fmt, kw)
            sel_y = changed[y0:y1, x0:x1]
            for k, plane in enumerate(roi.planes):
                sx, sy = (1, 1) if k == 0 else sub
                upd = _plane_array(plane)
                if k == 0:
                    sel = sel_y
                else:
                    h, w = sel_y.shape
                    padded = np.pad(sel_y, ((0, (-h) % sy), (0, (-w) % sx)))
                    sel = padded.reshape(padded.shape[0] // sy, sy, padded.shape[1] // sx, sx).any(axis=(1, 3))
                target = planes[k][y0 // sy:y0 // sy + upd.shape[0], x0 // sx:x0 // sx + upd.shape[1]]
                np.copyto(target, upd, where=sel[:target.shape[0], :target.shape[1]])
        new = _frame_from_planes(planes, fmt, bgr.shape[1], bgr.shape[0])
    new.pts, new.time_base, new.duration = like.pts, like.time_base, like.duration
    for tag in ("color_range", "colorspace", "color_primaries", "color_trc"):
        try:
            setattr(new, tag, getattr(like, tag))
        except (AttributeError, ValueError, TypeError):
            pass
    return new


def _from_bgr(bgr: np.ndarray, fmt: str, kw: dict):
    import av

    return av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24").reformat(format=fmt, threads=1, **kw)


def _changed_boxes(changed: np.ndarray, block: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) boxes, on a `block`-pixel grid, that together cover every True of `changed`.

    One box per connected group of changed blocks: the swapped face and the
    corner mark are converted separately, not the whole span between them.
    Groups a block apart are joined first (the ragged rim of a feathered
    mask would otherwise make dozens of small boxes, each a new swscale setup).
    """
    h, w = changed.shape
    gh, gw = -(-h // block), -(-w // block)
    grid = np.pad(changed, ((0, gh * block - h), (0, gw * block - w))).reshape(gh, block, gw, block).any(axis=(1, 3))
    grid = cv2.dilate(grid.astype(np.uint8), np.ones((3, 3), np.uint8)) & 1
    _, _, stats, _ = cv2.connectedComponentsWithStats(grid, connectivity=8)
    return [(y * block, min(h, (y + bh) * block), x * block, min(w, (x + bw) * block))
            for x, y, bw, bh, _ in stats[1:]]


def _plane_array(plane) -> np.ndarray:
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:plane.height, :plane.width]


def _frame_from_planes(planes: list[np.ndarray], fmt: str, width: int, height: int):
    import av

    frame = av.VideoFrame(width, height, fmt)
    for plane, data in zip(frame.planes, planes):
        view = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        view[:data.shape[0], :data.shape[1]] = data
    return frame


@dataclass
class VideoInput:
    container: object
    stream: object
    audio: list
    info: media.VideoInfo


def open_input(video: Path) -> VideoInput:
    try:
        container, stream = media.open_video(video)
    except media.MediaError as e:
        raise ConvertError(f"{video}: {e}") from None
    return VideoInput(container, stream, list(container.streams.audio), media.video_info(stream, container))


def demux(inp: VideoInput, max_frames: int | None, on_audio: Callable, stats: dict) -> Iterator:
    """Decoded video frames in presentation order; audio packets go to `on_audio` in file order.

    With `max_frames`, the audio is cut where the last frame ends. The decoder
    hands frames back a few packets late, so audio packets are held until a
    decoded frame (or the end) shows they come before the cut.
    """
    import av

    frames, end = 0, None
    held: list = []
    finished: set = set()  # audio streams that reached the cut

    def seconds(packet) -> float | None:
        return None if packet.pts is None else float(packet.pts * packet.time_base)

    def release(upto: float) -> None:
        keep = []
        for p in held:
            if seconds(p) is None or seconds(p) < upto:
                on_audio(p)
            else:
                keep.append(p)
        held[:] = keep

    try:
        for packet in inp.container.demux(inp.stream, *inp.audio):
            if packet.stream.type == "audio":
                if packet.dts is None:
                    continue  # the demuxer's flush packet carries no data
                if not max_frames:
                    on_audio(packet)
                elif end is None:
                    held.append(packet)
                elif seconds(packet) is not None and seconds(packet) >= end:
                    finished.add(packet.stream.index)
                    if len(finished) == len(inp.audio):
                        break
                elif packet.stream.index not in finished:
                    on_audio(packet)
                continue
            if end is not None:
                continue
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError:
                stats["bad_packets"] = stats.get("bad_packets", 0) + 1
                continue
            for frame in decoded:
                yield frame
                frames += 1
                if frame.time is not None:
                    release(frame.time)
                if max_frames and frames >= max_frames:
                    end = (frame.time or 0.0) + float((frame.duration or 0) * (frame.time_base or 0))
                    release(end)
                    held.clear()  # what is left starts after the cut
                    break
            if end is not None and not inp.audio:
                break
        if end is None:
            release(math.inf)
    except av.error.FFmpegError as e:
        stats["error"] = f"decoding stopped after {frames} frames ({media.av_reason(e)})"


@dataclass
class VideoOutput:
    container: object
    stream: object
    audio: dict                 # input audio stream index -> output stream
    durations: dict             # pts -> frame duration, for the packets the encoder hands back
    fmt: str


def open_output(path: Path, container_format: str, first, inp: VideoInput, metadata: dict, *,
                lossless: bool, crf: int, preset: str) -> VideoOutput:
    import av

    out = av.open(str(path), mode="w", format=container_format)
    try:
        for k, v in metadata.items():
            out.metadata[k] = v
        stream = out.add_stream("libx264", rate=inp.stream.average_rate or inp.stream.guessed_rate or 25)
        supported = {f.name for f in av.codec.Codec("libx264", "w").video_formats}
        fmt = first.format.name if first.format.name in supported else "yuv420p"
        stream.width, stream.height, stream.pix_fmt = first.width, first.height, fmt
        stream.time_base = first.time_base or inp.stream.time_base
        stream.codec_context.time_base = stream.time_base
        # No B-frames: with them, MP4's edit list makes players estimate a different
        # frame rate for clips whose first frame is not at time 0 (every frame time
        # would still be the input's).
        stream.codec_context.max_b_frames = 0
        stream.options = {"qp": "0"} if lossless else {"crf": str(crf), "preset": preset}
        for tag in ("color_range", "colorspace", "color_primaries", "color_trc"):
            try:
                setattr(stream.codec_context, tag, getattr(first, tag))
            except (AttributeError, ValueError, TypeError):
                pass
        rotation = int(getattr(first, "rotation", 0) or 0)
        if rotation:
            stream.set_display_rotation(rotation)
        audio = {}
        for a in inp.audio:
            try:
                audio[a.index] = out.add_stream_from_template(a)
            except (ValueError, av.error.FFmpegError) as e:
                raise ConvertError(f"{path}: cannot copy the {a.codec_context.name} audio into "
                                   f"{container_format} ({e}); choose an .mkv OUT") from None
        out.start_encoding()
    except av.error.FFmpegError as e:
        out.close()
        raise ConvertError(f"{path}: cannot start writing ({media.av_reason(e)})") from None
    except BaseException:
        out.close()
        raise
    return VideoOutput(out, stream, audio, {}, fmt)


def write_frame(vo: VideoOutput, frame) -> None:
    if frame is not None:
        frame.pict_type = 0  # let the encoder choose frame types, not copy the input's
        if frame.pts is not None and frame.duration:
            vo.durations[frame.pts] = frame.duration
    for packet in vo.stream.encode(frame):
        # The encoder guesses the last frame's duration; the input's keeps the clip's length.
        packet.duration = vo.durations.pop(packet.pts, packet.duration)
        vo.container.mux(packet)


def write_audio(vo: VideoOutput, packet) -> None:
    packet.stream = vo.audio[packet.stream_index]
    vo.container.mux(packet)
