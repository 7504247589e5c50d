"""Benchmark `curator review` at scale: the default scope's first sync at 1M and 10M synthetic faces.

    eval "$(../shared/ci/mongod.sh start)"        # FiftyOne needs a MongoDB
    python bench/review.py [--rows 1000000 10000000] [--runs 3] [--scale-dir DIR] [--keep]
                           [--out bench/results/review.json] [--markdown FILE]

Workspaces: bench/curate.py's synthetic format-2 workspaces (`synth_table`,
a million rows at a time, extract's and identify's columns, 512-d
embeddings per shard), plus the extract columns a real row has and curate's
benchmark does not need: `source`, `sampled`, frame size, `bbox`, `kps`,
`lmk68` (136 numbers), `align_matrix`, `crop_size`, `crop_path`, pose and
expression methods (float32 values stored as float64, as extract stores the
models' outputs), so review reads what it would read in a workspace
extracted with a 68-landmark pack. Every row's crop is one real face crop
(a shared test photo), so the App has images to show. Then `curator curate
--budget 5000` (as bench/curate.py's scale runs).

Each size, in fresh processes, in a MongoDB database of its own (dropped at
the end):

1. first sync, RUNS times, each into a new dataset: `connect()` +
   `sync_dataset` of the default scope (`--faces auto`) until the dataset is
   ready (samples, fields, indexes, maps, views): the time to the App's first
   page without the App's own start; then the landmarks added afterwards
   (`fill_pending_landmarks`, what review does while the App shows the
   faces), the MongoDB size of the dataset and, once, where the time goes
   (reading the choice columns, choosing the scope);
2. the App: `curator.review.review` with the App, from the call until the
   App's URL answers and until the App's server has answered the grid's
   first-page query (GraphQL `samples(first: 20)`), RUNS times;
3. on one dataset (its landmarks not added yet, as when a review was stopped
   early): a re-run with nothing new, a shrink to `--faces selected` and a
   grow back to the default, each timed as review does it (the pull of the
   dataset there and the sync until it is ready; the landmarks left for
   after; the final pull), with a few context faces tagged before they
   leave: their tags must be in the table while they are out and back on
   their samples when they return;
4. on the largest size, the largest dataset the default scope makes: the
   workspace seen as identified but not curated (curate's column group moved
   aside for the run), so `auto` takes LIMIT of the target's faces.

The machine is shared: the load average before and after each run is
recorded, and medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = common.REPO
BUDGET = 5000
TARGET_ROWS, TARGET_SECONDS = 10_000_000, 60.0  # issue 26: the default review of 10M faces reaches the App in a minute
CHUNK = 1_000_000  # synthetic rows made at once (bench/curate.py's SCALE_CHUNK)
SLICE = 100_000    # rows given extract's other columns and appended at once: one shard


def log(msg: str) -> None:
    print(f"[bench review {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# =============================================================================
# The workspace
# =============================================================================

def _crop_image(path: Path) -> None:
    """One real face crop (a shared test photo's face region, 256 px) that every synthetic row points at."""
    import cv2

    photos = sorted((REPO.parent / "shared" / "testdata" / "images").rglob("*.jpg"))
    img = cv2.imread(str(photos[0])) if photos else None
    if img is None:
        raise SystemExit("bench/review.py needs ../shared/testdata/images (a face photo for the crops)")
    h, w = img.shape[:2]
    side = min(h, w)
    img = img[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA), [cv2.IMWRITE_JPEG_QUALITY, 90])


def extract_columns(t: pd.DataFrame, rng: np.random.Generator, crop: str):
    """Extract's columns that synth_table leaves out, for its rows: the geometry of a face in a 1080p frame."""
    import pyarrow as pa

    n = len(t)
    px = t["face_px"].to_numpy()
    cx, cy = rng.uniform(400, 1500, n), rng.uniform(300, 800, n)

    def pts(k: int) -> np.ndarray:  # k points around the face centre, float32 like the models' outputs
        template = np.random.default_rng(7).uniform(-0.5, 0.5, (k, 2))
        p = template[None] * px[:, None, None] + np.stack([cx, cy], 1)[:, None] + rng.normal(0, 0.7, (n, k, 2))
        return p.astype(np.float32).astype(np.float64).reshape(n, -1)

    def lists(a: np.ndarray) -> pa.Array:
        w = a.shape[1]
        return pa.ListArray.from_arrays(pa.array(np.arange(0, n * w + 1, w, dtype=np.int32)), pa.array(a.reshape(-1)))

    half = (px * 0.8)[:, None]
    bbox = np.column_stack([cx, cy, cx, cy]) + np.column_stack([-half, -half, half, half])
    scale = 256 / (px * 1.6)
    angle = np.deg2rad(t["roll"].to_numpy())
    a, b = scale * np.cos(angle), scale * np.sin(angle)
    matrix = np.column_stack([a, -b, 128 - a * cx + b * cy, b, a, 128 - b * cx - a * cy])
    cols = {
        "source": pa.array(("/footage/" + t["source_sha256"].str[:12] + ".mp4").tolist(), pa.large_string()),
        "sampled": pa.array(["due"] * n, pa.large_string()),
        "frame_w": pa.array(np.full(n, 1920, np.int64)), "frame_h": pa.array(np.full(n, 1080, np.int64)),
        "bbox": lists(bbox.astype(np.float32).astype(np.float64)), "kps": lists(pts(5)),
        "pose_method": pa.array(["landmark_3d68"] * n, pa.large_string()),
        "expression_method": pa.array(["lmk68"] * n, pa.large_string()),
        "lmk68": lists(pts(68)), "align_matrix": lists(matrix),
        "crop_size": pa.array(np.full(n, 256, np.int64)), "crop_path": pa.array([crop] * n, pa.large_string()),
    }
    return cols


def build_workspace(n_rows: int, root: Path, seed: int = 0, dim: int = 512) -> dict:
    """bench/curate.py's synthetic workspace of n_rows faces, with extract's other columns and one real crop."""
    import gc

    import pyarrow as pa

    import curate as curate_bench
    from curator.workspace import append_rows, locked, open_workspace, update_columns

    t0 = time.perf_counter()
    ws = open_workspace(root, create=True)
    crop = "crops/bench/face.jpg"
    _crop_image(root / crop)
    rng = np.random.default_rng(seed + 1000)
    ident, track_offset = [], 0
    with locked(ws, "bench/review.py"):
        for k, start in enumerate(range(0, n_rows, CHUNK)):
            m = min(CHUNK, n_rows - start)
            emb = np.empty((m, dim), np.float32)
            app: list = []
            # The same chunks as bench/curate.py's build_scale_workspace (same seeds, same source names).
            t = curate_bench.synth_table(m, seed + k, emb_out=emb, source_prefix=f"c{k}-" if k else "", appearance_out=app)
            t["track_id"] += track_offset
            track_offset = int(t["track_id"].max()) + 1
            ident.append(t[["face_id", "identity_score", "track_id", "is_target"]])
            base = t.drop(columns=["identity_score", "track_id", "is_target"])
            for s0 in range(0, m, SLICE):
                part = base.iloc[s0:s0 + SLICE].reset_index(drop=True)
                rows = pa.Table.from_pandas(part, preserve_index=False)
                a = app[0][s0:s0 + SLICE]
                rows = rows.append_column("appearance", pa.ListArray.from_arrays(
                    pa.array(np.arange(0, len(a) * 64 + 1, 64, dtype=np.int32)), pa.array(a.reshape(-1))))
                for name, col in extract_columns(part, rng, crop).items():
                    rows = rows.append_column(name, col)
                append_rows(ws, rows, emb[s0:s0 + SLICE])
                del rows
            del t, base, app, emb
            gc.collect()
            log(f"build: {start + m:,} rows")
        update_columns(ws, pd.concat(ident, ignore_index=True))
    return {"build_s": round(time.perf_counter() - t0, 1),
            "disk_gb": round(sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file()) / 2**30, 2)}


def curate_workspace(root: Path, budget: int = BUDGET) -> dict:
    from curator import api

    t0 = time.perf_counter()
    s = api.curate(str(root), budget=budget)
    return {"curate_s": round(time.perf_counter() - t0, 1), "target_faces": s["target_faces"],
            "candidates": s["candidates"], "selected": s["selected"]}


# =============================================================================
# The review runs (each in a child process)
# =============================================================================

def _mongo_sizes(dataset) -> dict:
    import fiftyone.core.odm as foo

    db = foo.get_db_conn()
    db.client.admin.command("fsync")  # a checkpoint first: WiredTiger reports storage sizes as of the last one
    coll = db.command("collStats", dataset._sample_collection_name)
    dbs = db.command("dbStats")
    mb = 2 ** 20
    return {"samples": int(coll["count"]), "samples_data_mb": round(coll["size"] / mb, 1),
            "database_data_mb": round(dbs["dataSize"] / mb, 1),
            "samples_storage_mb": round(coll["storageSize"] / mb, 1),
            "samples_indexes_mb": round(coll["totalIndexSize"] / mb, 1),
            "database_storage_mb": round((dbs["storageSize"] + dbs["indexSize"]) / mb, 1)}


def sync_run(ws_root: str, name: str, landmarks: bool, phases: bool, keep: bool, faces: str = "auto") -> dict:
    """The first sync of the default scope into a new dataset (connect included), then the landmarks."""
    load0 = common.loadavg()
    t0 = time.perf_counter()
    from curator.review.db import connect

    fo = connect()
    t_connect = time.perf_counter() - t0
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    from curator.review.dataset import fill_pending_landmarks, sync_dataset
    from curator.workspace import open_workspace

    ws = open_workspace(ws_root)
    t1 = time.perf_counter()
    s = sync_dataset(ws, name, faces=faces)
    t_sync = time.perf_counter() - t1
    out = {"connect_s": round(t_connect, 2), "sync_s": round(t_sync, 2), "ready_s": round(time.perf_counter() - t0, 2),
           "load_before": load0, "load_after": common.loadavg(), "faces": s["faces"], "scope": s["scope"],
           "samples_total": s["samples_total"], "landmarks_pending": s["landmarks_pending"], "maps": s["maps"],
           "views": len(s["views"]), "notes": s["notes"]}
    dataset = fo.load_dataset(name)
    if landmarks:
        t2 = time.perf_counter()
        out["landmarks_added"] = fill_pending_landmarks(ws, dataset._sample_collection)
        out["landmarks_s"] = round(time.perf_counter() - t2, 2)
        out["mongo"] = _mongo_sizes(dataset)
        out["map_points"] = {k: len(dataset.load_brain_results(k).points) for k in s["maps"]}
    if phases:
        from curator.review.dataset import _same_person
        from curator.review_scope import choose, read_faces

        t3 = time.perf_counter()
        f = read_faces(ws)
        t4 = time.perf_counter()
        pinned = f.flag("rejected") | f.flag("kept")
        choose(f, "auto", pinned, same_person=_same_person(ws))
        out["phases"] = {"read_choice_columns_s": round(t4 - t3, 2), "choose_scope_s": round(time.perf_counter() - t4, 2)}
    if not keep:
        fo.delete_dataset(name)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_run(ws_root: str, name: str, faces: str = "auto") -> dict:
    """`review` with the App on a new dataset: seconds until its URL answers and until the grid's first page;
    then what the embeddings panel asks of the App's server: the identity map's points (`/embeddings/plot`)
    and a lasso (the panel's `$geoWithin` query on the map's indexed points field)."""
    load0 = common.loadavg()
    t0 = time.perf_counter()
    from curator.review import session as review
    from curator.review.db import connect

    fo = connect()
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    marks: dict = {}
    port = _free_port()

    def post(path: str, body: dict) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            return json.load(r)

    def ready(url: str) -> None:
        marks["url_s"] = time.perf_counter() - t0
        answer = post("/graphql", {"query": '{ samples(dataset: "%s", view: [], first: 20) { __typename } }' % name})
        marks["first_page_s"] = time.perf_counter() - t0
        marks["answer"] = (answer.get("data") or {}).get("samples", {}).get("__typename") or answer
        t1 = time.perf_counter()
        plot = post("/embeddings/plot", {"datasetName": name, "brainKey": "identity_pca", "view": [], "filters": None,
                                         "labelField": None, "slices": None})
        marks["plot_s"] = time.perf_counter() - t1
        marks["plot_error"] = plot.get("error")
        marks["plot_points"] = plot.get("index_size")

    s = review.review(ws_root, app=True, port=port, timeout=3, name=name, faces=faces, on_ready=ready)
    ds = fo.load_dataset(name)
    pts = np.array(ds.values("identity_pca"), float)
    lo, mid = pts.min(0), np.median(pts, 0)
    t1 = time.perf_counter()
    lassoed = ds._sample_collection.count_documents(
        {"identity_pca": {"$geoWithin": {"$box": [lo.tolist(), mid.tolist()]}}})
    lasso_ms = (time.perf_counter() - t1) * 1000
    fo.delete_dataset(name)
    return {"url_s": round(marks["url_s"], 2), "first_page_s": round(marks["first_page_s"], 2),
            "first_page_answer": marks["answer"], "plot_s": round(marks["plot_s"], 2),
            "plot_points": marks["plot_points"], "plot_error": marks["plot_error"], "lasso_ms": round(lasso_ms, 1),
            "lassoed": lassoed, "samples_total": s["samples_total"], "faces": s["faces"],
            "load_before": load0, "load_after": common.loadavg()}


def _review_steps(ws_root: str, name: str, faces: str = "auto") -> dict:
    """What `review` does, step by step and timed: the pull of a dataset already there and the sync (until then
    the App has nothing to show: `ready_s`), the landmarks left for after, the final pull (the App's last)."""
    from curator.review_dataset import fill_pending_landmarks, sync_dataset
    from curator.review_db import connect, load_dataset
    from curator.review_tags import pull_tags
    from curator.workspace import open_workspace

    connect()
    ws = open_workspace(ws_root)
    t0 = time.perf_counter()
    existing = load_dataset(ws, name)
    if existing is not None:
        pull_tags(ws, existing)
    s = sync_dataset(ws, name, faces=faces)
    out = {"ready_s": round(time.perf_counter() - t0, 2), "added": s["samples_added"], "removed": s["samples_removed"],
           "total": s["samples_total"]}
    dataset = load_dataset(ws, name)
    t1 = time.perf_counter()
    out["landmarks_added"] = fill_pending_landmarks(ws, dataset._sample_collection) if s["landmarks_pending"] else 0
    out["landmarks_s"] = round(time.perf_counter() - t1, 2)
    t2 = time.perf_counter()
    out["tags_written"] = pull_tags(ws, dataset)["written"]
    out["pull_s"] = round(time.perf_counter() - t2, 2)
    return out


def changes_run(ws_root: str, name: str) -> dict:
    """On a dataset of the default scope: a re-run, a shrink to --faces selected, a grow back; tags followed."""
    from curator.review import session as review
    from curator.review.db import connect
    from curator.workspace import open_workspace, read_columns

    fo = connect()
    out: dict = {"rerun": _review_steps(ws_root, name)}
    ds = fo.load_dataset(name)
    from fiftyone import ViewField as F

    leaving = ds.match(F("selected") != True).limit(5)  # noqa: E712 - context faces: they leave with --faces selected
    tagged = leaving.values("face_id")
    leaving.tag_samples("bench-check")
    out["shrink"] = _review_steps(ws_root, name, "selected")
    t = read_columns(open_workspace(ws_root), ["face_id", "review_tags"]).to_pandas().set_index("face_id")
    out["tags_in_table_while_out"] = bool((t.loc[tagged, "review_tags"] == "bench-check").all())
    out["tagged_out_of_dataset"] = not set(tagged) & set(fo.load_dataset(name).values("face_id"))
    out["grow"] = _review_steps(ws_root, name)
    ds = fo.load_dataset(name)
    back = dict(zip(*ds.match(F("face_id").is_in(tagged)).values(["face_id", "tags"])))
    out["tags_back_on_samples"] = sorted(back) == sorted(tagged) and all(v == ["bench-check"] for v in back.values())
    ds.untag_samples("bench-check")
    review.review(ws_root, pull_only=True, name=name)  # the table as it was
    fo.delete_dataset(name)
    return out


# =============================================================================
# Driver
# =============================================================================

def _child(args: list[str], env: dict, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_size(n: int, runs: int, work: Path | None, keep: bool, workspace: Path | None, env: dict, timeout: float,
             limit_check: bool) -> dict:
    root = workspace or Path(tempfile.mkdtemp(prefix=f"review-scale-{n}-", dir=work)) / "ws"
    rec: dict = {"rows": n, "workspace": str(root) if keep or workspace else None}
    try:
        if not (root / "workspace.json").exists():
            log(f"{n:,} rows: building {root} ...")
            rec.update(_child(["--_build", str(root), "--_rows", str(n)], env, timeout))
            log(f"{n:,} rows: built in {rec['build_s']} s ({rec['disk_gb']} GB); curating ...")
            rec.update(_child(["--_curate", str(root)], env, timeout))
            log(f"{n:,} rows: curated in {rec['curate_s']} s ({rec['selected']} selected)")
        name = f"bench-review-{n}"
        rec["sync_runs"] = []
        for k in range(runs):
            r = _child(["--_sync", str(root), "--_name", name] + (["--_landmarks", "--_phases"] if k == 0 else [])
                       + (["--_keep"] if k == runs - 1 else []), env, timeout)
            rec["sync_runs"].append(r)
            log(f"{n:,} rows: first sync {k + 1}/{runs}: ready in {r['ready_s']} s ({r['samples_total']} faces, "
                f"scope {r['faces']}; load {r['load_before']})" + (f"; landmarks {r['landmarks_s']} s" if k == 0 else ""))
        rec["changes"] = _child(["--_changes", str(root), "--_name", name], env, timeout)
        log(f"{n:,} rows: changes {rec['changes']}")
        rec["app_runs"] = []
        for k in range(runs):
            r = _child(["--_app", str(root), "--_name", f"{name}-app"], env, timeout)
            rec["app_runs"].append(r)
            log(f"{n:,} rows: App {k + 1}/{runs}: URL after {r['url_s']} s, first page after {r['first_page_s']} s, "
                f"identity map {r['plot_points']} points in {r['plot_s']} s, lasso {r['lasso_ms']} ms")
        rec["ready_s_median"] = statistics.median(r["ready_s"] for r in rec["sync_runs"])
        rec["first_page_s_median"] = statistics.median(r["first_page_s"] for r in rec["app_runs"])
        if limit_check:
            rec["limit"] = limit_run(root, n, env, timeout)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        rec["error"] = str(e)[-3000:]
        log(f"{n:,} rows failed: {rec['error'][-800:]}")
    finally:
        if not keep and workspace is None:
            shutil.rmtree(root.parent, ignore_errors=True)
    return rec


def limit_run(root: Path, n: int, env: dict, timeout: float) -> dict:
    """The largest dataset the default scope makes: the workspace as identified but not curated (curate's column
    group moved aside), so `auto` takes the target's faces cut to review_scope.LIMIT; first sync and the App,
    once each. The group is put back whatever happens."""
    from curator.review_scope import LIMIT

    group = root / "columns" / "curate.parquet"
    aside = root / "columns" / ".curate.parquet.bench-aside"  # a dot name: not a column group for the workspace
    name = f"bench-review-{n}-limit"
    group.rename(aside)
    try:
        out = {"faces": LIMIT, "sync": _child(["--_sync", str(root), "--_name", name, "--_landmarks"], env, timeout)}
        out["app"] = _child(["--_app", str(root), "--_name", name + "-app"], env, timeout)
    finally:
        aside.rename(group)
    log(f"{n:,} rows, not curated ({out['sync']['faces']}, {out['sync']['samples_total']} faces): ready in "
        f"{out['sync']['ready_s']} s, first page after {out['app']['first_page_s']} s, identity map in "
        f"{out['app']['plot_s']} s, lasso {out['app']['lasso_ms']} ms")
    return out


def render_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Run {m['date']} on {m['cpu_model']} ({m['cpu_affinity']} cores), git {result.get('git')}; "
             f"medians of {result['runs']} runs; curate budget {BUDGET}.", "",
             "| faces in the table | faces in the dataset (scope: parts) | first sync: dataset ready, s (runs) | "
             "App: URL / first page, s | identity map: points, load s / lasso ms | landmarks after, s | "
             "MongoDB MB (samples + indexes; whole database) | re-run / shrink / grow: ready (landmarks after), s | load avg |",
             "|---|---|---|---|---|---|---|---|---|"]

    def row(label: str, syncs: list, apps: list, ch: dict | None) -> str:
        s0 = syncs[0]
        p = s0["scope"]["parts"]
        parts = (f"{p['all']} of all" if "all" in p else f"{p['target']} of the target's" if "target" in p
                 else " + ".join(f"{p.get(k, 0)} {k.replace('_', '-')}" for k in
                                 ("selected", "near_duplicates", "alternatives", "doubtful")))
        mg = s0["mongo"]
        ready = statistics.median(x["ready_s"] for x in syncs)
        page = statistics.median(a["first_page_s"] for a in apps)
        url = statistics.median(a["url_s"] for a in apps)
        plot = statistics.median(a["plot_s"] for a in apps)
        lasso = statistics.median(a["lasso_ms"] for a in apps)
        changes = (" / ".join(f"{ch[k]['ready_s']} ({ch[k]['landmarks_s']})" for k in ("rerun", "shrink", "grow"))
                   if ch else "-")
        return (f"| {label} | {s0['samples_total']:,} ({s0['faces']}: {parts}) | **{ready}** "
                f"({', '.join(str(x['ready_s']) for x in syncs)}) | {url} / **{page}** | "
                f"{apps[0]['plot_points']:,}, {plot} / {lasso} | {s0['landmarks_s']} | "
                f"{mg['samples_storage_mb']} + {mg['samples_indexes_mb']}; {mg['database_storage_mb']} | {changes} | "
                f"{s0['load_before'][0] if s0['load_before'] else '-'} |")

    for r in result["sizes"]:
        if "error" in r:
            lines.append(f"| {r['rows']:,} | error: {r['error'][:100]} |")
            continue
        lines.append(row(f"{r['rows']:,}", r["sync_runs"], r["app_runs"], r["changes"]))
        if "limit" in r:
            lim = r["limit"]
            lines.append(row(f"{r['rows']:,}, not curated", [lim["sync"]], [lim["app"]], None))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "review.json")
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--scale-dir", type=Path, default=None, help="where the synthetic workspaces go (10M rows: ~35 GB)")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic workspaces")
    ap.add_argument("--workspace", type=Path, nargs="*", default=None,
                    help="reuse these workspaces (one per --rows, built and curated if absent; kept)")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--no-limit-check", action="store_true",
                    help="skip the run at the largest default scope (LIMIT faces of the largest table, not curated)")
    ap.add_argument("--_build", type=str, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_rows", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--_curate", type=str, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_sync", type=str, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_app", type=str, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_changes", type=str, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_name", type=str, default="bench-review", help=argparse.SUPPRESS)
    ap.add_argument("--_landmarks", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_phases", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_keep", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_faces", type=str, default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--_budget", type=int, default=BUDGET, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._build:
        print(json.dumps(build_workspace(args._rows, Path(args._build))))
        return
    if args._curate:
        print(json.dumps(curate_workspace(Path(args._curate), args._budget)))
        return
    if args._sync:
        print(json.dumps(sync_run(args._sync, args._name, args._landmarks, args._phases, args._keep, args._faces)))
        return
    if args._app:
        print(json.dumps(app_run(args._app, args._name, args._faces)))
        return
    if args._changes:
        print(json.dumps(changes_run(args._changes, args._name)))
        return

    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        raise SystemExit("bench/review.py needs MongoDB: eval \"$(../shared/ci/mongod.sh start)\" first")
    database = f"curator-bench-review-{os.getpid()}"  # a database of its own: its size is the review's alone
    env = {**os.environ, "FIFTYONE_DATABASE_NAME": database, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    result = {"benchmark": "review", "machine": common.machine_info(), "git": common.git_rev(),
              "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]), "runs": args.runs,
              "budget": BUDGET, "sizes": []}
    spaces = args.workspace or []
    try:
        for k, n in enumerate(sorted(args.rows)):
            ws = spaces[k] if k < len(spaces) else None
            result["sizes"].append(run_size(n, args.runs, args.scale_dir, args.keep, ws, env, args.timeout,
                                            limit_check=k == len(args.rows) - 1 and not args.no_limit_check))
    finally:
        import pymongo

        pymongo.MongoClient(os.environ["FIFTYONE_DATABASE_URI"]).drop_database(database)
    result["total_s"] = round(time.perf_counter() - t0, 1)
    big = [r for r in result["sizes"] if "ready_s_median" in r and r["rows"] >= TARGET_ROWS]
    result["targets"] = {"rows": TARGET_ROWS, "seconds": TARGET_SECONDS,
                         "first_sync_under_a_minute": bool(big) and all(r["ready_s_median"] < TARGET_SECONDS for r in big),
                         "first_page_under_a_minute": bool(big) and all(r["first_page_s_median"] < TARGET_SECONDS
                                                                        for r in big)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {args.out} ({result['total_s']} s)")
    if args.markdown:
        args.markdown.write_text(render_markdown(result))
    print(json.dumps(result["targets"]))


if __name__ == "__main__":
    main()
