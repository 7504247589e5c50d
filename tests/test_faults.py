"""Fault injection: kill -9 at random points, a full disk, damaged inputs, awkward paths.

Every scenario ends by comparing the workspace with one built without faults:
no lost rows, no duplicate rows, identical content. Before that, each kill and
full-disk test shows that its fault landed: the process died by SIGKILL in the
middle of its work (staged parts of an unfinished file on disk and no table
yet; or a file written under its temporary name and not renamed), or the write
failed with ENOSPC on a disk too small for the result. Only faults that landed
are counted. With CURATOR_RELIABILITY_OUT set, the counts are written there as
JSON (bench/results/reliability.json; docs/reliability.md quotes it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import IMAGES, ROOT, clip, curator, curator_json, has_table
from fault_tools import curator_argv, disk_bytes, find_call, kill_at, on_small_disk, trace_calls
from curator.workspace import open_workspace, read_embeddings, read_meta, read_table, staged_progress

FIGURES = {"fault_points": 0, "inputs_tried": 0, "rows_compared": 0, "rows_lost": 0, "rows_duplicated": 0,
           "faults": []}

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')
INPUTS = [clip("driving_d14.mp4"), clip("face_4.mp4"), IMAGES / "facenet_pytorch" / "test_images"]
MIB = 2**20


@pytest.fixture(scope="module", autouse=True)
def write_figures():
    import platform

    # The code as the run starts (the commit, and whether the working tree differed from it).
    git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    run = {"date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "git": git.stdout.strip(),
           "python": platform.python_version(), "cpu_count": os.cpu_count()}
    yield
    out = os.environ.get("CURATOR_RELIABILITY_OUT")
    if out:
        Path(out).write_text(json.dumps({"run": run, **FIGURES}, indent=2) + "\n")


def half_written(ws: Path) -> list[Path]:
    """Files under a temporary name (`curator.fs.atomic`) anywhere in the workspace but its crops."""
    return [p for p in ws.rglob(".*.tmp*") if p.is_file() and "crops" not in p.relative_to(ws).parts]


def landed(test: str, how: str) -> None:
    """Count a fault point; called only once the test has shown that the fault landed."""
    FIGURES["fault_points"] += 1
    FIGURES["faults"].append({"test": test, "landed": how})


def snapshot(ws: Path) -> tuple[pd.DataFrame, np.ndarray]:
    w = open_workspace(ws)
    table = read_table(w)
    emb = read_embeddings(w, len(table))
    order = np.argsort(table["face_id"].to_numpy())
    return table.iloc[order].reset_index(drop=True), np.asarray(emb)[order]


def assert_same(reference: Path, ws: Path, columns: list[str] | None = None) -> None:
    a, ea = snapshot(reference)
    b, eb = snapshot(ws)
    FIGURES["rows_compared"] += len(a)
    FIGURES["rows_lost"] += len(set(a["face_id"]) - set(b["face_id"]))
    FIGURES["rows_duplicated"] += int(b["face_id"].duplicated().sum())
    cols = columns or list(a.columns)
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=False, rtol=1e-6)
    np.testing.assert_allclose(ea, eb, atol=1e-6)
    assert curator_json("verify", "-w", ws)["ok"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("ref") / "ws"
    curator("extract", *INPUTS, "-w", ws, "-q", check=True)
    curator("curate", "-w", ws, "--budget", "20", check=True)
    return ws


EXTRACT_COLUMNS = None  # all columns extract writes

# Moments of `extract INPUTS` (two videos, then a folder of photos), as its staged parts show them: (which video,
# how far into its frames its staged parts must reach). Parts are staged every 3 analysed frames, so each
# moment is followed by more parts of the same video: the run is still inside it when it is killed.
EXTRACT_MOMENTS = {
    "first video, first part staged": (0, 0.0),
    "first video, a third staged": (0, 1 / 3),
    "first video, two thirds staged": (0, 2 / 3),
    "second video, first part staged": (1, 0.0),
    "second video, half staged": (1, 0.5),
}


def kill_when_staged(args: list, ws: Path, sha: str, frame: float) -> tuple[int, dict, bool]:
    """Run `curator ARGS`; once its staged parts reach `frame` of source `sha` (unfinished), stop the process
    group (SIGSTOP), read what is on disk while nothing can move on, then SIGKILL it. Returns the exit status,
    the staged progress at the kill and whether a table had been committed by then."""
    proc = subprocess.Popen(curator_argv(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (ws / "workspace.json").exists():
                try:
                    rec = staged_progress(open_workspace(ws)).get(sha)
                except Exception:  # the workspace is being created
                    rec = None
                if rec and not rec.get("complete") and rec.get("last_frame", -1) >= frame:
                    os.killpg(proc.pid, signal.SIGSTOP)
                    at_kill = staged_progress(open_workspace(ws)), has_table(ws)
                    os.killpg(proc.pid, signal.SIGKILL)
                    return proc.wait(), *at_kill
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    raise AssertionError(f"the run ended (exit {proc.returncode}) before source {sha[:12]} had frame {frame:.0f} staged")


@pytest.mark.parametrize("moment", list(EXTRACT_MOMENTS))
def test_kill_during_extract_then_resume(reference, tmp_path, moment):
    video, share = EXTRACT_MOMENTS[moment]
    sources = {Path(s["path"]): (sha, s) for sha, s in read_meta(open_workspace(reference))["sources"].items()}
    sha, source = sources[INPUTS[video].resolve()]
    frame = max(0, int(share * source["frames"]))
    ws = tmp_path / "ws"
    rc, progress, committed = kill_when_staged(["extract", *INPUTS, "-w", ws, "-q", "--checkpoint-every", "3"], ws,
                                               sha, frame)
    # The fault landed: killed by the signal, inside the video, its rows staged and not yet in the table.
    assert rc == -signal.SIGKILL
    assert not progress[sha].get("complete") and progress[sha]["last_frame"] >= frame, progress[sha]
    assert not committed and staged_progress(open_workspace(ws))[sha]["last_frame"] >= frame
    landed("test_kill_during_extract_then_resume", f"SIGKILL with {INPUTS[video].name} staged to frame "
           f"{progress[sha]['last_frame']} of {source['frames']}")
    curator("extract", *INPUTS, "-w", ws, "-q", check=True)
    ref_cols = [c for c in read_table(open_workspace(ws)).columns]
    assert_same(reference, ws, ref_cols)
    assert not half_written(ws)
    assert rc in (-signal.SIGKILL, 0)


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_full_disk_during_extract(reference, tmp_path, share):
    """A disk (tmpfs) that holds only `share` of the finished workspace fills up during extract: the write fails
    with ENOSPC. The disk is then made larger and extract runs again on the same workspace."""
    need = disk_bytes(reference)
    size = int(share * need)
    disk = tmp_path / "disk"
    argv = curator_argv(["extract", *INPUTS, "-w", disk / "ws", "-q"])
    fault, _, again, _ = on_small_disk(disk, size, [{"run": argv}, {"resize": 4 * need + 16 * MIB}, {"run": argv},
                                                    {"copy_out": str(tmp_path / "after")}], tmp_path)
    # The fault landed: the write failed for want of space, on a disk the finished workspace does not fit.
    assert fault["rc"] == 2, fault["stderr"]
    lines = [l for l in fault["stderr"].splitlines() if l.strip()]
    assert len(lines) == 1 and "cannot write to the workspace" in lines[0], fault["stderr"]
    assert "No space left on device" in lines[0], fault["stderr"]
    assert again["rc"] == 0, again["stderr"]
    assert again["used_bytes"] > fault["disk_bytes"] >= size  # what extract had to write did not fit
    landed("test_full_disk_during_extract", f"ENOSPC on a {fault['disk_bytes'] // 1024} KiB disk; the finished "
           f"workspace takes {again['used_bytes'] // 1024} KiB")
    ws = tmp_path / "after" / "ws"
    assert_same(reference, ws, list(read_table(open_workspace(ws)).columns))


# Moments of `curate` on a curated workspace, by the call it is killed on entry to (found by tracing an
# uninterrupted run): the first call that changes the workspace (its selection made, nothing written yet), the
# rename that commits its new columns, and the rename that commits workspace.json.
CURATE_MOMENTS = {
    "before its first change": (lambda c: True, "first"),
    "committing the new columns": (lambda c: c.syscall.startswith("rename") and c.paths[-1].endswith("columns/curate.parquet"),
                                   "first"),
    "committing workspace.json": (lambda c: c.syscall.startswith("rename") and c.paths[-1].endswith("workspace.json"), "last"),
}


@pytest.mark.pure
def test_the_next_writer_removes_only_files_under_curators_temporary_names(tmp_path):
    """Taking the lock removes what a killed `atomic_path` left, and nothing that merely looks like it."""
    from curator.workspace import locked

    w = open_workspace(tmp_path / "ws", create=True)
    leftovers = [w.staging_dir / ".part-000020.parquet.c9cap6b5.tmp.parquet",
                 w.faces_dir / ".000001.parquet.ab_12xyz.tmp.parquet",
                 w.embeddings_dir / ".000001.npy.k2j4h5g6.tmp.npy", w.root / ".workspace.json.q1w2e3r4.tmp.json"]
    kept = [w.staging_dir / "part-000020.parquet", w.staging_dir / ".part-1.parquet.abc.tmp.parquet",  # 3, not 8
            w.root / "notes.tmp.txt", w.root / ".notes.tmp", w.root / "my.parquet.c9cap6b5.tmp.parquet",  # no dot first
            w.crops_dir / "abc" / ".0000001_00.jpg.tmp"]  # crops are never swept
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    with locked(w, "test"):
        assert not any(p.exists() for p in leftovers)
    assert all(p.read_bytes() == b"x" for p in kept)


@pytest.mark.parametrize("moment", list(CURATE_MOMENTS))
def test_kill_during_curate(reference, tmp_path, moment):
    args = ["curate", "--budget", "7", "-w"]
    uninterrupted = tmp_path / "uninterrupted"
    shutil.copytree(reference, uninterrupted)
    call = find_call(trace_calls(args + [uninterrupted], tmp_path / "uninterrupted.strace"), *CURATE_MOMENTS[moment])
    ws = tmp_path / "ws"
    shutil.copytree(reference, ws)
    before = read_table(open_workspace(ws))
    rc, died = kill_at(args + [ws], call, tmp_path / "killed.strace")
    # The fault landed: SIGKILL on entry to that call; a rename's file is written and still under its temporary name.
    assert rc == -signal.SIGKILL
    if died.syscall.startswith("rename"):
        temporary = Path(died.paths[0])
        assert temporary.is_file() and temporary.name.startswith(".") and ".tmp" in temporary.name, died
    landed("test_kill_during_curate", f"SIGKILL on entry to {died.syscall}{tuple(Path(p).name for p in died.paths)}")
    after = read_table(open_workspace(ws))
    assert list(after["face_id"]) == list(before["face_id"])  # never a half-written table
    new = read_table(open_workspace(uninterrupted))
    assert after.equals(before) or after.equals(new)  # the old table or the new one
    assert curator_json("verify", "-w", ws)["ok"]
    curator("curate", "-w", ws, "--budget", "20", check=True)
    assert_same(reference, ws)
    assert not half_written(ws)  # the next writer removed what the killed one left under a temporary name


def test_kill_during_export_leaves_old_or_new(reference, tmp_path):
    """Killed on entry to each step that changes the export folder, found by tracing an uninterrupted run: the
    first rename inside the new export being built, each rename that names the folder, and the first removal
    after the last of them."""
    out = tmp_path / "faceset"
    curator("export", "-w", reference, "--out", out, check=True)
    first = set(pd.read_parquet(out / "manifest.parquet")["face_id"])
    args = ["export", "-w", reference, "--all", "--force", "--out"]
    probe = tmp_path / "probe" / "faceset"
    curator("export", "-w", reference, "--out", probe, check=True)
    calls = trace_calls(args + [probe], tmp_path / "probe.strace").calls
    building = [c for c in calls if c.syscall.startswith("rename") and "/.faceset.tmp-" in c.paths[-1]][:1]
    naming = [i for i, c in enumerate(calls) if str(probe) in c.paths]
    assert building and naming, calls
    moments = building + [calls[i] for i in naming] + calls[naming[-1] + 1: naming[-1] + 2]
    for call in {(c.syscall, c.ordinal): c for c in moments}.values():
        rc, died = kill_at(args + [out], call, tmp_path / "killed.strace")
        # The fault landed: SIGKILL on entry to that call, the new export (or the old one) beside the folder.
        assert rc == -signal.SIGKILL
        aside = [p for p in tmp_path.glob(".faceset.*") if p.is_dir()]
        assert aside, f"no export being built or put aside when the process died on {died}"
        landed("test_kill_during_export_leaves_old_or_new",
               f"SIGKILL on entry to {died.syscall}{tuple(Path(p).name for p in died.paths)}")
        m = pd.read_parquet(out / "manifest.parquet")
        assert set(m["face_id"]) in (first, set(read_table(open_workspace(reference))["face_id"]))
        assert all((out / f).is_file() for f in m["file"])
        for leftover in tmp_path.glob(".faceset.*"):  # what the killed run left; the next try starts clean
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_damaged_table_is_a_clear_error(reference, tmp_path, kind):
    ws = tmp_path / "ws"
    shutil.copytree(reference, ws)
    table = ws / "faces" / "000000.parquet"
    data = table.read_bytes()
    table.write_bytes(os.urandom(len(data)) if kind == "random" else data[: len(data) // 2])
    FIGURES["inputs_tried"] += 1
    for args in (["curate", "-w", ws, "--budget", "5"], ["verify", "-w", ws], ["export", "-w", ws, "--out", tmp_path / "o"]):
        proc = curator(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "faces/000000.parquet cannot be read" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_damaged_reference_photo(reference, tmp_path, kind):
    photo = tmp_path / "ref.jpg"
    data = (IMAGES / "face_recognition" / "examples" / "obama-480p.jpg").read_bytes()
    photo.write_bytes(os.urandom(5000) if kind == "random" else data[:300])
    ws = tmp_path / "ws"
    shutil.copytree(reference, ws)
    FIGURES["inputs_tried"] += 1
    proc = curator("identify", "-w", ws, "--ref", photo)
    assert proc.returncode == 2 and "ref.jpg" in proc.stderr and "Traceback" not in proc.stderr


def test_awkward_paths(tmp_path):
    """Spaces, unicode and `..` in footage and workspace paths."""
    folder = tmp_path / "my footage ünï 日本"
    folder.mkdir()
    shutil.copyfile(clip("face_5.mp4"), folder / "clip one é.mp4")
    via_dotdot = folder / ".." / folder.name / "clip one é.mp4"
    ws = tmp_path / "work space ü" / ".." / "work space ü"
    out = curator_json("extract", via_dotdot, "-w", ws, "-q")
    FIGURES["inputs_tried"] += 1
    assert out["new_files"] == 1 and out["faces"] > 0
    table = read_table(open_workspace(ws))
    assert table["source"].str.endswith("clip one é.mp4").all()
    assert ".." not in table["source"].iloc[0]
    assert curator_json("verify", "-w", ws)["ok"]


@pytest.mark.parametrize("share", [0.05, 0.5, 0.95, None])
def test_full_disk_during_export_keeps_the_old_export(reference, tmp_path, share):
    """`export --force` over an old export, on a disk (tmpfs) with room for the old export and `share` of the new
    one: the write fails with ENOSPC and the old export stays. share None: room for both (the control: the
    same steps with no fault give the complete new export)."""
    made = tmp_path / "made"
    curator("export", "-w", reference, "--out", made / "old", check=True)
    curator("export", "-w", reference, "--out", made / "new", "--all", check=True)
    old, new = disk_bytes(made / "old"), disk_bytes(made / "new")
    size = old + int(share * new) if share is not None else 2 * (old + new) + 16 * MIB
    disk = tmp_path / "disk"
    steps = [{"run": curator_argv(["export", "-w", reference, "--out", disk / "faceset"])},
             {"copy_out": str(tmp_path / "before")},
             {"run": curator_argv(["export", "-w", reference, "--out", disk / "faceset", "--all", "--force"])},
             {"copy_out": str(tmp_path / "after")}]
    first, _, proc, _ = on_small_disk(disk, size, steps, tmp_path)
    assert first["rc"] == 0, first["stderr"]
    before = {p.relative_to(tmp_path / "before"): p.read_bytes() for p in (tmp_path / "before").rglob("*") if p.is_file()}
    out = tmp_path / "after" / "faceset"  # the disk as the --force run left it
    assert "Traceback" not in proc["stderr"], proc["stderr"]
    if share is None:
        assert proc["rc"] == 0, proc["stderr"]
    else:
        # The fault landed: the new export did not fit beside the old one, and the write failed for want of space.
        assert proc["disk_bytes"] < old + new and proc["rc"] != 0
        assert "No space left on device" in proc["stderr"], proc["stderr"]
        landed("test_full_disk_during_export_keeps_the_old_export", f"ENOSPC on a {proc['disk_bytes'] // 1024} KiB "
               f"disk holding the old export ({old // 1024} KiB); the new one takes {new // 1024} KiB")
    if proc["rc"] == 0:  # every file fitted: then the new export is complete
        m = pd.read_parquet(out / "manifest.parquet")
        assert len(m) == len(read_table(open_workspace(reference))) and all((out / f).is_file() for f in m["file"])
    else:
        assert proc["rc"] == 2 and len(proc["stderr"].strip().splitlines()) == 1, proc["stderr"]
        after = {p.relative_to(tmp_path / "after"): p.read_bytes() for p in (tmp_path / "after").rglob("*") if p.is_file()}
        assert after == before  # the old export, byte for byte
    assert not list((tmp_path / "after").glob(".faceset.*"))  # no half-built folder left beside it
