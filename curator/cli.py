"""The `curator` command: parse, call, print.

Each command parses its options, calls the function of the same name in
`curator.api` with them, and prints what it returns: a human summary, or
with --json that dict as one JSON object on stdout. Progress bars and
problems go to stderr, so `--json` output can be piped. A `CuratorError`
becomes one line, `curator: error: ...`, and its exit code.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from trainer.config import typer_command

from . import __version__

app = typer.Typer(
    name="curator",
    help="Face dataset curation: footage in, one identity's most diverse faces out.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)
err = Console(stderr=True, highlight=False, soft_wrap=True)

MODELS_HELP = "InsightFace model pack: a name InsightFace downloads (default buffalo_l) or a directory of ONNX files. Env: CURATOR_MODELS."
ENGINE_HELP = ("Where the work runs: local (this process) or ray (each video segment a Ray task, on a cluster or on "
               "this machine; pip install 'curator-faces[ray]'; docs/cluster.md). The table is the same [default: local].")
RAY_ADDRESS_HELP = ("Ray cluster to run on with --engine ray, e.g. 10.0.0.5:6379 [default: RAY_ADDRESS, else the cluster "
                    "`ray start` made on this machine, else a new Ray on this machine].")
SEGMENT_HELP = ("Read a video longer than this many seconds in segments, split at keyframes, each sampled on its own: "
                "the units that Ray workers share [default: 300].")
LANDMARKS_HELP = ("68-point landmarks: auto (the pack's 3D-68 model when it has one, else none), dlib (dlib's predictor, "
                  "pip install 'curator-faces[dlib]'; non-commercial model) or none. One method per workspace [default: auto].")


FOR_HELP = ("The video you will convert: a workspace, or footage (videos, folders; repeat --for for several files, "
            "one target). Its poses, expressions and lighting are selected for first (docs/curation.md, \"For a target\").")
FOR_REF_HELP = "Photo of the target's person (one face) [default: the target's largest identity]. Repeatable."
FOR_WORKSPACE_HELP = "Where footage given to --for is extracted [default: {}]."
FOR_SHARE_HELP = "Most of the budget the target's needs may take; the rest keeps the set's own variety."


def fail(message: str, code: int = 2) -> None:
    err.print(f"curator: error: {message}", markup=False)
    raise typer.Exit(code)


@contextmanager
def errors_as_lines(on_oserror: Callable[[OSError], str] = str) -> Iterator[None]:
    """A CuratorError becomes one stderr line and its exit code; an OSError (a full disk, a read-only folder)
    one line too, worded by `on_oserror` (what was committed before it stays: every write is atomic)."""
    from .errors import CuratorError

    try:
        yield
    except CuratorError as e:
        fail(str(e), e.exit_code)
    except OSError as e:
        fail(on_oserror(e))


def problem(path: str, reason: str) -> None:
    err.print(f"curator: {path}: {reason}", markup=False)


def emit(as_json: bool, payload: dict, human: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    else:
        print(human)


@contextmanager
def progress_bar(enabled: bool, label: str) -> Iterator[tuple]:
    """Yields (set_total, advance) callbacks for a stage; a no-op pair when disabled.

    The bar appears at the first callback, when the work itself starts: a
    refusal while loading (a bad model pack, a checkpoint that does not fit)
    is then one line, with no empty bar above it.
    """
    if not enabled:
        yield (lambda total: None), (lambda n, desc="": None)
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[item]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
    task: list = []

    def started():
        if not task:
            bar.start()
            task.append(bar.add_task(label, total=None, item=""))
        return task[0]

    try:
        yield (lambda total: bar.update(started(), total=total or None)), (
            lambda n, desc="": bar.update(started(), advance=n, item=desc)
        )
    finally:
        if task:
            bar.stop()


def version_callback(value: bool) -> None:
    if value:
        print(f"curator {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True, help="Print the version."),
) -> None:
    """Face dataset curation: footage in, one identity's most diverse faces out."""


@app.command()
def extract(
    footage: List[Path] = typer.Argument(..., help="Video files, image files, or folders of them (searched recursively)."),
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder (created if needed)."),
    models: Optional[str] = typer.Option(None, "--models", help=MODELS_HELP),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frames analysed per second of video [default: 2]."),
    every: Optional[int] = typer.Option(None, "--every", help="Analyse every Nth frame instead of --fps."),
    size: Optional[int] = typer.Option(None, "--size", help="Side of the aligned face crops in pixels [default: 256]."),
    det_size: Optional[int] = typer.Option(None, "--det-size", help="Detector input, long side [default: 640]."),
    consent: Optional[str] = typer.Option(None, "--consent", help="Who agreed to what, recorded with these sources."),
    det_thresh: Optional[float] = typer.Option(None, "--det-thresh", help="Minimum detector score [default: 0.6]."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Analysed frames between checkpoints [default: 200]."),
    pose_fill: Optional[bool] = typer.Option(None, "--pose-fill/--no-pose-fill", help="Also analyse frames at large picture changes and between analysed frames where a head turned fast: about 1.8x the frames, far more head poses kept [default: on]."),
    landmarks: Optional[str] = typer.Option(None, "--landmarks", help=LANDMARKS_HELP),
    runtime: str = typer.Option("auto", "--runtime", help="Where the face models run: auto (onnxruntime with CUDA, else PyTorch on CUDA, else onnxruntime on the CPU), onnxruntime or torch."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda. On a GPU every frame is analysed unless --fps or --every says otherwise."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Frames per detector call; speed only, the table is the same within float tolerances [default: 1 on a CPU, 32 on a GPU]."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Model calls at once; speed only, the table is the same [default: one per core, at most 4]."),
    frame_memory: Optional[int] = typer.Option(None, "--frame-memory", help="MiB of decoded frames held at once for pose fill and read-ahead; 4K keeps fewer frames for pose fill [default: 1024]."),
    segment_seconds: Optional[float] = typer.Option(None, "--segment-seconds", help=SEGMENT_HELP),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Find, align and describe every face in FOOTAGE.

    Writes one row per face to a new shard WS/faces/NNNNNN.parquet, its
    L2-normalised identity embeddings to WS/embeddings/NNNNNN.npy and
    aligned crops to WS/crops/ (docs/workspace.md).
    Re-running adds only new files and resumes an interrupted run.

    Examples:

        curator extract interview.mp4 speeches/ --workspace ws

        curator extract clips/ -w ws --fps 4 --size 512 --consent "Jane Doe, written consent 2026-03-01, training only"

        curator extract photos/ -w ws --models ~/models/buffalo_l --json

        curator extract long_interview.mp4 -w ws --no-pose-fill    # faster: the fps clock alone

        curator extract films/ -w ws --device cuda --batch 64 --json    # every frame, on a GPU

        curator extract clips/ -w ws --landmarks dlib    # 68 points for faceswap/DFL export without buffalo_l

        curator extract /shared/films/ -w /shared/ws --engine ray --ray-address 10.0.0.5:6379    # a Ray cluster
    """
    from . import api

    def disk_error(e: OSError) -> str:
        return (f"cannot write to the workspace ({e.strerror or e}{': ' + str(e.filename) if e.filename else ''}); "
                "what was already committed is intact, re-run to resume")

    with errors_as_lines(disk_error):
        with progress_bar(not quiet and not as_json, "extract") as (set_total, advance):
            s = api.extract(footage, workspace, models=models, fps=fps, every=every, size=size, det_size=det_size,
                            det_thresh=det_thresh, checkpoint_every=checkpoint_every, pose_fill=pose_fill,
                            landmarks=landmarks, consent=consent, runtime=runtime, device=device, batch=batch,
                            workers=workers, frame_memory=frame_memory, segment_seconds=segment_seconds,
                            engine=engine, ray_address=ray_address, on_problem=problem, on_progress=advance,
                            on_total=set_total)
    emit(as_json, s,
         f"{s['new_files']} new file(s), {s['already_in_workspace']} already in workspace, {s['failed']} problem(s); "
         f"{s['frames_decoded']} frames decoded, {s['frames_analysed']} analysed ({s['frames_motion']} for picture "
         f"changes, {s['frames_backfilled']} for head turns; {s['frames_skipped_static']} near-identical skipped), "
         f"{s['faces']} faces; {s['rows_total']} faces in {s['workspace']} ({s['seconds']:.1f} s, {s['runtime'] or 'no models'})")
    if s["new_files"] + s["already_in_workspace"] == 0 and s["failed"]:
        raise typer.Exit(1)


@app.command()
def identify(
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
    ref: Optional[List[Path]] = typer.Option(None, "--ref", help="Reference photo of the target (one face). Repeatable."),
    cluster: Optional[int] = typer.Option(None, "--cluster", help="Target = this cluster of `curator identities`."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Same-person cosine similarity [default: per recogniser, see docs/curation.md]."),
    models: Optional[str] = typer.Option(None, "--models", help=MODELS_HELP + " Default: the workspace's."),
    device: str = typer.Option("auto", "--device", help="Where the recogniser runs for the reference photos: auto, cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Pick the target identity; writes `identity_score`, `is_target`, `identity_cluster` and `track_id`.

    Without --ref the largest identity cluster is the target.

    Examples:

        curator identify -w ws --ref jane1.jpg --ref jane2.jpg

        curator identities ws && curator identify -w ws --cluster 2
    """
    from . import api

    with errors_as_lines():
        summary = api.identify(workspace, ref=ref, cluster=cluster, threshold=threshold, models=models, device=device)
    emit(as_json, summary, f"target: {summary['target_faces']} of {summary['faces']} faces "
         f"({summary['method']}, threshold {summary['threshold']:.2f})")


@app.command()
def identities(
    workspace: Path = typer.Argument(..., help="Workspace folder."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Same-person cosine similarity."),
    as_json: bool = typer.Option(False, "--json", help="Print the clusters as JSON on stdout."),
) -> None:
    """List identity clusters with face counts and write a contact sheet image per cluster (WS/identities/).

    Examples:

        curator identities ws

        curator identities ws --json | jq '.[0]'
    """
    from . import api

    with errors_as_lines():
        listing = api.identities(workspace, threshold=threshold)
    if as_json:
        print(json.dumps(listing, indent=2))
        return
    for c in listing:
        print(f"cluster {c['cluster']:3d}: {c['faces']:6d} faces from {c['sources']} source(s)  {c['contact_sheet']}")


def _curate_line(s: dict) -> str:
    from .target import summary_line

    a, b = s["coverage_before"], s["coverage_after"]
    return (f"{s['selected']} selected of {s['candidates']} target faces ({s['near_duplicates_removed']} near-duplicates); "
            f"pose bins {b.get('pose_bins_covered', 0)}/{a['pose_bins']}, expression {b['expression_coverage']:.0%}, "
            f"lighting {b['light_coverage']:.0%}" + (f"\n{s['note']}" if s.get("note") else "")
            + (f"\n{summary_line(s['for_target'])}" if s.get("for_target") else ""))


@app.command()
def curate(
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
    budget: Optional[int] = typer.Option(None, "--budget", help="Number of faces to select."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Or: a budget in minutes of footage at --fps."),
    fps: float = typer.Option(25.0, "--fps", help="Frames per second that --minutes counts."),
    seed: int = typer.Option(0, "--seed", help="Tie-break seed; the same seed gives the same selection."),
    max_occlusion: Optional[float] = typer.Option(
        None, "--max-occlusion", help="Leave out faces more covered than this share (0-1); else covered faces rank last."),
    for_target: Optional[List[Path]] = typer.Option(None, "--for", help=FOR_HELP),
    for_ref: Optional[List[Path]] = typer.Option(None, "--for-ref", help=FOR_REF_HELP),
    for_workspace: Optional[Path] = typer.Option(None, "--for-workspace", help=FOR_WORKSPACE_HELP.format("WS.for.workspace")),
    for_share: float = typer.Option(0.5, "--for-share", help=FOR_SHARE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print counts and coverage as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (extracting a --for target)."),
) -> None:
    """Remove near-duplicates among the target's faces and select the most diverse BUDGET.

    Writes `quality`, `dup_group`, `pose_cluster`, `expr_cluster`, `light_cluster`, `selected`, `reason`,
    `for_target` and `target_faces`. With --for, the video you will convert comes first: faces near its poses,
    expressions and lighting (up to --for-share of the budget), then the set's own variety; the summary gives
    the gap score against it with and without --for, and what footage would close what is left.

    Examples:

        curator curate -w ws --budget 2000

        curator curate -w ws --minutes 9 --fps 25 --json

        curator curate -w ws --budget 500 --max-occlusion 0.2

        curator curate -w jane_ws --budget 2000 --for john_interview.mp4    # for the video you will convert

        curator curate -w jane_ws --budget 2000 --for clip1.mp4 --for clip2.mp4 --for-ref john.jpg --json
    """
    from . import api

    with errors_as_lines(), progress_bar(not quiet and not as_json and bool(for_target), "extract target") as (set_total, advance):
        summary = api.curate(workspace, budget=budget, minutes=minutes, fps=fps, seed=seed, max_occlusion=max_occlusion,
                             for_target=for_target, for_ref=for_ref, for_workspace=for_workspace, for_share=for_share,
                             on_problem=problem, on_progress=advance, on_total=set_total)
    emit(as_json, summary, _curate_line(summary))


@app.command()
def export(
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Export folder."),
    include_all: bool = typer.Option(False, "--all", help="Every face, selected or not (never those rejected in review)."),
    val: float = typer.Option(0.1, "--val", help="Share of faces for validation (whole sources)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing export folder."),
    format: str = typer.Option("folder", "--format", help="folder, faceswap, dfl or fiftyone (docs/formats.md)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Write the selected faces, a manifest and provenance to OUT (the trainer's input).

    --format faceswap / dfl write aligned faces with that tool's own metadata
    (they need 68-point landmarks); --format fiftyone writes a FiftyOne dataset.

    Examples:

        curator export -w ws --out faceset

        curator export -w ws --out everything --all --force

        curator export -w ws --out faceswap_A --format faceswap
    """
    from . import api

    with errors_as_lines():
        summary = api.export(workspace, out, include_all=include_all, val=val, force=force, format=format)
    for note in summary.get("notes", []):
        problem("export", note)
    emit(as_json, summary, f"{summary['faces']} faces ({summary['train']} train, {summary['val']} val, "
         f"split by {summary['split_by']}, format {summary['format']}) -> {summary['out']}")


@app.command()
def run(
    footage: List[Path] = typer.Argument(..., help="Video files, image files, or folders of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Export folder for the curated faces."),
    ref: Optional[List[Path]] = typer.Option(None, "--ref", help="Reference photo of the target. Repeatable."),
    budget: int = typer.Option(2000, "--budget", help="Number of faces to select."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace folder [default: OUT.workspace]."),
    models: Optional[str] = typer.Option(None, "--models", help=MODELS_HELP),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frames analysed per second of video [default: 2]."),
    size: Optional[int] = typer.Option(None, "--size", help="Side of the aligned face crops [default: 256]."),
    landmarks: Optional[str] = typer.Option(None, "--landmarks", help=LANDMARKS_HELP),
    consent: Optional[str] = typer.Option(None, "--consent", help="Who agreed to what, recorded with these sources."),
    force: bool = typer.Option(False, "--force", help="Replace an existing export folder."),
    segment_seconds: Optional[float] = typer.Option(None, "--segment-seconds", help=SEGMENT_HELP),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    for_target: Optional[List[Path]] = typer.Option(None, "--for", help=FOR_HELP),
    for_ref: Optional[List[Path]] = typer.Option(None, "--for-ref", help=FOR_REF_HELP),
    for_workspace: Optional[Path] = typer.Option(None, "--for-workspace", help=FOR_WORKSPACE_HELP.format("OUT.for.workspace")),
    for_share: float = typer.Option(0.5, "--for-share", help=FOR_SHARE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """The whole job: extract, identify, curate and export in one command.

    With --for, the target video is extracted first (into OUT.for.workspace) and the set is curated for it.

    Examples:

        curator run interviews/ --out faceset --ref jane.jpg --budget 3000

        curator run clip.mp4 --out faceset --models ~/models/buffalo_l --consent "Jane Doe, signed 2026-03-01"

        curator run /shared/films/ --out /shared/faceset --ref jane.jpg --engine ray    # extract on Ray (RAY_ADDRESS)

        curator run interviews/ --ref jane.jpg --for john_clip.mp4 --out faceset --budget 3000    # for the video you will convert
    """
    from . import api

    with errors_as_lines():
        with progress_bar(not quiet and not as_json, "extract") as (set_total, advance):
            payload = api.run(footage, out, ref=ref, budget=budget, workspace=workspace, models=models, fps=fps,
                              size=size, landmarks=landmarks, consent=consent, force=force, engine=engine,
                              ray_address=ray_address, segment_seconds=segment_seconds, for_target=for_target,
                              for_ref=for_ref, for_workspace=for_workspace, for_share=for_share, on_problem=problem,
                              on_progress=advance, on_total=set_total)
    ex, ident, cur, exp = (payload[k] for k in ("extract", "identify", "curate", "export"))
    emit(as_json, payload,
         f"extract: {ex['faces']} new faces from {ex['new_files']} file(s), {ex['rows_total']} in workspace {payload['workspace']}\n"
         f"identify: {ident['target_faces']} target faces ({ident['method']})\n"
         f"curate: {_curate_line(cur)}\n"
         f"export: {exp['faces']} faces ({exp['train']} train, {exp['val']} val) -> {exp['out']}")


@app.command()
def verify(
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
    repair: bool = typer.Option(False, "--repair", help="Fix what can be fixed without guessing."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Check that table, embeddings, crops and workspace.json agree; exit 1 when they do not.

    --repair merges interrupted extract checkpoints, drops trailing embedding rows,
    deletes orphan crops and marks rows whose crops are gone (`crop_missing`).

    Examples:

        curator verify -w ws

        curator verify -w ws --repair --json
    """
    from . import api

    with errors_as_lines():
        report = api.verify(workspace, repair=repair)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for item in report["problems"] + report["notes"]:
            print(f"{item['kind']}: {item['detail']} ({item['count']})" + (f": {', '.join(item['examples'])}" if item["examples"] else ""))
        for line in report.get("repaired", []):
            print(f"repaired: {line}")
        print(f"{report['rows']} rows; " + ("consistent" if report["ok"] else f"{len(report['problems'])} problem(s)"))
    if not report["ok"]:
        raise typer.Exit(1)


@app.command("train")
@typer_command  # one option per field of trainer.config.Config, the same as `python -m trainer`
def train(
    options: dict,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout (and no progress bar)."),
) -> None:
    """Train a face swap from export A to export B: a shared encoder and one decoder per identity.

    One device here; for several GPUs run `torchrun --nproc-per-node N -m trainer`
    with the same options (docs/trainer.md). Ctrl-C saves a checkpoint first.

    Examples:

        curator train --a faces_jane --b faces_john --out run --steps 20000

        curator train --a faces_jane --b faces_john --out run --time-limit 2h --resolution 192

        curator train --out run --resume --steps 40000 --json
    """
    from . import api

    if as_json:
        options = {**options, "quiet": True}
    with errors_as_lines():
        try:
            summary = api.train(**options)
        except KeyboardInterrupt:  # a second Ctrl-C, or one before training started: nothing new was saved
            fail("interrupted; not saved (an earlier checkpoint, if any, is intact)", 130)
    if as_json:
        emit(True, summary, "")
    if summary["exit_code"]:
        raise typer.Exit(summary["exit_code"])


@app.command()
def audit(
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
    selected: bool = typer.Option(False, "--selected", help="Only the selected faces (after `curator curate`)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report file [default: WS/audit.html]."),
    for_target: Optional[List[Path]] = typer.Option(None, "--for", help="The video you will convert (a workspace or footage): "
                                                     "which selected faces serve it, and what they lack for it."),
    for_ref: Optional[List[Path]] = typer.Option(None, "--for-ref", help=FOR_REF_HELP),
    for_workspace: Optional[Path] = typer.Option(None, "--for-workspace", help=FOR_WORKSPACE_HELP.format("WS.for.workspace")),
    as_json: bool = typer.Option(False, "--json", help="Print the report's numbers as JSON on stdout."),
) -> None:
    """An offline HTML report of what a face set covers, and its holes in plain words.

    Head-pose heatmap, expression, lighting and quality distributions, example
    faces per pose bin, and the holes. Reports the target's faces when `identify` has run, else all faces. The
    report embeds every image, so it opens offline and can be mailed as one file. With --for, a section on the
    video you will convert: which selected faces serve it, how many of its faces each stands for, what is missing.

    Examples:

        curator audit -w ws

        curator audit -w ws --selected --out selected.html

        curator audit -w ws --json | jq '.holes[].words'

        curator audit -w jane_ws --for john_clip.mp4 --json | jq .for_target.look_for
    """
    from . import api
    from .reports.audit import audit_line

    with errors_as_lines():
        summary = api.audit(workspace, selected=selected, out=out, for_target=for_target, for_ref=for_ref,
                            for_workspace=for_workspace, on_problem=problem)
    emit(as_json, summary, audit_line(summary))


@app.command()
def compare(
    source: Path = typer.Argument(..., help="Workspace of the faces a model learns from (its selection if curated)."),
    target: Path = typer.Argument(..., help="Workspace of the video to convert."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report file [default: TARGET/compare.html]."),
    as_json: bool = typer.Option(False, "--json", help="Print the gaps as JSON on stdout."),
) -> None:
    """What SOURCE lacks for converting TARGET: gap regions, a gap score, footage to look for.

    Lists where TARGET has faces in a head pose, expression or lighting that
    SOURCE lacks, with counts and example target frames, a gap score (0 = no
    gaps) and what footage to look for, and writes an offline HTML report.

    Pose is always compared; expression only when both workspaces measured it the same way
    (`expression_method`). See docs/audit.md for the gap score.

    Examples:

        curator compare jane_ws john_video_ws

        curator compare jane_ws john_video_ws --out gaps.html --json | jq .gap_score
    """
    from . import api
    from .reports.compare import compare_line

    with errors_as_lines():
        result = api.compare(source, target, out=out)
    emit(as_json, result, compare_line(result))


@app.command()
def evaluate(
    model: Path = typer.Option(..., "--model", "-m", help="Run folder of `curator train` (model.safetensors)."),
    faces: Path = typer.Option(..., "--faces", "-f", help="Face set: an export folder, or a workspace (its target faces)."),
    side: Optional[str] = typer.Option(None, "--side", help="Which identity of the run the faces are, a or b [default: the closer one by identity]."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report file [default: MODEL/evaluate.html]."),
    models: Optional[str] = typer.Option(None, "--models", help=MODELS_HELP + " Default: the one the face set was made with."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (the model)."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """How well a trained model draws a face set: per head pose, expression and lighting, worst poses in words.

    Reconstruction on the set's own side (masked L1, masked SSIM, identity
    kept) and the swap (likeness to the other identity, head pose and
    expression kept), per face, per 10° pose bin and per expression and
    lighting cell, with an offline HTML report. The faces must be aligned as
    the training crops were (docs/evaluate.md).

    Examples:

        curator evaluate --model run --faces faces_jane_val

        curator evaluate --model run --faces jane_ws --side a --out jane.html

        curator evaluate -m run -f faces_jane --json | jq '.worst[].words'
    """
    from . import api
    from .reports.evaluate import evaluate_line

    with errors_as_lines(), progress_bar(not quiet and not as_json, "evaluate") as (set_total, advance):
        summary = api.evaluate(model, faces, side=side, out=out, models=models, device=device,
                               on_total=set_total, on_progress=advance)
    emit(as_json, summary, evaluate_line(summary))


@app.command()
def review(
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
    port: int = typer.Option(5151, "--port", help="Port of the App's web server."),
    address: str = typer.Option("127.0.0.1", "--address", help="Address the App listens on; anything but loopback lets other machines in (no login)."),
    pull: bool = typer.Option(False, "--pull", help="Only copy the App's tags into the table; start nothing."),
    no_app: bool = typer.Option(False, "--no-app", help="Build or update the dataset and pull tags, without starting the App."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Close the App after this many seconds [default: at Ctrl-C]."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="FiftyOne dataset name [default: curator-FOLDER-HASH, from the workspace's path]."),
    faces: str = typer.Option("auto", "--faces", help="Which faces the dataset holds: auto, selected, context, target or all. "
                              "auto: every face up to 50,000; above that, once curated, the selection in its context "
                              "(near-duplicates, left-out faces of thin pose bins, doubtful identities), else the target's "
                              "or all faces cut to 50,000. Faces tagged keep or reject are always in it."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Review the faces in the FiftyOne App; its tags `reject`, `keep` and any others flow back into the table.

    Creates or updates one persistent FiftyOne dataset for the workspace with the faces of the --faces
    scope (faces that leave it take their tags to the table first; tags of the others are never touched),
    with saved views and embeddings-panel maps, starts the App and prints its URL (it opens on the
    selection's saved view; FiftyOne's analytics stay off unless you turned them on yourself).
    Tags reach `rejected`, `kept` and `review_tags` within seconds (curate and export respect them),
    and once more when Ctrl-C stops the App. Needs FiftyOne's MongoDB: FIFTYONE_DATABASE_URI (docs/review.md).

    Examples:

        curator review -w ws

        curator review -w ws --port 5152

        curator review -w ws --pull

        curator review -w ws --no-app --json

        curator review -w ws --faces selected        # only the curated set

        curator review -w ws --faces context         # the selection with what it was chosen over

        curator review -w ws --faces all             # every face, however many
    """
    from . import api
    from .review.session import summary_line

    def ready(url: str) -> None:
        line = f"App: {url}  (tags reach the workspace as you make them; Ctrl-C here stops the App)"
        if as_json:
            err.print(line, markup=False)
        else:
            print(line, flush=True)

    with errors_as_lines():
        summary = api.review(workspace, port=port, address=address, pull=pull, no_app=no_app, timeout=timeout,
                             dataset=dataset, faces=faces, on_ready=ready, on_note=lambda note: problem("review", note))
    emit(as_json, summary, summary_line(summary))


@app.command()
def convert(
    video: Path = typer.Argument(..., help="The video whose face to replace."),
    model: Path = typer.Option(..., "--model", "-m", help="Run folder of `curator train` (model.safetensors)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output video (.mp4, .mov, .mkv); with --preview, a folder."),
    frames_out: Optional[Path] = typer.Option(None, "--frames-out", help="Also (or instead) write every frame as PNG into this folder."),
    preview: Optional[int] = typer.Option(None, "--preview", help="Only write N sample frames, original | swapped side by side, into folder OUT."),
    direction: str = typer.Option("a2b", "--direction", help="a2b: replace identity A's face with B's; b2a: the reverse."),
    ref: Optional[List[Path]] = typer.Option(None, "--ref", help="Photo of the person to replace (one face), instead of the run's export. Repeatable."),
    models: Optional[str] = typer.Option(None, "--models", help=MODELS_HELP + " Default: the one the replaced identity's export used."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (the swap network; face detection uses onnxruntime's CUDA provider when it has one)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Same-person cosine similarity [default: per recogniser]."),
    mask: str = typer.Option("predicted", "--mask", help="Blend mask: predicted (the decoder's), landmark (template ellipse) or both."),
    erode: float = typer.Option(0.02, "--erode", help="Shrink the mask by this fraction of the face crop."),
    feather: float = typer.Option(0.04, "--feather", help="Blur the mask's edge over this fraction of the face crop."),
    color: str = typer.Option("lab", "--color", help="Colour matching: lab (mean/std in Lab), hist (histograms) or none."),
    smooth: bool = typer.Option(True, "--smooth/--no-smooth", help="Smooth keypoints over time (One-Euro) so the face does not jitter."),
    batch: int = typer.Option(16, "--batch", help="Frames per network call."),
    lossless: bool = typer.Option(False, "--lossless", help="Lossless H.264 (qp 0): untouched pixels stay bit-exact (large files, not for browsers)."),
    crf: int = typer.Option(18, "--crf", help="H.264 quality when not lossless (lower is better)."),
    preset: str = typer.Option("medium", "--preset", help="x264 speed preset."),
    visible_mark: bool = typer.Option(True, "--visible-mark/--no-visible-mark", help="A 'SYNTHETIC' label in the corner of every frame (metadata and sidecar are always written)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Convert only the first N frames (audio up to their end)."),
    det_size: int = typer.Option(640, "--det-size", help="Detector input, long side."),
    det_thresh: float = typer.Option(0.6, "--det-thresh", help="Minimum detector score."),
    force: bool = typer.Option(False, "--force", help="Replace an existing OUT / --frames-out folder."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Replace a face in VIDEO using a `curator train` run; the result is labelled as synthetic.

    Same size, frame rate, frame count and audio as VIDEO. Always writes
    container metadata and OUT.synthetic.json (input and output SHA-256, run,
    settings); a visible corner mark is on by default (docs/convert.md).

    Examples:

        curator convert interview.mp4 --model run --out swapped.mp4

        curator convert interview.mp4 --model run --out previews --preview 8 --mask both --color hist

        curator convert clip.mov --model run --out clip_swapped.mkv --direction b2a --ref john.jpg --lossless
    """
    from . import api

    try:
        with errors_as_lines(lambda e: f"{e.filename or out}: {e.strerror or e}; nothing was written"), \
                progress_bar(not quiet and not as_json, "convert") as (set_total, advance):
            summary = api.convert(video, model, out, frames_out=frames_out, preview=preview, direction=direction,
                                  ref=ref, models=models, device=device, threshold=threshold, mask=mask, erode=erode,
                                  feather=feather, color=color, smooth=smooth, batch=batch, lossless=lossless, crf=crf,
                                  preset=preset, visible_mark=visible_mark, max_frames=max_frames, det_size=det_size,
                                  det_thresh=det_thresh, force=force, on_total=set_total, on_progress=advance)
    except KeyboardInterrupt:
        fail("interrupted; nothing was written", 130)
    for note in summary.get("notes", []):
        problem(str(video), note)
    if preview is not None:
        emit(as_json, summary, f"{summary['previews']} previews (original | swapped) -> {summary['out']} "
             f"({summary['frames_with_face']} of {summary['frames_looked_at']} frames looked at had the face)")
        return
    where = ", ".join(str(summary[k]) for k in ("out", "frames_out") if k in summary)
    emit(as_json, summary, f"{summary['frames_swapped']} of {summary['frames']} frames swapped -> {where} "
         f"(labelled synthetic: {summary.get('sidecar', 'synthetic.json')}; {summary['seconds']:.1f} s)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
