"""curator's Python API: one function per `curator` command, with the command's name and options.

    from curator import api

    api.extract(["interview.mp4"], "ws", consent="Jane Doe, signed release 2026-03-01")
    api.identify("ws", ref=["jane.jpg"])
    api.curate("ws", budget=3000)
    api.export("ws", "faceset")

`curator COMMAND` parses its options, calls the function of the same name
here and prints what it returns: a dict of plain values, the same one
`--json` prints. Every function raises `curator.errors.CuratorError` (one
line saying what and where) for anything the user can fix.

A function that writes a workspace (its table, embeddings, crops,
workspace.json or staging) takes the workspace's lock itself, and a second
writer is refused. Reports and contact sheets are derived files written
whole (atomically) and take no lock; `review` takes the lock only while it
writes tags, never while the App is open.

Long work reports through callbacks, all optional:
`on_total(n)` (the amount of work, once known), `on_progress(n, what)` (n more
done), `on_problem(path, reason)` (a bad input, the rest continues),
`on_note(text)` (something worth telling the user), `on_ready(url)` (review).

Below each function is the stage module that does the work: a reader can
follow footage from `run` through `extract`, `identify`, `curate` and
`export` here, and from each into its module.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .models import faces, recognisers
from . import outputs
from .models import runtime as runtimes
from . import target as targeting
from .curate import COLUMNS as CURATE_COLUMNS
from .curate import OPTIONAL_COLUMNS as CURATE_OPTIONAL
from .curate import budget_from
from .curate import curate as curate_table
from .errors import NothingFound, UsageError
from .export.folder import export as export_faces
from .extract import extract as extract_footage
from .extract import extract_settings
from .identify import COLUMNS as IDENTIFY_COLUMNS
from .identify import contact_sheet, identity_clusters, sheet_members
from .identify import identify as identify_table
from .workspace import (FORMAT_VERSION, identity_sheet, locked, open_workspace, read_embeddings, read_meta, read_table, read_vectors,
                        table_columns, table_rows, update_columns)

ENGINES = ("local", "ray")
PathLike = str | os.PathLike
Progress = Callable[[int, str], None]
Total = Callable[[int], None]
Problem = Callable[[str, str], None]
Note = Callable[[str], None]
Stage = Callable[[str, dict], None]


# --- the main job -------------------------------------------------------------------

def run(footage: PathLike | Sequence[PathLike], out: PathLike, *, ref: PathLike | Sequence[PathLike] | None = None, budget: int = 2000,
        workspace: PathLike | None = None, models: str | None = None, fps: float | None = None,
        size: int | None = None, landmarks: str | None = None, consent: str | None = None, force: bool = False,
        engine: str = "local", ray_address: str | None = None, segment_seconds: float | None = None,
        for_target: PathLike | Sequence[PathLike] | None = None, for_ref: PathLike | Sequence[PathLike] | None = None,
        for_workspace: PathLike | None = None, for_share: float = targeting.SHARE,
        on_problem: Problem | None = None, on_progress: Progress | None = None, on_total: Total | None = None,
        on_stage: Stage | None = None) -> dict:
    """The whole job: extract FOOTAGE, identify the target, curate BUDGET faces, export them to OUT.

    The workspace defaults to OUT.workspace beside OUT. Every input is checked
    before the first frame is decoded: the export folder, the model pack and
    each reference photo (readable, one clear face). The workspace's lock is
    held from extract to export, so no other writer gets in between the
    stages. Raises NothingFound when the footage holds no faces at all.
    ENGINE, RAY_ADDRESS and SEGMENT_SECONDS are extract's (`extract`).
    FOR_TARGET, FOR_REF, FOR_WORKSPACE (default OUT.for.workspace) and
    FOR_SHARE are curate's (`curate`); the target is read first, into its
    own workspace, so a target without faces stops the job before the footage
    is. `on_stage(name, summary)` is called as each stage ends.
    """
    ws_path = Path(workspace) if workspace is not None else default_workspace(out)
    footage = _paths(footage)
    _check_for(for_target, for_ref, for_workspace, for_share)
    target_ws = Path(for_workspace) if for_workspace is not None else targeting.default_workspace(out)
    # Before anything is read: the export may replace only an earlier export, never the footage or the workspace.
    folders = [Path(f) for f in footage if Path(f).is_dir()]
    keep = {ws_path: "the workspace", **{Path(f): "input footage" for f in footage}}
    if for_target:
        keep.update({target_ws: "the target's workspace", **{Path(f): "the target" for f in _paths(for_target)}})
    if models and Path(models).expanduser().is_dir():
        keep[Path(models)] = "the model pack"
    outputs.check_folder(out, "export", force=force, keep=keep,
                         not_inside={f: f"the footage folder {f} (its faces would be read as footage next time)"
                                     for f in folders})
    rt, settings, explicit = _extract_options(engine=engine, ray_address=ray_address, fps=fps, size=size,
                                              landmarks=landmarks, segment_seconds=segment_seconds)
    # The model pack and the reference photos, before hours of footage are decoded: a bad one is one line now.
    references = _references(ref, models) if ref else None
    stage = on_stage or (lambda name, summary: None)
    target, seen = None, [0]
    if for_target:
        def target_total(n: int) -> None:  # one progress bar for both extracts: the target's, then the footage's
            seen[0] = n
            if on_total:
                on_total(n)

        target = targeting.load_target(for_target, for_ref=for_ref, for_workspace=target_ws, default=target_ws,
                                       source_ws=ws_path, models=models, fps=fps, landmarks=landmarks,
                                       on_problem=on_problem, on_progress=on_progress, on_total=target_total,
                                       extract=extract)
    ws = open_workspace(ws_path, create=True)
    with locked(ws, "curator run"):
        ex = _extract(ws, footage, settings=settings, explicit=explicit, models=models, consent=consent, runtime=rt,
                      engine=engine, ray_address=ray_address, on_problem=on_problem, on_progress=on_progress,
                      on_total=(lambda n: on_total(seen[0] + n)) if on_total else None)
        stage("extract", ex)
        if ex["rows_total"] == 0:
            raise NothingFound("no faces found in the footage")
        ident = _identify(ws, references=references)
        stage("identify", ident)
        cur = _curate(ws, budget=budget, target=target, share=for_share)
        stage("curate", cur)
        exp = export_faces(ws, out, force=force)
        stage("export", exp)
    return {"workspace": str(ws.root), "extract": ex, "identify": ident, "curate": cur, "export": exp}


def default_workspace(out: PathLike) -> Path:
    """`run`'s workspace when none is named: OUT.workspace, beside the export folder."""
    out = Path(out)
    return out.with_name(out.name + ".workspace")


# --- the stages -----------------------------------------------------------------------

def extract(footage: PathLike | Sequence[PathLike], workspace: PathLike, *, models: str | None = None,
            fps: float | None = None, every: int | None = None, size: int | None = None,
            det_size: int | None = None, det_thresh: float | None = None, checkpoint_every: int | None = None,
            pose_fill: bool | None = None, landmarks: str | None = None, consent: str | None = None,
            runtime: str = "auto", device: str = "auto", batch: int | None = None, workers: int | None = None,
            frame_memory: int | None = None, segment_seconds: float | None = None, engine: str = "local",
            ray_address: str | None = None, on_problem: Problem | None = None, on_progress: Progress | None = None,
            on_total: Total | None = None) -> dict:
    """Find, align and describe every face in FOOTAGE (videos, photos, folders) into WORKSPACE (created if needed).

    Options left as None come from the workspace's earlier runs, else the
    defaults of `curator.extract.ExtractSettings`; on a GPU the default is
    every frame (`every=1`), on a CPU 2 frames a second. Re-running adds only
    new files and resumes an interrupted one. Bad files are reported through
    `on_problem` and listed in the summary's `problems`; the rest goes on.
    `landmarks`: "auto" (the pack's 3D-68 model when it has one), "dlib"
    (dlib's 68-point predictor, `pip install 'curator-faces[dlib]'`) or "none".
    `runtime`, `device`: where the face models run ("auto", "onnxruntime" or
    "torch"; "auto", "cpu" or "cuda"; docs/benchmarks.md). `batch`: frames
    per detector call; `workers`: model calls at once. Neither changes the
    table beyond float tolerances. `segment_seconds`: a video longer than
    this is read in segments that start at keyframes (default 300).
    `engine`: "local" (this process) or "ray": each segment (or run of
    photos) a Ray task, on the cluster at `ray_address` (else RAY_ADDRESS,
    else the cluster `ray start` made on this machine, else a new Ray here;
    docs/cluster.md). The table is the same for both engines.
    """
    for name, value in (("workers", workers), ("batch", batch)):
        if value is not None and value <= 0:
            raise UsageError(f"--{name} must be positive")
    rt, settings, explicit = _extract_options(
        engine=engine, ray_address=ray_address, runtime=runtime, device=device, fps=fps, every=every, size=size,
        det_size=det_size, det_thresh=det_thresh, checkpoint_every=checkpoint_every, pose_fill=pose_fill,
        landmarks=landmarks, frame_memory=frame_memory, segment_seconds=segment_seconds)
    footage = _paths(footage)
    ws = open_workspace(workspace, create=True)
    with locked(ws, "curator extract"):
        return _extract(ws, footage, settings=settings, explicit=explicit, models=models, consent=consent, runtime=rt,
                        workers=workers, batch=batch, engine=engine, ray_address=ray_address, on_problem=on_problem,
                        on_progress=on_progress, on_total=on_total)


def _extract_options(*, engine: str, ray_address: str | None, runtime: str = "auto", device: str = "auto",
                     fps: float | None = None, every: int | None = None, **options):
    """Where the models run (chosen here, once) and the settings, all checked before any footage is read."""
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if ray_address and engine != "ray":
        raise UsageError("--ray-address is for --engine ray")
    if engine == "ray":
        from .extract.ray import import_ray

        import_ray()  # before any work: without Ray, one line naming the extra to install
        rt = runtimes.request(runtime, device)  # each worker chooses on its own machine
        gpu = rt.device == "cuda"
    else:
        rt = runtimes.choose(runtime, device)
        gpu = rt.device == "cuda"
    if gpu and fps is None and every is None:
        every = 1  # a GPU analyses every frame: no pose is missed between sampled frames
    settings, explicit = extract_settings(fps=fps, every=every, **options)
    return rt, settings, explicit


def _extract(ws, footage: list, **options) -> dict:
    """`extract` on an open workspace whose lock the caller holds."""
    return extract_footage(ws, footage, **options).as_dict()


def identify(workspace: PathLike, *, ref: PathLike | Sequence[PathLike] | None = None, cluster: int | None = None,
             threshold: float | None = None, models: str | None = None, device: str = "auto") -> dict:
    """Choose the target identity: faces like the reference photos REF, or identity cluster CLUSTER (default the largest).

    Writes `identity_cluster`, `identity_score`, `track_id` and `is_target`.
    Reference photos are read with MODELS (default: the pack the workspace
    was extracted with), whose recogniser must be the workspace's
    (RecogniserMismatch otherwise); each must show exactly one clear face.
    THRESHOLD defaults to the workspace recogniser's (curator.recognisers).
    """
    ws = open_workspace(workspace)
    with locked(ws, "curator identify"):
        return _identify(ws, ref=ref, cluster=cluster, threshold=threshold, models=models, device=device)


def _identify(ws, *, ref=None, cluster=None, threshold=None, models=None, device="auto", references=None) -> dict:
    """`identify` on an open workspace whose lock the caller holds. `references`: (models, embeddings) of the
    reference photos when the caller read them already (`run`, before extracting)."""
    meta = read_meta(ws)
    rec = recognisers.of_workspace(meta)
    table = read_table(ws, IDENTIFY_COLUMNS)  # not the wide columns: identify reads boxes and embeddings
    if ref and references is None:
        references = _references(ref, models or (meta.get("models") or {}).get("path"), device, meta)
    refs = None
    if references is not None:
        fm, refs = references
        recognisers.check_same(meta, fm)  # photos read with another recogniser would score nothing
    emb = read_embeddings(ws, len(table))
    result = identify_table(table, emb, refs=refs, cluster=cluster, track_link=rec.track_link,
                            threshold=rec.same_person if threshold is None else threshold)
    update_columns(ws, result.table)
    return result.summary()


def _references(ref, models: str | None, device: str = "auto", meta: dict | None = None):
    """(face models, one embedding per reference photo): each photo readable and showing one clear face."""
    fm = faces.load_models(models, device=device)
    if meta is not None:
        recognisers.check_same(meta, fm)  # before any photo is read: their scores would mean nothing
    return fm, faces.reference_embeddings(fm, _paths(ref))


def identities(workspace: PathLike, *, threshold: float | None = None) -> list[dict]:
    """Identity clusters with face and source counts, largest first, and a contact sheet per cluster (WS/identities/)."""
    ws = open_workspace(workspace)
    table = read_table(ws, columns=["face_id", "source_sha256", "crop_path"])
    emb = read_embeddings(ws, len(table))
    same_person = recognisers.of_workspace(read_meta(ws)).same_person if threshold is None else threshold
    labels, _, listing = identity_clusters(table, emb, same_person)
    for c in listing:
        sheet = identity_sheet(ws, c["cluster"])
        c["contact_sheet"] = str(contact_sheet(ws, sheet_members(table["crop_path"], labels, c["cluster"]), sheet))
    return listing


def curate(workspace: PathLike, *, budget: int | None = None, minutes: float | None = None, fps: float = 25.0,
           seed: int = 0, max_occlusion: float | None = None, for_target: PathLike | Sequence[PathLike] | None = None,
           for_ref: PathLike | Sequence[PathLike] | None = None, for_workspace: PathLike | None = None,
           for_share: float = targeting.SHARE, on_problem: Problem | None = None, on_progress: Progress | None = None,
           on_total: Total | None = None) -> dict:
    """Remove near-duplicates among the target's faces and select the most diverse BUDGET (or MINUTES x FPS).

    Covered faces (curator/measure/states.py) are ranked last; with MAX_OCCLUSION, faces whose `occlusion` (share of
    the face covered, 0-1) is above it are left out, their `reason` naming the region.

    Runs `identify` with the largest cluster first when no target was chosen.
    Writes `quality`, `dup_group`, `pose_cluster`, `expr_cluster`,
    `light_cluster`, `selected`, `reason`, `for_target` and `target_faces`.

    FOR_TARGET: the video you will convert, a workspace or footage (videos,
    folders; several files are one target), extracted into FOR_WORKSPACE
    (default WS.for.workspace beside the workspace) with the workspace's
    models. Its person is the one in the FOR_REF photos, else its largest
    identity. The target's needs (poses, then expression, then lighting,
    then more faces where it has more) take up to FOR_SHARE of the budget
    first; the summary's `for_target` says what they still lack
    (docs/curation.md, "For a target").
    """
    n = budget_from(budget, minutes, fps)
    _check_for(for_target, for_ref, for_workspace, for_share)
    ws = open_workspace(workspace)
    target = _target_of(ws, for_target, for_ref, for_workspace, on_problem, on_progress, on_total)
    with locked(ws, "curator curate"):
        return _curate(ws, budget=n, seed=seed, max_occlusion=max_occlusion, target=target, share=for_share)


def _curate(ws, *, budget: int, seed: int = 0, max_occlusion: float | None = None,
            target: targeting.Target | None = None, share: float = targeting.SHARE) -> dict:
    """`curate` on an open workspace whose lock the caller holds, for `target` (or none)."""
    rec = recognisers.of_workspace(read_meta(ws))
    note = None
    if "is_target" not in table_columns(ws) and table_rows(ws):
        _identify(ws)
        note = "no target chosen: used the largest identity cluster (see `curator identities`)"
    # Only the columns curate reads; the appearance vectors come a shard at a time.
    have = set(table_columns(ws))
    wanted = CURATE_COLUMNS + CURATE_OPTIONAL + (targeting.SOURCE_COLUMNS if target else [])
    table = read_table(ws, [c for c in wanted if c in have], categories=("source_sha256",))
    emb = read_embeddings(ws, len(table), random_access=True) if len(table) else None
    result = curate_table(table, budget, seed=seed, emb=emb, same_picture=rec.same_picture,
                          appearance=read_vectors(ws, "appearance") if "appearance" in have and len(table) else None,
                          workers=min(os.cpu_count() or 1, 4), max_occlusion=max_occlusion,
                          for_target=targeting.ForTarget(target.faces, share) if target else None)
    del table
    update_columns(ws, result.columns)
    targeting.record(ws, target, share)
    if note:
        result.summary["identify"] = note
    if target:
        result.summary["for_target"] = {"target": target.describe(), **result.summary["for_target"]}
    return result.summary


def _target_of(ws, for_target, for_ref, for_workspace, on_problem=None, on_progress=None,
               on_total=None) -> targeting.Target | None:
    """The --for target of workspace `ws`'s curate or audit (None without one): footage is extracted with the
    workspace's models and landmark method, so that both sides measure pose and expression alike."""
    if not for_target:
        return None
    meta = read_meta(ws)
    landmarks = (meta.get("settings") or {}).get("landmarks")
    return targeting.load_target(for_target, for_ref=for_ref, for_workspace=for_workspace,
                                 default=targeting.default_workspace(ws.root), source_ws=ws.root,
                                 models=(meta.get("models") or {}).get("path"),
                                 landmarks="auto" if landmarks == "3d68" else landmarks,
                                 on_problem=on_problem, on_progress=on_progress, on_total=on_total, extract=extract)


def _check_for(for_target, for_ref, for_workspace, for_share) -> None:
    if not for_target and (for_ref or for_workspace is not None):
        raise UsageError("--for-ref and --for-workspace describe a --for target; give --for too")
    if not 0 < for_share <= 1:
        raise UsageError(f"--for-share is a share of the budget, more than 0 and at most 1, not {for_share}")


def export(workspace: PathLike, out: PathLike, *, include_all: bool = False, val: float = 0.1, force: bool = False,
           format: str = "folder") -> dict:
    """Write the selected faces (or all with INCLUDE_ALL), never those rejected in review, to OUT in FORMAT.

    Formats: folder (crops + manifest + embeddings + provenance), faceswap,
    dfl, fiftyone (docs/formats.md). The lock keeps curate from changing the
    selection while the export reads it.
    """
    ws = open_workspace(workspace)
    with locked(ws, "curator export"):
        return export_faces(ws, out, include_all=include_all, val_fraction=val, force=force, fmt=format)


def verify(workspace: PathLike, *, repair: bool = False) -> dict:
    """Check that table, embeddings, crops and workspace.json agree; with REPAIR, fix what needs no guessing."""
    from .workspace.verify import check, repair as repair_workspace

    ws = open_workspace(workspace)
    if not repair:
        return check(ws)
    version = read_meta(ws)["format_version"]
    with locked(ws, "curator verify --repair"):  # the lock upgrades an older format first
        result = repair_workspace(ws)
    if version < FORMAT_VERSION:
        result["repaired"].insert(0, f"upgraded the workspace from format {version} to {FORMAT_VERSION}")
    return result


# --- around the set -------------------------------------------------------------------

def audit(workspace: PathLike, *, selected: bool = False, out: PathLike | None = None,
          for_target: PathLike | Sequence[PathLike] | None = None, for_ref: PathLike | Sequence[PathLike] | None = None,
          for_workspace: PathLike | None = None, on_problem: Problem | None = None) -> dict:
    """An offline HTML report of what the faces cover and their holes in words (OUT, default WS/audit.html).

    FOR_TARGET (with FOR_REF and FOR_WORKSPACE as in `curate`): also which
    selected faces serve that target, how many of its faces each stands for,
    and what the selection and the footage lack for it.
    """
    from .reports.audit import audit as audit_report

    _check_for(for_target, for_ref, for_workspace, targeting.SHARE)
    ws = open_workspace(workspace)
    target = _target_of(ws, for_target, for_ref, for_workspace, on_problem)
    return audit_report(ws, selected=selected, out=out, target=target, section=targeting)


def compare(source: PathLike, target: PathLike, *, out: PathLike | None = None) -> dict:
    """What SOURCE's faces lack for converting TARGET's video: gap regions, a gap score, footage to look for."""
    from .reports.compare import compare as compare_report

    return compare_report(open_workspace(source), open_workspace(target), out=out)


def evaluate(model: PathLike, faces: PathLike, *, side: str | None = None, out: PathLike | None = None,
             models: str | None = None, device: str = "auto", on_total: Total | None = None,
             on_progress: Progress | None = None) -> dict:
    """How well the `train` run MODEL draws the face set FACES (an export, or a workspace's target faces).

    Reconstruction (its own side) and swap figures per face, per 10° pose bin,
    expression and lighting cell, the worst poses in words, and an offline
    HTML report (OUT, default MODEL/evaluate.html). SIDE (a or b) says which
    identity of the run FACES is; by default the closer one by identity.
    """
    from .reports.evaluate import evaluate as evaluate_model
    from .reports.page import public

    return public(evaluate_model(model, faces, side=side, out=out, models=models, device=device,
                                 on_total=on_total, on_progress=on_progress))


def review(workspace: PathLike, *, port: int = 5151, address: str = "127.0.0.1", pull: bool = False,
           no_app: bool = False, timeout: float | None = None, dataset: str | None = None, faces: str = "auto",
           on_ready: Callable[[str], None] = lambda url: None, on_note: Note = lambda note: None) -> dict:
    """The faces in the FiftyOne App; its tags `reject`, `keep` and others flow back into the table.

    PULL: only copy the App's tags into the table. NO_APP: build or update the
    dataset and pull, without starting the App. Otherwise the App runs until
    Ctrl-C or TIMEOUT seconds. FACES: which faces are in the dataset: `auto`
    (every face up to 50,000; above that the selection in its context once
    curated), `selected`, `context`, `target` or `all` (docs/review.md); faces
    tagged keep or reject always are, and faces that leave keep their tags.
    """
    from .review.session import review as review_faces
    from .review.scope import SCOPES

    if timeout is not None and timeout <= 0:
        raise UsageError("--timeout must be positive")
    if faces not in SCOPES:
        raise UsageError(f"--faces must be one of {', '.join(SCOPES)}, not {faces!r}")
    return review_faces(workspace, port=port, address=address, pull_only=pull, app=not (pull or no_app),
                        timeout=timeout, name=dataset, faces=faces, on_ready=on_ready, on_note=on_note)


def train(**options) -> dict:
    """Train a face swap between two exports; OPTIONS are the fields of `trainer.config.Config` (a, b, out, steps, ...),
    None meaning "not given" (the default, or with resume=True the run's own value)."""
    from trainer.train import train as train_model

    return train_model(options)


def _train_signature() -> inspect.Signature:
    """`train`'s keyword options, one per field of trainer.config.Config (defined there once), for help() and tools."""
    from dataclasses import fields

    from trainer.config import Config

    return inspect.Signature([inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None)
                              for f in fields(Config)], return_annotation=dict)


train.__signature__ = _train_signature()


def convert(video: PathLike, model: PathLike, out: PathLike | None = None, *, frames_out: PathLike | None = None,
            preview: int | None = None, direction: str = "a2b", ref: PathLike | Sequence[PathLike] | None = None,
            models: str | None = None, device: str = "auto", threshold: float | None = None, mask: str = "predicted",
            erode: float = 0.02, feather: float = 0.04, color: str = "lab", smooth: bool = True, batch: int = 16,
            lossless: bool = False, crf: int = 18, preset: str = "medium", visible_mark: bool = True,
            max_frames: int | None = None, det_size: int = 640, det_thresh: float = 0.6, force: bool = False,
            on_total: Total | None = None, on_progress: Progress | None = None) -> dict:
    """Replace a face in VIDEO with the `train` run MODEL; OUT is labelled synthetic (metadata, sidecar, corner mark).

    With PREVIEW N, only N sample frames, original | swapped side by side,
    are written as PNGs into the folder OUT.
    """
    from .swap.convert import ConvertSettings, convert as convert_video, preview as preview_video

    if not (0 <= erode < 0.5 and 0 <= feather < 0.5):
        raise UsageError("--erode and --feather are fractions of the face crop, from 0 to 0.5")
    if preview is not None and (out is None or frames_out is not None):
        raise UsageError("--preview N writes its side-by-side PNGs into --out FOLDER (and takes no --frames-out)")
    settings = ConvertSettings(direction=direction, mask=mask, erode=erode, feather=feather, color=color,
                               smooth=smooth, threshold=threshold, det_size=det_size, det_thresh=det_thresh,
                               batch=batch, visible_mark=visible_mark, lossless=lossless, crf=crf, preset=preset,
                               max_frames=max_frames)
    ref = _paths(ref) if ref else None
    progress = (lambda n: on_progress(n, "")) if on_progress else None
    if preview is not None:
        return preview_video(video, model, out, preview, refs=ref, models=models, device=device, settings=settings,
                             force=force, on_total=on_total, on_progress=progress)
    return convert_video(video, model, out, frames_out=frames_out, refs=ref, models=models, device=device,
                         settings=settings, force=force, on_total=on_total, on_progress=progress)


def _paths(value: PathLike | Iterable[PathLike]) -> list:
    """A path or a list of paths, as a list (`api.extract("clip.mp4", "ws")` means one clip, not its characters)."""
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)
