"""Does curation make better models? The same trainer on training sets chosen four ways, judged by `curator evaluate`.

    python bench/thesis.py                                   # CPU, 64 px (about 45 min on 2 quiet cores)
    python bench/thesis.py --resolution 128 --device cuda    # the same question at 128 px on a GPU
    python bench/thesis.py --stage prepare                   # only footage, faces, sets (CPU; see below)

1. Footage: one man's two interviews (pc_avs Audio_Source_00104 and
   Pose_Source_741400163, the man of curate's scenario B, one with red
   sunglasses), played LOOPS times like re-broadcast footage, each loop
   starting LOOP_SHIFT_S later in the clips than the one before, so a loop
   holds near copies of the last one's frames rather than the same frames
   (bench/common.build_footage, 640x360, 25 fps). `curator extract` at
   --fps 4, 128 px crops; every face is his (one face per frame, checked).
2. Evaluation set: moments of the clips, chosen so that every 10° pose
   bin of the footage has one (rarest bins first, the best-quality face of
   the bin), plus a second moment in bins with many faces; the evaluation
   faces are the faces within EVAL_WIN_S of a moment's clip time in any loop.
   Held out of EVERY training set: each face within HOLD_S of a moment's
   clip time, in every loop (the frames' copies, and their neighbours in
   time, which are near-duplicates). The rest is the training pool.
3. Training sets from the pool, all of N faces but the last: `uniform`
   (every Nth face in time, bench/curate.pick_uniform), `dfl_best`
   (DeepFaceLab's sort_best, bench/curate.pick_dfl_best), `fo_unique`
   (FiftyOne Brain find_unique on the identity embeddings, bench/curate.
   FiftyOneBaselines), `curator` (curator.curate.curate with the pool as
   the target) and `all` (the whole pool). Each is a real `curator export`
   of the workspace.
4. The same trainer (python -m trainer), steps, network and seeds for each;
   identity B is one fixed export of another man (liveportrait/driving_d12).
5. `curator evaluate` of every run on the evaluation set (side A). Reported
   per pose bin, as the mean over bins (every pose counts the same) and over
   the rarest third of the footage's pose bins, each as mean and spread
   (standard deviation) over the seeds.

Stages reuse what an earlier run left in --work (default: the bench cache),
so an interrupted run goes on where it stopped. `--stage prepare` stops
after the training sets; `--stage train` needs them and no face detector
beyond evaluate's (the GPU machine: docs/benchmarks.md says what it needs).
Results: bench/results/thesis.json (or --out), tables with --markdown.
FiftyOne needs MongoDB: `eval "$(../shared/ci/mongod.sh start)"` first.
"""

from __future__ import annotations

import argparse
import hashlib
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
CLIPS = ["pc_avs/Audio_Source_00104.mp4", "pc_avs/Pose_Source_741400163.mp4"]
B_CLIP = "liveportrait/driving_d12.mp4"
LOOPS = 4
LOOP_SHIFT_S = 0.16  # 4 frames at 25 fps
SPEC = common.FootageSpec(width=640, height=360, fps=25, crf=23, preset="veryfast")
EXTRACT_FPS = 4
CROP_SIZE = 128  # the workspace's crops; the trainer resizes them to --resolution, as it does for users
EVAL_WIN_S = 0.3  # faces this close (clip time) to a moment, in any loop, are evaluation faces
# Faces this close to a moment are in no training set: the moment's copies in other loops and its neighbours in
# time. Every training face is then at least 0.5 s from every evaluation face; at 0.5 s, 10-15% of a track's faces
# are still the same picture to the recogniser (curator/curate.py, MIN_GAP_S), at 2 s 0.4%.
HOLD_S = 0.8
METHODS = ("uniform", "dfl_best", "fo_unique", "curator", "all")
HEADLINE = ("l1", "ssim", "identity", "swap_identity", "pose_error_deg")
SETS_VERSION = 1  # bump when what the prepare stage makes changes


def log(msg: str) -> None:
    print(f"[bench thesis {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- 1. footage and faces ---------------------------------------------------------------

def footage_plan() -> list[dict]:
    return [{"clip": c, "start_s": round(loop * LOOP_SHIFT_S, 3), "end_s": None, "loop": loop}
            for loop in range(LOOPS) for c in CLIPS]


def label_faces(table: pd.DataFrame, segments: list[dict]) -> pd.DataFrame:
    """Clip, loop and clip time (s) of each face, from the footage frame it was found in."""
    starts = np.array([s["start_frame"] for s in segments])
    frame = table["frame"].to_numpy()
    k = np.searchsorted(starts, frame, side="right") - 1
    seg = [segments[i] for i in k]
    return pd.DataFrame({"clip": [s["clip"] for s in seg], "loop": [s["loop"] for s in seg],
                         "clip_time_s": [s["start_s"] + (f - s["start_frame"]) / SPEC.fps for s, f in zip(seg, frame)]},
                        index=table.index)


def extract_faces(work: Path, footage: dict) -> Path:
    ws = work / "ws"
    stamp = ws / "bench_footage.txt"
    if stamp.is_file() and stamp.read_text() == footage["path"]:
        log(f"reusing the extracted workspace {ws}")
        return ws
    shutil.rmtree(ws, ignore_errors=True)
    log(f"extract {footage['frames']} frames at --fps {EXTRACT_FPS} ...")
    _cli(["extract", footage["path"], "-w", str(ws), "--models", str(common.PACK_SMALL), "--fps", str(EXTRACT_FPS),
          "--size", str(CROP_SIZE), "--json", "-q"])
    _cli(["identify", "-w", str(ws), "--json"])  # tracks (for curate's same-track rule)
    stamp.write_text(footage["path"])
    return ws


def _cli(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "curator", *args], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"curator {args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout) if "--json" in args else {}


# --- 2. evaluation set and training pool ----------------------------------------------------------

def choose_evaluation(table: pd.DataFrame, labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(evaluation faces, training pool, moments): masks over the table, and the chosen moments.

    Every pose bin gets a moment, rarest bin first (a bin already holding an
    evaluation face is done). Of the bin's faces, the moment is the one whose
    hold-out (everything within HOLD_S of its clip time, in every loop)
    leaves the most pose bins with faces in the pool, then the most of its
    own bin's faces, then the best face. So a pose seen at several moments
    can be both learnt and tested; a pose seen at one moment only is tested
    all the same, and no training set can have it.
    """
    from curator.measure import metrics
    from curator.curate import quality_score

    bins = metrics.pose_labels(table)
    counts = pd.Series(bins).value_counts()
    quality = quality_score(table)
    clip, t = labels["clip"].to_numpy(), labels["clip_time_s"].to_numpy()
    moments: list[dict] = []
    held = np.zeros(len(table), bool)
    evaluation = np.zeros(len(table), bool)

    def near(i, within):
        return (clip == clip[i]) & (np.abs(t - t[i]) < within)

    def after(i):  # (pose bins still in the pool, faces of i's bin still in the pool) if i's moment is held out
        pool = ~(held | near(i, HOLD_S))
        return len(set(bins[pool])), int((pool & (bins == bins[i])).sum())

    for b in counts.index[::-1]:  # rarest first
        if b == "unknown" or (evaluation & (bins == b)).any():
            continue
        members = np.flatnonzero(bins == b)
        score = np.array([after(i) for i in members])
        i = members[np.lexsort((-quality[members], -score[:, 1], -score[:, 0]))[0]]
        evaluation |= near(i, EVAL_WIN_S)
        held |= near(i, HOLD_S)
        moments.append({"clip": clip[i], "clip_time_s": round(float(t[i]), 3), "bin": b,
                        "face_id": table["face_id"].iloc[i]})
    return evaluation, ~held, moments


# --- 3. training sets -----------------------------------------------------------------------

def select_sets(ws: Path, table: pd.DataFrame, emb: np.ndarray, pool: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Row indices of each method's training set, all chosen from `pool`."""
    import curate as baselines

    from curator import curate as curate_mod

    rows = np.flatnonzero(pool)
    time_order = rows[np.lexsort((table["face_index"].to_numpy()[rows], table["frame"].to_numpy()[rows]))]
    yaw, pitch = table["yaw"].to_numpy(float), table["pitch"].to_numpy(float)
    sharp = table["sharpness"].to_numpy(float)
    hist = baselines.grey_histograms(ws, list(table["crop_path"]))
    sets = {"uniform": baselines.pick_uniform(time_order, n),
            "dfl_best": rows[baselines.pick_dfl_best(yaw[rows], pitch[rows], sharp[rows], hist[rows], n)[0]]}
    fob = baselines.FiftyOneBaselines(ws, table, emb, f"thesis-bench-{os.getpid()}")
    try:
        sets["fo_unique"] = fob.find_unique(rows, [n], "thesis_sim")[n]
    finally:
        fob.close()
    t2 = table.copy()
    t2["is_target"] = pool
    sets["curator"] = np.flatnonzero(curate_mod.curate(t2, n, emb=emb).columns["selected"].to_numpy(bool))
    sets["all"] = rows
    return {k: np.sort(np.asarray(v, int)) for k, v in sets.items()}


def export_rows(ws: Path, table: pd.DataFrame, rows: np.ndarray, out: Path) -> Path:
    """A real `curator export` (folder format, no validation split) of exactly these rows of the workspace."""
    from curator.export.folder import export
    from curator.workspace import locked, open_workspace, update_columns

    w = open_workspace(ws)
    selected = np.zeros(len(table), bool)
    selected[rows] = True
    with locked(w, "bench/thesis.py"):
        update_columns(w, pd.DataFrame({"face_id": table["face_id"], "selected": selected}))
        export(w, out, val_fraction=0.0, force=True)
    return out


def prepare(args, work: Path) -> dict:
    from curator.measure import metrics
    from curator.workspace import open_workspace, read_embeddings, read_table

    common.require_testdata()
    footage = common.build_footage("thesis_footage", footage_plan(), SPEC, args.cache, log=log)
    ws = extract_faces(work, footage)
    w = open_workspace(ws)
    table = read_table(w)
    emb = np.asarray(read_embeddings(w, len(table)), np.float32)
    if table.groupby("frame").size().max() > 1:
        raise RuntimeError("a footage frame holds two faces; this footage should show one man alone")
    labels = label_faces(table, footage["segments"])
    evaluation, pool, moments = choose_evaluation(table, labels)
    n = args.budget
    sets = select_sets(ws, table, emb, pool, n)
    sets_dir = work / f"sets_v{SETS_VERSION}_n{n}"
    for name, rows in {**sets, "evaluation": np.flatnonzero(evaluation)}.items():
        export_rows(ws, table, rows, sets_dir / name)
    b = common.cached_export(work, "thesis", "B_driving_d12", B_CLIP, log)
    pack = work / "pack"
    if not pack.is_dir():
        shutil.copytree(common.PACK_SMALL, pack)
    if args.carry_insightface:  # a GPU machine without insightface reads it from WORK/site (PYTHONPATH)
        import insightface

        site = work / "site" / "insightface"
        shutil.rmtree(site, ignore_errors=True)
        shutil.copytree(Path(insightface.__file__).parent, site, ignore=shutil.ignore_patterns("__pycache__"))
    bins = metrics.pose_labels(table)
    info = {
        "footage": {k: footage[k] for k in ("path", "frames", "seconds")} | {"loops": LOOPS, "clips": CLIPS,
                                                                         "loop_shift_s": LOOP_SHIFT_S},
        "faces": int(len(table)), "extract_fps": EXTRACT_FPS, "crop_size": CROP_SIZE,
        "moments": moments, "evaluation_faces": int(evaluation.sum()), "pool_faces": int(pool.sum()),
        "held_out_faces": int((~pool).sum()), "budget": n,
        "footage_bins": pd.Series(bins).value_counts().to_dict(),
        "pool_bins": pd.Series(bins[pool]).value_counts().to_dict(),
        "evaluation_bins": pd.Series(bins[evaluation]).value_counts().to_dict(),
        "digest": hashlib.sha256(json.dumps({name: sorted(table["face_id"].iloc[rows])
                                             for name, rows in {**sets, "evaluation": np.flatnonzero(evaluation)}.items()},
                                            sort_keys=True).encode()).hexdigest()[:10],
        "sets": {name: {"faces": int(len(rows)), "bins": pd.Series(bins[rows]).value_counts().to_dict(),
                        "pose_bins": int(pd.Series(bins[rows]).nunique())} for name, rows in sets.items()},
        "paths": {"sets": str(sets_dir), "b": str(b), "pack": str(pack)},
    }
    # No training face is an evaluation face or within HOLD_S of one, in any loop (the point of the held-out moments).
    for name, rows in sets.items():
        assert not (evaluation[rows].any() or (~pool[rows]).any()), name
    (sets_dir / "prepared.json").write_text(json.dumps(info, indent=1, default=_json_default))
    log(f"{len(table)} faces; {int(evaluation.sum())} evaluation faces at {len(moments)} moments, "
        f"{int(pool.sum())} in the training pool; sets: "
        + ", ".join(f"{k} {v['faces']} faces / {v['pose_bins']} bins" for k, v in info["sets"].items()))
    return info


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# --- 4. training and evaluation ------------------------------------------------------------------

def run_tag(args) -> str:
    return (f"r{args.resolution}_w{args.width}_l{args.latent}_b{args.batch}_lr{args.lr:g}_steps{args.steps}"
            f"_{args.device}")


def train_all(args, info: dict, runs_dir: Path) -> dict[tuple[str, int], dict]:
    """Every (method, seed) run trained (or found finished from an earlier invocation); {key: record}."""
    from trainer.checkpoint import read_config

    sets, b = Path(info["paths"]["sets"]), info["paths"]["b"]
    todo, records = [], {}
    for method in METHODS:
        for seed in args.seeds:
            run = runs_dir / f"{method}_s{seed}"
            done = run / "train.json"
            if done.is_file() and (read_config(run) or {}).get("steps") == args.steps:
                records[(method, seed)] = json.loads(done.read_text())
                continue
            shutil.rmtree(run, ignore_errors=True)
            cmd = [sys.executable, "-m", "trainer", "--a", str(sets / method), "--b", b, "--out", str(run),
                   "--resolution", str(args.resolution), "--width", str(args.width), "--latent", str(args.latent),
                   "--batch", str(args.batch), "--lr", str(args.lr), "--steps", str(args.steps), "--seed", str(seed),
                   "--device", args.device, "--save-every", str(args.steps), "--preview-every", str(args.steps),
                   "--quiet"]
            todo.append(((method, seed), run, cmd))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    running: list = []
    total = len(todo)
    while todo or running:
        while todo and len(running) < args.jobs:
            key, run, cmd = todo.pop(0)
            runs_dir.mkdir(parents=True, exist_ok=True)
            log(f"train {key[0]} seed {key[1]} ({total - len(todo)}/{total}) ...")
            running.append((key, run, time.perf_counter(),
                            subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                             text=True)))
        time.sleep(1.0)
        for item in list(running):
            key, run, t0, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            err = proc.stderr.read()
            if proc.returncode != 0:
                raise RuntimeError(f"training {key} failed ({proc.returncode}):\n{err[-3000:]}")
            last = json.loads((run / "loss.jsonl").read_text().splitlines()[-1])
            rec = {"seconds": round(time.perf_counter() - t0, 1), "loss": last["loss"], "loss_a": last["loss_a"],
                   "images_per_s": last.get("images_per_s")}
            (run / "train.json").write_text(json.dumps(rec))
            records[key] = rec
            log(f"  {key[0]} seed {key[1]}: {rec['seconds']} s, loss {rec['loss']:.4f}")
    return records


def evaluate_all(args, info: dict, runs_dir: Path) -> dict[tuple[str, int], dict]:
    """`curator evaluate` of every run on the evaluation set, side A (kept beside each run for re-use)."""
    from curator.reports.evaluate import evaluate

    out = {}
    for method in METHODS:
        for seed in args.seeds:
            run = runs_dir / f"{method}_s{seed}"
            cached = run / "evaluate.json"
            if cached.is_file():
                out[(method, seed)] = json.loads(cached.read_text())
                continue
            t0 = time.perf_counter()
            s = evaluate(run, Path(info["paths"]["sets"]) / "evaluation", side="a", out=run / "evaluate.html",
                         models=info["paths"]["pack"], device=args.device)
            s = {k: v for k, v in s.items() if not k.startswith("_")}
            cached.write_text(json.dumps(s, default=_json_default))
            out[(method, seed)] = s
            log(f"evaluate {method} seed {seed}: masked L1 {s['overall']['l1']:.4f}, "
                f"mean over bins {s['mean_over_bins']['l1']:.4f} ({time.perf_counter() - t0:.0f} s)")
    return out


# --- 5. the figures ---------------------------------------------------------------------------

def spread(values: list[float]) -> dict:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], float)
    if not len(v):
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {"mean": round(float(v.mean()), 4), "sd": round(float(v.std(ddof=1)), 4) if len(v) > 1 else 0.0,
            "min": round(float(v.min()), 4), "max": round(float(v.max()), 4), "n": int(len(v))}


def aggregate(info: dict, evals: dict, seeds: list[int]) -> dict:
    """Per method: each headline figure per pose bin, over the bins the pool covers, over the rarest third of
    them (by the footage's face count), and over the bins no training set can cover; mean and sd over seeds."""
    footage, pool = info["footage_bins"], info["pool_bins"]
    bins = [b["bin"] for b in next(iter(evals.values()))["pose_bins"] if b["bin"] != "unknown"]
    learnable = [b for b in bins if pool.get(b, 0) > 0]
    rare = sorted(learnable, key=lambda b: (footage.get(b, 0), b))[: math.ceil(len(learnable) / 3)]
    unseen = [b for b in bins if pool.get(b, 0) == 0]
    groups = {"learnable_bins": learnable, "rarest_third": rare, "bins_in_no_training_set": unseen}
    out = {"groups": groups, "methods": {}}
    for method in METHODS:
        per_seed = [{b["bin"]: b for b in evals[(method, s)]["pose_bins"]} for s in seeds]
        m = {"training_faces": info["sets"][method]["faces"], "training_pose_bins": info["sets"][method]["pose_bins"],
             "training_bins": info["sets"][method]["bins"]}
        for key in HEADLINE:
            m[key] = {name: spread([np.mean([d[b][key] for b in group if d[b][key] is not None])
                                    if group else None for d in per_seed]) for name, group in groups.items()}
            m[key]["all_faces"] = spread([evals[(method, s)]["overall"][key] for s in seeds])
            m[key]["per_bin"] = {b: spread([d[b][key] for d in per_seed]) for b in bins}
        out["methods"][method] = m
    out["bins"] = [{"bin": b, "footage_faces": footage.get(b, 0), "pool_faces": pool.get(b, 0),
                    "evaluation_faces": info["evaluation_bins"].get(b, 0),
                    "words": next(x["words"] for x in next(iter(evals.values()))["pose_bins"] if x["bin"] == b)}
                   for b in bins]
    return out


def render_markdown(result: dict) -> str:
    """The result tables as Markdown (for docs/benchmarks.md)."""
    a, p, t = result["aggregate"], result["prepared"], result["training"]
    m = result["machine"]
    lines = [f"Run {m['date']} on {m['cpu_model']} ({m['cpu_affinity']} cores), git {result.get('git')}, "
             f"{t['resolution']} px, width {t['width']}, latent {t['latent']}, batch {t['batch']}, lr {t['lr']}, "
             f"{t['steps']} steps, seeds {', '.join(map(str, t['seeds']))}, device {t['device']}; "
             f"total {result['total_s'] / 60:.0f} min.", "",
             f"Footage: {p['footage']['frames']} frames ({p['footage']['seconds']:.0f} s, {p['footage']['loops']} loops), "
             f"{p['faces']} faces; evaluation: {p['evaluation_faces']} faces at {len(p['moments'])} moments covering "
             f"all {len(a['bins'])} pose bins; training pool: {p['pool_faces']} faces in "
             f"{len(a['groups']['learnable_bins'])} of them; N = {p['budget']}.", "",
             "Masked L1 (lower is better), mean ± sd over seeds:", "",
             "| method | faces | pose bins | mean over bins | rarest third | bins in no set | all faces | SSIM, mean over bins "
             "| identity, mean over bins | swap: cosine to B | swap: pose error (°) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    pm = lambda d: "–" if d["mean"] is None else f"{d['mean']:.4f} ± {d['sd']:.4f}"  # noqa: E731
    for name, r in a["methods"].items():
        lines.append(f"| {name} | {r['training_faces']} | {r['training_pose_bins']} | {pm(r['l1']['learnable_bins'])} | "
                     f"{pm(r['l1']['rarest_third'])} | {pm(r['l1']['bins_in_no_training_set'])} | "
                     f"{pm(r['l1']['all_faces'])} | {pm(r['ssim']['learnable_bins'])} | "
                     f"{pm(r['identity']['learnable_bins'])} | {pm(r['swap_identity']['learnable_bins'])} | "
                     f"{pm(r['pose_error_deg']['learnable_bins'])} |")
    lines += ["", "Masked L1 per pose bin (mean over seeds; training faces of that bin in brackets):", "",
              "| bin | pose | footage / pool / eval faces | " + " | ".join(a["methods"]) + " |",
              "|---|---|---|" + "---|" * len(a["methods"])]
    rare = set(a["groups"]["rarest_third"])
    for b in a["bins"]:
        cells = []
        for name, r in a["methods"].items():
            v = r["l1"]["per_bin"][b["bin"]]["mean"]
            cells.append(("–" if v is None else f"{v:.4f}") + f" ({r['training_bins'].get(b['bin'], 0)})")
        lines.append(f"| {b['bin']}{' (rare)' if b['bin'] in rare else ''} | {b['words']} | "
                     f"{b['footage_faces']} / {b['pool_faces']} / {b['evaluation_faces']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", choices=("all", "prepare", "train"), default="all",
                    help="prepare: footage, faces and training sets only; train: train and evaluate on prepared sets")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (training and the model in evaluate)")
    ap.add_argument("--budget", type=int, default=20, help="faces per training set (N)")
    ap.add_argument("--steps", type=int, default=None, help="training steps [default: 1000 on cpu, 3000 on cuda]")
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1, 2])
    ap.add_argument("--width", type=int, default=None, help="network width [default: 16 on cpu, 32 on cuda]")
    ap.add_argument("--latent", type=int, default=None, help="bottleneck [default: 256 on cpu, 512 on cuda]")
    ap.add_argument("--batch", type=int, default=None, help="faces per identity per step [default: 8 on cpu, 16 on cuda]")
    ap.add_argument("--lr", type=float, default=None, help="learning rate [default: 1e-3 on cpu, 5e-4 on cuda]")
    ap.add_argument("--jobs", type=int, default=None, help="runs trained at once [default: 2 on cpu, 5 on cuda]")
    ap.add_argument("--threads", type=int, default=None, help="OMP threads per run [default: 1 on cpu]")
    ap.add_argument("--cache", type=Path, default=None, help="footage cache (default: CURATOR_BENCH_CACHE or ~/.cache/curator-bench)")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: CACHE/thesis)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON [default: bench/results/thesis.json, "
                                                          "thesis_gpu.json on cuda]")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown here")
    ap.add_argument("--carry-insightface", action="store_true",
                    help="prepare: also copy the installed insightface package into WORK/site, for a machine without it")
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    defaults = {"steps": (3000, 1000), "width": (32, 16), "latent": (512, 256), "batch": (16, 8), "lr": (5e-4, 1e-3),
                "jobs": (5, 2), "threads": (None, 1)}
    for k, (on_gpu, on_cpu) in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, on_gpu if gpu else on_cpu)
    args.cache = Path(args.cache or common.default_cache())
    work = Path(args.work or args.cache / "thesis")
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or REPO / "bench" / "results" / ("thesis_gpu.json" if gpu else "thesis.json")
    t0 = time.perf_counter()
    sets_dir = work / f"sets_v{SETS_VERSION}_n{args.budget}"
    if args.stage in ("all", "prepare"):
        info = prepare(args, work)
        if args.stage == "prepare":
            return
    else:
        if not (sets_dir / "prepared.json").is_file():
            sys.exit(f"bench/thesis.py: no prepared sets in {sets_dir}; run --stage prepare first (on a CPU machine)")
        info = json.loads((sets_dir / "prepared.json").read_text())
        info["paths"] = {"sets": str(sets_dir), "b": str(work / "thesis" / "B_driving_d12"), "pack": str(work / "pack")}
    runs_dir = work / f"runs_n{args.budget}_{info['digest']}_{run_tag(args)}"  # other sets: other runs
    records = train_all(args, info, runs_dir)
    evals = evaluate_all(args, info, runs_dir)
    result = {
        "machine": common.machine_info(), "git": common.git_rev(), "total_s": round(time.perf_counter() - t0, 1),
        "training": {k: getattr(args, k) for k in ("resolution", "width", "latent", "batch", "lr", "steps", "seeds",
                                                   "device", "jobs", "threads")},
        "prepared": {k: v for k, v in info.items() if k != "paths"},
        "runs": {f"{m}_s{s}": {**records[(m, s)], "run_id": evals[(m, s)]["run_id"]} for (m, s) in records},
        "aggregate": aggregate(info, evals, args.seeds),
        "evaluations": {f"{m}_s{s}": {k: e[k] for k in ("overall", "mean_over_bins", "pose_bins", "worst")}
                        for (m, s), e in evals.items()},
    }
    try:
        import torch

        if gpu and torch.cuda.is_available():
            result["machine"]["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=_json_default))
    text = render_markdown(result)
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    log(f"results: {out}")


if __name__ == "__main__":
    main()
