"""Does a curated set train a better swap, by a margin the noise cannot explain?

    python bench/thesis.py --smoke                                  # every method end to end, ~15 min
    python bench/thesis.py --stage prepare                          # footage, faces, every repeat's sets
    nohup nice -n 15 python bench/thesis.py --stage run --runs /work/thesis-runs &   # resumable, run by run
    python bench/thesis.py --stage report --runs /work/thesis-runs  # tables -> bench/results/thesis.json
    python bench/thesis.py --footage a1.mp4 a2.mp4 --ref a.jpg --target a3.mp4 --b b.mp4 --budgets 200,1000
    bash bench/gpu_run.sh OUT thesis                                # 128 px on one GPU (bench/gpu_run.sh)

The protocol (docs/benchmarks.md, "Does curation make better models?"):

1. Side A's footage (--footage, with --ref to pick the person) and the
   evaluation footage (--target) are extracted (`curator extract` of every
   frame, `curator identify`). --target is other files of the same person,
   or windows FILE@FROM-TO of the footage. Default: one woman's 33.6 s studio
   clip (liveportrait/driving_d6; the shared clips hold no one else with
   this much footage of one look): evaluation on its last 9.6 s (@24-),
   training faces from what lies 10 s or more before them. Side B (--b) is
   one fixed `curator run` export of another person.
2. Evaluation faces: the person's faces in the --target files or windows (at
   most --eval-faces, evenly in time). No training face may come from footage near
   them: for every set, each evaluation face's distance in time to the nearest
   training face of the same source file must be at least MIN_GAP_S (10 s);
   training faces of other source files have no time distance to it (null
   in the results). Checked for every set before anything trains (`leak_check`); the
   distances and every set's face ids are stored.
3. Repeats: repeat r draws its pool from its own window of the footage (a
   contiguous --pool-fraction of the candidate faces in time order, windows
   spread over the footage), so the sets vary between repeats, not only the
   training seed (seed = r).
4. Methods, each choosing N faces of the pool, at every budget N (--budgets):
   curator, curator-for (curator for the evaluation footage, when this build
   has it), DeepFaceLab's sort_best, faceswap's sort chain, FiftyOne Brain's
   find_unique on an image embedding, uniform in time, random
   (bench/baselines.py says how each is rebuilt); and a control no one would
   choose, the pool's first N faces in time (N consecutive frames: one
   moment, one expression), which tells whether the experiment can see a
   bad set at all. Plus the reference: the whole pool trained to convergence.
5. Every run trains with the same trainer, network and steps (`python -m
   trainer`), then `curator evaluate` measures it on the evaluation faces.
   Each run's result is its own JSON in the runs folder (--runs); a run whose
   JSON is there is skipped, so the experiment spans sessions.
6. The report (`--stage report`) recomputes everything from those JSONs:
   per run the face-weighted mean masked L1, the mean over pose bins (bins
   with fewer than MIN_BIN_FACES evaluation faces merged into one) and the
   mean of the worst decile of faces; per method and budget the mean over
   repeats, and for every baseline the paired difference to curator (same
   repeat, same budget) with its 95% t interval. Writes --out.

Convergence of the whole pool: trained in chunks of --steps; after each,
the masked L1 of its reconstruction of a validation tenth of the pool (faces
held out of its training, never evaluation faces); stopped when a chunk
lowers it by less than 1% of the best so far, or after --pool-chunks chunks.
The model evaluated is the chunk with the lowest validation L1, kept aside as
it is trained (a later chunk can be worse: one diverged in its last chunk).
FiftyOne needs MongoDB: `eval "$(../shared/ci/mongod.sh start)"` first.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = common.REPO
# One woman, 33.6 s at 30 fps, one studio session: every expression and some head turns. The evaluation
# faces are its last 9.6 s; the training faces come from its first 14 s (10 s or more before them).
DEFAULT_FOOTAGE = ["liveportrait/driving_d6.mp4"]
DEFAULT_TARGET = ["liveportrait/driving_d6.mp4@24-"]
DEFAULT_B = ["liveportrait/driving_d12.mp4"]
MIN_GAP_S = 10.0          # an evaluation face is at least this far in time from every training face of its source
MIN_BIN_FACES = 5         # pose bins with fewer evaluation faces are merged into one
CROP_SIZE = 128           # the workspaces' crops; the trainer resizes them to --size
METHODS = ("curator", "curator-for", "dfl-sort-best", "faceswap-sort", "fiftyone-unique", "uniform", "random",
           "consecutive")
REFERENCE = "all"         # the whole pool, trained to convergence
FIGURES = ("face_mean", "bin_mean", "worst_decile")
PER_FACE = ("l1", "ssim", "identity", "swap_identity", "pose_error_deg")
PLATEAU = 0.01            # convergence: a chunk that lowers validation L1 by less than this share of the best
VERSION = 1               # bump when what prepare makes changes


class NotAvailable(Exception):
    """A method this build of curator does not have."""


class LeakError(RuntimeError):
    """An evaluation face closer in time than MIN_GAP_S to a training face of the same source."""


def log(msg: str) -> None:
    print(f"[bench thesis {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the pieces that must not be wrong (tests/test_thesis.py) ----------------------------------

def nearest_training_s(eval_source: np.ndarray, eval_time: np.ndarray, train_source: np.ndarray,
                       train_time: np.ndarray) -> np.ndarray:
    """Per evaluation face, seconds to the nearest training face of the same source file; inf where none shares it."""
    out = np.full(len(eval_source), np.inf)
    train_source, train_time = np.asarray(train_source), np.asarray(train_time, float)
    for src in np.unique(eval_source):
        t = np.sort(train_time[train_source == src])
        if not len(t):
            continue
        e = np.flatnonzero(np.asarray(eval_source) == src)
        te = np.asarray(eval_time, float)[e]
        k = np.clip(np.searchsorted(t, te), 1, len(t)) if len(t) > 1 else np.zeros(len(e), int)
        near = np.minimum(np.abs(te - t[np.clip(k - 1, 0, len(t) - 1)]), np.abs(te - t[np.clip(k, 0, len(t) - 1)]))
        out[e] = near
    return out


def leak_check(name: str, distances: np.ndarray, min_gap: float = MIN_GAP_S) -> None:
    """Refuse a set with a training face nearer than min_gap to an evaluation face of the same source."""
    bad = np.flatnonzero(np.asarray(distances, float) < min_gap)
    if len(bad):
        raise LeakError(f"{name}: {len(bad)} evaluation faces within {min_gap:g} s of a training face of the same "
                        f"source (nearest {float(np.min(np.asarray(distances)[bad])):.2f} s)")


def paired_ci(diffs, level: float = 0.95) -> dict:
    """Mean of paired differences with its Student-t interval; n < 2 gives no interval."""
    from scipy import stats

    d = np.asarray([x for x in diffs if x is not None and np.isfinite(x)], float)
    n = len(d)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "lo": None, "hi": None, "wins": 0}
    mean = float(d.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "sd": None, "lo": None, "hi": None, "wins": int((d > 0).sum())}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half, "wins": int((d > 0).sum())}


def bin_groups(bins: np.ndarray, min_faces: int = MIN_BIN_FACES) -> np.ndarray:
    """Each face's pose bin, with bins of fewer than min_faces faces (and unknown pose) merged into one group."""
    bins = np.asarray(bins, object)
    counts = pd.Series(bins).value_counts()
    small = set(counts[counts < min_faces].index) | {"unknown"}
    return np.array([f"merged (bins < {min_faces} faces)" if b in small else b for b in bins], object)


def run_figures(l1: np.ndarray, groups: np.ndarray) -> dict:
    """One run's headline figures from its per-face masked L1."""
    l1 = np.asarray(l1, float)
    ok = np.isfinite(l1)
    v, g = l1[ok], np.asarray(groups, object)[ok]
    worst = np.sort(v)[::-1][: max(1, int(math.ceil(len(v) / 10)))]
    return {"face_mean": float(v.mean()), "bin_mean": float(pd.Series(v).groupby(g).mean().mean()),
            "worst_decile": float(worst.mean()), "faces": int(len(v))}


def windows(n_faces: int, repeats: int, fraction: float) -> list[tuple[int, int]]:
    """[start, end) of each repeat's pool among n_faces candidates in time order, spread evenly over them."""
    size = max(1, int(round(fraction * n_faces)))
    if repeats == 1:
        return [(0, size)]
    return [(s, s + size) for s in np.round(np.linspace(0, n_faces - size, repeats)).astype(int).tolist()]


# --- 1. footage and faces ---------------------------------------------------------------------

def _cli(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "curator", *args], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"curator {args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout) if "--json" in args else {}


def resolve(files: list[str]) -> list[str]:
    """Paths as given, or shared clips by their name under testdata/videos."""
    out = []
    for f in files:
        p = Path(f).expanduser()
        if not p.exists() and (common.VIDEOS / f).is_file():
            p = common.VIDEOS / f
        if not p.exists():
            sys.exit(f"bench/thesis.py: {f}: no such file (nor a shared clip under {common.VIDEOS})")
        out.append(str(p.resolve()))
    return out


def parse_spec(spec: str) -> tuple[str, float, float]:
    """FILE or FILE@FROM-TO (seconds; either end may be left out): (resolved path, from, to)."""
    path, _, window = spec.partition("@")
    lo, _, hi = window.partition("-") if window else ("", "", "")
    try:
        return resolve([path])[0], float(lo) if lo else 0.0, float(hi) if hi else math.inf
    except ValueError:
        sys.exit(f"bench/thesis.py: {spec}: a time window is FILE@FROM-TO in seconds, e.g. clip.mp4@24-")


def in_specs(table: pd.DataFrame, specs: list[tuple[str, float, float]]) -> np.ndarray:
    """Faces inside any of the (file, from, to) windows."""
    src, t = table["source_path"].to_numpy(), table["time_s"].to_numpy(float)
    inside = np.zeros(len(table), bool)
    for path, lo, hi in specs:
        inside |= (src == path) & (t >= lo) & (t <= hi)
    return inside


def cut(path: str, lo: float, hi: float, out: Path) -> Path:
    """The frames of `path` between lo and hi seconds as a video file of their own (for curate's --for)."""
    import av

    if out.is_file():
        return out
    tmp = out.with_name(".tmp-" + out.name)
    with av.open(path) as src, av.open(str(tmp), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream("libx264", rate=vin.average_rate or 25)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        for frame in src.decode(vin):
            if frame.time is not None and lo <= frame.time <= hi:
                for pkt in vout.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                    dst.mux(pkt)
        for pkt in vout.encode(None):
            dst.mux(pkt)
    os.replace(tmp, out)
    return out


def extract(ws: Path, files: list[str], refs: list[str], args) -> Path:
    """`curator extract` + `curator identify` once; reused while the files and settings are the same."""
    stamp = ws / "bench_thesis.json"
    fps = ["--fps", str(args.extract_fps)] if args.extract_fps else ["--every", "1"]
    want = {"files": files, "refs": refs, "sampling": fps, "size": CROP_SIZE, "models": str(args.models)}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return ws
    shutil.rmtree(ws, ignore_errors=True)
    log(f"extract {len(files)} files into {ws} ...")
    _cli(["extract", *files, "-w", str(ws), "--models", str(args.models), *fps, "--size", str(CROP_SIZE), "--json", "-q"])
    _cli(["identify", "-w", str(ws), *[x for r in refs for x in ("--ref", r)], "--json"])
    stamp.write_text(json.dumps(want))
    return ws


def faces_of(ws: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The workspace's table (with each face's source path) and embeddings."""
    from curator.workspace import open_workspace, read_embeddings, read_meta, read_table

    w = open_workspace(ws)
    table = read_table(w)
    emb = np.asarray(read_embeddings(w, len(table)), np.float32)
    paths = {sha: rec.get("path") for sha, rec in read_meta(w)["sources"].items()}
    table["source_path"] = table["source_sha256"].map(paths)
    return table, emb


def single_person(table: pd.DataFrame, what: str, has_ref: bool) -> None:
    """Without --ref, the footage must show one person (one face per frame), or identify's guess decides."""
    if not has_ref and table.groupby(["source_sha256", "frame"]).size().max() > 1:
        sys.exit(f"bench/thesis.py: {what} has frames with two faces; give --ref PHOTO of the person")


def export_rows(ws: Path, table: pd.DataFrame, rows: np.ndarray, out: Path) -> Path:
    """A real `curator export` (folder format, no validation split) of exactly these rows of the workspace."""
    from curator.export.folder import export
    from curator.workspace import locked, open_workspace, update_columns

    if (out / "manifest.parquet").is_file():
        return out
    w = open_workspace(ws)
    selected = np.zeros(len(table), bool)
    selected[rows] = True
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with locked(w, "bench/thesis.py"):
        update_columns(w, pd.DataFrame({"face_id": table["face_id"], "selected": selected}))
        export(w, tmp, val_fraction=0.0, force=True)
    os.replace(tmp, out)
    return out


# --- 2. what each tool measures on the crops -------------------------------------------------------

def crop_features(ws: Path, table: pd.DataFrame, rows: np.ndarray, cache: Path) -> pd.DataFrame:
    """Per candidate face: DFL's yaw, pitch, CPBD sharpness and histogram; faceswap's blur and masked
    histogram; the image embedding for FiftyOne. Cached in `cache` (a parquet of one row per face_id)."""
    import pickle

    import cv2
    import insightface

    import baselines
    from curator.measure import align
    from curator.models import dlib68
    from curator.workspace import open_workspace, read_meta
    from trainer.data import face_mask

    ids = table["face_id"].to_numpy()[rows]
    if cache.is_file():
        got = pd.read_parquet(cache)
        if set(ids) <= set(got["face_id"]):
            return got.set_index("face_id").loc[ids].reset_index()
    margin = float(read_meta(open_workspace(ws))["settings"].get("margin", align.DEFAULT_MARGIN))
    mean68 = np.asarray(pickle.load(open(Path(insightface.__file__).parent / "data/objects/meanshape_68.pkl", "rb")),
                        np.float64) * np.array([1.0, 1.0, -1.0])  # its z points at the viewer; OpenCV's away
    predictor = dlib68.load()
    crops = np.stack([cv2.imread(str(ws / p)) for p in table["crop_path"].to_numpy()[rows]])
    size = crops.shape[1]
    kps = align.template(size, margin)
    soft = face_mask(size, margin)
    fmask = (soft > 0.5).astype(np.uint8)
    recs = []
    for crop in crops:
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        lm = dlib68.predict(predictor, crop, kps)
        pitch, yaw = baselines.dfl_pitch_yaw(lm, size, mean68)
        hull = baselines.landmark_hull_mask(grey.shape, lm) if np.isfinite(lm).all() else fmask
        # faceswap masks the face with np.minimum(face, mask), its mask soft-edged by resizing; here the
        # trainer's soft face mask, so the blur score does not measure the mask's own edge
        fs_grey = np.minimum(grey, np.rint(soft * 255).astype(np.uint8))
        recs.append({"dfl_yaw": yaw, "dfl_pitch": pitch, "dfl_sharpness": baselines.cpbd(grey * hull),
                     "dfl_hist": baselines.grey_histogram(grey), "fs_blur": baselines.faceswap_blur(fs_grey),
                     "fs_hist": baselines.grey_histogram(fs_grey)})
    out = pd.DataFrame(recs)
    out.insert(0, "face_id", ids)
    out["image_emb"] = list(baselines.image_embeddings(crops))
    out.to_parquet(cache)
    return out


# --- 3. the methods ------------------------------------------------------------------------------

class Context:
    """What every method may look at: the footage workspace, its table and embeddings, the features."""

    def __init__(self, args, work: Path, ws: Path, table: pd.DataFrame, emb: np.ndarray, for_target: list[str],
                 for_faces: pd.DataFrame):
        self.args, self.work, self.ws, self.table, self.emb = args, work, ws, table, emb
        self.for_target, self.for_faces = for_target, for_faces  # the --target footage: files, and its faces
        self.features: pd.DataFrame | None = None
        self._fo = None

    def fo(self):
        import curate as bench_curate  # bench/curate.py: FiftyOne on the crops

        if self._fo is None:
            self._fo = bench_curate.FiftyOneBaselines(self.ws, self.table, self.emb, f"thesis-{os.getpid()}")
        return self._fo

    def close(self):
        if self._fo is not None:
            self._fo.close()


def time_order(table: pd.DataFrame, rows: np.ndarray, sources: list[str]) -> np.ndarray:
    """rows sorted by (footage file order, time in it, face index)."""
    order = {s: i for i, s in enumerate(sources)}
    key = pd.DataFrame({"s": table["source_path"].map(order).to_numpy()[rows], "t": table["time_s"].to_numpy()[rows],
                        "f": table["face_index"].to_numpy()[rows]})
    return rows[np.lexsort((key["f"], key["t"], key["s"]))]


def sel_curator(ctx: Context, pool: np.ndarray, n: int, r: int) -> tuple[np.ndarray, dict]:
    from curator import curate as curate_mod

    t2 = ctx.table.copy()
    mask = np.zeros(len(t2), bool)
    mask[pool] = True
    t2["is_target"] = mask
    sel = curate_mod.curate(t2, n, emb=ctx.emb).columns["selected"].to_numpy(bool)
    return np.flatnonzero(sel), {}


def sel_curator_for(ctx: Context, pool: np.ndarray, n: int, r: int) -> tuple[np.ndarray, dict]:
    """curator's selection for the evaluation footage (issue 24, `curate --for TARGET`), through whichever form
    this build has: the pure `curator.curate.curate(..., for_faces=TARGET_FACES)` given the person's faces of
    the --target windows, else `curator.api.curate(ws, budget=N, for_target=FILES)` (or `for_=`) given the
    --target files, a window cut into a file of its own. Neither: NotAvailable, and nothing stands in."""
    from curator import api
    from curator import curate as curate_mod

    if "for_target" in inspect.signature(curate_mod.curate).parameters:
        from curator.target import ForTarget

        t2 = ctx.table.copy()
        mask = np.zeros(len(t2), bool)
        mask[pool] = True
        t2["is_target"] = mask
        sel = curate_mod.curate(t2, n, emb=ctx.emb, for_target=ForTarget(ctx.for_faces)).columns["selected"].to_numpy(bool)
        return np.flatnonzero(sel), {"via": "curator.curate.curate(for_target=ForTarget(...))",
                                     "target_faces": int(len(ctx.for_faces))}
    params = inspect.signature(api.curate).parameters
    kw = next((k for k in ("for_target", "for_") if k in params), None)
    if kw is None:
        raise NotAvailable("not available in this build (curator.curate.curate has no for_faces, "
                           "curator.api.curate no for_target)")
    return _curate_for_via_api(ctx, pool, n, kw), {"via": f"curator.api.curate({kw}=)"}


def _curate_for_via_api(ctx: Context, pool: np.ndarray, n: int, kw: str) -> np.ndarray:
    """api.curate on the footage workspace with the pool marked as its target; identify's column put back after."""
    from curator import api
    from curator.workspace import locked, open_workspace, read_table, update_columns

    w = open_workspace(ctx.ws)
    mask = np.zeros(len(ctx.table), bool)
    mask[pool] = True
    with locked(w, "bench/thesis.py"):
        update_columns(w, pd.DataFrame({"face_id": ctx.table["face_id"], "is_target": mask}))
    try:
        api.curate(str(ctx.ws), budget=n, **{kw: ctx.for_target[0] if len(ctx.for_target) == 1 else ctx.for_target})
        got = read_table(open_workspace(ctx.ws))
        sel = got.set_index("face_id").loc[ctx.table["face_id"], "selected"].fillna(False).to_numpy(bool)
    finally:
        with locked(w, "bench/thesis.py"):
            update_columns(w, pd.DataFrame({"face_id": ctx.table["face_id"],
                                            "is_target": ctx.table["is_target"].fillna(False).to_numpy(bool)}))
    return np.flatnonzero(sel)


def _features(ctx: Context, pool: np.ndarray) -> pd.DataFrame:
    return ctx.features.set_index("face_id").loc[ctx.table["face_id"].to_numpy()[pool]].reset_index()


def sel_dfl(ctx: Context, pool: np.ndarray, n: int, r: int) -> tuple[np.ndarray, dict]:
    import baselines

    f = _features(ctx, pool)
    yaw, pitch = f["dfl_yaw"].to_numpy(float), f["dfl_pitch"].to_numpy(float)
    ok = np.isfinite(yaw) & np.isfinite(pitch)  # DFL's loader drops a face it cannot read
    hist = np.stack(f["dfl_hist"].to_numpy()).astype(np.float32)
    k, info = baselines.dfl_at_budget(yaw[ok], pitch[ok], f["dfl_sharpness"].to_numpy(float)[ok], hist[ok], n)
    return pool[np.flatnonzero(ok)[k]], info


def sel_faceswap(ctx: Context, pool: np.ndarray, n: int, r: int) -> tuple[np.ndarray, dict]:
    import baselines

    f = _features(ctx, pool)
    k, info = baselines.faceswap_chain(f["fs_blur"].to_numpy(float), np.stack(f["fs_hist"].to_numpy()).astype(np.float32), n)
    return pool[k], info


def sel_fiftyone(ctx: Context, pool: np.ndarray, n: int, r: int) -> tuple[np.ndarray, dict]:
    f = _features(ctx, pool)
    fob = ctx.fo()
    emb_all = np.zeros((len(ctx.table), len(f["image_emb"].iloc[0])), np.float32)
    emb_all[pool] = np.stack(f["image_emb"].to_numpy())
    fob.emb = emb_all  # the image embedding, not the identity one
    got = fob.find_unique(pool, [n], f"thesis_r{r}_n{n}")[n]
    return np.asarray(got, int), {"embedding": "32x32 RGB pixels, per-crop standardised, PCA to 64 dims "
                                               "(bench/baselines.image_embeddings)"}


def sel_uniform(ctx: Context, pool: np.ndarray, n: int, r: int) -> tuple[np.ndarray, dict]:
    import baselines

    return pool[baselines.pick_uniform(len(pool), n)], {}


def sel_random(ctx: Context, pool: np.ndarray, n: int, r: int) -> tuple[np.ndarray, dict]:
    import baselines

    return pool[baselines.pick_random(len(pool), n, seed=1000 * r + n)], {}


def sel_consecutive(ctx: Context, pool: np.ndarray, n: int, r: int) -> tuple[np.ndarray, dict]:
    """The control: the pool's first n faces in time (the pool is in time order), n consecutive frames of one
    moment. A selection that cannot beat this is not measured by the experiment at all."""
    return pool[:n], {"control": "the pool's first N faces in time"}


SELECT = {"curator": sel_curator, "curator-for": sel_curator_for, "dfl-sort-best": sel_dfl,
          "faceswap-sort": sel_faceswap, "fiftyone-unique": sel_fiftyone, "uniform": sel_uniform,
          "random": sel_random, "consecutive": sel_consecutive}


# --- prepare -------------------------------------------------------------------------------------

def prepare(args, work: Path) -> dict:
    """Workspaces, evaluation faces, every repeat's pool and sets (face ids, leak distances) and their exports."""
    fspecs, tspecs = [parse_spec(x) for x in args.footage], [parse_spec(x) for x in args.target]
    footage, target = list(dict.fromkeys(p for p, _, _ in fspecs)), list(dict.fromkeys(p for p, _, _ in tspecs))
    bfiles = resolve(args.b)
    refs = resolve(args.ref) if args.ref else []
    ws_a = extract(work / "ws_a", footage, refs, args)
    same = set(footage) & set(target)
    ws_t = ws_a if set(target) <= set(footage) else extract(work / "ws_target", target, refs, args)
    b = build_b(work, bfiles, args)
    table, emb = faces_of(ws_a)
    single_person(table, "--footage", bool(refs))
    ttable, _ = (table, emb) if ws_t == ws_a else faces_of(ws_t)
    if ws_t != ws_a:
        single_person(ttable, "--target", bool(refs))

    # Evaluation faces: the person's faces in the target windows, evenly in time, at most --eval-faces.
    tsel = np.flatnonzero(ttable["is_target"].fillna(False).to_numpy(bool) & in_specs(ttable, tspecs))
    tsel = time_order(ttable, tsel, target)
    if len(tsel) > args.eval_faces:
        tsel = tsel[np.floor((np.arange(args.eval_faces) + 0.5) * len(tsel) / args.eval_faces).astype(int)]
    if not len(tsel):
        sys.exit("bench/thesis.py: no faces of the person in --target")
    ev_src, ev_t = ttable["source_sha256"].to_numpy()[tsel], ttable["time_s"].to_numpy(float)[tsel]
    evaluation = export_rows(ws_t, ttable, tsel, work / "evaluation")

    # Candidates: the person's faces in the footage windows, none within MIN_GAP_S of an evaluation face.
    cand = np.flatnonzero(table["is_target"].fillna(False).to_numpy(bool) & in_specs(table, fspecs))
    d = nearest_training_s(table["source_sha256"].to_numpy()[cand], table["time_s"].to_numpy(float)[cand], ev_src, ev_t)
    cand = time_order(table, cand[d >= MIN_GAP_S], footage)
    if not len(cand):
        sys.exit(f"bench/thesis.py: no face of --footage is {MIN_GAP_S:g} s or more from the evaluation faces")
    log(f"{len(cand)} candidate faces in --footage, {len(tsel)} evaluation faces in --target"
        + (f" ({len(same)} files in both: faces within {MIN_GAP_S:g} s of an evaluation face left out)" if same else ""))
    # curate --for gets the evaluation footage as files: a target window is cut into a file of its own.
    (work / "target_cuts").mkdir(exist_ok=True)
    for_target = [p if (lo, hi) == (0.0, math.inf) else
                  str(cut(p, lo, hi, work / "target_cuts" / f"{Path(p).stem}_{lo:g}-{hi:g}.mp4"))
                  for p, lo, hi in tspecs]

    target_faces = ttable[ttable["is_target"].fillna(False).to_numpy(bool) & in_specs(ttable, tspecs)].reset_index(drop=True)
    ctx = Context(args, work, ws_a, table, emb, for_target, target_faces)
    ctx.features = crop_features(ws_a, table, cand, work / "features.parquet")
    sets_dir = work / "sets"
    sets_dir.mkdir(exist_ok=True)
    windows_json = lambda specs: [[p, lo, None if hi == math.inf else hi] for p, lo, hi in specs]  # noqa: E731
    info = {"footage": windows_json(fspecs), "target": windows_json(tspecs), "for_target": for_target,
            "b": bfiles, "refs": refs, "extract_fps": args.extract_fps,
            "crop_size": CROP_SIZE, "min_gap_s": MIN_GAP_S, "candidates": int(len(cand)),
            "evaluation": {"faces": int(len(tsel)), "face_id": ttable["face_id"].to_numpy()[tsel].tolist(),
                           "source": ttable["source_path"].to_numpy()[tsel].tolist(),
                           "time_s": np.round(ev_t, 3).tolist(),
                           "yaw": np.round(ttable["yaw"].to_numpy(float)[tsel], 2).tolist(),
                           "pitch": np.round(ttable["pitch"].to_numpy(float)[tsel], 2).tolist()},
            # relative to the work folder, so a prepared folder can travel (to a GPU machine, bench/gpu_run.sh)
            "paths": {k: str(Path(v).relative_to(work)) for k, v in
                      {"ws_a": ws_a, "ws_target": ws_t, "evaluation": evaluation, "b": b, "sets": sets_dir}.items()},
            "repeats": {}}
    try:
        for r, (lo, hi) in enumerate(windows(len(cand), args.repeats, args.pool_fraction)):
            info["repeats"][r] = prepare_repeat(ctx, r, cand[lo:hi], (lo, hi), ev_src, ev_t, sets_dir, args)
    finally:
        ctx.close()
    (work / "prepared.json").write_text(json.dumps(info, default=_json_default))
    return load_prepared(work)


def load_prepared(work: Path) -> dict:
    """prepared.json with its paths made absolute under `work`."""
    info = json.loads((work / "prepared.json").read_text())
    info["paths"] = {k: str(work / v) for k, v in info["paths"].items()}
    return info


def prepare_repeat(ctx: Context, r: int, pool: np.ndarray, window: tuple[int, int], ev_src, ev_t, sets_dir: Path,
                   args) -> dict:
    """One repeat's pool, every method's set at every budget (or why not), the leak check, the exports."""
    from curator.measure import metrics

    path = sets_dir / f"r{r}.json"
    key = {"window": list(window), "version": VERSION}
    old = json.loads(path.read_text()) if path.is_file() else {}
    if old.get("key") != key:
        old = {}
    t = ctx.table
    ids = t["face_id"].to_numpy()
    src, tim = t["source_sha256"].to_numpy(), t["time_s"].to_numpy(float)
    val = pool[9::10]  # the whole pool's validation tenth (convergence only)
    train_all = np.setdiff1d(pool, val)
    rec = {"key": key, "window": list(window), "pool": ids[pool].tolist(),
           "time_span_s": [float(tim[pool].min()), float(tim[pool].max())], "sets": dict(old.get("sets", {}))}

    def add(name: str, rows: np.ndarray, extra: dict) -> None:
        rows = np.sort(np.asarray(rows, int))
        assert np.isin(rows, pool).all(), f"{name}: a face outside the pool"
        dist = nearest_training_s(ev_src, ev_t, src[rows], tim[rows])
        leak_check(f"repeat {r} {name}", dist)
        rec["sets"][name] = {"faces": int(len(rows)), "face_id": ids[rows].tolist(), **extra,
                             "eval_nearest_training_s": [None if not np.isfinite(x) else round(float(x), 2) for x in dist],
                             "min_eval_distance_s": None if not np.isfinite(dist.min()) else round(float(dist.min()), 2)}
        export_rows(ctx.ws, t, rows, sets_dir / f"r{r}" / name)

    if REFERENCE not in rec["sets"]:
        add(REFERENCE, train_all, {"validation_face_id": ids[val].tolist()})
        export_rows(ctx.ws, t, np.sort(val), sets_dir / f"r{r}" / f"{REFERENCE}_val")
    for n in args.budgets:
        for m in args.methods:
            name = f"n{n}_{m}"
            if name in rec["sets"] and "not_available" not in rec["sets"][name]:
                continue  # made by an earlier prepare (a set not available then is tried again)
            try:
                rows, extra = SELECT[m](ctx, pool, n, r)
            except NotAvailable as e:
                rec["sets"][name] = {"not_available": str(e)}
                log(f"repeat {r} N={n} {m}: {e}")
                continue
            if len(rows) != n:
                extra = {**extra, "short": f"{len(rows)} faces, not {n}"}
            add(name, rows, extra)
            log(f"repeat {r} N={n} {m}: {len(rows)} faces")
    for s in rec["sets"].values():  # what each set holds, in curate's 10-degree pose bins (kept with the ids)
        if "face_id" in s and "pose_bins" not in s:
            s["pose_bins"] = pd.Series(metrics.pose_labels(t.set_index("face_id").loc[s["face_id"]])).value_counts().to_dict()
    path.write_text(json.dumps(rec, default=_json_default))
    return rec


def build_b(work: Path, files: list[str], args) -> Path:
    """Side B: one `curator run` export of the --b files (largest identity), made once."""
    out = work / "b"
    stamp = work / "b.json"
    want = {"files": files, "models": str(args.models)}
    if (out / "manifest.parquet").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == want:
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / "b.workspace", ignore_errors=True)
    log(f"side B from {len(files)} files ...")
    _cli(["run", *files, "--out", str(out), "-w", str(work / "b.workspace"), "--budget", "2000", "--size", str(CROP_SIZE),
          "--fps", "10", "-q", "--models", str(args.models)])
    stamp.write_text(json.dumps(want))
    return out


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# --- run: train and evaluate, one JSON per run ---------------------------------------------------

def training_config(args) -> dict:
    return {"size": args.size, "width": args.width, "latent": args.latent, "batch": args.batch, "lr": args.lr,
            "steps": args.steps, "pool_chunks": args.pool_chunks, "device": args.device}


def run_keys(info: dict, args) -> list[tuple[str, int, str]]:
    """(key, repeat, set name) of every run: the first budget in every repeat, then the next budget, then the
    whole pool; so a partial experiment already has paired repeats at one budget."""
    order = [(r, f"n{n}_{m}") for n in args.budgets for r in range(args.repeats) for m in args.methods]
    order += [(r, REFERENCE) for r in range(args.repeats)]
    keys = []
    for r, name in order:
        rec = info["repeats"].get(r) or info["repeats"].get(str(r))
        if rec is None:
            sys.exit(f"bench/thesis.py: repeat {r} is not prepared; run --stage prepare with --repeats {args.repeats}")
        s = rec["sets"].get(name)
        if s is None:
            sys.exit(f"bench/thesis.py: repeat {r} has no set {name}; run --stage prepare with these --budgets")
        if "not_available" not in s:
            keys.append((f"r{r}_{name}", r, name))
    return keys


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def train(args, a: Path, b: str, run: Path, steps: int, seed: int, resume: bool) -> tuple[float, float]:
    """Train (or go on training) one run; (wall seconds, CPU seconds of the trainer)."""
    cmd = [sys.executable, "-m", "trainer", "--a", str(a), "--b", b, "--out", str(run), "--resolution", str(args.size),
           "--width", str(args.width), "--latent", str(args.latent), "--batch", str(args.batch), "--lr", str(args.lr),
           "--steps", str(steps), "--seed", str(seed), "--device", args.device, "--save-every", str(steps),
           "--preview-every", str(steps), "--quiet", *(["--resume"] if resume else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"training {run.name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, _children_cpu() - c0


def validation_l1(run: Path, faces: Path, device: str) -> float:
    """Mean masked L1 of the run's A -> A reconstruction of an export's faces (the convergence check)."""
    from curator.reports.evaluate import load_faces, masked_errors, read_crops
    from curator.swap.swapper import load_run, swap_faces
    from trainer.data import face_mask

    model = load_run(run, device)
    fs = load_faces(faces)
    res = int(model.config["resolution"])
    crops = read_crops(fs.files, fs.size, res)
    rgb = [np.ascontiguousarray(c[:, :, ::-1]) for c in crops]
    recon, _ = swap_faces(model, rgb, "a")
    l1, _ = masked_errors(np.stack(rgb).astype(np.float32) / 255.0, recon, face_mask(res, fs.margin))
    return float(np.mean(l1))


def do_run(args, info: dict, key: str, r: int, name: str, runs: Path) -> dict:
    """Train one set, evaluate it, write runs/KEY.json (written last, under a temporary name, then renamed)."""
    from curator.reports.evaluate import evaluate, load_faces

    sets = Path(info["paths"]["sets"]) / f"r{r}"
    run = runs / key
    shutil.rmtree(run, ignore_errors=True)
    best_run = runs / f"{key}.best"  # the whole pool's best chunk so far, the model it is evaluated with
    shutil.rmtree(best_run, ignore_errors=True)
    seconds, cpu, curve = 0.0, 0.0, []
    if name == REFERENCE:  # the whole pool: chunks of --steps until the validation L1 stops falling
        best = math.inf
        for k in range(1, args.pool_chunks + 1):
            wall, c = train(args, sets / name, info["paths"]["b"], run, k * args.steps, r, resume=k > 1)
            seconds, cpu = seconds + wall, cpu + c
            v = validation_l1(run, sets / f"{REFERENCE}_val", args.device)
            curve.append({"steps": k * args.steps, "validation_l1": round(v, 5)})
            log(f"  {key}: {k * args.steps} steps, validation L1 {v:.4f}")
            if v < best:  # keep this chunk's model: a later chunk may be worse (one diverged in its last chunk)
                shutil.rmtree(best_run, ignore_errors=True)
                shutil.copytree(run, best_run)
            if v > best * (1 - PLATEAU):
                break
            best = min(best, v)
        converged = len(curve) < args.pool_chunks or (len(curve) > 1 and
                                                      curve[-1]["validation_l1"] > min(c["validation_l1"] for c in curve[:-1]) * (1 - PLATEAU))
        # the chunk with the lowest validation L1, not the last one trained (the last if none was finite)
        evaluated = best_run if best_run.is_dir() else run
    else:
        seconds, cpu = train(args, sets / name, info["paths"]["b"], run, args.steps, r, resume=False)
        converged = None
        evaluated = run
    t0, c0 = time.perf_counter(), time.process_time()
    s = evaluate(evaluated, info["paths"]["evaluation"], side="a", out=evaluated / "evaluate.html",
                 models=str(args.models), device=args.device)
    per_face = s["_per_face"]
    face_ids = load_faces(info["paths"]["evaluation"]).table["face_id"].tolist()
    last = json.loads((evaluated / "loss.jsonl").read_text().splitlines()[-1])
    rec = {"key": key, "repeat": r, "set": name, "seed": r, "config": training_config(args),
           "steps": last["step"], "steps_trained": curve[-1]["steps"] if curve else last["step"],
           "train_s": round(seconds, 1), "evaluate_s": round(time.perf_counter() - t0, 1),
           "train_cpu_s": round(cpu, 1), "evaluate_cpu_s": round(time.process_time() - c0, 1),
           "loadavg": common.loadavg(),
           "loss": last["loss"], "loss_a": last["loss_a"], "convergence": curve or None, "converged": converged,
           "run_id": s["run_id"], "machine": common.machine_info(), "git": common.git_rev(),
           "per_face": {"face_id": face_ids,
                        **{k: [None if not np.isfinite(v) else round(float(v), 5) for v in per_face[k].to_numpy(float)]
                           for k in PER_FACE if k in per_face}}}
    tmp = runs / f".{key}.json.tmp"
    tmp.write_text(json.dumps(rec, default=_json_default))
    os.replace(tmp, runs / f"{key}.json")
    if not args.keep_models:
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(best_run, ignore_errors=True)
    return rec


def claim(runs: Path, key: str) -> bool:
    """Take the run for this process (a lock file holding its pid); False if a live process holds it."""
    lock = runs / f".{key}.lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(lock.read_text())
            if pid <= 0:
                raise ValueError(pid)
            os.kill(pid, 0)
            return False  # its holder is alive
        except (ValueError, ProcessLookupError, FileNotFoundError):
            lock.unlink(missing_ok=True)  # left by a process that died
            return claim(runs, key)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def runs_config(runs: Path, cfg: dict) -> dict:
    """The runs folder's configuration (`config.json`) with `cfg` ({training, budgets, methods}) joined to it:
    methods may be added to a folder (each run stands alone), its training and budgets may not change (exits)."""
    runs.mkdir(parents=True, exist_ok=True)
    cfg_path = runs / "config.json"
    old = json.loads(cfg_path.read_text()) if cfg_path.is_file() else None
    if old is not None and {k: old[k] for k in ("training", "budgets")} != {k: cfg[k] for k in ("training", "budgets")}:
        sys.exit(f"bench/thesis.py: {runs} holds runs of another configuration ({cfg_path}); give another --runs")
    if old is not None:
        cfg = {**cfg, "methods": old["methods"] + [m for m in cfg["methods"] if m not in old["methods"]]}
    if old != cfg:  # written whole (another process may be reading it)
        tmp = runs / f".config.json.{os.getpid()}"
        tmp.write_text(json.dumps(cfg))
        os.replace(tmp, cfg_path)
    return cfg


def run_all(args, info: dict, runs: Path) -> None:
    runs_config(runs, {"training": training_config(args), "budgets": args.budgets, "methods": list(args.methods)})
    todo = [k for k in run_keys(info, args) if not (runs / f"{k[0]}.json").is_file()
            and (not args.only_repeats or k[1] in args.only_repeats)]
    log(f"{len(todo)} runs to do in {runs}")
    for i, (key, r, name) in enumerate(todo[: args.max_runs or None]):
        if (runs / f"{key}.json").is_file() or not claim(runs, key):
            continue  # finished or being run by another process on the same runs folder
        t0 = time.perf_counter()
        try:
            rec = do_run(args, info, key, r, name, runs)
        finally:
            (runs / f".{key}.lock").unlink(missing_ok=True)
        log(f"run {i + 1}/{len(todo)} {key}: train {rec['train_s']:.0f} s, evaluate {rec['evaluate_s']:.0f} s, "
            f"total {time.perf_counter() - t0:.0f} s")


# --- report ------------------------------------------------------------------------------------

def report(args, info: dict, runs: Path) -> dict:
    """Every figure recomputed from the runs' JSON files."""
    from curator.measure import metrics

    ev = info["evaluation"]
    groups = bin_groups(metrics.pose_labels(pd.DataFrame({"yaw": ev["yaw"], "pitch": ev["pitch"]})))
    order = {f: i for i, f in enumerate(ev["face_id"])}
    recs = [json.loads(p.read_text()) for p in sorted(runs.glob("r*.json"))]
    figs = {}  # (set name, repeat) -> figures
    for rec in recs:
        pf = rec["per_face"]
        l1 = np.full(len(order), np.nan)
        for f, v in zip(pf["face_id"], pf["l1"]):
            l1[order[f]] = np.nan if v is None else v
        figs[(rec["set"], rec["repeat"])] = {**run_figures(l1, groups),
                                             **{k: _nanmean(pf.get(k)) for k in PER_FACE if k != "l1"}}
    repeats = sorted({r for _, r in figs})
    table = {}
    for n in args.budgets:
        rows = {}
        for m in (*args.methods, REFERENCE):
            name = REFERENCE if m == REFERENCE else f"n{n}_{m}"
            have = [r for r in repeats if (name, r) in figs]
            na = [info["repeats"].get(str(r), info["repeats"].get(r, {})).get("sets", {}).get(name, {}).get("not_available")
                  for r in range(args.repeats)]
            row = {"repeats": have}
            if any(na):
                row["not_available"] = next(x for x in na if x)
            for fig in (*FIGURES, "ssim", "identity", "pose_error_deg"):
                vals = [figs[(name, r)][fig] for r in have]
                known = [v for v in vals if v is not None]  # a figure evaluate could not measure is None
                row[fig] = {"mean": _r(np.mean(known)) if known else None,
                            "per_repeat": [None if v is None else _r(v) for v in vals]}
                if m != "curator" and fig in FIGURES:
                    pairs = [r for r in have if (f"n{n}_curator", r) in figs]
                    d = paired_ci([figs[(name, r)][fig] - figs[(f"n{n}_curator", r)][fig] for r in pairs])
                    row[fig]["minus_curator"] = {k: _r(v) if isinstance(v, float) else v for k, v in d.items()}
            rows[m] = row
        table[f"N={n}"] = rows
    counts = pd.Series(groups).value_counts().to_dict()
    out = {
        "protocol": __doc__.split("The protocol")[1].split("FiftyOne needs")[0].strip(),
        "status": {"runs_done": len(recs), "runs_planned": len(run_keys(info, args)), "repeats_with_runs": repeats},
        "configuration": {"training": recs[0]["config"] if recs else training_config(args), "budgets": args.budgets,
                          "repeats": args.repeats, "methods": list(args.methods), "min_gap_s": MIN_GAP_S,
                          "min_bin_faces": MIN_BIN_FACES},
        "machine": recs[-1]["machine"] if recs else common.machine_info(), "git": common.git_rev(),
        "footage": {k: _finite(info[k]) for k in ("footage", "target", "for_target", "b", "refs", "extract_fps", "crop_size",
                                              "candidates")},
        "evaluation": {**ev, "pose_groups": counts},
        "sets": info["repeats"],
        "runs": {rec["key"]: {k: rec.get(k) for k in ("repeat", "set", "seed", "steps", "steps_trained", "train_s", "evaluate_s",
                                                      "train_cpu_s", "evaluate_cpu_s", "loadavg", "loss_a",
                                                      "convergence", "converged", "run_id", "git")}
                 | {"figures": {k: _r(v) for k, v in figs[(rec["set"], rec["repeat"])].items()}} for rec in recs},
        "table": table,
    }
    return out


def _finite(v):
    """JSON without Infinity: an open end of a time window is null."""
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _nanmean(v) -> float | None:
    a = np.array([np.nan if x is None else x for x in (v or [])], float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else None


def _r(v, d: int = 5):
    return None if v is None or not np.isfinite(v) else round(float(v), d)


def render_markdown(res: dict) -> str:
    st, cfg = res["status"], res["configuration"]
    tr = cfg["training"]
    lines = [f"{st['runs_done']} of {st['runs_planned']} runs; repeats with runs: {st['repeats_with_runs']}; "
             f"{tr['size']} px, width {tr['width']}, latent {tr['latent']}, batch {tr['batch']}, lr {tr['lr']}, "
             f"{tr['steps']} steps ({tr['device']}); {res['evaluation']['faces']} evaluation faces; "
             f"{res['machine'].get('cpu_model')}, {res['machine'].get('date')}.", ""]
    for budget, rows in res["table"].items():
        lines += [f"**{budget}**: masked L1 (lower is better), mean over repeats; for each baseline its paired "
                  "difference to curator (baseline - curator: positive = curator better), 95% interval [lo, hi], "
                  "repeats where curator was better.", "",
                  "| method | repeats | face-weighted | - curator | mean over pose bins | - curator | worst decile | - curator |",
                  "|---|---|---|---|---|---|---|---|"]
        for m, row in rows.items():
            if row.get("not_available") and not row["repeats"]:
                lines.append(f"| {m} | – | {row['not_available']} | | | | | |")
                continue
            cells = []
            for fig in FIGURES:
                f = row[fig]
                cells.append("–" if f["mean"] is None else f"{f['mean']:.4f}")
                d = f.get("minus_curator")
                if m == "curator" or not d or d["mean"] is None:
                    cells.append("")
                elif d["lo"] is None:
                    cells.append(f"{d['mean']:+.4f} (n=1)")
                else:
                    cells.append(f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] {d['wins']}/{d['n']}")
            lines.append(f"| {m} | {len(row['repeats'])} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("all", "prepare", "run", "report"), default="all")
    ap.add_argument("--footage", nargs="+", default=DEFAULT_FOOTAGE,
                    help="side A's footage: FILE or FILE@FROM-TO seconds (shared clip names work)")
    ap.add_argument("--ref", nargs="*", default=[], help="reference photo(s) of side A's person")
    ap.add_argument("--target", nargs="+", default=DEFAULT_TARGET,
                    help="the evaluation footage and the --for target: other files of the same person, or "
                         "FILE@FROM-TO windows of the footage (training faces are kept 10 s away)")
    ap.add_argument("--b", nargs="+", default=DEFAULT_B, help="side B's footage")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budgets", type=lambda v: [int(x) for x in v.split(",")], default=[20, 50])
    ap.add_argument("--methods", type=lambda v: v.split(","), default=list(METHODS))
    ap.add_argument("--steps", type=int, default=None, help="training steps per run [default: 2000]")
    ap.add_argument("--size", type=int, choices=(64, 128), default=64, help="training resolution")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--width", type=int, default=None, help="network width [16 at 64 px, 32 at 128]")
    ap.add_argument("--latent", type=int, default=None, help="bottleneck [256 at 64 px, 512 at 128]")
    ap.add_argument("--batch", type=int, default=None, help="faces per side per step [8 at 64 px, 16 at 128]")
    ap.add_argument("--lr", type=float, default=None, help="learning rate [1e-3 at 64 px, 5e-4 at 128]")
    ap.add_argument("--threads", type=int, default=None, help="OMP threads per training run [1 on cpu]")
    ap.add_argument("--pool-chunks", type=int, default=6, help="the whole pool: at most this many chunks of --steps")
    ap.add_argument("--pool-fraction", type=float, default=0.6, help="share of the candidate faces in each repeat's pool")
    ap.add_argument("--eval-faces", type=int, default=100, help="at most this many evaluation faces, evenly in time")
    ap.add_argument("--extract-fps", type=float, default=None, help="frames per second analysed [default: every frame]")
    ap.add_argument("--models", default=str(common.PACK_SMALL), help="InsightFace model pack")
    ap.add_argument("--work", type=Path, default=None, help="work folder [CACHE/thesis-v2]")
    ap.add_argument("--runs", type=Path, default=None, help="per-run results folder [WORK/runs-SIZEpx-STEPS]")
    ap.add_argument("--max-runs", type=int, default=0, help="stop after this many runs (0: all)")
    ap.add_argument("--only-repeats", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="run only these repeats (processes sharing a runs folder never take the same run: lock files)")
    ap.add_argument("--keep-models", action="store_true", help="keep each run's model folder")
    ap.add_argument("--out", type=Path, default=None, help="results JSON [bench/results/thesis.json]")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    ap.add_argument("--smoke", action="store_true",
                    help="1 repeat, budgets 10,20, 30 steps, 2 pool chunks, 40 evaluation faces, own work folder")
    args = ap.parse_args(argv)
    big = args.size == 128
    for k, (at128, at64) in {"steps": (2000, 2000), "width": (32, 16), "latent": (512, 256), "batch": (16, 8),
                             "lr": (5e-4, 1e-3)}.items():
        if getattr(args, k) is None:
            setattr(args, k, at128 if big else at64)
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    if args.smoke:
        args.repeats, args.budgets, args.steps, args.pool_chunks, args.eval_faces = 1, [10, 20], 30, 2, 40
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        sys.exit(f"bench/thesis.py: unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    if "curator" not in args.methods:
        sys.exit("bench/thesis.py: --methods must include curator (every difference is paired with it)")
    work = (args.work or common.default_cache() / ("thesis-v2-smoke" if args.smoke else "thesis-v2")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    runs = args.runs or work / f"runs-{args.size}px-{args.steps}"
    if args.stage in ("all", "prepare"):
        info = prepare(args, work)
    else:
        if not (work / "prepared.json").is_file():
            sys.exit(f"bench/thesis.py: nothing prepared in {work}; run --stage prepare first")
        info = load_prepared(work)
    if args.stage in ("all", "run"):
        run_all(args, info, runs)
    if args.stage in ("all", "report"):
        res = report(args, info, runs)
        out = args.out or REPO / "bench" / "results" / ("thesis_gpu.json" if args.device.startswith("cuda") else "thesis.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=1, default=_json_default))
        os.replace(tmp, out)
        text = render_markdown(res)
        if args.markdown:
            args.markdown.write_text(text)
        print(text)
        log(f"results: {out}")


if __name__ == "__main__":
    main()
