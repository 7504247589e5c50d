"""`curator extract --engine ray`: the units of work as Ray tasks, on a cluster or on this machine.

    driver (the `curator` process, holding the workspace's lock)
        plan: files -> units (video segments split at keyframes, runs of photos)   [curator.extract.plan_units]
        submit units as tasks, a window at a time; as each finishes: tally it, commit staged parts now and then
    worker (any node; one task per unit, models loaded once per worker process)
        decode the segment -> sample -> analyse -> crops into WS/crops/, rows into WS/staging/ parts of its own
                                                                            [curator.extract.run_unit]

One task per unit does all of a unit's work, decoding and models together,
instead of a Ray Data pipeline of decode, model and write stages: the sampler
needs the models' answers to choose more frames (pose back-fill goes back to
frames decoded between two analysed ones), so a decode stage would have to
ship every frame it might need (up to 16 decoded frames per analysed one,
2.7 MB each at 720p, 12 MB at 4K) through the object store to another process
or machine, where one task keeps them in its own memory (bounded by
`--frame-memory`) and streams: decoding runs ahead in a thread while the
models work on the frames before. Across units the driver streams too: a
window of units in flight, each new one submitted as one finishes. Where the
cluster has GPUs, each task asks for a fraction of one (GPUS_PER_UNIT), so
several units' decoders, on the node's CPUs, feed one GPU (docs/cluster.md).

Faults: Ray runs a task again when its worker process or its node dies
(MAX_RETRIES); the new attempt reads the unit's staged progress and resumes
after the last staged frame (`ResumePoint`), and rows staged twice share face
ids, so the merge keeps one. A killed driver takes its tasks with it; running
extract again commits what was staged and resumes every unfinished unit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from pathlib import Path

from ..models import faces
from ..models import runtime as runtimes
from ..errors import CuratorError
from .frame import StageTimes
from .units import GPU_BATCH, analysis_workers, failed_unit, run_unit
from ..workspace import PartWriter, Workspace, commit_staging, further, staged_units

RAY_MISSING = "--engine ray needs Ray, which is not installed: pip install 'curator-faces[ray]'"
CPUS_PER_UNIT = 1  # a unit's decoder thread and its model calls; Ray runs as many units at once as a node has CPUs
GPUS_PER_UNIT = 0.25  # where the cluster has GPUs: four units' models share one GPU
MAX_RETRIES = 3  # attempts after the first when a worker process or its node dies mid-unit
COMMIT_SECONDS = 30.0  # the driver merges finished units' parts into the table at most this often (and at the end)


class RayEngineError(CuratorError):
    """Ray is missing, or the cluster cannot be reached; the message says which and what to do."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayEngineError(RAY_MISSING) from None
    return ray


def run(ws: Workspace, work: list, *, settings, models: str, model_files: dict, request: runtimes.Request,
        workers: int | None, batch: int | None, address: str | None, staged: dict, on_result) -> set[str]:
    """Run the units in `work` as Ray tasks and hand each result to `on_result(result, remote=True)` as it
    comes; returns where the models ran ("onnxruntime/cpu" ...). Staged parts are committed along the way."""
    ray = import_ray()
    # Ray prints what its nodes report (a worker that died, a task it will run again) on stdout, from a thread of
    # its own; here that is stderr's, where curator's problems go: stdout is for --json.
    with contextlib.redirect_stdout(sys.stderr):
        return _run(ray, ws, work, settings=settings, models=models, model_files=model_files, request=request,
                    workers=workers, batch=batch, address=address, staged=staged, on_result=on_result)


def _run(ray, ws, work, *, settings, models, model_files, request, workers, batch, address, staged,
         on_result) -> set[str]:
    connect(ray, address)
    try:
        resources = ray.cluster_resources()
        options = {"num_cpus": CPUS_PER_UNIT, "max_retries": MAX_RETRIES, "retry_exceptions": False}
        if request.device != "cpu" and resources.get("GPU", 0) > 0:
            options["num_gpus"] = GPUS_PER_UNIT
        task = ray.remote(unit_task).options(**options)
        slots = max(1, int(resources.get("CPU", 1) // CPUS_PER_UNIT))
        args = {"ws_root": str(ws.root), "settings": settings, "models": models, "model_files": model_files,
                "request": request, "workers": workers, "batch": batch}
        return _stream(ray, task, work, args, staged, window=2 * slots, ws=ws, on_result=on_result)
    finally:
        ray.shutdown()


def connect(ray, address: str | None) -> None:
    """Join the cluster at `address` (else RAY_ADDRESS, else the one `ray start` made here, else start one here)."""
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = address or os.environ.get("RAY_ADDRESS") or "this machine"
        raise RayEngineError(f"cannot reach a Ray cluster at {where}: {str(e).splitlines()[0] if str(e) else e}") from None


def _stream(ray, task, work: list, args: dict, staged: dict, *, window: int, ws: Workspace, on_result) -> set[str]:
    """Keep `window` units in flight; as each finishes, hand on its result and commit now and then."""
    pending = list(reversed(work))
    running: dict = {}
    used: set[str] = set()
    last_commit = time.monotonic()
    while pending or running:
        while pending and len(running) < window:
            unit = pending.pop()
            running[task.remote(unit=unit, staged=_staged_for(unit, staged), **args)] = unit
        done, _ = ray.wait(list(running), num_returns=1)
        unit = running.pop(done[0])
        try:
            result = ray.get(done[0])
        except ray.exceptions.RayTaskError as e:  # a bug: the task raised; Ray does not run it again
            result = failed_unit(unit, f"failed on a Ray worker: {e.cause!r}")
        except ray.exceptions.RayError as e:  # its worker or node died more often than MAX_RETRIES, or Ray failed
            result = failed_unit(unit, f"lost on the Ray cluster after {MAX_RETRIES + 1} attempts "
                                       f"({type(e).__name__}); run extract again to resume")
        used.add(result["runtime"])
        on_result(result, remote=True)
        if time.monotonic() - last_commit > COMMIT_SECONDS:
            commit_staging(ws)  # the lock is the driver's; workers only add parts
            last_commit = time.monotonic()
    return used - {""}


def _staged_for(unit, staged: dict) -> dict:
    """What earlier runs staged for this unit (a photo run: per photo), so the task need not read every part."""
    return {k: staged[k] for k in unit.keys if k in staged}


# --- on the workers ---------------------------------------------------------

_MODELS: dict = {}  # per worker process: loaded once, used by every unit it runs


def unit_task(*, unit, staged: dict, ws_root: str, settings, models: str, model_files: dict,
              request: runtimes.Request, workers: int | None, batch: int | None) -> dict:
    """One unit, on a Ray worker: the same `run_unit` the local engine calls, staging through a writer of its own.

    Its staged progress is what the driver saw when it planned plus what an
    earlier attempt of this task staged since (a lost worker), whichever got
    further.
    """
    try:
        return _unit_task(unit, staged, ws_root, settings, models, model_files, request, workers, batch)
    except CuratorError as e:  # a node without the models or a GPU it was asked for: one line
        return failed_unit(unit, f"on {socket.gethostname()}: {e}")


def _unit_task(unit, staged, ws_root, settings, models, model_files, request, workers, batch) -> dict:
    import ray

    ws = Workspace(Path(ws_root))
    own = staged_units(ws, unit.key)
    staged = {k: further(staged.get(k), own.get(k)) for k in set(staged) | set(own)}
    cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", CPUS_PER_UNIT)) or 1
    rt = request.choose()  # on the worker's machine: its GPU, not the driver's
    n_workers, threads = analysis_workers(workers, rt, cores=cpus)
    fm = _models_for(models, rt, settings, threads)
    if fm.files != model_files:
        raise faces.ModelError(f"the model files at {models} differ from the driver's; every node needs the same "
                               "pack at the same path (docs/cluster.md)")
    writer = PartWriter(ws, every_frames=settings.checkpoint_frames, every_seconds=settings.checkpoint_seconds,
                        unit=unit.key)
    result = run_unit(unit, fm, settings, ws, writer, staged=staged, workers=n_workers,
                      batch=batch or (GPU_BATCH if rt.device == "cuda" else 1), times=StageTimes())
    writer.flush(force=True)
    return result


def _models_for(models: str, rt: runtimes.Runtime, settings, threads: int | None) -> faces.FaceModels:
    key = (models, rt, settings.det_thresh, threads, settings.landmarks)
    if key not in _MODELS:
        _MODELS[key] = faces.load_models(models, runtime=rt, det_thresh=settings.det_thresh, threads=threads,
                                         landmarks=settings.landmarks)
    return _MODELS[key]
