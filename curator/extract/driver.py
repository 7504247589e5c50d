"""The extract driver: find the footage, plan units of work, run them here or on Ray, record and commit."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterable


from ..models import faces
from .. import media
from ..models import runtime as runtimes
from ..workspace import (PartWriter, Workspace, commit_staging, now, progress_by_source, read_meta, remove_half_written,
                         source_sha256, staged_units, unit_source, write_meta)
from . import ray
from .frame import StageTimes
from .settings import ExtractSettings, ExtractSummary, Reporter, check_models, effective_settings
from .units import GPU_BATCH, PHOTOS_PER_RAY_UNIT, VideoUnit, analysis_workers, plan_units, run_unit


def extract(
    ws: Workspace,
    footage: Iterable[str | os.PathLike],
    *,
    settings: ExtractSettings | None = None,
    explicit: Iterable[str] = (),
    models: str | None = None,
    consent: str | None = None,
    runtime: runtimes.Runtime | runtimes.Request = runtimes.Request(),
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
    taken from the workspace when it has them. `runtime`: where the face
    models run, a Runtime chosen by the caller, or a Request each Ray worker
    resolves on its machine (curator.models.runtime). `workers`: model calls at once
    (None: see `analysis_workers`); `batch`: frames per detector call
    (None: 1 on a CPU, GPU_BATCH on a GPU). Both change speed only: the
    table is the same within float tolerances (docs/benchmarks.md).
    `engine`: "local" (this process) or "ray" (a Ray cluster at
    `ray_address`, or RAY_ADDRESS, or one started on this machine;
    curator/extract/ray.py); the table is the same.
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
    settings = effective_settings(meta, settings or ExtractSettings(), set(explicit))
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
            rt = runtime if isinstance(runtime, runtimes.Runtime) else runtime.choose()
            n_workers, threads = analysis_workers(workers, rt)
        fm = faces.load_models(models, runtime=rt, det_thresh=settings.det_thresh,
                               threads=threads, landmarks=settings.landmarks)
        summary.runtime = rt.describe()
        summary.batch = batch or (GPU_BATCH if rt.device == "cuda" else 1)
        check_models(meta, fm)
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

            writer.flush(force=True)
            runtimes_used = ray.run(ws, work, settings=settings, models=str(fm.path), model_files=fm.files,
                                           request=runtime, workers=workers, batch=batch,
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
    remove_half_written(ws)  # every writer of this run has finished: a part a killed Ray worker was writing goes
    summary.stage_seconds = times.as_dict()
    summary.seconds = round(time.monotonic() - t0, 3)
    return summary


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


def _problem(summary: ExtractSummary, report: Reporter, path: str, reason: str) -> None:
    summary.failed += 1
    summary.problems.append({"file": path, "reason": reason})
    report(path, reason)


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
