"""Footage: finding it, fingerprinting it, and sampling frames from it.

Videos are decoded sequentially with PyAV (FFmpeg's decoders, frame-threaded);
sampling never seeks, because seeking in long-GOP footage decodes the same
frames again and some files (e.g. variable-frame-rate phone video) seek badly.
Only a resumed run seeks, once, to the keyframe before where it stopped, and
checks that it found the very frame (`ResumePoint`); otherwise it decodes from
the start. A long file is read in segments (`segments`): stretches that start
at keyframes found by reading packets, never by decoding, and are sampled each
on its own, so that several workers can share one file and every engine
chooses the same frames. Choosing which frames to analyse happens on a small greyscale
thumbnail taken straight from the decoded luma plane (any bit depth), so
frames that are skipped are never converted to RGB and never reach a neural
network.
"""

from __future__ import annotations

import itertools
import math
import os
import queue
import re
import threading
import weakref
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from ..errors import CuratorError
from ..fs.hash import sha256_file  # noqa: F401  (callers fingerprint footage through media)

VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".m2ts", ".3gp"}
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class MediaError(CuratorError):
    """A file that cannot be used as footage; the message is the reason."""


@dataclass(frozen=True)
class Footage:
    path: Path
    kind: str  # "video" | "image"


def media_kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in IMAGE_EXTS:
        return "image"
    return None


def discover(inputs: Iterable[str | os.PathLike]) -> tuple[list[Footage], list[tuple[str, str]]]:
    """Expand files and folders (recursively) into footage, in a stable order.

    Returns (footage, problems) where problems are (path, reason) pairs for
    inputs named explicitly that cannot be footage. Unknown files found inside
    folders are ignored silently: folders of footage often hold subtitles,
    thumbnails and notes.
    """
    found: list[Footage] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(p: Path, kind: str) -> None:
        rp = p.resolve()
        if rp not in seen:
            seen.add(rp)
            found.append(Footage(rp, kind))

    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            for sub in sorted(p.rglob("*")):
                kind = media_kind(sub)
                if kind and sub.is_file() and not sub.name.startswith("."):
                    add(sub, kind)
        elif p.is_file():
            kind = media_kind(p) or sniff_kind(p)
            if kind:
                add(p, kind)
            else:
                problems.append((str(item), "not a video or image file"))
        elif p.exists():
            problems.append((str(item), "not a regular file or folder"))
        else:
            problems.append((str(item), "no such file or folder"))
    return found, problems


def sniff_kind(path: Path) -> str | None:
    """Recognise media by content when the extension is unknown or missing."""
    try:
        head = path.open("rb").read(16)
    except OSError:
        return None
    if head[:3] == b"\xff\xd8\xff" or head[:8] == b"\x89PNG\r\n\x1a\n" or head[:2] == b"BM":
        return "image"
    if head[4:8] in (b"ftyp", b"moov", b"mdat") or head[:4] == b"\x1a\x45\xdf\xa3" or head[:4] == b"RIFF":
        return "video"
    return None


def read_image(path: Path) -> np.ndarray:
    """BGR uint8 image; np.fromfile + imdecode so non-ASCII paths work."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise MediaError(f"cannot read: {e.strerror or e}") from None
    if data.size == 0:
        raise MediaError("empty file")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError("not a decodable image (corrupt, truncated or unsupported format)")
    return img


# --- video sampling -----------------------------------------------------------

@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int  # container's estimate; 0 when unknown
    duration_s: float
    codec: str
    pix_fmt: str = "yuv420p"  # the decoder's pixel format (yuv420p10le for 10-bit video)


@dataclass
class SamplerState:
    """What frame selection depends on. A resumed run restores it at the last analysed frame (`ResumePoint`)."""

    next_due: float = 0.0  # on the clock: presentation time, plus `offset` after a jump back
    last_thumb: np.ndarray | None = None
    last_index: int = -1  # the last frame chosen for analysis
    offset: float = 0.0  # added to presentation times since they jumped back (a spliced stream), so the clock runs on
    step: float = 0.0  # the last forward step between two frames' times: the clock's step across a jump back
    last_t: float | None = None  # the previous decoded frame's presentation time
    seekable: bool = True  # timestamps only rose so far: a timestamp names one frame, so resuming can seek to it


@dataclass
class ResumePoint:
    """Where an earlier run stopped: its last analysed frame, and the sampler's state right after choosing it.

    Staged with the progress (`curator.workspace.PartWriter.add(resume=...)`); a resumed run seeks to the keyframe
    before `pts`, decodes up to the frame with that timestamp and, when its thumbnail's checksum matches, goes on
    from there with frame `index + 1`, without decoding the file from its start.
    """

    index: int  # decode-order index of the last analysed frame
    pts: int  # its presentation timestamp, in the stream's time base
    next_due: float
    step: float
    thumb_crc: int  # zlib.crc32 of its luma thumbnail: the frame found after seeking must be this one

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, staged: dict | None) -> "ResumePoint | None":
        """The point staged by `as_dict`; None when there is none or it is not of this form (another version's)."""
        try:
            return cls(**staged) if staged else None
        except TypeError:
            return None


class HeldBytes:
    """Bytes of decoded frames and images alive in the pipeline (each counted until it is freed), and the peak."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    def add(self, obj, nbytes: int):
        with self._lock:
            self.now += nbytes
            self.peak = max(self.peak, self.now)
        weakref.finalize(obj, self._release, nbytes)
        return obj

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self.now -= nbytes


@dataclass
class SampleStats:
    decoded: int = 0  # frames decoded by this run (a resumed run that seeks decodes fewer than the file has)
    frames: int = 0  # frames in the file up to where decoding stopped: the last frame's index + 1
    analysed: int = 0
    skipped_static: int = 0
    seeked: bool = False  # a resumed run started at the keyframe before its last analysed frame
    error: str | None = None  # set when decoding stopped early (truncated or corrupt stream)
    held: HeldBytes = field(default_factory=HeldBytes)
    extra: dict = field(default_factory=dict)


@dataclass
class PendingFrame:
    """A decoded frame that was not chosen, kept so the analysis can go back to it (pose back-fill)."""

    index: int
    time_s: float
    frame: object  # av.VideoFrame; converted only if used
    held: HeldBytes | None = None  # counts the image made from it

    def image(self) -> np.ndarray:
        image = to_bgr(self.frame)
        return self.held.add(image, image.nbytes) if self.held else image


@dataclass
class SampledFrame:
    index: int  # 0-based decode order
    time_s: float
    image: np.ndarray  # BGR uint8
    reason: str = "due"  # "due" (the fps clock) or "motion" (large picture change since the last chosen frame)
    between: list[PendingFrame] = field(default_factory=list)  # decoded since the last chosen frame (keep_between)
    resume: ResumePoint | None = None  # where a run stopped after this frame goes on; None: from the start


def open_video(path: Path):
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"not a readable video ({av_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise MediaError("no video stream")
    stream = container.streams.video[0]
    # Frame threading roughly doubles decode speed on two cores and keeps frame order.
    stream.thread_type = "AUTO"
    return container, stream


def video_info(stream, container) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or 0
    fps = float(rate) if rate else 0.0
    duration = 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1e6
    frames = int(stream.frames or (duration * fps if fps else 0))
    cc = stream.codec_context
    return VideoInfo(cc.width, cc.height, fps, frames, duration, cc.name, cc.pix_fmt or "yuv420p")


def av_reason(e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return msg.split(": '")[0] if msg else type(e).__name__


def luma_thumb(frame, target: int = 96) -> np.ndarray:
    """A ~target-px wide greyscale thumbnail in 8-bit grey levels, straight from the decoder's luma plane when
    possible (planar and semi-planar YUV and grey formats, any bit depth)."""
    step = max(1, frame.width // target)
    y = luma_plane(frame)
    if y is None:
        return frame.to_ndarray(format="gray")[::step, ::step].astype(np.float32)
    thumb = y[::step, ::step].astype(np.float32)
    return thumb * _luma_scale(frame.format) if y.dtype != np.uint8 else thumb


def luma_plane(frame) -> np.ndarray | None:
    """The luma plane as stored (uint8, or uint16 for 9-16 bit formats: HDR phone video is `yuv420p10le`, hardware
    decoders give `p010le`), without a copy; None for packed and RGB formats."""
    fmt = frame.format
    luma = fmt.components[0]
    if fmt.is_rgb or fmt.is_bayer or fmt.has_palette or not luma.is_luma or luma.plane != 0 \
            or not (fmt.is_planar or len(fmt.components) == 1):
        return None
    plane = frame.planes[0]
    w, h = frame.width, frame.height
    if luma.bits <= 8:
        return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:h, :w]
    dtype = np.dtype(">u2" if fmt.is_big_endian else "<u2")
    return np.frombuffer(plane, dtype).reshape(-1, plane.line_size // 2)[:h, :w]


def _luma_scale(fmt) -> float:
    """Factor from stored high-bit-depth luma to 8-bit grey levels. Most formats keep the value in the low bits
    (`yuv420p10le`: 0-1023); P010-style formats (`p010le`, `p210le`, `...msb`) keep it in the high bits of 16."""
    msb = re.fullmatch(r"p[024]\d\d(le|be)", fmt.name) or "msb" in fmt.name
    return 1.0 / 256.0 if msb else 1.0 / (1 << (fmt.components[0].bits - 8))


def change(a: np.ndarray, b: np.ndarray) -> float:
    """How much the picture changed: the largest mean grey-level difference over an 8x8 grid of blocks.

    A whole-frame mean lets letterbox bars and still backgrounds hide a
    talking mouth; the worst block does not.
    """
    return float(cv2.resize(np.abs(a - b), (8, 8), interpolation=cv2.INTER_AREA).max())


def frame_time(frame, index: int, fps: float) -> float:
    if frame.time is not None:
        return float(frame.time)
    return index / fps if fps else float(index)


def sample_video(
    path: Path,
    *,
    fps: float | None = 2.0,
    every: int | None = None,
    static_threshold: float = 1.5,
    motion_threshold: float = 0.0,
    motion_gap: int = 2,
    keep_between: int = 0,
    resume_after: int = -1,
    resume_at: dict | None = None,
    segment: Segment | None = None,
    stats: SampleStats | None = None,
) -> Iterator[SampledFrame]:
    """Decode `path` front to back and yield the frames worth analysing.

    A frame is *due* once per 1/fps seconds of presentation time (or every
    `every`-th frame), so variable-frame-rate video is sampled by time, not
    by frame count. Where timestamps jump back (spliced streams that restart
    their clock) the clock runs on from the frame before, one frame step
    later, instead of waiting for the old time to come round again. A due
    frame whose thumbnail differs from the last analysed one by less than
    `static_threshold` grey levels on average in every block of an 8x8 grid is
    a near-duplicate (paused video, a slide, a frozen shot) and is skipped
    before any network runs.

    With `motion_threshold` > 0, a frame that is not due is also chosen when
    the picture changed by more than that since the last chosen frame (same
    measure, worst block) and it is at least `motion_gap` frames after it:
    fast head turns and cuts are where a fixed clock misses poses. With
    `keep_between` > 0, each chosen frame carries the frames decoded since the
    previous chosen one (at most that many, evenly thinned), for pose back-fill.

    Resuming: frames up to `resume_after` were handled by an earlier run. With
    `resume_at` (that frame's `ResumePoint` as a dict) decoding seeks to the
    keyframe before it and restores the sampler's state there; otherwise, or
    when the frame is not found that way, the file is decoded from the start
    and those frames run through the same selection without being yielded.
    Either way the frames chosen after a resume are exactly those an
    uninterrupted run would choose.

    `segment` (from `segments`): only that stretch of the file, sampled as if
    it were a file of its own (the clock starts at its first frame as it
    starts at 0 s for a whole file, the last analysed thumbnail is forgotten,
    and back-fill never reaches before it), with frames numbered as in the
    whole file. It starts by seeking to its keyframe.
    """
    stats = stats if stats is not None else SampleStats()
    container, stream = open_video(path)
    info = video_info(stream, container)
    period = 1.0 / fps if (fps and not every) else None
    stop = segment.stop if segment is not None else None
    # A later segment's clock runs from its first frame (the offset `_tick` adds to presentation times is set
    # there); a run resumed inside it by seeking starts after that frame, with the offset its timestamp gives.
    restart = segment.start if segment is not None and segment.start > 0 else None
    offset = -float(segment.pts * stream.time_base) if restart is not None else 0.0
    pending: list[PendingFrame] = []
    state, frames = None, None
    try:
        point = ResumePoint.read(resume_at) if resume_after >= 0 else None
        if point is not None and point.index == resume_after:
            state, frames = _seek_to(container, stream, point, info.fps, stats, offset)
            if frames is None:  # not found by seeking: read from the start
                container.close()
                container, stream = open_video(path)
        if frames is None and restart is not None:
            frames = seek_segment(container, stream, segment, stats)
            if frames is None:  # the keyframe was not found by seeking: decode from the start up to it
                container.close()
                container, stream = open_video(path)
                frames = _skip_to(enumerate(decode(container, stream, stats)), segment.start)
            state = SamplerState()
        if frames is None:
            state, frames = SamplerState(), enumerate(decode(container, stream, stats))
        for index, frame in frames:
            if stop is not None and index >= stop:
                break
            stats.frames = index + 1
            t = frame_time(frame, index, info.fps)
            if index == restart:
                state.offset = -t
            clock = _tick(state, t, 1.0 / info.fps if info.fps else 0.0)
            if every:
                due = index % every == 0
            else:
                due = clock + 1e-6 >= state.next_due
            reason = "due"
            thumb = None
            if not due and motion_threshold > 0 and state.last_thumb is not None \
                    and index - state.last_index >= motion_gap:
                thumb = luma_thumb(frame)
                if thumb.shape == state.last_thumb.shape and change(thumb, state.last_thumb) > motion_threshold:
                    reason = "motion"
            if not due and reason != "motion":
                if keep_between and index > resume_after:
                    pending = _keep(pending, _pending(index, t, frame, stats.held), keep_between)
                continue
            if due and period:
                state.next_due = (math.floor(clock / period + 1e-6) + 1) * period
            thumb = thumb if thumb is not None else luma_thumb(frame)
            if due and state.last_thumb is not None and state.last_thumb.shape == thumb.shape:
                if change(thumb, state.last_thumb) < static_threshold:
                    if index > resume_after:
                        stats.skipped_static += 1
                    if keep_between and index > resume_after:
                        pending = _keep(pending, _pending(index, t, frame, stats.held), keep_between)
                    continue
            state.last_thumb = thumb
            state.last_index = index
            if index <= resume_after:
                continue  # analysed by an earlier run; state rebuilt above
            stats.analysed += 1
            if reason == "motion":
                stats.extra["motion"] = stats.extra.get("motion", 0) + 1
            between, pending = _thin(pending, keep_between), []
            image = to_bgr(frame)
            stats.held.add(image, image.nbytes)
            resume = (ResumePoint(index, frame.pts, state.next_due, state.step, zlib.crc32(thumb.tobytes()))
                      if state.seekable and frame.pts is not None else None)
            yield SampledFrame(index, t, image, reason, between, resume)
    finally:
        container.close()


def _tick(state: SamplerState, t: float, default_step: float) -> float:
    """Advance the sampler's clock to a frame shown at `t` seconds and return the clock's time for it.

    Presentation time, except after a jump back: a spliced stream (two
    recordings joined, an MPEG-TS whose second part restarts its timestamps)
    would otherwise stall the clock until the old time came round again and
    skip the second part.
    """
    if state.last_t is not None:
        if t < state.last_t:
            state.offset += state.last_t - t + (state.step or default_step)
            state.seekable = False  # a timestamp may now name two frames
        elif t > state.last_t:
            state.step = t - state.last_t
    state.last_t = t
    return t + state.offset


def _seek_to(container, stream, point: ResumePoint, fps: float, stats: SampleStats, offset: float = 0.0):
    """(sampler state, (index, frame) pairs after the resume point), decoding from the keyframe before it.

    (None, None) when the frame is not found that way: a file without an
    index or with timestamps that do not lead back to it, or a frame that
    decodes differently after the seek; the caller then reads from the start.
    """
    import av

    try:
        container.seek(point.pts, stream=stream, backward=True, any_frame=False)
    except (av.error.FFmpegError, OverflowError, ValueError):
        return None, None
    frames = decode(container, stream, stats)
    for frame in frames:
        if frame.pts is None or frame.pts > point.pts:
            break
        if frame.pts < point.pts:
            continue
        thumb = luma_thumb(frame)
        if zlib.crc32(thumb.tobytes()) != point.thumb_crc:
            break
        stats.seeked = True
        stats.frames = point.index + 1
        state = SamplerState(next_due=point.next_due, last_thumb=thumb, last_index=point.index, step=point.step,
                             last_t=frame_time(frame, point.index, fps), offset=offset)
        return state, enumerate(frames, start=point.index + 1)
    stats.error = None
    return None, None


# --- segments: a long file in stretches that start at keyframes ---------------

@dataclass(frozen=True)
class Segment:
    """A stretch of a video that is sampled on its own: frames `start` to `stop` (exclusive; None: to the end).

    `start` is a keyframe's decode-order index in the whole file and `pts`
    its presentation timestamp (None for the file's first segment), so a
    worker can seek straight to it and number frames as the whole file does.
    """

    number: int  # 0-based, in file order
    start: int = 0
    pts: int | None = None
    stop: int | None = None
    time_s: float = 0.0  # the start's presentation time

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Keyframe:
    index: int  # decode-order index of its frame in the whole file
    pts: int
    time_s: float


def segments(path: Path, seconds: float) -> list[Segment]:
    """The file split at the keyframes nearest to every `seconds` of presentation time (one segment when it is
    shorter, or when its packets cannot be trusted to number frames: see `split_keyframes`)."""
    container, stream = open_video(path)
    try:
        info = video_info(stream, container)
        if 0 < info.duration_s <= seconds:
            return [Segment(0)]
        keys, first, last = split_keyframes(container, stream)
    finally:
        container.close()
    chosen: list[Keyframe] = []
    target = first + seconds
    while keys and target < last:
        best = min(keys, key=lambda k: (abs(k.time_s - target), k.index))
        if best.index > 0 and (not chosen or best.index > chosen[-1].index):
            chosen.append(best)
        target += seconds
    stops = [k.index for k in chosen] + [None]
    return [Segment(0, stop=stops[0])] + [Segment(i + 1, k.index, k.pts, stops[i + 1], round(k.time_s, 6))
                                          for i, k in enumerate(chosen)]


def split_keyframes(container, stream) -> tuple[list[Keyframe], float, float]:
    """(keyframes a segment may start at, first and last presentation time), from the packets alone.

    A keyframe qualifies when every packet before it (in decode order) is
    shown before it and every packet after it is shown after it: then
    decoding from it gives it first, and its index in the whole file is the
    number of packets before it. That rules out open GOPs (pictures after a
    keyframe that are shown before it and need the frames before it: HEVC's
    CRA with leading pictures, MPEG-2's open GOPs) and timestamps that jump
    back (spliced streams). None qualifies, and the file is read as one
    segment, when any packet lacks a timestamp, two share one, a packet is
    flagged to be discarded (edit lists: its frame is decoded but not shown,
    so frames and packets no longer pair up), or the first packet is not a
    keyframe (a decoder drops the frames before the first one it can decode).
    """
    pts: list[int] = []
    key: list[bool] = []
    for packet in container.demux(stream):
        if not packet.size:
            continue  # the demuxer's end-of-stream marker
        if packet.pts is None or packet.dts is None or packet.is_discard or packet.is_corrupt:
            return [], 0.0, 0.0
        pts.append(packet.pts)
        key.append(packet.is_keyframe)
    if not pts or not key[0] or len(set(pts)) != len(pts):
        return [], 0.0, 0.0
    tb = float(stream.time_base)
    after = np.minimum.accumulate(np.asarray(pts[::-1], np.int64))[::-1]  # the earliest shown from here on
    before = -np.inf
    found = []
    for i, (p, k) in enumerate(zip(pts, key)):
        if k and before < p and (i + 1 == len(pts) or p < after[i + 1]):
            found.append(Keyframe(i, p, p * tb))
        before = max(before, p)
    return found, min(pts) * tb, max(pts) * tb


def seek_segment(container, stream, segment: Segment, stats: SampleStats):
    """(index, frame) pairs from the segment's keyframe on, found by seeking; None when seeking does not lead to
    a frame with its timestamp (the caller then decodes from the start)."""
    import av

    try:
        container.seek(segment.pts, stream=stream, backward=True, any_frame=False)
    except (av.error.FFmpegError, OverflowError, ValueError):
        return None
    frames = decode(container, stream, stats)
    for frame in frames:
        if frame.pts is None or frame.pts > segment.pts:
            break
        if frame.pts == segment.pts:
            return itertools.chain([(segment.start, frame)], enumerate(frames, start=segment.start + 1))
    stats.error = None
    return None


def _skip_to(frames: Iterator, start: int) -> Iterator:
    """`frames` from index `start` on; the ones before are decoded and dropped (a segment starts the sampler
    afresh, so they need not run through it)."""
    for index, frame in frames:
        if index >= start:
            yield index, frame


def _pending(index: int, t: float, frame, held: HeldBytes) -> PendingFrame:
    return held.add(PendingFrame(index, t, frame, held), frame_bytes(frame))


def frame_bytes(frame) -> int:
    """Memory a decoded frame holds (its planes)."""
    return sum(p.buffer_size for p in frame.planes)


def _keep(pending: list, frame: PendingFrame, keep: int) -> list:
    """Append, halving the list (every other frame) when it passes 2 x keep: bounded memory on static stretches."""
    pending.append(frame)
    return pending[::2] if len(pending) > 2 * keep else pending


def _thin(frames: list, keep: int) -> list:
    """At most `keep` of `frames`, evenly spread (a long static stretch can hold hundreds)."""
    if len(frames) <= keep:
        return frames
    pick = np.unique(np.linspace(0, len(frames) - 1, keep).round().astype(int))
    return [frames[i] for i in pick]


def decode(container, stream, stats: SampleStats):
    """Decode frames; a broken stream ends the file with a recorded reason instead of an exception."""
    import av

    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                # A damaged packet in an otherwise good file: FFmpeg conceals it; we drop it.
                stats.extra["bad_packets"] = stats.extra.get("bad_packets", 0) + 1
                continue
            for frame in frames:
                stats.decoded += 1
                yield frame
    except av.error.FFmpegError as e:
        stats.error = f"decoding stopped after {stats.decoded} frames ({av_reason(e)})"


# --- memory held for pose back-fill and read-ahead ---------------------------

@dataclass(frozen=True)
class HoldPlan:
    keep: int  # decoded frames kept between two analysed ones for pose back-fill (sample_video's keep_between)
    ahead: int  # batches of sampled frames decoded ahead of the analysis (prefetch depth)
    workers: int  # model calls at once
    batch: int  # sampled frames per model call
    bound: int  # the most bytes these can hold together


def hold_plan(budget: int, info: VideoInfo, *, keep_max: int, workers: int, batch: int = 1,
              ahead_max: int = 2) -> HoldPlan:
    """How many decoded frames to keep for back-fill, how far to decode ahead, how many frames per model call and
    how many calls at once, so that the frames held stay within `budget` bytes.

    A count alone does not bound memory: 16 kept frames are 22 MB at 720p
    and 200 MB at 4K (12 MB a frame, 25 MB for 10-bit), and each sampled
    frame in flight carries its own. At most held at once: the sampler's
    kept frames (up to 2 x keep + 1 before it thins them); `ahead + workers +
    3` batches (the read-ahead queue, one waiting to enter it, those being
    analysed, the one being back-filled and the one before it) of `batch`
    sampled frames, each a BGR image with up to `keep` kept frames; and one
    back-fill image. `keep` changes which frames back-fill can reach, so it
    is chosen for a reference pipeline (`ahead_max` ahead, 2 workers, one
    frame a call) and depends on nothing else: the table is the same for any
    number of workers or batch size. Batch size, then workers and read-ahead,
    shrink to fit what is left (they change speed only). A budget below one
    frame at each stage is raised to that.
    """
    f = frame_bytes_estimate(info)
    g = 3 * info.width * info.height

    def bound(keep: int, ahead: int, n_workers: int, n_batch: int) -> int:
        return (ahead + n_workers + 3) * n_batch * (g + keep * f) + (2 * keep + 1) * f + g

    in_flight = ahead_max + 2 + 3
    keep = max(0, min(keep_max, (budget - (in_flight + 1) * g - f) // ((in_flight + 2) * f)))
    item = g + keep * f
    room = budget - (2 * keep + 1) * f - g
    n_batch = max(1, min(batch, room // (5 * item)))  # room for a batch at each of the five stages
    fits = max(5, room // (n_batch * item))
    n_workers = max(1, min(workers, fits - 4))
    ahead = max(1, min(ahead_max, fits - n_workers - 3))
    return HoldPlan(int(keep), int(ahead), int(n_workers), int(n_batch), int(bound(keep, ahead, n_workers, n_batch)))


def frame_bytes_estimate(info: VideoInfo) -> int:
    """Memory one decoded frame of this video holds: its pixel format's bytes per pixel, rows padded to 64 bytes."""
    import av

    try:
        bits = av.VideoFormat(info.pix_fmt).padded_bits_per_pixel
    except (ValueError, av.error.FFmpegError):
        bits = 48  # unknown format: as much as 16-bit 4:4:4
    return -(-info.width // 64) * 64 * info.height * bits // 8


def to_bgr(frame) -> np.ndarray:
    """A decoded frame as an upright BGR uint8 image.

    The frame's colour range is handed to swscale explicitly, so full-range
    video is not read as limited range (washed out). One swscale thread: with
    one per core, starting them cost more than the conversion (720p: 3.7 ms
    per frame through `to_ndarray`, 0.43 ms this way, the same pixels).
    """
    img = frame.reformat(format="bgr24", src_color_range=frame.color_range or None, threads=1).to_ndarray()
    return rotate(img, display_rotation(frame))


def display_rotation(frame) -> int:
    """Degrees the frame must turn counter-clockwise to be upright (phone footage stores portrait video as
    landscape plus a display rotation)."""
    return int(getattr(frame, "rotation", 0) or 0) % 360


def rotate(image: np.ndarray, degrees: int) -> np.ndarray:
    """`image` turned counter-clockwise by `degrees`, a multiple of 90 (negative: clockwise, to undo it)."""
    k = (degrees % 360) // 90
    return np.ascontiguousarray(np.rot90(image, k=k)) if k else image


def prefetch(iterable: Iterable, depth: int = 4) -> Iterator:
    """Run a generator in a background thread, `depth` items ahead.

    Decoding (FFmpeg) and inference (onnxruntime) both release the GIL, so
    decoding the next frames overlaps the network work on this one.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)
