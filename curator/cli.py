"""The `curator` command: a thin typer layer over the stage modules.

Each command parses options, calls one stage function, and prints either a
human summary or (with --json) one JSON object on stdout. Progress and
problems go to stderr, so `--json` output can be piped.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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


def fail(message: str, code: int = 2) -> None:
    err.print(f"curator: error: {message}", markup=False)
    raise typer.Exit(code)


def problem(path: str, reason: str) -> None:
    err.print(f"curator: {path}: {reason}", markup=False)


def emit(as_json: bool, payload: dict, human: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    else:
        print(human)


@contextmanager
def progress_bar(enabled: bool, label: str) -> Iterator[tuple]:
    """Yields (set_total, advance) callbacks for a stage; a no-op pair when disabled."""
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
    with bar:
        task = bar.add_task(label, total=None, item="")
        yield (lambda total: bar.update(task, total=total or None)), (
            lambda n, desc="": bar.update(task, advance=n, item=desc)
        )


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
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (onnxruntime's CUDA provider)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Find, align and describe every face in FOOTAGE.

    Writes one row per face to WS/faces.parquet, L2-normalised identity
    embeddings to WS/embeddings.npy and aligned crops to WS/crops/.
    Re-running adds only new files and resumes an interrupted run.

    Examples:

        curator extract interview.mp4 speeches/ --workspace ws

        curator extract clips/ -w ws --fps 4 --size 512 --consent "Jane Doe, written consent 2026-03-01, training only"

        curator extract photos/ -w ws --models ~/models/buffalo_l --json
    """
    from .extract import ExtractSettings
    from .extract import extract as run_extract
    from .faces import ModelError
    from .workspace import WorkspaceError

    given = {"fps": fps, "every": every, "size": size, "det_size": det_size, "det_thresh": det_thresh,
             "checkpoint_frames": checkpoint_every}
    explicit = {k for k, v in given.items() if v is not None}
    settings = ExtractSettings(**{k: v for k, v in given.items() if v is not None})
    for name, value in given.items():
        if value is not None and value <= 0:
            fail(f"--{name.replace('_', '-')} must be positive")
    try:
        with progress_bar(not quiet and not as_json, "extract") as (set_total, advance):
            summary = run_extract(
                footage, workspace, models=models, settings=settings, explicit=explicit, consent=consent,
                device=device, on_problem=problem, on_progress=advance, on_total=set_total,
            )
    except (WorkspaceError, ModelError) as e:
        fail(str(e))
    s = summary
    processed = s.new_files + s.already_in_workspace
    emit(as_json, s.as_dict(),
         f"{s.new_files} new file(s), {s.already_in_workspace} already in workspace, {s.failed} problem(s); "
         f"{s.frames_decoded} frames decoded, {s.frames_analysed} analysed "
         f"({s.frames_skipped_static} near-identical skipped), {s.faces} faces; "
         f"{s.rows_total} faces in {s.workspace} ({s.seconds:.1f} s)")
    if processed == 0 and s.failed:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
