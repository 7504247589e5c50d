"""`curator extract --engine ray` on a real two-node Ray cluster started on this machine.

The cluster (`ray start --head --num-cpus 1`, then a second node with
`--num-cpus 1`) and the runs on it live in tests/ray_cluster.py, started once
for this file inside fresh network and PID namespaces (`unshare`), so that
every connection stays on loopback and every process it started ends with
it. The tables are compared here with the local engine's, made the usual way.

Tolerances: keys (face ids, so source, frame and face number) exact, and the
same set of rows; every value within rtol 1e-6 (floats; the rest exact),
embeddings within 1e-6. Both engines run the same units with the same
single-threaded model calls, so in practice the values are equal.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import IMAGES, ROOT, clip, curator, curator_json, loop_video
from curator.workspace import open_workspace, read_embeddings, read_meta, read_table

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

SEGMENT = ["--segment-seconds", "8", "--checkpoint-every", "2"]  # 39 s of video: 5 units; a part every 2 frames


def _ray_installed() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.fail("Ray is not installed: pip install 'curator-faces[ray]' (.ci/install.sh installs it)")


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ray_footage")
    long = root / "long.mp4"
    loop_video(clip("driving_d5.mp4"), long, 8)  # 1184 frames, 39.4 s, a keyframe every 148 frames
    photos = root / "photos"
    photos.mkdir()
    for name in ("obama-480p.jpg", "two_people.jpg", "alex-lacamoire.png"):
        shutil.copy(IMAGES / "face_recognition" / "examples" / name, photos / name)
    return {"mixed": [str(clip("driving_d9.mp4")), str(clip("short_hamilton_clip.mp4")), str(photos)],
            "long": [str(long)]}


@pytest.fixture(scope="module")
def cluster(footage, tmp_path_factory) -> dict:
    """Every Ray run of this file, on one cluster: results.json and the workspaces, under one folder."""
    _ray_installed()
    out = tmp_path_factory.mktemp("ray_runs")
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's sockets need a short path
    runs = {"same": {"kind": "run", "inputs": footage["mixed"], "extra": []},
            "segments": {"kind": "run", "inputs": footage["long"], "extra": SEGMENT},
            "worker_killed": {"kind": "worker_killed", "inputs": footage["long"], "extra": SEGMENT},
            "driver_killed": {"kind": "driver_killed", "inputs": footage["long"], "extra": SEGMENT}}
    plan = out / "plan.json"
    plan.write_text(json.dumps({"out": str(out), "ray_temp": str(temp), "runs": runs}))
    namespaces = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]
    if os.geteuid() != 0:
        namespaces.insert(1, "--map-root-user")
    # Token authentication off: a private namespace, where nothing else can reach the cluster (with a token in
    # ~/.ray, `ray start --head` would turn it on and the second node, not given it, could not join).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    try:
        proc = subprocess.run([*namespaces, sys.executable, str(ROOT / "tests" / "ray_cluster.py"), str(plan)],
                              capture_output=True, text=True, env=env, timeout=2400)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    for name in runs:
        assert results[name]["rc"] == 0 and results[name]["summary"], (name, results[name])
    return {"out": out, "results": results}


@pytest.fixture(scope="module")
def local(footage, tmp_path_factory) -> dict:
    """The local engine's workspaces for the same footage and options."""
    root = tmp_path_factory.mktemp("local")
    made = {}
    for name, extra in (("mixed", []), ("long", SEGMENT)):
        made[name] = curator_json("extract", *footage[name], "-w", root / name, "-q", *extra)
        made[name]["ws"] = root / name
    return made


def snapshot(ws: Path) -> tuple[pd.DataFrame, np.ndarray]:
    w = open_workspace(ws)
    table = read_table(w)
    order = np.argsort(table["face_id"].to_numpy())
    return table.iloc[order].reset_index(drop=True), np.asarray(read_embeddings(w, len(table)))[order]


def assert_same_table(reference: Path, ws: Path) -> None:
    a, ea = snapshot(reference)
    b, eb = snapshot(ws)
    assert list(a["face_id"]) == list(b["face_id"]), set(a["face_id"]) ^ set(b["face_id"])
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
    np.testing.assert_allclose(ea, eb, atol=1e-6)
    assert curator_json("verify", "-w", ws)["ok"]
    assert not list((ws / "staging").glob("*.parquet"))
    assert all(s["status"] == "complete" for s in read_meta(open_workspace(ws))["sources"].values())


def test_ray_engine_gives_the_local_engines_table(cluster, local):
    """Two videos and three photos on the two-node cluster: the local engine's table, embeddings and crops."""
    summary = cluster["results"]["same"]["summary"]
    assert summary["engine"] == "ray" and summary["new_files"] == 5 and summary["failed"] == 0
    assert summary["units"] == 3  # the videos are shorter than 300 s: one unit each; the photos one more
    assert summary["rows_total"] == local["mixed"]["rows_total"] > 0
    ws = cluster["out"] / "same"
    assert_same_table(local["mixed"]["ws"], ws)
    table = read_table(open_workspace(ws))
    for rel in table["crop_path"]:
        assert (ws / rel).read_bytes() == (local["mixed"]["ws"] / rel).read_bytes()


def test_a_long_file_split_into_segments_gives_the_local_table(cluster, local):
    """The local engine reads the long file's five segments in order in one process; Ray gives each segment to
    a task of its own, on either node. Same segments, so the same table."""
    summary = cluster["results"]["segments"]["summary"]
    assert summary["units"] == local["long"]["units"] == 5
    meta = read_meta(open_workspace(cluster["out"] / "segments"))
    (source,) = meta["sources"].values()
    assert source["segments"] == 5 and source["segment_seconds"] == 8
    table = read_table(open_workspace(cluster["out"] / "segments"))
    assert table["frame"].max() > 4 * 148  # frames are numbered in the whole file, not per segment
    assert_same_table(local["long"]["ws"], cluster["out"] / "segments")


def test_a_worker_killed_mid_unit_is_retried_without_lost_or_duplicate_rows(cluster, local):
    """A worker process killed (SIGKILL) while both nodes were inside units that had staged rows: Ray runs the
    unit again, the new attempt resumes after the unit's last staged frame, and the table is the local one."""
    run = cluster["results"]["worker_killed"]
    assert run["killed_pid"] and len(run["partial_at_kill"]) >= 2, run
    assert run["summary"]["units_resumed"] >= 1  # the retried attempt found its unit's staged rows
    assert run["summary"]["failed"] == 0
    assert_same_table(local["long"]["ws"], cluster["out"] / "worker_killed")


def test_a_killed_driver_resumes_where_it_stopped(cluster, local):
    """The driver killed (SIGKILL) with one unit done and another part-way: Ray ends its tasks; extract again
    commits what was staged, skips the done units, resumes the part-done ones and gives the local table."""
    run = cluster["results"]["driver_killed"]
    assert run["killed_rc"] == -9 and run["state_at_kill"] and run["tasks_ended"], run
    done_before = len(run["state_at_kill"]["complete"])
    summary = run["summary"]
    assert summary["resumed_files"] == 1
    assert summary["units"] <= 5 - done_before  # the done units were not run again
    assert summary["units_resumed"] >= 1 or summary["units"] < 5
    assert_same_table(local["long"]["ws"], cluster["out"] / "driver_killed")


def test_without_ray_the_engine_is_one_line_naming_the_extra(tmp_path):
    """`--engine ray` where Ray is not importable: one line with the pip command, before any work."""
    blocker = tmp_path / "no_ray"
    (blocker / "ray").mkdir(parents=True)
    (blocker / "ray" / "__init__.py").write_text("raise ImportError('no ray here')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}"}
    proc = subprocess.run([sys.executable, "-m", "curator", "extract", str(clip("face_2.mp4")), "-w",
                           str(tmp_path / "ws"), "--engine", "ray", "-q"], capture_output=True, text=True, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "pip install 'curator-faces[ray]'" in lines[0]
    assert not (tmp_path / "ws").exists()  # nothing made: Ray is checked before the workspace is opened


def test_engine_options_are_checked(tmp_path):
    bad = curator("extract", clip("face_2.mp4"), "-w", tmp_path / "ws", "--engine", "spark", "-q")
    assert bad.returncode == 2 and "--engine must be one of local, ray" in bad.stderr
    stray = curator("extract", clip("face_2.mp4"), "-w", tmp_path / "ws", "--ray-address", "127.0.0.1:6379", "-q")
    assert stray.returncode == 2 and "--ray-address is for --engine ray" in stray.stderr
    zero = curator("extract", clip("face_2.mp4"), "-w", tmp_path / "ws", "--segment-seconds", "0", "-q")
    assert zero.returncode == 2 and "--segment-seconds must be positive" in zero.stderr
