"""Where curator may write, and what it may replace: the one place that decides.

Every command that writes an output (export and run's export folder,
convert's video, frames and previews, train's run folder, audit's and
compare's reports) asks here first, before any work is done:

1. An output never equals or contains what the command reads or must keep:
   the workspace, the input footage and photos, the model pack, a training
   run, an export used as input. Such an output is refused with one line
   naming the path and what it is.
2. An existing output is replaced only when it is empty, or when it is an
   earlier output of the same command (and `--force` says so):
   - a folder carries MARKER, written last when curator built it, listing
     every file curator put there; a folder without it, made by another
     command, or holding any file the list does not name (footage someone
     moved in, a workspace, a model) is refused, `--force` or not;
   - a file is ours when the command can recognise it (convert: its sidecar
     records the video's SHA-256; a report: curator's generator tag).
   A file where a folder should go, or a folder where a file should go, is
   always refused.
3. Outputs are built under a temporary name beside the target (`temp_folder`)
   and renamed into place (`replace_folder`); the old output is set aside and
   deleted only after the new one is in place, and only after checking once
   more that it is still ours.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from .fs.atomic import replace_dir, temp_dir, write_json
from .errors import CuratorError

MARKER = ".curator-output.json"
PARTIAL = ".curator-partial"  # inside a folder being built; a leftover is a killed run's, safe to delete


class OutputError(CuratorError):
    """An output that would destroy or mix with something curator must keep; the message names path and reason."""


def resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def refuse_overlap(out: Path, keep: Mapping[Path, str]) -> None:
    """Refuse an output that is, or contains, one of `keep` ({path: what it is, e.g. "the workspace"})."""
    for path, what in keep.items():
        if path is None:
            continue
        p = resolved(path)
        if out == p:
            raise OutputError(f"{out}: is {what}; choose another output")
        if out in p.parents:
            raise OutputError(f"{out}: contains {what} ({p}); choose another output")


def refuse_inside(out: Path, folders: Mapping[Path, str]) -> None:
    """Refuse an output inside one of `folders` ({folder: why not there})."""
    for folder, why in folders.items():
        if folder is not None and resolved(folder) in out.parents:
            raise OutputError(f"{out}: is inside {why}; choose another output")


def check_folder(out: str | os.PathLike, command: str, *, force: bool, keep: Mapping[Path, str] = {},
                 not_inside: Mapping[Path, str] = {}) -> Path:
    """The resolved output folder `out` of `curator COMMAND`, or OutputError saying why it cannot be used.

    Checked before any work: not one of `keep`, not containing one; not
    inside `not_inside`; if it exists, a folder that is empty, or (with
    `force`) an earlier output of the same command that holds only what
    curator wrote there.
    """
    out = resolved(out)
    refuse_overlap(out, keep)
    refuse_inside(out, not_inside)
    blocker = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputError(f"{out}: cannot write there, {blocker} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputError(f"{out}: exists and is not empty; use --force to replace an earlier `curator {command}` "
                              "output there")
        check_ours(out, command)
    return out


def check_ours(folder: Path, command: str) -> None:
    """Refuse unless `folder` is an earlier output of `curator COMMAND` holding only the files curator wrote there."""
    record = read_marker(folder)
    if record is None:
        raise OutputError(f"{folder}: was not written by `curator {command}` (no {MARKER}); --force replaces only "
                          "curator's own outputs: choose another folder, or empty this one yourself")
    if record.get("command") != command:
        raise OutputError(f"{folder}: is the output of `curator {record.get('command')}`, not of `curator {command}`; "
                          "choose another folder")
    extra = sorted(set(files_in(folder)) - set(record.get("files") or ()) - {MARKER})
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise OutputError(f"{folder}: holds {len(extra)} file(s) curator did not write there ({shown}); "
                          "refusing to replace it: move them out, or choose another folder")


def check_file(out: str | os.PathLike, command: str, *, force: bool, keep: Mapping[Path, str] = {},
               is_ours: Callable[[Path], bool] = lambda path: False, what: str = "output") -> Path:
    """The absolute output file `out`, or OutputError: not one of `keep`, not a folder, and if it exists,
    replaced only with `force` and when `is_ours(out)` recognises an earlier output of the command."""
    out = Path(out).expanduser().absolute()
    refuse_overlap(out.resolve(), keep)
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give a file name for the {what}")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputError(f"{out}: cannot write there, {blocker} is a file, not a folder")
    if out.exists():
        if not is_ours(out):
            raise OutputError(f"{out}: exists and was not written by `curator {command}`; --force replaces only "
                              "curator's own outputs: choose another name")
        if not force:
            raise OutputError(f"{out}: exists; use --force to replace it")
    return out


def check_writable(target: Path, what: str) -> None:
    """Fail now, not after minutes of work, when `target`'s folder cannot take a new file or folder."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=target.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{target}: cannot write the {what} there ({e.strerror or e})") from None


# --- markers ------------------------------------------------------------------------------

def files_in(folder: Path) -> list[str]:
    """Every file under `folder`, as POSIX paths relative to it (links count as files and are not followed)."""
    out = []
    for root, dirs, names in os.walk(folder):
        base = Path(root).relative_to(folder)
        out += [(base / n).as_posix() for n in names]
        out += [(base / d).as_posix() for d in dirs if (Path(root) / d).is_symlink()]
    return out


def read_marker(folder: Path) -> dict | None:
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_marker(folder: Path, command: str, **extra) -> None:
    """Record, last, that `curator COMMAND` wrote `folder` and every file now in it."""
    (folder / PARTIAL).unlink(missing_ok=True)
    files = sorted(f for f in files_in(folder) if f != MARKER)
    write_json(folder / MARKER, {"tool": "curator", "command": command, "files": files, **extra})


# --- building and replacing -------------------------------------------------------------------

def temp_folder(target: Path) -> Path:
    """A new hidden folder beside `target` to build it in, marked as a partial curator output.

    Leftovers of a killed run (`.NAME.tmp-*` with the partial mark, `.NAME.old-*`
    set aside after our check) are removed first.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        if (stale / PARTIAL).exists():
            shutil.rmtree(stale, ignore_errors=True)
    for stale in target.parent.glob(f".{target.name}.old-*"):
        if read_marker(stale) is not None:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = temp_dir(target)
    (tmp / PARTIAL).touch()
    return tmp


def replace_folder(tmp: Path, out: Path, command: str) -> None:
    """Put the finished folder `tmp` at `out`; an existing `out` is checked to be ours once more, then set aside."""
    if out.is_dir() and any(out.iterdir()):
        check_ours(out, command)
    elif out.is_dir():
        out.rmdir()
    replace_dir(tmp, out)


@contextmanager
def building(out: Path, command: str, **record) -> Iterator[Path]:
    """Build the output folder `out` of `curator COMMAND` in a temporary folder; on success mark it and rename it
    into place (`replace_folder`), on any failure remove it. `record` goes into the marker."""
    tmp = temp_folder(out)
    try:
        yield tmp
        write_marker(tmp, command, **record)
        replace_folder(tmp, out, command)
    except BaseException:
        discard(tmp)
        raise


def discard(tmp: Path) -> None:
    """Remove a folder `temp_folder` made, after a failure."""
    if (tmp / PARTIAL).exists() or read_marker(tmp) is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def paths_of(values: Iterable) -> list[Path]:
    """The paths among `values` (None and empty strings dropped)."""
    return [Path(v) for v in values if v]
