"""`curator convert`: replace a face in a video with a model from `curator train`, labelled as synthetic.

Per frame (decoded front to back with PyAV, never seeking):

    detect faces (the `extract` face module) -> choose the face of the replaced
    identity (its export's mean embedding, or --ref photos) -> smooth its
    keypoints over time (One-Euro) -> align it to the training template ->
    encoder + the other identity's decoder (batched on the GPU when there is
    one) -> colour-match to the original face -> blend through the predicted
    or landmark mask (eroded, feathered) -> warp back into the frame

Frames without the chosen face are encoded from the decoded frame itself, and
in a changed frame only the pixels the swap or the mark touched are replaced
(in the frame's own YUV planes), so nothing else goes through an RGB round trip.

The output is written with PyAV (FFmpeg's libraries, in the `av` wheel; no
ffmpeg binary): H.264 (libx264) in the input's pixel format, the input's frame
times copied, every audio stream copied packet for packet. It is always
labelled: container metadata (comment, description) and a JSON sidecar
`OUT.synthetic.json`; a visible corner mark is on by default. Everything is
written under a temporary name and renamed at the end, so OUT is never half
written. docs/convert.md has the details.

This module runs the command over a video and writes its outputs; the parts
are curator.swap (one face in one frame), curator.videoio (reading and
writing the video) and curator.synthetic (the label).
"""


from __future__ import annotations

import os
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..models import faces, recognisers
from .. import media, outputs
from ..fs.atomic import atomic_path, inside, write_json
from ..errors import ConvertError
from .swapper import (Swapper, SwapSettings, export_models, find_face, load_run, run_inputs, source_embedding, swap_batch,
                   swap_frame)
from .synthetic import container_metadata, is_labelled_output, label_record, read_sidecar, sidecar_path, visible_mark
from ..media.videoio import (VIDEO_SUFFIXES, VideoInput, VideoOutput, bgr_to_frame, demux, open_input, open_output,
                      write_audio, write_frame)
from ..workspace import now


@dataclass(frozen=True)
class ConvertSettings(SwapSettings):
    """SwapSettings, and how frames are batched and the output encoded."""

    batch: int = 16               # frames per network call
    visible_mark: bool = True
    lossless: bool = False        # libx264 qp 0 in the input's pixel format: untouched pixels stay bit-exact
    crf: int = 18
    preset: str = "medium"
    max_frames: int | None = None  # convert only the first N frames (and the audio up to their end)


# --- the command -------------------------------------------------------------------------------


def kept_paths(video: Path, run: str | os.PathLike, refs: list | None, models: str | None) -> dict:
    """What no output of this conversion may be or contain: the input, the run and the exports it learned from,
    the reference photos and the face-model pack."""
    keep = {video: "the input video", Path(run): "the model run folder"}
    keep.update({Path(r): "a reference photo" for r in refs or ()})
    if models and Path(models).expanduser().is_dir():
        keep[Path(models)] = "the face-model pack"
    keep.update({Path(p): what for p, what in run_inputs(run).items()})
    return keep


def check_video_out(out: Path, keep: dict, force: bool) -> None:
    """The video and its sidecar may replace only an earlier, labelled `curator convert` output."""
    outputs.check_file(out, "convert", force=force, keep=keep, is_ours=is_labelled_output, what="video")
    outputs.check_file(sidecar_path(out), "convert", force=True, keep=keep,
                       is_ours=lambda p: read_sidecar(p) is not None, what="sidecar")
    outputs.check_writable(out, "video")


def load_swapper(run: str | os.PathLike, refs: list | None = None, models: str | None = None, device: str = "auto",
                 settings: ConvertSettings = ConvertSettings()) -> tuple[Swapper, dict]:
    """Everything a swap needs (run, face models, the replaced identity), and a record of the identity choice."""
    choices = {"direction": ("a2b", "b2a"), "mask": ("predicted", "landmark", "both"), "color": ("lab", "hist", "none")}
    for name, allowed in choices.items():
        if getattr(settings, name) not in allowed:
            raise ConvertError(f"--{name} must be one of {', '.join(allowed)}, not {getattr(settings, name)!r}")
    r = load_run(run, device)
    try:
        fm = faces.load_models(models or export_models(r, settings.direction),
                               device="cpu" if device == "cpu" else "auto", det_thresh=settings.det_thresh)
    except faces.ModelError as e:
        raise ConvertError(str(e)) from None
    if refs:
        try:
            target = faces.reference_embeddings(fm, refs)
        except faces.ReferencePhotoError as e:
            raise ConvertError(str(e)) from None
        method = f"reference photos: {', '.join(str(p) for p in refs)}"
    else:
        target, method = source_embedding(r, settings.direction, fm)
    rec = recognisers.of_models(fm)  # the numbers of the recogniser this pack loads
    threshold = settings.threshold if settings.threshold is not None else rec.same_person
    side = "A" if settings.direction == "a2b" else "B"
    other = "B" if side == "A" else "A"
    identity = {"replaced": side, "replaced_export": r.config.get(side.lower()), "drawn": other,
                "drawn_export": r.config.get(other.lower()), "chosen_by": method, "threshold": round(float(threshold), 4)}
    return Swapper(r, fm, target, float(threshold), settings, keep_sim=rec.track_link), identity


def convert(video: str | os.PathLike, run: str | os.PathLike, out: str | os.PathLike | None = None, *,
            frames_out: str | os.PathLike | None = None, refs: list | None = None, models: str | None = None,
            device: str = "auto", settings: ConvertSettings = ConvertSettings(), force: bool = False,
            on_total: Callable[[int], None] | None = None, on_progress: Callable[[int], None] | None = None) -> dict:
    """Convert VIDEO with RUN into OUT (a video) and/or FRAMES_OUT (a folder of PNGs); returns a summary.

    Raises ConvertError with one line for bad input; nothing is left at OUT or
    FRAMES_OUT unless the whole conversion succeeded.
    """
    t0 = time.perf_counter()
    started = now()
    video = Path(video).expanduser()
    if out is None and frames_out is None:
        raise ConvertError("give --out OUT (a video file) and/or --frames-out DIR (a folder of PNGs)")
    if not video.is_file():
        raise ConvertError(f"{video}: no such file")
    out = Path(out).expanduser().absolute() if out is not None else None
    frames_dir = Path(frames_out).expanduser().absolute() if frames_out is not None else None
    keep = kept_paths(video, run, refs, models)
    if out is not None:
        container_format = VIDEO_SUFFIXES.get(out.suffix.lower())
        if container_format is None:
            raise ConvertError(f"{out}: unknown video type {out.suffix or '(none)'!r}; use .mp4, .mov or .mkv")
        check_video_out(out, keep, force)
    if frames_dir is not None:
        frames_dir = outputs.check_folder(frames_dir, "convert --frames-out", force=force, keep=keep)
        outputs.check_writable(frames_dir, "frames folder")
    if settings.batch <= 0 or (settings.max_frames is not None and settings.max_frames <= 0):
        raise ConvertError("--batch and --max-frames must be positive")

    inp = open_input(video)
    try:
        sw, identity = load_swapper(run, refs, models, device, settings)
        video_sha = media.sha256_file(video)
        label = label_record(sw, identity, video, video_sha, inp.info, settings, started)
        total = inp.info.frames if not settings.max_frames else min(inp.info.frames or settings.max_frames,
                                                                   settings.max_frames)
        if on_total:
            on_total(total)
        stats: dict = {"frames": 0, "swapped": 0}
        sidecar = sidecar_path(out) if out is not None else None
        sidecar_written = False
        try:
            with ExitStack() as stack:
                tmp_video = stack.enter_context(atomic_path(out)) if out is not None else None
                tmp_frames = stack.enter_context(outputs.building(frames_dir, "convert --frames-out")) if frames_dir is not None else None
                state = {"vo": None, "pending_audio": []}
                # Registered last, so it runs first: the container is closed before its file is removed.
                stack.callback(lambda: state["vo"] is not None and _close_quietly(state["vo"]))
                digits = max(6, len(str(max(total, 1))))

                def on_audio(packet):
                    if state["vo"] is None:
                        state["pending_audio"].append(packet)  # the output opens at the first frame (format, rotation)
                    else:
                        write_audio(state["vo"], packet)

                def write(frame, before, after):
                    index = stats["frames"]
                    stats["frames"] += 1
                    if tmp_frames is not None:
                        ok, buf = cv2.imencode(".png", after)
                        if not ok:
                            raise ConvertError(f"{frames_dir}: cannot encode frame {index} as PNG")
                        inside(tmp_frames, f"frame_{index:0{digits}d}.png").write_bytes(buf.tobytes())
                    if tmp_video is None:
                        return
                    if state["vo"] is None:
                        state["vo"] = open_output(tmp_video, container_format, frame, inp,
                                                  container_metadata(label, sidecar.name), lossless=settings.lossless,
                                                  crf=settings.crf, preset=settings.preset)
                        for packet in state["pending_audio"]:
                            write_audio(state["vo"], packet)
                        state["pending_audio"].clear()
                    vo = state["vo"]
                    rotation = media.display_rotation(frame)
                    if after is before and frame.format.name == vo.fmt:
                        write_frame(vo, frame)  # untouched: the decoded frame itself
                    else:
                        write_frame(vo, bgr_to_frame(media.rotate(after, -rotation), frame, vo.fmt,
                                                     media.rotate(before, -rotation)))

                # Decoding and face detection (FFmpeg, onnxruntime: both release the GIL) run in
                # a thread ahead of the swap, blending and encoding here.
                for kind, *item in media.prefetch(analyse(inp, sw, settings, stats), depth=4):
                    if kind == "audio":
                        on_audio(item[0])
                        continue
                    batch, images, matrices = item
                    for frame, before, after, matrix in zip(batch, images, swap_batch(sw, images, matrices), matrices):
                        stats["swapped"] += matrix is not None
                        write(frame, before, visible_mark(after) if settings.visible_mark else after)
                    if on_progress:
                        on_progress(len(batch))

                if stats["frames"] == 0:
                    raise ConvertError(f"{video}: no video frames could be decoded" +
                                       (f" ({stats['error']})" if stats.get("error") else ""))
                if stats["swapped"] == 0:
                    raise ConvertError(
                        f"{video}: no face of identity {identity['replaced']} in any of its {stats['frames']} frames "
                        f"(similarity threshold {sw.threshold:.2f}); check --direction, or pass --ref photos of the "
                        "person to replace")
                label.update(frames=stats["frames"], frames_swapped=stats["swapped"], visible_mark=settings.visible_mark)
                label["input"]["audio_streams"] = len(inp.audio)
                if tmp_frames is not None:
                    write_json(tmp_frames / "synthetic.json",
                               {**label, "output": {"path": str(frames_dir), "files": "frame_*.png"}})
                if tmp_video is not None:
                    vo, state["vo"] = state["vo"], None
                    write_frame(vo, None)  # drain the encoder
                    vo.container.close()
                    write_json(sidecar, {**label, "output": {"path": str(out), "sha256": media.sha256_file(tmp_video),
                                                             "codec": "libx264", "pix_fmt": vo.fmt,
                                                             "lossless": settings.lossless}})
                    sidecar_written = True
                # Leaving the block renames the frames folder, then the video, into place.
        except BaseException:
            if sidecar_written:  # the video it describes never arrived
                sidecar.unlink(missing_ok=True)
            raise
        result = {"input": str(video.resolve()), "frames": stats["frames"], "frames_swapped": stats["swapped"],
                  "width": inp.info.width, "height": inp.info.height, "fps": round(inp.info.fps, 6),
                  "audio_streams": len(inp.audio), "run_id": sw.run.run_id, "device": str(sw.run.device)}
        if out is not None:
            result.update(out=str(out), sidecar=str(sidecar))
        if frames_dir is not None:
            result["frames_out"] = str(frames_dir)
        notes = []
        if not inp.audio:
            notes.append("the input has no audio stream, so neither has the output")
        if stats.get("error"):
            notes.append(stats["error"])
        if stats.get("bad_packets"):
            notes.append(f"{stats['bad_packets']} damaged video packet(s) skipped")
        if notes:
            result["notes"] = notes
        result["seconds"] = round(time.perf_counter() - t0, 2)
        return result
    finally:
        inp.container.close()


def analyse(inp: VideoInput, sw: Swapper, settings: ConvertSettings, stats: dict) -> Iterator[tuple]:
    """The input in file order, as ("audio", packet) and ("batch", frames, upright BGR images, matrices).

    A batch is `settings.batch` decoded frames with the chosen face found,
    tracked and smoothed in each (matrix None where it is absent).
    """
    audio: list = []
    batch, images, matrices = [], [], []
    track = None
    for index, frame in enumerate(demux(inp, settings.max_frames, audio.append, stats)):
        yield from (("audio", packet) for packet in audio)
        audio.clear()
        image = media.to_bgr(frame)
        t = float(frame.time) if frame.time is not None else index / max(inp.info.fps, 1e-6)
        matrix, track = find_face(sw, image, t, track)
        batch.append(frame)
        images.append(image)
        matrices.append(matrix)
        if len(batch) >= settings.batch:
            yield "batch", batch, images, matrices
            batch, images, matrices = [], [], []
    if batch:
        yield "batch", batch, images, matrices
    yield from (("audio", packet) for packet in audio)


def _close_quietly(vo: VideoOutput) -> None:
    try:
        vo.container.close()
    except Exception:  # a half-written file may not close cleanly; it is deleted right after
        pass


def preview(video: str | os.PathLike, run: str | os.PathLike, out: str | os.PathLike, count: int = 8, *,
            refs: list | None = None, models: str | None = None, device: str = "auto",
            settings: ConvertSettings = ConvertSettings(), force: bool = False,
            on_total: Callable[[int], None] | None = None, on_progress: Callable[[int], None] | None = None) -> dict:
    """Write `count` frames of VIDEO side by side (original | swapped) as PNGs into folder OUT, to judge settings.

    The whole video is decoded (no seeking), but faces are looked for only in
    3 x count evenly spaced frames; the `count` previews are spread evenly
    over those that have the face. No temporal smoothing (the frames are far apart).
    """
    t0 = time.perf_counter()
    started = now()
    video = Path(video).expanduser()
    out = Path(out).expanduser().absolute()
    if count <= 0:
        raise ConvertError("--preview needs a positive number of frames")
    if not video.is_file():
        raise ConvertError(f"{video}: no such file")
    if out.suffix.lower() in VIDEO_SUFFIXES or (out.exists() and not out.is_dir()):
        raise ConvertError(f"{out}: --preview writes a folder of PNGs; give a folder, not a video file")
    out = outputs.check_folder(out, "convert --preview", force=force, keep=kept_paths(video, run, refs, models))
    outputs.check_writable(out, "preview folder")
    settings = ConvertSettings(**{**asdict(settings), "smooth": False})
    inp = open_input(video)
    try:
        sw, identity = load_swapper(run, refs, models, device, settings)
        label = label_record(sw, identity, video, media.sha256_file(video), inp.info, settings, started)
        estimate = inp.info.frames if not settings.max_frames else min(inp.info.frames or settings.max_frames,
                                                                      settings.max_frames)
        picks = set(np.linspace(0, max(estimate - 1, 0), min(3 * count, max(estimate, 1))).round().astype(int).tolist())
        if on_total:
            on_total(estimate)
        found: list[tuple[int, np.ndarray, np.ndarray]] = []
        stats: dict = {}
        for index, frame in enumerate(demux(inp, settings.max_frames, lambda p: None, stats)):
            if on_progress:
                on_progress(1)
            if index not in picks:
                continue
            image = media.to_bgr(frame)
            swapped, hit, _ = swap_frame(sw, image)
            if hit:
                found.append((index, image, swapped))
        if not found:
            raise ConvertError(f"{video}: no face of identity {identity['replaced']} in the {len(picks)} frames "
                               f"looked at (similarity threshold {sw.threshold:.2f}); check --direction, or pass --ref "
                               "photos of the person to replace")
        chosen = [found[i] for i in sorted(set(np.linspace(0, len(found) - 1, min(count, len(found))).round().astype(int)))]
        with outputs.building(out, "convert --preview") as tmp:
            files = []
            for index, image, swapped in chosen:
                right = visible_mark(swapped) if settings.visible_mark else swapped
                gap = np.full((image.shape[0], max(4, image.shape[1] // 100), 3), 255, np.uint8)
                ok, buf = cv2.imencode(".png", np.hstack([image, gap, right]))
                if not ok:
                    raise ConvertError(f"{out}: cannot encode preview of frame {index} as PNG")
                name = f"preview_{index:06d}.png"
                inside(tmp, name).write_bytes(buf.tobytes())
                files.append(name)
            write_json(tmp / "synthetic.json", {**label, "visible_mark": settings.visible_mark,
                                               "output": {"path": str(out), "previews": files,
                                                          "layout": "original | swapped, side by side"}})
        return {"input": str(video.resolve()), "out": str(out), "previews": len(files), "frames_looked_at": len(picks),
                "frames_with_face": len(found), "files": files, "run_id": sw.run.run_id,
                "seconds": round(time.perf_counter() - t0, 2)}
    finally:
        inp.container.close()
