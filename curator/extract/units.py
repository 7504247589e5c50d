"""Units of work: a video segment or a run of photos, sampled and analysed with worker threads, staged as
they go. The local engine and the Ray engine (`ray`) both run `run_unit`, so they give the same table."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .. import media
from ..models import runtime as runtimes
from ..workspace import PartWriter, Workspace, UNIT_FIELDS, staged_rows, unit_key, unit_source
from .frame import Source, StageTimes, analyse_frame, analyse_frames, backfill, frame_of
from .settings import ExtractSettings, ExtractSummary, UNIT_SUMMARY


PHOTOS_PER_RAY_UNIT = 64  # photos per Ray task: each is one frame, too little work to be a task of its own


@dataclass(frozen=True)
class VideoUnit:
    """One segment of a video (a video no longer than segment_seconds is one segment)."""

    key: str  # its progress key (workspace.unit_key)
    path: str
    sha: str
    segment: media.Segment
    segments: int
    record: dict  # the source's record, staged with the unit's progress

    @property
    def keys(self) -> tuple[str, ...]:  # the progress keys it stages under
        return (self.key,)


@dataclass(frozen=True)
class PhotoUnit:
    """A run of photos, each its own source with its own progress key (its SHA-256)."""

    key: str  # names its parts when a Ray task stages them
    entries: tuple  # (path, sha, record) per photo

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(sha for _, sha, _ in self.entries)


def plan_units(todo: list[tuple[media.Footage, str, dict]], settings: ExtractSettings, staged: dict[str, dict], *,
               photos_per_unit: int | None, on_problem: Callable) -> list:
    """The units of work for `todo` ((footage, sha, record) per file), in file order, less those staged as complete.

    A file that earlier runs began in segments keeps the segment length it
    began with, so its staged units still match. Runs of photos make one
    unit (or units of `photos_per_unit`).
    """
    work: list = []
    for is_image, run in itertools.groupby(todo, key=lambda t: t[0].kind == "image"):
        run = list(run)
        if is_image:
            entries = [(str(item.path), sha, record) for item, sha, record in run]
            size = photos_per_unit or len(entries)
            for i in range(0, len(entries), size):
                chunk = tuple(entries[i:i + size])
                work.append(PhotoUnit(f"photos-{chunk[0][1][:16]}-{len(chunk)}", chunk))
            continue
        for item, sha, record in run:
            seconds = next((r["segment_seconds"] for k, r in staged.items()
                            if unit_source(k) == sha and r.get("segment_seconds")), settings.segment_seconds)
            try:
                parts = media.segments(item.path, seconds)
            except media.MediaError as e:
                on_problem(str(item.path), sha, record, str(e))
                continue
            if len(parts) > 1:
                record = {**record, "segments": len(parts), "segment_seconds": seconds}
            for seg in parts:
                key = unit_key(sha, seg.number, len(parts))
                if not staged.get(key, {}).get("complete"):
                    work.append(VideoUnit(key, str(item.path), sha, seg, len(parts), record))
    return work


def run_unit(unit, fm, settings: ExtractSettings, ws: Workspace, writer: PartWriter, *, staged: dict[str, dict],
             workers: int, batch: int, times: StageTimes, on_progress=None) -> dict:
    """Do one unit of work, staging its rows through `writer`; what the driver needs to know comes back as a
    plain dict (it may cross machines): the unit's counts (`UNIT_SUMMARY`), problems and warnings by file."""
    counts = ExtractSummary(workspace=str(ws.root), units=1)
    result = _unit_result(unit, fm.runtime.describe())
    run = UnitRun(fm, settings, ws, writer, counts, workers, batch, times, on_progress or (lambda n, desc: None))
    if isinstance(unit, PhotoUnit):
        todo = [e for e in unit.entries if not staged.get(e[1], {}).get("complete")]
        counts.units_resumed = int(len(todo) < len(unit.entries))
        result["problems"] = _process_images(run, [(media.Footage(Path(p), "image"), sha, dict(record))
                                                   for p, sha, record in todo])
        result["files_done"] = counts.new_files
        result["frames_done"] = len(todo)
    else:
        rec = staged.get(unit.key) or {}
        resume_after = rec.get("last_frame", -1) if rec.get("status") != "failed" else -1
        counts.units_resumed = int(resume_after >= 0)
        record = dict(unit.record)
        if unit.segments > 1:
            record[UNIT_FIELDS] = unit.segment.as_dict()
        try:
            result["frames_done"] = _process(run, unit, record, resume_after, resume_at=rec.get("resume"))
        except media.MediaError as e:
            writer.fail(unit.key, record, str(e))
            result["problems"].append((unit.path, str(e)))
        else:
            result["files_done"] = 1
            if record.get("warning"):
                result["warnings"].append((unit.path, record["warning"] + "; kept the faces found before it"))
    result["summary"] = {name: getattr(counts, name) for name in (*UNIT_SUMMARY, "frames_held_peak_mb")}
    result["stage_seconds"] = times.as_dict()
    return result


def failed_unit(unit, reason: str) -> dict:
    """`run_unit`'s result for a unit that did not run to its end (a Ray task lost too often): a problem for its
    file, or for each of its photos."""
    result = _unit_result(unit, "")
    result["problems"] = [(path, reason) for path in ([unit.path] if isinstance(unit, VideoUnit)
                                                      else [p for p, _, _ in unit.entries])]
    return result


def _unit_result(unit, runtime: str) -> dict:
    result = {"key": unit.key, "problems": [], "warnings": [], "files_done": 0, "frames_done": 0, "runtime": runtime,
              "summary": {}, "stage_seconds": {}}
    if isinstance(unit, VideoUnit):
        result.update(path=unit.path, sha=unit.sha)
    return result


def analysis_workers(requested: int | None, rt: runtimes.Runtime, cores: int | None = None) -> tuple[int, int | None]:
    """(model calls at once, CPU threads per onnxruntime call).

    On a CPU, several single-threaded model calls side by side keep the cores
    busier than one call split across them: the detector is small, and a
    split call waits at every operator for its slowest thread (and for
    FFmpeg, decoding on the same cores). On 2 cores, 2 workers x 1 thread did
    a detector pass in 6.2 ms against 9.0 ms for 1 x 2 (docs/benchmarks.md).
    On a GPU the device runs the calls; the workers do the per-face CPU work
    (alignment, descriptors, JPEG crops) of one batch while the next batch is
    on the GPU.
    """
    if cores is None:  # a Ray task passes the CPUs Ray gave it
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if rt.device == "cuda":
        return max(1, requested or min(8, max(2, cores // 2))), None
    n = max(1, requested or min(4, cores))
    return n, max(1, cores // n)


@dataclass(frozen=True)
class UnitRun:
    """What one unit's work needs besides the unit: models, settings, where rows and crops go, its counts (`summary`,
    added to as it goes), model calls at once (`workers`), frames per call (`batch`), and where time and progress go."""

    fm: object  # curator.models.faces.FaceModels
    settings: ExtractSettings
    ws: Workspace
    writer: PartWriter
    summary: ExtractSummary
    workers: int
    batch: int
    times: StageTimes
    advance: Callable[[int, str], None]


def _process_images(run: UnitRun, entries) -> list[tuple]:
    """Photos, `workers` at a time; one that cannot be read is returned as (path, reason) and the rest go on."""
    problems = []
    fm, settings, ws, writer, summary, times, advance = (run.fm, run.settings, run.ws, run.writer, run.summary,
                                                         run.times, run.advance)

    def analyse(entry):
        item, sha, record = entry
        try:
            image = media.read_image(item.path)
        except media.MediaError as e:
            return e
        record.update({"width": image.shape[1], "height": image.shape[0], "frames": 1})
        return analyse_frame(Source(fm, sha, str(item.path), "image", settings, ws, times or StageTimes()), image, 0, 0.0,
                             "image")

    for (item, sha, record), result in _in_order(entries, analyse, run.workers):
        advance(1, item.path.name)
        if isinstance(result, media.MediaError):
            problems.append((str(item.path), str(result)))
            writer.fail(sha, record, str(result))
            continue
        rows, emb = result
        writer.add(rows, emb, sha, record, last_frame=0, complete=True)
        summary.new_files += 1
        summary.frames_decoded += 1
        summary.frames_analysed += 1
        summary.faces += len(rows)
    return problems


def _process(run: UnitRun, unit: VideoUnit, record: dict, resume_after: int, resume_at: dict | None = None) -> int:
    """One video segment (or a whole video): sample, analyse (`run.batch` frames per model call, `run.workers` calls
    at a time), back-fill, stage under the unit's progress key; returns the frames it went through.

    A resumed run (`resume_after` >= 0) starts after frame `resume_after`;
    `resume_at`, staged with it, lets the sampler seek there instead of
    decoding the segment from its start.
    """
    path, key, sha, segment = Path(unit.path), unit.key, unit.sha, unit.segment
    fm, settings, ws, writer, summary, times, advance = (run.fm, run.settings, run.ws, run.writer, run.summary,
                                                         run.times, run.advance)
    workers, batch = run.workers, run.batch
    name = path.name
    stats = media.SampleStats()
    backfilled_before = summary.frames_backfilled
    start = segment.start if segment else 0
    container, stream = media.open_video(path)  # fail early with a clear reason
    info = media.video_info(stream, container)
    container.close()
    record.update({"width": info.width, "height": info.height, "fps": info.fps, "codec": info.codec,
                   "duration_s": round(info.duration_s, 3)})
    backfills = settings.backfill_bins > 0 and settings.every != 1  # analysing every frame leaves none between
    plan = media.hold_plan(settings.frame_memory_mb << 20, info, workers=workers, batch=batch,
                           keep_max=BACKFILL_KEEP if backfills else 0)
    frames = media.sample_video(path, fps=settings.fps, every=settings.every,
                                static_threshold=settings.static_threshold, motion_threshold=settings.motion_threshold,
                                keep_between=plan.keep, resume_after=resume_after, resume_at=resume_at,
                                segment=segment, stats=stats)
    # The last analysed frame's faces: a resumed run reads them back, so its back-fill matches an uninterrupted one.
    prev = staged_rows(ws, sha, resume_after, key) if resume_after >= 0 and settings.backfill_bins > 0 else []
    first = max(start, resume_after + 1)  # the first frame this call goes through
    reported = first
    last = resume_after

    src = Source(fm, sha, str(path), "video", settings, ws, times)

    def analyse(index, time_s, image, sampled="backfill"):
        return analyse_frame(src, image, index, time_s, sampled)

    def analyse_batch(group):
        return analyse_frames(src, [(sf.image, sf.index, sf.time_s, sf.reason) for sf in group])

    # Sampled frames are analysed `workers` at a time, and their results taken
    # in frame order, so the table does not depend on the number of workers.
    # Back-fill needs two neighbours' results; it runs here, while the
    # workers go on with the next frames.
    for sf, (rows, emb) in _analysed(timed(frames, times, "decode"), analyse_batch, plan.workers, plan.batch, plan.ahead):
        filled = backfill(prev, rows, sf.between, analyse, settings.backfill_bins) if settings.backfill_bins > 0 else []
        prev = rows
        summary.frames_backfilled += len(filled)
        if filled:  # one add: the staged progress (last_frame) never covers a frame whose back-fill is missing
            parts = sorted(filled + [(rows, emb)], key=frame_of)
            rows = [r for part_rows, _ in parts for r in part_rows]
            emb = np.concatenate([e for _, e in parts])
        summary.faces += len(rows)
        last = sf.index
        writer.add(rows, emb, key, record, last_frame=last, complete=False,
                   resume=sf.resume.as_dict() if sf.resume else None)
        advance(stats.frames - reported, name)
        reported = stats.frames
    advance(max(0, stats.frames - reported), name)
    if stats.frames <= start and resume_after < 0:
        if start == 0:
            raise media.MediaError(stats.error or "no decodable video frames")
        stats.error = stats.error or f"no decodable frames from frame {start} on"
    record["frames"] = max(stats.frames, resume_after + 1)
    if stats.error:
        record["warning"] = stats.error
    summary.frames_decoded += stats.decoded
    summary.frames_analysed += stats.analysed + summary.frames_backfilled - backfilled_before
    summary.frames_motion += stats.extra.get("motion", 0)
    summary.frames_skipped_static += stats.skipped_static
    summary.frames_held_peak_mb = max(summary.frames_held_peak_mb, round(stats.held.peak / 2**20, 1))
    writer.add([], None, key, record, last_frame=max(last, record["frames"] - 1), complete=True)
    return max(0, stats.frames - first)


def _in_order(items: Iterable, fn: Callable, workers: int, depth: int = 2) -> Iterator[tuple]:
    """(item, fn(item)) for each item, in order, with up to `workers` calls running at once.

    Items come through `prefetch`, so the decoder runs up to `depth` items ahead in its own thread.
    """
    source = media.prefetch(items, depth=depth)
    if workers <= 1:
        for item in source:
            yield item, fn(item)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers, thread_name_prefix="curator-analyse")
    running: deque = deque()
    try:
        for item in source:
            running.append((item, pool.submit(fn, item)))
            if len(running) > workers:
                done, fut = running.popleft()
                yield done, fut.result()
        while running:
            done, fut = running.popleft()
            yield done, fut.result()
    finally:
        for _, fut in running:
            fut.cancel()
        pool.shutdown(wait=True)
        source.close()


def _analysed(frames: Iterable, analyse_batch: Callable, workers: int, batch: int, ahead: int = 2) -> Iterator[tuple]:
    """(sampled frame, its (rows, embeddings)) in frame order: up to `batch` consecutive frames of one size per
    model call, `workers` calls at once, `ahead` batches decoded ahead."""
    for group, results in _in_order(_batches(frames, batch), analyse_batch, workers, ahead):
        yield from zip(group, results)


def _batches(frames: Iterable, size: int) -> Iterator[list]:
    """Consecutive frames in lists of at most `size` frames of one picture size and BATCH_BYTES of pixels."""
    group: list = []
    for sf in frames:
        if group and (len(group) >= size or sf.image.shape != group[0].image.shape
                      or (len(group) + 1) * sf.image.nbytes > BATCH_BYTES):
            yield group
            group = []
        group.append(sf)
    if group:
        yield group


def timed(items: Iterable, times: StageTimes, stage: str) -> Iterator:
    """`items`, the time spent producing each one added to `stage` (here: decoding, in the prefetch thread)."""
    it = iter(items)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        finally:
            times.add(stage, time.perf_counter() - t0)
        yield item


GPU_BATCH = 32  # frames per detector call on a GPU (docs/benchmarks.md, "Extract on a GPU")


BATCH_BYTES = 256 << 20  # and at most this many bytes of frames per call: 32 frames of 1080p, 7 of 4K


BACKFILL_KEEP = 16  # decoded frames kept between two analysed ones (12 at 25 fps and 2 fps); fewer at 4K (hold_plan)
