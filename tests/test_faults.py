"""Fault injection: kill -9 at random points, a full disk, damaged inputs, awkward paths.

Every scenario ends by comparing the workspace with one built without faults:
no lost rows, no duplicate rows, identical content. With CURATOR_RELIABILITY_OUT
set, the counts are written there as JSON (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import IMAGES, clip, curator, curator_json
from curator.workspace import open_workspace, read_embeddings, read_table

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

FIGURES = {"fault_points": 0, "inputs_tried": 0, "rows_compared": 0, "rows_lost": 0, "rows_duplicated": 0}
INPUTS = [clip("driving_d14.mp4"), clip("face_4.mp4"), IMAGES / "facenet_pytorch" / "test_images"]


@pytest.fixture(scope="module", autouse=True)
def write_figures():
    yield
    out = os.environ.get("CURATOR_RELIABILITY_OUT")
    if out:
        Path(out).write_text(json.dumps(FIGURES, indent=2) + "\n")


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


def run_and_kill(args: list, delay: float) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "curator", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


EXTRACT_COLUMNS = None  # all columns extract writes


@pytest.mark.parametrize("delay", [1.5, 2.5, 3.5, 4.5, 6.0])
def test_kill_during_extract_then_resume(reference, tmp_path, delay):
    ws = tmp_path / "ws"
    rc = run_and_kill(["extract", *INPUTS, "-w", ws, "-q", "--checkpoint-every", "3"], delay)
    FIGURES["fault_points"] += 1
    curator("extract", *INPUTS, "-w", ws, "-q", check=True)
    ref_cols = [c for c in read_table(open_workspace(ws)).columns]
    assert_same(reference, ws, ref_cols)
    assert rc in (-signal.SIGKILL, 0)


@pytest.mark.parametrize("limit", [20_000, 80_000, 300_000])
def test_full_disk_during_extract(reference, tmp_path, limit):
    """RLIMIT_FSIZE makes writes past `limit` bytes fail as a full disk would (EFBIG)."""
    ws = tmp_path / "ws"

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "curator", "extract", *map(str, INPUTS), "-w", str(ws), "-q"],
                          capture_output=True, text=True, preexec_fn=small_disk)
    FIGURES["fault_points"] += 1
    if proc.returncode != 0:
        assert proc.returncode == 2
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and "cannot write to the workspace" in lines[0], proc.stderr
    curator("extract", *INPUTS, "-w", ws, "-q", check=True)
    assert_same(reference, ws, list(read_table(open_workspace(ws)).columns))


@pytest.mark.parametrize("delay", [0.8, 1.6, 2.4])
def test_kill_during_curate(reference, tmp_path, delay):
    ws = tmp_path / "ws"
    shutil.copytree(reference, ws)
    before = read_table(open_workspace(ws))
    run_and_kill(["curate", "-w", ws, "--budget", "7"], delay)
    FIGURES["fault_points"] += 1
    after = read_table(open_workspace(ws))
    assert list(after["face_id"]) == list(before["face_id"])  # never a half-written table
    assert curator_json("verify", "-w", ws)["ok"]
    curator("curate", "-w", ws, "--budget", "20", check=True)
    assert_same(reference, ws)


def test_kill_during_export_leaves_old_or_new(reference, tmp_path):
    out = tmp_path / "faceset"
    curator("export", "-w", reference, "--out", out, check=True)
    first = set(pd.read_parquet(out / "manifest.parquet")["face_id"])
    for delay in (0.6, 1.2, 1.8):
        run_and_kill(["export", "-w", reference, "--out", out, "--all", "--force"], delay)
        FIGURES["fault_points"] += 1
        m = pd.read_parquet(out / "manifest.parquet")
        assert set(m["face_id"]) in (first, set(read_table(open_workspace(reference))["face_id"]))
        assert all((out / f).is_file() for f in m["file"])


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


@pytest.mark.parametrize("limit", [5_000, 30_000, 200_000])
def test_full_disk_during_export_keeps_the_old_export(reference, tmp_path, limit):
    out = tmp_path / "faceset"
    curator("export", "-w", reference, "--out", out, check=True)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "curator", "export", "-w", str(reference), "--out", str(out),
                           "--all", "--force"], capture_output=True, text=True, preexec_fn=small_disk)
    FIGURES["fault_points"] += 1
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 0:  # every file fitted under the limit: then the new export is complete
        m = pd.read_parquet(out / "manifest.parquet")
        assert len(m) == len(read_table(open_workspace(reference))) and all((out / f).is_file() for f in m["file"])
    else:
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert after == before  # the old export, byte for byte
    assert not list(tmp_path.glob(".faceset.*"))  # no half-built folder left beside it
