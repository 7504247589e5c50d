"""curator review against real FiftyOne, a real MongoDB and the real App server.

The database is the one `../shared/ci/mongod.sh start` exports as
FIFTYONE_DATABASE_URI (README's test command). Tags are set with FiftyOne's
own API (`tag_samples` / `untag_samples`, what the App's tagging calls), the
App is loaded by headless Chromium, and every dataset a test makes is deleted
at the end.

Footage: face_1.mp4 (one person, the target) and the Hamilton stage clip
(several other people) at 1 fps, 27 faces; face_2.mp4 is the "more footage"
extracted later (at 2 fps: 10 faces).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import select
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import psutil
import pytest

from helpers import CHROMIUM_FLAGS, ROOT, chromium_screenshot, clip, find_chromium, ctrl_c_enabled, curator, curator_json, one_line_error, table, table_files
from curator.measure import metrics
from curator.review import dataset as review_dataset, db as review_db, samples as review_samples, scope as review_scope
from curator.review import app as review_app, server as review_server
from curator.review import session as review, tags as review_tags
from curator.workspace import WorkspaceLocked, locked, open_workspace, read_embeddings

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

FOOTAGE = ("face_1.mp4", "short_hamilton_clip.mp4")
MORE = "face_2.mp4"


@pytest.fixture(scope="module")
def fo():
    import fiftyone

    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        pytest.fail("these tests need MongoDB: run them as README says, after "
                    "`eval \"$(../shared/ci/mongod.sh start)\"` (it exports FIFTYONE_DATABASE_URI)")
    return fiftyone


@pytest.fixture(scope="module")
def made(fo):
    """Names of the datasets tests create; all deleted at the end so the shared database does not fill up."""
    names: list[str] = []
    yield names
    for name in names:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("review") / "extracted"
    # 5 keypoints (no dlib): the landmarks the App draws over the crops stay the few dots its grid check expects
    curator("extract", *[clip(c) for c in FOOTAGE], "-w", ws, "--fps", "1", "--landmarks", "none", "-q", check=True)
    return ws


@pytest.fixture(scope="module")
def curated(extracted, tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("review") / "curated"
    shutil.copytree(extracted, ws)
    curator("curate", "-w", ws, "--budget", "5", check=True)  # runs identify (largest cluster = face_1's person)
    return ws


def fresh(src: Path, tmp_path: Path, name: str = "ws") -> Path:
    """A copy at a new path: its own review dataset (the name hashes the path)."""
    ws = tmp_path / name
    shutil.copytree(src, ws)
    return ws


def name_of(ws: Path, made: list) -> str:
    name = review_db.dataset_name(open_workspace(ws))
    made.append(name)
    return name


def by_face(dataset, field: str) -> dict:
    ids, values = dataset.values(["face_id", field])
    return dict(zip(ids, values))


def snapshot(folder: Path) -> dict:
    """Every file's bytes hash and mtime: 'untouched' means this does not change."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def py(v):
    return None if isinstance(v, float) and np.isnan(v) else v


# --- the dataset ------------------------------------------------------------------------------

def test_dataset_holds_exactly_the_workspace_faces_with_their_fields(curated, tmp_path, fo, made):
    ws = fresh(curated, tmp_path)
    name = name_of(ws, made)
    s = curator_json("review", "-w", ws, "--no-app")
    t = table(ws)
    assert (s["dataset"], s["samples_added"], s["samples_total"], s["url"]) == (name, len(t), len(t), None)
    ds = fo.load_dataset(name)
    assert ds.persistent and len(ds) == len(t)
    assert sorted(ds.values("face_id")) == sorted(t.face_id)

    # every descriptor is a field with the table's value (NaN as None), the file is the workspace crop
    rows = t.set_index("face_id")
    for column in ("yaw", "pitch", "roll", "sharpness", "face_px", "det_score", "lum", "smile", "quality",
                   "identity_score", "is_target", "selected", "dup_group", "pose_cluster", "reason", "source"):
        got = by_face(ds, column)
        for fid, v in rows[column].items():
            want = py(v.item() if hasattr(v, "item") else v)
            assert got[fid] == pytest.approx(want) if isinstance(want, float) else got[fid] == want, (column, fid)
    paths = by_face(ds, "filepath")
    assert all(paths[fid] == str(ws.resolve() / crop) for fid, crop in rows["crop_path"].items())
    assert not any(ds.values("tags"))  # nobody has tagged anything yet

    # saved views, each checked against the table directly
    views = {v: sorted(ds.load_saved_view(v).values("face_id")) for v in ds.list_saved_views()}
    assert set(views) == {"selected", "rejected", "kept", "near-duplicate groups", "rare poses", "low quality",
                          "other identities", "eyes closed", "mouth open", "covered"} == set(s["views"])
    assert views["selected"] == sorted(t.face_id[t.selected]) and views["selected"]
    assert views["other identities"] == sorted(t.face_id[~t.is_target]) and views["other identities"]
    assert views["rejected"] == views["kept"] == []
    size = t.groupby("dup_group").face_id.transform("size")
    assert views["near-duplicate groups"] == sorted(t.face_id[size > 1]) and views["near-duplicate groups"]
    order = ds.load_saved_view("near-duplicate groups").values("dup_group")
    assert order == sorted(order)  # group by group
    target = t[t.is_target]
    bins = metrics.pose_bins(target)
    assert views["rare poses"] == sorted(target.face_id[bins.map(bins.value_counts()) < 3])
    low = (t.quality <= t.quality.quantile(0.1)) | (t.face_px < 40)
    assert views["low quality"] == sorted(t.face_id[low]) and views["low quality"]

    # the embeddings panel's maps: PCA of our own embeddings (up to sign), and (yaw, pitch)
    assert set(ds.list_brain_runs()) == {"identity_pca", "pose"}
    emb = read_embeddings(open_workspace(ws))
    centred = emb - emb.mean(0)
    want = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    got = np.array([by_face(ds, "identity_pca")[f] for f in t.face_id])
    for k in range(2):
        assert abs(np.corrcoef(got[:, k], want[:, k])[0, 1]) > 0.999
    pose = by_face(ds, "pose")
    assert all(pose[f] == pytest.approx([y, p]) for f, y, p in zip(t.face_id, t.yaw, t.pitch))

    # filtering stays indexed; face_id is the unique key
    indexes = ds.get_index_information()
    assert indexes["face_id"].get("unique") is True
    assert {"yaw", "pitch", "quality", "sharpness", "selected", "dup_group", "is_target", "pose_cluster", "tags"} <= set(indexes)
    info = ds.info["curator"]
    assert (info["review_schema"], info["workspace"]) == (review_db.REVIEW_SCHEMA, str(ws.resolve()))

    # a second run adds nothing and keeps the samples themselves
    ids = by_face(ds, "id")
    again = review.review(ws, app=False)
    assert (again["samples_added"], again["samples_total"]) == (0, len(t))
    assert by_face(fo.load_dataset(name), "id") == ids


def test_views_that_need_curate_or_identify_are_skipped_with_a_note(extracted, tmp_path, fo, made):
    ws = fresh(extracted, tmp_path)
    name = name_of(ws, made)
    s = review.review(ws, app=False)
    assert s["views_skipped"] == {"selected": "`curator curate` has not run",
                                  "near-duplicate groups": "`curator curate` has not run",
                                  "other identities": "`curator identify` has not run"}
    ds = fo.load_dataset(name)
    # the state views (eyes closed, mouth open, covered) need only extract's columns
    assert set(ds.list_saved_views()) == {"rejected", "kept", "rare poses", "low quality", "eyes closed", "mouth open",
                                          "covered"}
    t = table(ws)
    # before curate, "low quality" is by sharpness; rare poses count every face
    low = (t.sharpness <= t.sharpness.quantile(0.1)) | (t.face_px < 40)
    assert sorted(ds.load_saved_view("low quality").values("face_id")) == sorted(t.face_id[low])
    bins = metrics.pose_bins(t)
    assert sorted(ds.load_saved_view("rare poses").values("face_id")) == sorted(t.face_id[bins.map(bins.value_counts()) < 3])

    # curate afterwards: the next review refreshes the existing samples' fields and adds the views
    curator("curate", "-w", ws, "--budget", "5", check=True)
    s = review.review(ws, app=False)
    assert s["samples_added"] == 0 and s["views_skipped"] == {}
    t = table(ws)
    assert by_face(ds, "selected") == dict(zip(t.face_id, t.selected))
    assert sorted(ds.load_saved_view("selected").values("face_id")) == sorted(t.face_id[t.selected])


# --- tags: App -> table -> export, and across re-extraction ------------------------------------------

def test_tags_reach_the_table_survive_new_footage_and_exclude_faces_from_export(curated, tmp_path, fo, made):
    ws = fresh(curated, tmp_path)
    name = name_of(ws, made)
    review.review(ws, app=False)
    ds = fo.load_dataset(name)
    t = table(ws)
    selected = sorted(t.face_id[t.selected])
    rejected, kept = selected[:2], [t.face_id[~t.selected & t.is_target].iloc[0]]
    other = t.face_id[~t.is_target].iloc[:2].tolist()
    # what the App does when a person tags the samples in the grid
    ds.select(by_face_ids(ds, rejected)).tag_samples("reject")
    ds.select(by_face_ids(ds, kept)).tag_samples("keep")
    ds.select(by_face_ids(ds, other)).tag_samples(["profile", "blurry"])

    pulled = curator_json("review", "-w", ws, "--pull")
    assert pulled["tags"] == {"rejected": 2, "kept": 1, "other_tags": 2, "changed": 5, "written": True}
    t = table(ws)
    assert sorted(t.face_id[t.rejected]) == rejected and t.face_id[t.kept].tolist() == kept
    assert dict(zip(t.face_id, t.review_tags)) == {f: ("blurry,profile" if f in other else "") for f in t.face_id}
    assert t.rejected.dtype == bool and t.kept.dtype == bool

    # export (selection unchanged since curate) leaves the rejected faces out, files and manifest
    out = tmp_path / "faceset"
    exp = curator_json("export", "-w", ws, "--out", out)
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert exp["faces"] == len(selected) - 2 and sorted(manifest.face_id) == selected[2:]
    assert not [p for p in (out / "faces").iterdir() if p.stem in rejected]
    everything = curator_json("export", "-w", ws, "--out", tmp_path / "all", "--all")
    assert everything["faces"] == len(t) - 2

    # more footage: only the new faces are added; every old sample keeps its id and tags
    ids, tags = by_face(ds, "id"), by_face(ds, "tags")
    curator("extract", clip(MORE), "-w", ws, "--fps", "2", "-q", check=True)
    t2 = table(ws)
    new = set(t2.face_id) - set(t.face_id)
    assert new
    s = curator_json("review", "-w", ws, "--no-app")
    assert (s["samples_added"], s["samples_total"]) == (len(new), len(t2))
    ds = fo.load_dataset(name)
    assert {f: v for f, v in by_face(ds, "id").items() if f not in new} == ids
    now = by_face(ds, "tags")
    assert {f: sorted(now[f]) for f in tags} == {f: sorted(v) for f, v in tags.items()}
    assert not any(now[f] for f in new)
    t2 = table(ws)
    assert sorted(t2.face_id[t2.rejected]) == rejected  # the pull around the sync lost nothing

    # un-tagging in the App un-rejects: the dataset is the truth for its faces
    ds.select(by_face_ids(ds, rejected[:1])).untag_samples("reject")
    s = review.review(ws, pull_only=True)
    assert s["tags"]["rejected"] == 1 and s["tags"]["changed"] == 1
    t2 = table(ws)
    assert t2.face_id[t2.rejected].tolist() == rejected[1:]

    # a deleted dataset is rebuilt with the table's tags, so the next pull changes nothing
    fo.delete_dataset(name)
    with pytest.raises(review_db.ReviewError, match="was deleted; no tags to pull"):  # e.g. deleted while the App ran
        review_tags.pull_tags(open_workspace(ws), ds)
    s = review.review(ws, app=False)
    assert s["created"] and s["samples_added"] == len(t2) and s["tags"]["changed"] == 0
    rebuilt = by_face(fo.load_dataset(name), "tags")
    assert sorted(f for f, v in rebuilt.items() if "reject" in v) == rejected[1:]
    assert [f for f, v in rebuilt.items() if "keep" in v] == kept
    assert {f for f, v in rebuilt.items() if sorted(v) == ["blurry", "profile"]} == set(other)


def by_face_ids(ds, face_ids) -> list[str]:
    ids = by_face(ds, "id")
    return [ids[f] for f in face_ids]


def test_pull_waits_for_another_commands_lock_and_holds_it_only_to_write(curated, tmp_path, fo, made):
    ws = fresh(curated, tmp_path)
    name = name_of(ws, made)
    review.review(ws, app=False)
    w = open_workspace(ws)
    ds = fo.load_dataset(name)
    face = table(ws).face_id.iloc[0]
    ds.select(by_face_ids(ds, [face])).tag_samples("reject")
    before = table_files(ws)
    with locked(w, "curator curate"):  # another command is writing: refused after the wait, table untouched
        t0 = time.monotonic()
        with pytest.raises(WorkspaceLocked, match="curator curate"):
            review_tags.pull_tags(w, ds, wait_s=1.5)
        assert time.monotonic() - t0 >= 1.5
    assert table_files(ws) == before
    # released while the pull waits: the pull goes through
    holder = threading.Thread(target=hold_lock, args=(w, 1.0))
    holder.start()
    time.sleep(0.2)
    assert review_tags.pull_tags(w, ds, wait_s=10)["rejected"] == 1
    holder.join()
    assert table(ws).set_index("face_id").loc[face, "rejected"]
    with locked(w, "next command"):  # the pull let go of it
        pass


def hold_lock(ws, seconds: float) -> None:
    with locked(ws, "curator extract"):
        time.sleep(seconds)


# --- the App -------------------------------------------------------------------------------------

def crops_on_screen(shot: Path, crops: list[Path]) -> int:
    """How many of these crops appear in the screenshot as grid tiles (tiles of 100-220 px)."""
    small = cv2.resize(cv2.imread(str(shot)), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    images = [cv2.imread(str(c)) for c in crops]

    def score(img, side):
        tile = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
        return cv2.matchTemplate(small, tile, cv2.TM_CCOEFF_NORMED).max()

    # every tile has one size: find it on the first crops, then look for each crop at that size
    side = max(((score(img, s), s) for img in images[:2] for s in range(50, 111, 2)))[1]
    return sum(max(score(img, s) for s in (side - 2, side, side + 2)) > 0.9 for img in images)


def test_app_on_loopback_renders_the_grid_and_tags_are_pulled_when_it_stops(curated, tmp_path, fo, made):
    ws = fresh(curated, tmp_path)
    name = name_of(ws, made)
    port = free_port()
    # A person who never told FiftyOne about analytics: no FIFTYONE_DO_NOT_TRACK (mongod.sh sets it), no config file
    env = {k: v for k, v in os.environ.items() if k != "FIFTYONE_DO_NOT_TRACK"}
    env["FIFTYONE_CONFIG_PATH"] = str(tmp_path / "no-fiftyone-config.json")
    proc = subprocess.Popen([sys.executable, "-m", "curator", "review", "-w", str(ws), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                            preexec_fn=ctrl_c_enabled)
    children = []
    try:
        # printed once the server listens
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("App: "), (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split()[1]
        assert url == f"http://127.0.0.1:{port}/datasets/{name}?view=selected"  # the App opens on the selection
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children  # the App's server runs in child processes

        # loopback only
        listening = [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/fiftyone", timeout=10) as r:
            assert json.load(r)["version"] == fo.__version__
        # what the App's own query sees: its embeddings panel lists the runs whose config class is one
        # of fiftyone.brain.visualization's, with their points fields; the view menu lists the saved views
        query = '{ dataset(name: "%s") { brainMethods { key config { cls pointsField } } savedViews { name } } }' % name
        request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            seen = json.load(r)["data"]["dataset"]
        maps = {m["key"]: m["config"]["pointsField"] for m in seen["brainMethods"]
                if m["config"]["cls"].startswith("fiftyone.brain.visualization.")}
        assert maps == {"identity_pca": "identity_pca", "pose": "pose"}
        assert {v["name"] for v in seen["savedViews"]} == set(review_dataset.VIEWS)

        # a person's browser: the grid shows the workspace's crops. Headless Chromium's virtual time sometimes
        # runs out while a freshly started server prepares its first answer (the shot shows the App's
        # "Pixelating..." splash); a person's browser just waits, so a few loads are allowed
        ds = fo.load_dataset(name)
        crop = table(ws).set_index("face_id").crop_path
        chosen = ds.load_saved_view("selected").values("face_id")
        left_out = [f for f in ds.values("face_id") if f not in set(chosen)]
        assert 0 < len(chosen) <= 12 and len(left_out) >= 6
        first = [ws / crop[f] for f in chosen]
        for attempt in range(4):
            shot = tmp_path / f"app{attempt}.png"
            run = chromium_screenshot(url, shot, tmp_path / f"profile{attempt}", "1280,900",
                                      "--virtual-time-budget=20000", purpose="the App")
            assert shot.is_file(), run.stderr[-2000:]
            img = cv2.imread(str(shot))
            if len(np.unique(img.reshape(-1, 3), axis=0)) > 2000:  # not the splash: photos
                break
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 2000, f"the App never rendered beyond its splash ({shot})"
        assert crops_on_screen(shot, first) == len(first), "the App's grid does not show the selection's crops"
        assert crops_on_screen(shot, [ws / crop[f] for f in left_out[:6]]) == 0, "the grid is not the selection's view"

        # no greeting: FiftyOne's analytics consent bar and its "Explore Enterprise" pop-up, both in this App's
        # code (so their absence below is curator's doing), are not on the page once it has rendered its grid
        bundle = "".join(p.read_text(errors="replace") for p in
                         (Path(fo.__file__).parent / "server" / "static" / "assets").glob("*.js"))
        greetings = ("Help us improve FiftyOne", "With FiftyOne Enterprise you can connect")
        assert all(g in bundle for g in greetings) and review_server.SEEN_KEY in bundle
        dom = subprocess.run([find_chromium("the App"), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile-dom'}",
                              "--window-size=1280,900", "--virtual-time-budget=20000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120).stdout
        assert "Explore Enterprise" in dom  # the App's header rendered (its button, not the pop-up)
        assert not [g for g in greetings if g in dom], [g for g in greetings if g in dom]

        # tag while the App runs (as the App does): the table has it within seconds, the review still running
        t = table(ws)
        rejected = t.face_id[t.selected].iloc[:2].tolist()
        ds.select(by_face_ids(ds, rejected[:1])).tag_samples("reject")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not table(ws).get("rejected", pd.Series(dtype=bool)).fillna(False).any():
            time.sleep(0.5)
        t = table(ws)
        assert t.face_id[t.rejected].tolist() == rejected[:1] and proc.poll() is None
        # ... and a tag made just before Ctrl-C is pulled as the review ends
        ds.select(by_face_ids(ds, rejected[1:])).tag_samples("reject")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "2 rejected" in out
    assert not [l for l in err.splitlines() if not l.startswith("curator:")], err  # no FiftyOne chatter
    t = table(ws)
    assert sorted(t.face_id[t.rejected]) == sorted(rejected)
    # nothing left running: the server processes are gone, the port is free again
    gone, alive = psutil.wait_procs(children, timeout=15)
    for p in alive:
        p.kill()
    assert not alive, [p.cmdline() for p in alive]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


# --- bad input -------------------------------------------------------------------------------------

def test_no_mongodb_is_one_clear_line_and_the_workspace_is_untouched(curated, tmp_path):
    ws = fresh(curated, tmp_path)
    before = snapshot(ws)
    closed = free_port()  # nothing listens there
    env = {**os.environ, "FIFTYONE_DATABASE_URI": f"mongodb://127.0.0.1:{closed}", "COLUMNS": "200"}
    t0 = time.monotonic()
    # --pull, --no-app and the App all connect first, through the same check
    proc = subprocess.run([sys.executable, "-m", "curator", "review", "-w", str(ws)],
                          capture_output=True, text=True, env=env, timeout=120)
    one_line_error(proc, f"127.0.0.1:{closed}", "FIFTYONE_DATABASE_URI", "not changed")
    assert time.monotonic() - t0 < 25  # FiftyOne alone would wait 30 s before failing
    assert snapshot(ws) == before


def test_port_in_use_is_refused_before_anything_changes(curated, tmp_path, made):
    ws = fresh(curated, tmp_path)
    name_of(ws, made)
    before = snapshot(ws)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = curator("review", "-w", ws, "--port", port)
    one_line_error(proc, f"port {port}", "in use", "--port")
    assert snapshot(ws) == before


def test_deleted_crops_are_named_skipped_and_keep_their_tags(curated, tmp_path, fo, made):
    ws = fresh(curated, tmp_path)
    name = name_of(ws, made)
    t = table(ws)
    # one face already in the review, tagged, loses its crop ...
    review.review(ws, app=False)
    ds = fo.load_dataset(name)
    tagged = t.face_id.iloc[0]
    ds.select(by_face_ids(ds, [tagged])).tag_samples("reject")
    (ws / t.crop_path.iloc[0]).unlink()
    # ... and after new footage, 7 new faces have lost theirs before review saw them
    curator("extract", clip(MORE), "-w", ws, "--fps", "2", "-q", check=True)
    t2 = table(ws)
    new = t2[~t2.face_id.isin(t.face_id)]
    gone = new.face_id.iloc[:7].tolist()
    for crop in new.crop_path.iloc[:7]:
        (ws / crop).unlink()
    proc = curator("review", "-w", ws, "--no-app", "--json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["samples_added"] == len(new) - 7 and s["missing_crops"] == 8
    lines = proc.stderr.strip().splitlines()
    named = [l for l in lines if l.startswith("curator: review: face ") and "not added" in l]
    assert len(named) == 5 and all(any(f in l for f in gone) for l in named)  # one line each, then a summary
    assert any("2 more faces whose crop files are missing" in l for l in lines)
    assert any(tagged in l and "stays in the review" in l for l in lines)
    ds = fo.load_dataset(name)
    assert not set(gone) & set(ds.values("face_id"))
    assert by_face(ds, "tags")[tagged] == ["reject"]
    assert table(ws).set_index("face_id").loc[tagged, "rejected"]


def test_older_dataset_is_upgraded_keeping_tags_and_newer_is_refused(curated, tmp_path, fo, made):
    ws = fresh(curated, tmp_path)
    name = name_of(ws, made)
    review.review(ws, app=False)
    ds = fo.load_dataset(name)
    t = table(ws)
    face = t.face_id.iloc[3]
    ds.select(by_face_ids(ds, [face])).tag_samples(["reject", "check later"])
    # as a curator before review schemas would have left it: no info, fewer fields, no views, no maps
    ds.info = {}
    ds.save()
    ds.delete_sample_field("pose_bin_faces")
    ds.delete_saved_view("rare poses")
    ds.delete_brain_run("pose")
    notes = []
    s = review.review(ws, app=False, on_note=notes.append)
    assert s["upgraded_from"] == 0 and any("older curator review" in n and "every tag kept" in n for n in notes)
    ds = fo.load_dataset(name)
    assert ds.info["curator"]["review_schema"] == review_db.REVIEW_SCHEMA
    assert "pose_bin_faces" in ds.get_field_schema() and "rare poses" in ds.list_saved_views()
    assert ds.has_brain_run("pose")
    assert sorted(by_face(ds, "tags")[face]) == ["check later", "reject"]
    row = table(ws).set_index("face_id").loc[face]
    assert row.rejected and row.review_tags == "check later"

    # written by a newer curator: refused, nothing changed on either side
    info = ds.info
    info["curator"]["review_schema"] = review_db.REVIEW_SCHEMA + 1
    ds.info = info
    ds.save()
    ds.select(by_face_ids(ds, [face])).untag_samples("reject")
    before = snapshot(ws)
    one_line_error(curator("review", "-w", ws, "--pull"), name, "newer curator", "upgrade curator")
    with pytest.raises(review_db.ReviewError, match="newer curator"):
        review.review(ws, app=False)
    assert snapshot(ws) == before
    assert by_face(fo.load_dataset(name), "tags")[face] == ["check later"]


def test_pull_without_a_dataset_and_bad_options_are_one_line(curated, tmp_path, made):
    ws = fresh(curated, tmp_path)
    name = name_of(ws, made)
    one_line_error(curator("review", "-w", ws, "--pull"), "no review dataset yet", name)
    one_line_error(curator("review", "-w", ws, "--timeout", "0"), "--timeout")
    one_line_error(curator("review", "-w", tmp_path / "nowhere", "--no-app"), "no workspace")
    assert "Examples" in curator("review", "--help", check=True).stdout


# --- which faces: --faces scopes -------------------------------------------------------------------

def expected_scopes(t: pd.DataFrame, same_person: float = 0.45) -> dict:
    """Each scope's faces, worked out from the table with pandas as docs/review.md defines them."""
    import math

    from curator.measure.metrics import FEW_MIN, FEW_SHARE

    sel = t.selected.fillna(False).astype(bool)
    target = t.is_target.fillna(False).astype(bool)
    rejected = t.get("rejected", pd.Series(False, index=t.index)).fillna(False).astype(bool)
    # near-duplicates: the two best other members of each selected face's group
    members = t[t.dup_group.isin(set(t.dup_group[sel].dropna())) & ~sel]
    near = members.sort_values("quality", ascending=False).groupby("dup_group").head(2).face_id
    # alternatives: the ten best left-out candidates of each pose bin holding fewer than audit's "thin" selected faces
    bins = metrics.pose_bins(t)
    few = max(FEW_MIN, math.ceil(FEW_SHARE * sel.sum()))
    thin = bins.map(bins[sel].value_counts()).fillna(0) < few
    candidate = target & (t.dup_group == t.face_id) & ~sel & ~rejected & (t.face_px >= 40) & (bins >= 0)
    alt = t[candidate & thin].assign(bin=bins).sort_values("quality", ascending=False).groupby("bin").head(10).face_id
    # doubtful: not the target by their track, yet scoring like it
    doubt = t[~target & (t.identity_score >= same_person)].face_id
    parts = {"selected": set(t.face_id[sel]), "near_duplicates": set(near), "alternatives": set(alt),
             "doubtful": set(doubt)}
    return {**parts, "context": set().union(*parts.values()), "target": set(t.face_id[target]), "all": set(t.face_id)}


def keep_leader_and_curate(ws: Path, fo, name: str, min_size: int) -> tuple[str, pd.DataFrame]:
    """Tag `keep` on the best leader of the target's near-duplicate groups of `min_size`+ and curate again."""
    t = table(ws)
    size = t.groupby("dup_group").face_id.transform("size")
    big = t[t.is_target & (t.dup_group == t.face_id) & (size >= min_size)].sort_values("quality").face_id
    assert len(big), f"the fixture has no near-duplicate group of {min_size}+ target faces any more: pick another"
    leader = big.iloc[-1]
    review.review(ws, app=False, faces="all")
    ds = fo.load_dataset(name)
    ds.select(by_face_ids(ds, [leader])).tag_samples("keep")
    review.review(ws, pull_only=True)
    curator("curate", "-w", ws, "--budget", "5", check=True)
    t = table(ws)
    assert t.set_index("face_id").loc[leader, "selected"]
    return leader, t


def test_each_scope_holds_its_faces_on_a_curated_workspace(curated, tmp_path, fo, made):
    ws = fresh(curated, tmp_path)
    name = name_of(ws, made)
    # A strict identity threshold makes the target one tight cluster and leaves faces outside it that still score
    # like it (doubtful); keeping the leader of one of the target's near-duplicate groups puts it next to the
    # selection (the cut at two shown members: the next test).
    curator("identify", "-w", ws, "--threshold", "0.75", check=True)
    curator("curate", "-w", ws, "--budget", "5", check=True)
    leader, t = keep_leader_and_curate(ws, fo, name, 2)
    want = expected_scopes(t)
    assert all(want[p] for p in ("selected", "near_duplicates", "alternatives", "doubtful")), \
        {p: len(want[p]) for p in ("selected", "near_duplicates", "alternatives", "doubtful")}
    group = t[(t.dup_group == leader) & (t.face_id != leader)].face_id
    assert set(group) <= want["near_duplicates"]

    for scope in ("selected", "context", "target", "all", "context"):  # shrinking and growing, both ways
        s = curator_json("review", "-w", ws, "--no-app", "--faces", scope)
        got = set(fo.load_dataset(name).values("face_id"))
        assert got == want[scope] | {leader}, scope  # the kept face is in every scope
        assert (s["faces"], s["samples_total"], s["scope"]["asked"]) == (scope, len(got), scope)
    parts = s["scope"]["parts"]
    assert parts["selected"] == len(want["selected"]) and sum(parts.get(p, 0) for p in (
        "pinned", "selected", "near_duplicates", "alternatives", "doubtful")) == len(want["context"])
    # auto on a workspace this small: every face (the scopes are for large tables: below)
    s = curator_json("review", "-w", ws, "--no-app")
    assert (s["faces"], s["scope"]["asked"], s["samples_total"]) == ("all", "auto", len(t))


def test_context_shows_the_two_best_other_members_of_a_selected_faces_group(tmp_path, fo, made):
    # At 1 frame/s a blink or an open mouth (eye and mouth states) leaves face_1's talking head no near-duplicate
    # group above three; at 8 frames/s the tight cluster of a 0.6 threshold has groups of 8 and more, so the
    # members past the second are left out.
    ws = tmp_path / "dense"
    curator("extract", *[clip(c) for c in FOOTAGE], "-w", ws, "--fps", "8", "-q", check=True)
    name = name_of(ws, made)
    curator("identify", "-w", ws, "--threshold", "0.6", check=True)
    curator("curate", "-w", ws, "--budget", "5", check=True)
    leader, t = keep_leader_and_curate(ws, fo, name, 4)
    group = t[(t.dup_group == leader) & (t.face_id != leader)].sort_values("quality", ascending=False).face_id
    s = curator_json("review", "-w", ws, "--no-app", "--faces", "context")
    got = set(fo.load_dataset(name).values("face_id"))
    assert set(group.iloc[:2]) <= got and not set(group.iloc[2:]) & got
    assert got == expected_scopes(t)["context"] | {leader} and s["samples_total"] == len(got)


def test_auto_above_the_limit_reviews_the_selection_in_context_else_a_spread_with_a_note(
        curated, extracted, tmp_path, fo, made, monkeypatch):
    # The same choice as at 10 million faces, on real workspaces, with the limit lowered to fit them.
    monkeypatch.setattr(review_scope, "LIMIT", 20)
    ws = fresh(curated, tmp_path, "curated")
    name_of(ws, made)
    notes: list[str] = []
    s = review.review(ws, app=False, on_note=notes.append)
    t = table(ws)
    want = expected_scopes(t)
    assert (s["faces"], s["samples_total"]) == ("context", 20) and len(want["context"]) > 20
    assert want["selected"] <= set(fo.load_dataset(s["dataset"]).values("face_id"))  # the selection is never cut
    assert any("left out to keep the review at 20 faces" in n and "--faces context" in n for n in notes), notes

    # neither curated nor identified: 20 faces spread evenly over the table, and how to see them all
    ws = fresh(extracted, tmp_path, "extracted")
    name = name_of(ws, made)
    notes = []
    s = review.review(ws, app=False, on_note=notes.append)
    t = table(ws)
    rows = np.unique(np.linspace(0, len(t) - 1, 20).round().astype(int))
    assert s["faces"] == "all" and sorted(fo.load_dataset(name).values("face_id")) == sorted(t.face_id.iloc[rows])
    assert any("shows 20 of the faces" in n and "--faces all" in n for n in notes), notes
    # asked for by name, a scope is given whole
    s = review.review(ws, app=False, faces="all")
    assert s["samples_total"] == len(t) and s["samples_removed"] == 0

    # identified, not curated: the target's faces, spread
    curator("identify", "-w", ws, check=True)
    s = review.review(ws, app=False)
    target = table(ws).is_target
    assert s["faces"] == "target" and target.sum() > 20 and s["samples_total"] == 20
    assert set(fo.load_dataset(name).values("face_id")) <= set(table(ws).face_id[target])


def test_tags_of_faces_that_leave_and_reenter_the_scope_are_kept(curated, tmp_path, fo, made):
    ws = fresh(curated, tmp_path)
    name = name_of(ws, made)
    review.review(ws, app=False, faces="all")
    ds = fo.load_dataset(name)
    t = table(ws)
    selected, others = sorted(t.face_id[t.selected]), t.face_id[~t.selected].tolist()
    rejected, kept, free = others[0], others[1], others[2:4]
    # tags made in the App and not pulled yet: the scope change must pull them before the samples go
    ds.select(by_face_ids(ds, [rejected])).tag_samples("reject")
    ds.select(by_face_ids(ds, [kept])).tag_samples("keep")
    ds.select(by_face_ids(ds, free)).tag_samples(["profile", "blurry"])
    ds.select(by_face_ids(ds, selected[:1])).tag_samples("check")
    ids, tags = by_face(ds, "id"), by_face(ds, "tags")

    s = review.review(ws, app=False, faces="selected")
    ds = fo.load_dataset(name)
    assert set(ds.values("face_id")) == set(selected) | {rejected, kept}  # keep and reject always stay
    assert s["samples_removed"] == len(t) - len(selected) - 2
    stay = set(selected) | {rejected, kept}
    assert {f: v for f, v in by_face(ds, "id").items()} == {f: ids[f] for f in stay}  # the same samples ...
    assert by_face(ds, "tags") == {f: tags[f] for f in stay}  # ... with their tags untouched
    out = table(ws).set_index("face_id")
    assert all(out.loc[f, "review_tags"] == "blurry,profile" for f in free)  # pulled before they left
    assert out.loc[rejected, "rejected"] and out.loc[kept, "kept"] and out.loc[selected[0], "review_tags"] == "check"
    assert review.review(ws, pull_only=True)["tags"]["changed"] == 0  # out of the dataset, the table keeps them

    # back in the scope: the same tags, from the table
    s = review.review(ws, app=False, faces="all")
    ds = fo.load_dataset(name)
    assert s["samples_added"] == len(t) - len(selected) - 2 and len(ds) == len(t)
    back = by_face(ds, "tags")
    assert {f: sorted(back[f]) for f in tags} == {f: sorted(v) for f, v in tags.items()}
    assert s["tags"]["changed"] == 0

    # a face no longer rejected may leave like any other, its (empty) tags in the table first
    ds.select(by_face_ids(ds, [rejected])).untag_samples("reject")
    review.review(ws, app=False, faces="selected")
    assert rejected not in set(fo.load_dataset(name).values("face_id"))
    assert not table(ws).set_index("face_id").loc[rejected, "rejected"]

    # a sample whose tags changed since they were copied is not removed (a tag made in the App meanwhile)
    ds = fo.load_dataset(name)
    face = selected[1]
    assert review_samples.remove_samples(ds, [face], [["stale"]]) == 0 and face in ds.values("face_id")
    assert review_samples.remove_samples(ds, [face], [[]]) == 1 and face not in ds.values("face_id")


def test_maps_are_computed_over_the_dataset_faces_only(curated, tmp_path, fo, made):
    ws = fresh(curated, tmp_path)
    name = name_of(ws, made)
    t = table(ws)
    emb = read_embeddings(open_workspace(ws))
    for scope, faces in (("selected", t.face_id[t.selected].tolist()), ("all", t.face_id.tolist())):
        review.review(ws, app=False, faces=scope)
        ds = fo.load_dataset(name)
        assert sorted(ds.values("face_id")) == sorted(faces)
        rows = t.reset_index().set_index("face_id").loc[faces, "index"].to_numpy()
        centred = emb[rows] - emb[rows].mean(0)
        want = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
        got = np.array([by_face(ds, "identity_pca")[f] for f in faces])
        for k in range(2):
            assert abs(np.corrcoef(got[:, k], want[:, k])[0, 1]) > 0.999, scope
        pose = by_face(ds, "pose")
        assert all(pose[f] == pytest.approx([y, p]) for f, y, p in zip(faces, t.yaw[rows], t.pitch[rows]))
        indexes = ds.get_index_information()
        for key in ("identity_pca", "pose"):
            results = ds.load_brain_results(key)
            assert results.config.points_field == key and len(results.points) == len(ds)
            # the panel's points and the field its lasso queries agree, sample by sample
            field = dict(zip(*ds.values(["id", key])))
            assert np.allclose([field[i] for i in results.sample_ids], results.points)
            assert indexes[key]["key"] == [(key, "2d")]


def test_landmarks_added_after_the_dataset_is_ready_are_those_added_with_it(curated, tmp_path, fo, made, monkeypatch):
    from curator.measure.align import transform_points

    now = fresh(curated, tmp_path, "now")
    review.review(now, app=False)
    t = table(now).set_index("face_id")
    ds = fo.load_dataset(name_of(now, made))
    marks = {f: (k.keypoints[0].label, np.array(k.keypoints[0].points)) for f, k in by_face(ds, "landmarks").items()}
    assert len(marks) == len(t)
    for f, (label, pts) in marks.items():  # the face's keypoints on its crop (pack-small has no 68 landmarks)
        row = t.loc[f]
        assert label == "kps5"
        want = transform_points(np.asarray(row.kps), np.asarray(row.align_matrix).reshape(2, 3)) / row.crop_size
        assert np.allclose(pts, want)

    # as at 10 million rows: the dataset is ready first, the landmarks come after it
    later = fresh(curated, tmp_path, "later")
    name = name_of(later, made)
    monkeypatch.setattr(review_dataset, "LANDMARKS_INLINE_ROWS", -1)
    s = review_dataset.sync_dataset(open_workspace(later), name)
    ds = fo.load_dataset(name)
    assert s["landmarks_pending"] == len(t) and not any(ds.values("landmarks"))
    # while the App would show the faces: a low-priority thread, which the App's end stops
    summary = {"landmarks_pending": s["landmarks_pending"]}
    with review._landmarks_meanwhile(open_workspace(later), ds, summary) as ready:
        ready()
        deadline = time.monotonic() + 120
        while summary["landmarks_pending"] and time.monotonic() < deadline:
            time.sleep(0.2)
    got = by_face(fo.load_dataset(name), "landmarks")
    assert summary["landmarks_pending"] == 0
    assert {f: (k.keypoints[0].label, np.array(k.keypoints[0].points).round(9).tolist()) for f, k in got.items()} == \
        {f: (label, pts.round(9).tolist()) for f, (label, pts) in marks.items()}
    # and without the App, before review returns: a run that finds samples without landmarks adds them
    ds = fo.load_dataset(name)
    ds.set_values("landmarks", {f: None for f in t.index[:3]}, key_field="face_id")
    s = review.review(later, app=False, name=name)
    assert s["landmarks_pending"] == 0 and all(fo.load_dataset(name).values("landmarks"))


def test_faces_option_is_the_api_keyword_with_examples_and_bad_scopes_are_one_line(extracted, tmp_path, made):
    import inspect

    from curator import api

    assert inspect.signature(api.review).parameters["faces"].default == "auto"
    help_text = curator("review", "--help", check=True).stdout
    assert "--faces" in help_text and "curator review -w ws --faces selected" in help_text
    ws = fresh(extracted, tmp_path)
    name_of(ws, made)
    one_line_error(curator("review", "-w", ws, "--no-app", "--faces", "everything"), "--faces", "auto, selected")
    one_line_error(curator("review", "-w", ws, "--no-app", "--faces", "selected"), "--faces selected",
                   "curator curate")
    one_line_error(curator("review", "-w", ws, "--no-app", "--faces", "target"), "--faces target", "curator identify")


# --- the App's greeting --------------------------------------------------------------------------------

@pytest.mark.pure
def test_analytics_stay_off_unless_the_person_set_them(tmp_path, monkeypatch):
    import fiftyone as fo

    config = tmp_path / "config.json"
    monkeypatch.setenv("FIFTYONE_CONFIG_PATH", str(config))
    monkeypatch.delenv("FIFTYONE_DO_NOT_TRACK", raising=False)
    monkeypatch.setattr(fo.config, "do_not_track", False)  # FiftyOne's default
    assert review_app.do_not_track() is True  # nobody chose: off
    config.write_text(json.dumps({"do_not_track": False}))
    assert review_app.do_not_track() is False  # their config file says track: kept
    config.write_text("{not json")
    assert review_app.do_not_track() is True
    config.unlink()
    monkeypatch.setenv("FIFTYONE_DO_NOT_TRACK", "false")
    assert review_app.do_not_track() is False  # their environment says track: kept


@pytest.mark.pure
def test_the_pop_up_is_marked_seen_only_in_html_pages_and_only_when_unset():
    import asyncio

    page = b"<!doctype html><html><head><title>FiftyOne</title></head><body></body></html>"
    marked = review_server.mark_pop_up_seen(page)
    assert marked.startswith(b"<!doctype html><html><head><script>") and marked.endswith(page[page.find(b"<title>"):])
    assert b'localStorage.getItem("fiftyone-enterprise-tooltip-seen")===null' in marked  # a person's own value kept
    assert review_server.mark_pop_up_seen(b"no head here") == b"no head here"

    async def respond(kind: bytes, body: bytes, chunks: int = 2):
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
            step = len(body) // chunks + 1
            for i in range(0, len(body), step):
                await send({"type": "http.response.body", "body": body[i:i + step], "more_body": i + step < len(body)})

        sent = []

        async def send(message):
            sent.append(message)

        await review_server.PopUpSeen(app)({"type": "http"}, None, send)
        headers = dict(sent[0]["headers"])
        out = b"".join(m.get("body", b"") for m in sent[1:])
        assert int(headers[b"content-length"]) == len(out)
        return out

    assert asyncio.run(respond(b"text/html; charset=utf-8", page)) == marked
    assert asyncio.run(respond(b"application/javascript", page)) == page  # only the page
