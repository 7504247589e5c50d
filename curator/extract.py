"""`curator extract`: footage in, one table row per face out.

    footage -> sampled frames -> detect (5 keypoints) -> align -> crop
            -> identity embedding, head pose, expression, lighting, quality
            -> staged parts -> merged as new shards: faces/NNNNNN.parquet + embeddings/NNNNNN.npy

Work is checkpointed in `staging/` every few hundred analysed frames, each
part naming how far into which unit of work it got, so a killed run resumes
inside a long video instead of starting it over. Face ids are deterministic
(source hash, frame, face number), which makes the final merge idempotent.

A unit of work is a video segment (`media.segments`: a video longer than
`segment_seconds` is split at keyframes, and each segment is sampled on its
own) or a run of photos. The local engine works through a file's segments in
order in this process; `engine="ray"` hands one unit to each Ray task
(curator/ray_engine.py). Both run `run_unit` on the same units, so they
give the same table.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from . import descriptors, faces, media, pose, states
from . import runtime as runtimes
from .align import DEFAULT_MARGIN, align_matrix, warp
from .errors import UsageError
from .metrics import POSE_BIN
from .workspace import (
    PartWriter,
    Workspace,
    WorkspaceError,
    UNIT_FIELDS,
    commit_staging,
    crop_path,
    face_id,
    now,
    progress_by_source,
    read_meta,
    source_sha256,
    staged_rows,
    staged_units,
    unit_key,
    unit_source,
    write_crop,
    write_meta,
)


@dataclass
class ExtractSettings:
    fps: float = 2.0  # frames analysed per second of video
    every: int | None = None  # or: every Nth decoded frame (overrides fps)
    size: int = 256  # side of the aligned crops written to crops/
    margin: float = DEFAULT_MARGIN
    det_size: int = 640  # detector input, long side
    det_thresh: float = 0.6  # SCRFD scores 0.5-0.6 were non-faces or faces too dim to train on in our footage
    static_threshold: float = 1.5  # mean grey-level change below which a due frame is a near-duplicate
    # Pose coverage between the fps clock's frames (docs/benchmarks.md, "pose-bin retention"):
    motion_threshold: float = 50.0  # also analyse a frame whose picture changed this much (worst block); 0: off
    backfill_bins: int = 2  # analyse frames in between where a face's 10-degree yaw or pitch bin jumped this far; 0: off
    # 68-point landmarks: "auto" (the pack's 3D-68 model if it has one, else none), "dlib" or "none";
    # workspace.json records what auto resolved to ("3d68" or "none"), and a workspace keeps one method.
    landmarks: str = "auto"
    # Decoded frames held at once for pose back-fill and read-ahead, in MiB (media.hold_plan): below 4K all 16 frames
    # a stretch are kept under the default; 4K keeps 7 (12 MB a frame), 10-bit 4K 3.
    frame_memory_mb: int = 1024
    # A video longer than this is read in segments split at the keyframes nearest to every segment_seconds, each
    # sampled afresh (media.segments): the units of work that several workers can share (--engine ray).
    segment_seconds: float = 300.0
    jpeg_quality: int = 95
    checkpoint_frames: int = 200
    checkpoint_seconds: float = 60.0

    # Settings that, once a workspace has crops, every later run must share.
    FIXED = ("size", "margin")


@dataclass
class ExtractSummary:
    workspace: str
    files: int = 0
    new_files: int = 0
    already_in_workspace: int = 0
    resumed_files: int = 0
    failed: int = 0
    frames_decoded: int = 0
    frames_analysed: int = 0
    frames_skipped_static: int = 0
    frames_held_peak_mb: float = 0.0  # the most decoded frames and images held at once, in MiB (frame_memory_mb bounds it)
    frames_motion: int = 0  # of frames_analysed: chosen for a large picture change
    frames_backfilled: int = 0  # of frames_analysed: chosen to fill a pose jump between two analysed frames
    faces: int = 0
    rows_total: int = 0
    seconds: float = 0.0
    runtime: str = ""  # where the face models ran (curator/runtime.py), e.g. "onnxruntime/cpu" or "torch/cuda/fp16"
    batch: int = 1  # frames per detector call
    engine: str = "local"  # "local" or "ray" (curator/ray_engine.py)
    units: int = 0  # units of work done by this run (video segments and runs of photos)
    units_resumed: int = 0  # of those: started by an earlier run or an earlier attempt (a lost worker), resumed
    stage_seconds: dict = field(default_factory=dict)  # seconds per stage, summed over threads (StageTimes)
    problems: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def add(self, unit: dict) -> None:
        """Add a unit's counts (`run_unit`'s "summary", made here or on a worker): sums, and the highest peak."""
        for name in UNIT_SUMMARY:
            setattr(self, name, getattr(self, name) + unit.get(name, 0))
        self.frames_held_peak_mb = max(self.frames_held_peak_mb, unit.get("frames_held_peak_mb", 0.0))


# The counts a unit of work reports back (besides frames_held_peak_mb).
UNIT_SUMMARY = ("frames_decoded", "frames_analysed", "frames_skipped_static", "frames_motion", "frames_backfilled",
                "faces", "units", "units_resumed")

Reporter = Callable[[str, str], None]  # (path, reason)


def extract_settings(*, fps: float | None = None, every: int | None = None, size: int | None = None,
                     det_size: int | None = None, det_thresh: float | None = None,
                     checkpoint_every: int | None = None, pose_fill: bool | None = None,
                     landmarks: str | None = None, frame_memory: int | None = None,
                     segment_seconds: float | None = None) -> tuple[ExtractSettings, set[str]]:
    """The settings for the options a user gave (None: not given), and the names of those given on purpose.

    Options not given are taken from the workspace when it has them (see
    `extract`), so re-running with fewer options continues the same way.
    """
    given = {"fps": fps, "every": every, "size": size, "det_size": det_size, "det_thresh": det_thresh,
             "checkpoint_frames": checkpoint_every, "frame_memory_mb": frame_memory,
             "segment_seconds": segment_seconds}
    options = {"checkpoint_frames": "checkpoint-every", "frame_memory_mb": "frame-memory"}
    for name, value in given.items():
        if value is not None and value <= 0:
            option = options.get(name, name.replace("_", "-"))
            raise UsageError(f"--{option} must be positive")
    if landmarks is not None and landmarks not in faces.LANDMARK_OPTIONS:
        raise UsageError(f"--landmarks must be one of {', '.join(faces.LANDMARK_OPTIONS)}, not {landmarks!r}")
    given["landmarks"] = landmarks
    if pose_fill is not None:
        defaults = ExtractSettings()
        given["motion_threshold"] = defaults.motion_threshold if pose_fill else 0.0
        given["backfill_bins"] = defaults.backfill_bins if pose_fill else 0
    given = {k: v for k, v in given.items() if v is not None}
    return ExtractSettings(**given), set(given)


def extract(
    ws: Workspace,
    footage: Iterable[str | os.PathLike],
    *,
    settings: ExtractSettings | None = None,
    explicit: Iterable[str] = (),
    models: str | None = None,
    consent: str | None = None,
    device: str = "auto",
    runtime: str = "auto",
    workers: int | None = None,
    batch: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    on_problem: Reporter | None = None,
    on_progress: Callable[[int, str], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Extract every face from `footage` into the workspace `ws`; the caller holds its lock (`curator.api.extract`).

    `explicit` names the settings the user set on purpose; the others are
    taken from the workspace when it has them. `runtime`, `device`: where
    the face models run (curator/runtime.py). `workers`: model calls at once
    (None: see `analysis_workers`); `batch`: frames per detector call
    (None: 1 on a CPU, GPU_BATCH on a GPU). Both change speed only: the
    table is the same within float tolerances (docs/benchmarks.md).
    `engine`: "local" (this process) or "ray" (a Ray cluster at
    `ray_address`, or RAY_ADDRESS, or one started on this machine;
    curator/ray_engine.py); the table is the same.
    """
    t0 = time.monotonic()
    report = on_problem or (lambda path, reason: None)
    summary = ExtractSummary(workspace=str(ws.root), engine=engine)
    found, problems = media.discover(footage)
    for path, reason in problems:
        _problem(summary, report, path, reason)
    summary.files = len(found)
    commit_staging(ws)  # an interrupted run's finished parts come first
    meta = read_meta(ws)
    settings = _effective_settings(meta, settings or ExtractSettings(), set(explicit))
    staged = staged_units(ws)
    progress = progress_by_source(staged)

    todo: list[tuple[media.Footage, str, dict]] = []
    for item in found:
        try:
            sha, stat = source_sha256(meta, item.path)
        except OSError as e:
            _problem(summary, report, str(item.path), f"cannot read: {e.strerror or e}")
            continue
        if meta["sources"].get(sha, {}).get("status") == "complete" or progress.get(sha, {}).get("complete"):
            summary.already_in_workspace += 1
            continue
        todo.append((item, sha, {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))

    times = StageTimes()
    if todo:
        if engine == "ray":  # the models run on the workers; here they are loaded only to be checked and recorded
            rt, n_workers, threads = runtimes.Runtime("onnxruntime", "cpu"), 1, 1
        else:
            rt = runtimes.choose(runtime, device)
            n_workers, threads = analysis_workers(workers, rt)
        fm = faces.load_models(models, runtime=rt.name, device=rt.device, det_thresh=settings.det_thresh,
                               threads=threads, landmarks=settings.landmarks)
        summary.runtime = rt.describe()
        summary.batch = batch or (GPU_BATCH if rt.device == "cuda" else 1)
        _check_models(meta, fm)
        settings.landmarks = fm.landmarks  # what auto resolved to, for workspace.json
        if on_total:
            on_total(sum(_frame_estimate(item) for item, _, _ in todo))
        writer = PartWriter(ws, every_frames=settings.checkpoint_frames, every_seconds=settings.checkpoint_seconds)

        def source_record(item, stat):
            return {"path": str(item.path), "kind": item.kind, "consent": consent, "added": now(), **stat,
                    "settings": {"fps": settings.fps, "every": settings.every}, "runtime": summary.runtime}

        def unreadable(path, sha, record, reason):
            _problem(summary, report, path, reason)
            writer.fail(sha, record, reason)

        work = plan_units([(item, sha, source_record(item, stat)) for item, sha, stat in todo], settings, staged,
                          photos_per_unit=PHOTOS_PER_RAY_UNIT if engine == "ray" else None, on_problem=unreadable)
        summary.resumed_files = len({unit_source(k) for k, r in staged.items()
                                     if r.get("last_frame", -1) >= 0 and r.get("status") != "failed"}
                                    & {sha for item, sha, _ in todo if item.kind == "video"})
        tally = Tally(summary, report, on_progress)
        if engine == "ray":
            from . import ray_engine

            writer.flush(force=True)
            runtimes_used = ray_engine.run(ws, work, settings=settings, models=str(fm.path), model_files=fm.files,
                                           runtime=runtime, device=device, workers=workers, batch=batch,
                                           address=ray_address, staged=staged, on_result=tally.add)
            summary.runtime = ", ".join(sorted(runtimes_used)) or summary.runtime
        else:
            for unit in work:
                if isinstance(unit, VideoUnit) and unit.sha in tally.failed:
                    continue  # an earlier segment showed the file cannot be read
                tally.add(run_unit(unit, fm, settings, ws, writer, staged=staged, workers=n_workers,
                                   batch=summary.batch, times=times, on_progress=on_progress))
        tally.finish()
        writer.flush(force=True)
        meta = read_meta(ws)
        if meta.get("models") is None:
            meta["models"] = fm.describe()
            meta["embeddings"]["dim"] = fm.embedding_dim
        meta["settings"] = {k: getattr(settings, k) for k in ("size", "margin", "det_size", "det_thresh", "static_threshold",
                                                              "motion_threshold", "backfill_bins", "landmarks",
                                                              "frame_memory_mb", "segment_seconds")}
        if consent:
            meta["consent"].append({"text": consent, "recorded": now(), "sources": [s for _, s, _ in todo]})
        write_meta(ws, meta)
        for stage, seconds in tally.stage_seconds.items():
            times.add(stage, seconds)
    with times("write"):
        summary.rows_total = commit_staging(ws)
    summary.stage_seconds = times.as_dict()
    summary.seconds = round(time.monotonic() - t0, 3)
    return summary


# --- units of work ----------------------------------------------------------

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
    if isinstance(unit, PhotoUnit):
        todo = [e for e in unit.entries if not staged.get(e[1], {}).get("complete")]
        counts.units_resumed = int(len(todo) < len(unit.entries))
        result["problems"] = _process_images([(media.Footage(Path(p), "image"), sha, dict(record))
                                              for p, sha, record in todo], fm, settings, ws, writer, counts,
                                             on_progress, workers, times)
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
            result["frames_done"] = _process(Path(unit.path), unit.key, unit.sha, record, resume_after, fm, settings,
                                             ws, writer, counts, on_progress, workers, batch=batch, times=times,
                                             resume_at=rec.get("resume"), segment=unit.segment)
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


class Tally:
    """Adds up units' results as they come (from this process or from Ray workers) into the run's summary: a
    file is new once its units ran without a problem, and a problem or warning is reported once per file."""

    def __init__(self, summary: ExtractSummary, report: Reporter, on_progress=None):
        self.summary, self.report, self.on_progress = summary, report, on_progress
        self.failed: set[str] = set()  # shas and paths of files with a problem
        self.videos: set[str] = set()
        self.warned: set[str] = set()
        self.stage_seconds: dict[str, float] = {}

    def add(self, result: dict, remote: bool = False) -> None:
        self.summary.add(result["summary"])
        if remote:  # a worker's; a local unit reports progress and stage times as it goes
            for stage, seconds in result["stage_seconds"].items():
                self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
            if self.on_progress:
                self.on_progress(result["frames_done"], Path(result.get("path", "photos")).name)
        for path, reason in result["problems"]:
            if path not in self.failed:
                self.failed.update((path, result.get("sha", path)))
                _problem(self.summary, self.report, path, reason)
        for path, text in result["warnings"]:
            if path not in self.warned:
                self.warned.add(path)
                self.report(path, text)
        if "sha" in result:
            self.videos.add(result["sha"])
        else:
            self.summary.new_files += result["files_done"]

    def finish(self) -> None:
        self.summary.new_files += len(self.videos - self.failed)


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


def _problem(summary: ExtractSummary, report: Reporter, path: str, reason: str) -> None:
    summary.failed += 1
    summary.problems.append({"file": path, "reason": reason})
    report(path, reason)


def _effective_settings(meta: dict, requested: ExtractSettings, explicit: set[str]) -> ExtractSettings:
    stored = meta.get("settings") or {}
    values = asdict(requested)
    for key, value in stored.items():
        if key not in values:
            continue
        if key in explicit and key in ExtractSettings.FIXED and meta.get("rows") and value != values[key]:
            raise WorkspaceError(
                f"this workspace's crops were made with --{key} {value}; a different --{key} would mix crop "
                "geometries (use a new workspace)"
            )
        if key not in explicit:
            values[key] = value
    recorded = _recorded_landmarks(meta)
    if recorded and meta.get("rows"):
        if "landmarks" in explicit:
            asked = faces.resolve_landmarks(values["landmarks"], _pack_has_3d68(meta))
            if asked != recorded:
                raise WorkspaceError(
                    f"this workspace's faces have {LANDMARK_NAMES[recorded]}; --landmarks {values['landmarks']} would "
                    f"give {LANDMARK_NAMES[asked]}, and expressions measured on different landmarks do not compare "
                    "(use a new workspace)")
        values["landmarks"] = recorded
    return ExtractSettings(**values)


LANDMARK_NAMES = {"3d68": "the model pack's 3D-68 landmarks", "dlib": "dlib's 68-point landmarks",
                  "none": "no 68-point landmarks (5 keypoints only)"}


def _pack_has_3d68(meta: dict) -> bool:
    return bool(((meta.get("models") or {}).get("tasks") or {}).get("landmark_3d_68"))


def _recorded_landmarks(meta: dict) -> str | None:
    """The landmark method of the workspace's faces; for workspaces from before settings.landmarks, what auto gave
    then (auto did not use dlib before settings.landmarks existed)."""
    recorded = (meta.get("settings") or {}).get("landmarks")
    if recorded or not meta.get("models"):
        return recorded
    return faces.resolve_landmarks("auto", _pack_has_3d68(meta), dlib_installed=False)


def _check_models(meta: dict, fm: faces.FaceModels) -> None:
    recorded = meta.get("models")
    if not recorded:
        return
    landmark_model = recorded.get("landmark_model")
    if landmark_model and fm.landmark_model and landmark_model["sha256"] != fm.landmark_model["sha256"]:
        raise faces.ModelError(
            f"this workspace's landmarks came from {landmark_model['file']} and the one installed now differs "
            f"({fm.landmark_model['file']}); landmarks from different models do not compare. Use a new workspace")
    if recorded.get("files") != fm.files:
        changed = sorted(set(recorded.get("files", {}).items()) ^ set(fm.files.items()))
        raise faces.ModelError(
            f"this workspace was extracted with model pack {recorded.get('pack')} and the models now loaded differ "
            f"({', '.join(name for name, _ in changed[:4])}); embeddings from different models cannot be compared. "
            f"Use --models {recorded.get('path')} or a new workspace"
        )


def _frame_estimate(item: media.Footage) -> int:
    if item.kind == "image":
        return 1
    try:
        container, stream = media.open_video(item.path)
    except media.MediaError:
        return 0
    try:
        return media.video_info(stream, container).frames
    finally:
        container.close()


# --- per source -------------------------------------------------------------

def _process_images(entries, fm, settings, ws, writer, summary, on_progress, workers, times=None) -> list[tuple]:
    """Photos, `workers` at a time; one that cannot be read is returned as (path, reason) and the rest go on."""
    problems = []
    advance = on_progress or (lambda n, desc: None)

    def analyse(entry):
        item, sha, record = entry
        try:
            image = media.read_image(item.path)
        except media.MediaError as e:
            return e
        record.update({"width": image.shape[1], "height": image.shape[0], "frames": 1})
        return analyse_frame(fm, image, sha, str(item.path), "image", 0, 0.0, settings, ws, "image", times)

    for (item, sha, record), result in _in_order(entries, analyse, workers):
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


def _process(path: Path, key, sha, record, resume_after, fm, settings, ws, writer, summary, on_progress, workers=1, *,
             batch: int = 1, times: StageTimes | None = None, resume_at: dict | None = None,
             segment: media.Segment | None = None) -> int:
    """One video segment (or a whole video): sample, analyse (`batch` frames per model call, `workers` calls at a
    time), back-fill, stage under the unit's progress `key`; returns the frames it went through.

    A resumed run (`resume_after` >= 0) starts after frame `resume_after`;
    `resume_at`, staged with it, lets the sampler seek there instead of
    decoding the segment from its start.
    """
    times = times or StageTimes()
    advance = on_progress or (lambda n, desc: None)
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

    def analyse(index, time_s, image, sampled="backfill"):
        return analyse_frame(fm, image, sha, str(path), "video", index, time_s, settings, ws, sampled, times)

    def analyse_batch(group):
        return analyse_frames(fm, [(sf.image, sf.index, sf.time_s, sf.reason) for sf in group], sha, str(path),
                              "video", settings, ws, times)

    # Sampled frames are analysed `workers` at a time, and their results taken
    # in frame order, so the table does not depend on the number of workers.
    # Back-fill needs two neighbours' results; it runs here, while the
    # workers go on with the next frames.
    for sf, (rows, emb) in _analysed(timed(frames, times, "decode"), analyse_batch, plan.workers, plan.batch, plan.ahead):
        filled = backfill(prev, rows, sf.between, analyse, settings.backfill_bins) if settings.backfill_bins > 0 else []
        prev = rows
        summary.frames_backfilled += len(filled)
        if filled:  # one add: the staged progress (last_frame) never covers a frame whose back-fill is missing
            parts = sorted(filled + [(rows, emb)], key=_frame_of)
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


def backfill(a_rows: list[dict], b_rows: list[dict], between: list, analyse, bins: int) -> list[tuple[list, np.ndarray]]:
    """Analyse frames between two analysed frames where a face's pose jumped `bins` or more 10-degree bins.

    Bisection: the middle frame is analysed, then each half is checked the
    same way, so a fast head turn is sampled about every bin while a still
    head costs nothing. Faces are matched by box overlap (IoU > 0.2).
    Returns (rows, embeddings) per analysed frame.
    """
    if not between or not a_rows or not b_rows or not _pose_jump(a_rows, b_rows, bins):
        return []
    mid = len(between) // 2
    pf = between[mid]
    rows, emb = analyse(pf.index, pf.time_s, pf.image())
    return (backfill(a_rows, rows, between[:mid], analyse, bins) + [(rows, emb)]
            + backfill(rows, b_rows, between[mid + 1:], analyse, bins))


def _pose_jump(a_rows: list[dict], b_rows: list[dict], bins: int) -> bool:
    overlap = faces.box_iou([r["bbox"] for r in b_rows], [r["bbox"] for r in a_rows])
    for r, iou in zip(b_rows, overlap):
        j = int(np.argmax(iou))
        if iou[j] > 0.2:
            a = a_rows[j]
            dy = abs(np.floor(r["yaw"] / POSE_BIN) - np.floor(a["yaw"] / POSE_BIN))
            dp = abs(np.floor(r["pitch"] / POSE_BIN) - np.floor(a["pitch"] / POSE_BIN))
            if max(dy, dp) >= bins:
                return True
    return False


def _frame_of(part: tuple[list, np.ndarray]) -> int:
    return part[0][0]["frame"] if part[0] else -1


def analyse_frame(fm, image, sha, source, kind, frame, time_s, settings, ws, sampled: str = "due",
                  times: StageTimes | None = None) -> tuple[list[dict], np.ndarray]:
    """Detect, align, crop and describe every face in one frame; crops are written to the workspace."""
    return analyse_frames(fm, [(image, frame, time_s, sampled)], sha, source, kind, settings, ws, times)[0]


def analyse_frames(fm, frames: list[tuple], sha, source, kind, settings, ws,
                   times: StageTimes | None = None) -> list[tuple[list[dict], np.ndarray]]:
    """`analyse_frame` for frames of one size and source, given as (image, frame index, time_s, sampled):
    the detector runs once for all of them, the recogniser and the landmark model once for all their faces."""
    times = times or StageTimes()
    with times("detect"):
        found = faces.detect_batch(fm, [f[0] for f in frames], settings.det_size)
    at = [(i, k) for i, (boxes, _) in enumerate(found) for k in range(len(boxes))]
    with times("embed"):
        emb = faces.embed_batch(fm, [(frames[i][0], found[i][1][k]) for i, k in at])
    with times("landmarks"):
        dense = faces.landmarks_batch(fm, [(frames[i][0], found[i][0][k], found[i][1][k]) for i, k in at])
    rows: list[list[dict]] = [[] for _ in frames]
    for (i, k), lmk in zip(at, dense):
        image, frame, time_s, sampled = frames[i]
        rows[i].append(face_row(image, found[i][0][k], found[i][1][k], k, lmk, sha, source, kind, frame, time_s,
                                sampled, settings, ws, times))
    out, start = [], 0
    for i in range(len(frames)):
        out.append((rows[i], emb[start:start + len(rows[i])]))
        start += len(rows[i])
    return out


def face_row(image, box, kps, k, dense, sha, source, kind, frame, time_s, sampled, settings, ws,
             times: StageTimes) -> dict:
    """One face's table row; its aligned crop is written to the workspace."""
    h, w = image.shape[:2]
    face_box = settings.size / (1.0 + 2.0 * settings.margin)  # template face box side in crop px
    with times("describe"):
        m_crop = align_matrix(kps, settings.size, settings.margin)
        m_analysis = align_matrix(kps, descriptors.ANALYSIS_SIZE, DEFAULT_MARGIN)
        lmk68 = dense.get("lmk68")
        desc = descriptors.describe(image, kps, m_analysis, lmk68)
        desc.update(states.describe_states(image, kps, m_analysis, lmk68))
        if "pose_pyr" in dense:
            yaw, pitch, roll = pose.pose_from_insightface(dense["pose_pyr"])
            pose_method = "landmark_3d68"
        else:
            yaw, pitch, roll = pose.estimate_pose_kps5(kps, (h, w))
            pose_method = "kps5_pnp"
    crop_rel = crop_path(sha, frame, k)
    with times("write"):
        write_crop(ws, crop_rel, warp(image, m_crop, settings.size), settings.jpeg_quality)
    scale = float(np.hypot(m_crop[0, 0], m_crop[0, 1]))
    return {
        "face_id": face_id(sha, frame, k),
        "source": source,
        "source_sha256": sha,
        "source_kind": kind,
        "frame": int(frame),
        "time_s": round(float(time_s), 4),
        "sampled": sampled,
        "face_index": k,
        "frame_w": w,
        "frame_h": h,
        "bbox": [float(v) for v in box[:4]],
        "kps": [float(v) for v in kps.reshape(-1)],
        "det_score": float(box[4]),
        "face_px": round(face_box / scale, 2),
        "yaw": float(yaw),
        "pitch": float(pitch),
        "roll": float(roll),
        "pose_method": pose_method,
        **desc,
        "lmk68": None if lmk68 is None else [float(v) for v in np.asarray(lmk68)[:, :2].reshape(-1)],
        "align_matrix": [float(v) for v in m_crop.reshape(-1)],
        "crop_size": settings.size,
        "crop_path": crop_rel,
    }


class StageTimes:
    """Seconds spent per stage, summed over threads: `with times("detect"): ...`; `as_dict()` for the summary.

    Stages run in several threads at once add up to more than the wall time;
    their shares still show which stage a run waits on.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in sorted(self.seconds.items())}
