"""Benchmark `curator curate`: selection quality against three baselines, and scale.

    python bench/curate.py [--out bench/results/curate.json] [--scale-rows 1000000]
                           [--skip-quality] [--skip-scale] [--cache DIR]

A. Quality (real footage, real models). One long video is built from the
   shared clips (../shared/testdata/videos): a target person's clip looped
   five times, interleaved with every other clip once (the multi-person
   Hamilton stage clip twice), letterboxed to 640x360, resampled to 25 fps and
   re-encoded with libx264 (cached outside the repo). `curator extract` runs
   once at default settings. Ground truth comes from which clip each face was
   cut from. Two scenarios share the extraction:
     A  target = the man in liveportrait/driving_d9 (one clip, last 2 s held
        out of the footage; the reference photo is a frame of that held-out
        part);
     B  target = the man in pc_avs/Audio_Source_00104 and
        pc_avs/Pose_Source_741400163 (two different 224 px videos, one with red
        sunglasses; the reference is a frame of the held-out last 2 s of
        Audio_Source_00104).
   At budgets of 2%, 5% and 10% of the analysed frames, each method picks
   faces:
     uniform    every Nth face in time order over all faces;
     dfl_best   DeepFaceLab's `sort_best` (mainscripts/Sorter.py): 128 yaw bins
                over +-1.2 rad, sharpest 10x quota per bin, pitch sub-bins,
                histogram dissimilarity inside each; on all faces;
     fo_unique  FiftyOne Brain: compute_similarity(embeddings=our identity
                embeddings) then find_unique(N); on all faces;
     fo_uniqueness  FiftyOne Brain compute_uniqueness(embeddings=...), top N;
     ours       `curator identify --ref REF` then `curator curate --budget N`.
   plus the same three baselines restricted to the faces `curator identify`
   marked as the target ("+id"), to separate what identity filtering buys from
   what the selection buys. Metrics are defined in docs/bench_curate.md.

B. Scale. `curator.curate.curate(table, budget)` on synthetic face tables
   (100k, 300k, --scale-rows) whose descriptors follow the distributions
   measured on the shared clips (random-walk pose along tracks, drifting
   expression / lighting / 8x8 appearance, log-normal sharpness and face
   size, 15% of tracks re-broadcast in other sources). Each size runs in its
   own process; wall time of the curate() call and the peak resident memory
   during it (VmHWM after resetting it, Linux) are reported.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = common.REPO
BUDGET_SHARES = (0.02, 0.05, 0.10)
TARGETS = {"purity_min": 0.99, "scale_seconds_max": 60.0, "scale_peak_gb_max": 4.0}

# Near-duplicate definition for the metric (independent of curate's feature space).
ND_COSINE = 0.95
ND_POSE_DEG = 5.0


def log(msg: str) -> None:
    print(f"[bench curate {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# =============================================================================
# B. Scale: synthetic tables
# =============================================================================

def synth_table(n_rows: int, seed: int = 0, with_embeddings: bool = True) -> pd.DataFrame:
    """A face table of n_rows with identify's and extract's columns that curate reads.

    Distributions follow what extract measured on the shared clips (see
    docs/bench_curate.md): per-track random-walk pose (steps ~3/2/1.5 deg per
    analysed frame), expression and lighting drifting around per-track /
    per-source levels, log-normal sharpness (log1p mean 8.7, sd 0.8) and
    face size, 8x8 appearance vectors drifting along the track (median
    step ~0.24, like real tracks). 85% of rows are fresh tracks; 15% repeat an
    earlier track in another source with small noise (looped / re-broadcast
    footage). is_target follows identify's rule (track's 75th-percentile
    cosine to the target >= 0.45) on 512-d embeddings drawn around identity
    centres (made in chunks, not kept).
    """
    rng = np.random.default_rng(seed)
    n_base = int(round(n_rows * 0.85))
    lens = rng.geometric(1 / 40, size=n_base // 20 + 100)
    lens = lens[: int(np.searchsorted(np.cumsum(lens), n_base)) + 1]
    lens[-1] -= int(lens.sum()) - n_base
    lens = lens[lens > 0]
    nb = len(lens)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])

    def walk(step: float, start_mean: float, start_sd: float, bound: float | None = None) -> np.ndarray:
        steps = rng.normal(0.0, step, n_base)
        steps[starts] = 0.0
        c = np.cumsum(steps)
        c -= np.repeat(c[starts], lens)
        v = np.repeat(rng.normal(start_mean, start_sd, nb), lens) + c
        return bound * np.tanh(v / bound) if bound else v

    n_src = int(np.clip(n_rows // 2500, 20, 400))
    src_of_base = rng.integers(0, n_src, nb)
    cols: dict[str, np.ndarray] = {
        "yaw": walk(3.0, 0.0, 20.0, 75.0),
        "pitch": walk(2.0, 0.0, 10.0, 50.0),
        "roll": walk(1.5, 0.0, 6.0, 40.0),
        "mouth_open": np.clip(walk(0.03, 0.22, 0.14) + rng.normal(0, 0.03, n_base), 0, 1),
        "eyes_open": np.clip(walk(0.03, 0.33, 0.16) + rng.normal(0, 0.03, n_base), 0, 1),
        "smile": walk(0.01, -0.03, 0.06) + rng.normal(0, 0.015, n_base),
    }
    light = {"lum": (49, 9), "contrast": (15.6, 4), "light_lr": (2, 9), "light_tb": (-2, 5),
             "cast_a": (16, 5), "cast_b": (12.7, 4)}
    for c, (m, sd) in light.items():
        level = rng.normal(m, sd, n_src)[src_of_base] + rng.normal(0, 2.0, nb)
        cols[c] = np.repeat(level, lens) + walk(0.5, 0.0, 0.0) + rng.normal(0, 0.5, n_base)
    cols["contrast"] = np.abs(cols["contrast"])
    cols["sharpness"] = np.expm1(np.repeat(rng.normal(8.7, 0.8, nb), lens) + rng.normal(0, 0.12, n_base))
    src_px = rng.normal(np.log(250), 0.5, n_src)
    cols["face_px"] = np.exp(np.repeat(src_px[src_of_base] + rng.normal(0, 0.15, nb), lens) + rng.normal(0, 0.03, n_base))
    cols["det_score"] = np.clip(np.repeat(rng.normal(0.82, 0.03, nb), lens) + rng.normal(0, 0.015, n_base), 0.5, 0.95)

    app = np.repeat(rng.normal(0, 1, (nb, 64)).astype(np.float32), lens, axis=0)
    sig = np.where(rng.random(n_base) < 0.1, 0.15, 0.05).astype(np.float32)
    steps = rng.normal(0, 1, (n_base, 64)).astype(np.float32) * sig[:, None]
    steps[starts] = 0
    np.cumsum(steps, axis=0, out=steps)
    steps -= np.repeat(steps[starts], lens, axis=0)
    app *= 0.12  # base / drift balance: consecutive-step distance ~0.24 after normalising
    app += steps
    del steps

    # Repeats: whole base tracks copied into other sources.
    copies = []
    total = n_base
    while total < n_rows:
        k = int(rng.integers(0, nb))
        take = min(int(lens[k]), n_rows - total)
        copies.append((k, take))
        total += take
    track_rows = [np.arange(starts[k], starts[k] + lens[k]) for k in range(nb)]
    track_rows += [np.arange(starts[k], starts[k] + take) for k, take in copies]
    track_src = np.concatenate([src_of_base, rng.integers(0, n_src, len(copies))])
    is_copy = np.concatenate([np.zeros(nb, bool), np.ones(len(copies), bool)])
    # Lay tracks out source by source, in random order inside each source.
    order = np.lexsort((rng.random(len(track_rows)), track_src))
    idx = np.concatenate([track_rows[t] for t in order])
    tlen = np.array([len(track_rows[t]) for t in order])
    track_id = np.repeat(np.arange(len(order)), tlen)
    src = np.repeat(track_src[order], tlen)
    copy_row = np.repeat(is_copy[order], tlen)
    n = len(idx)

    out = {k: v[idx] for k, v in cols.items()}
    for k, s in {"yaw": 0.5, "pitch": 0.5, "roll": 0.5, "lum": 0.5, "contrast": 0.3, "light_lr": 0.5,
                 "light_tb": 0.5, "cast_a": 0.2, "cast_b": 0.2}.items():
        out[k] = out[k] + np.where(copy_row, rng.normal(0, s, n), 0.0)
    A = app[idx]
    del app
    A[copy_row] += rng.normal(0, 0.01, (int(copy_row.sum()), 64)).astype(np.float32) * np.linalg.norm(A[copy_row], axis=1, keepdims=True)
    A -= A.mean(1, keepdims=True)
    A /= np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-6)
    A = A.astype(np.float64)  # read_table gives float64 arrays for `appearance`

    # Frames: 2 analysed frames per second at 25 fps, a gap between tracks.
    new_src = np.r_[True, src[1:] != src[:-1]]
    new_track = np.r_[True, track_id[1:] != track_id[:-1]]
    step = np.where(new_src, 0, np.where(new_track, 250, 12 + (np.arange(n) % 2)))
    grp = np.cumsum(new_src) - 1
    cs = np.cumsum(step)
    frame = cs - cs[np.flatnonzero(new_src)][grp]

    shas = np.array([hashlib.sha256(f"src{s}".encode()).hexdigest() for s in range(n_src)], dtype=object)
    sha = shas[src]

    # Identity: 80% of base tracks are the target; copies keep their base track's person.
    person = np.where(rng.random(nb) < 0.8, 0, rng.integers(1, 60, nb))
    track_person = np.concatenate([person, person[[k for k, _ in copies]]])[order]
    score = np.empty(n, np.float32)
    if with_embeddings:
        dim = 512
        centres = rng.normal(0, 1, (60, dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        row_person = np.repeat(track_person, tlen)
        track_off = rng.normal(0, 0.5 / np.sqrt(dim), (len(order), dim)).astype(np.float32)
        for s0 in range(0, n, 100_000):
            sl = slice(s0, min(n, s0 + 100_000))
            e = centres[row_person[sl]] + track_off[track_id[sl]]
            e += rng.normal(0, 1.0 / np.sqrt(dim), e.shape).astype(np.float32)
            e /= np.linalg.norm(e, axis=1, keepdims=True)
            score[sl] = e @ centres[0]
        is_target = pd.Series(score).groupby(track_id).transform(lambda s: np.percentile(s, 75)).to_numpy() >= 0.45
    else:
        is_target = np.repeat(track_person == 0, tlen)
        score[:] = np.where(is_target, 0.7, 0.1)

    face_index = np.zeros(n, np.int64)
    face_id = [f"{h[:12]}_{f:07d}_00" for h, f in zip(sha, frame)]
    table = pd.DataFrame({
        "face_id": face_id, "source_sha256": sha, "source_kind": "video", "frame": frame.astype(np.int64),
        "time_s": frame / 25.0, "face_index": face_index, **{k: out[k].astype(np.float64) for k in out},
        "appearance": list(A), "identity_score": score, "track_id": track_id.astype(np.int64),
        "is_target": is_target,
    })
    return table


def _proc_status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def scale_worker(n_rows: int, budget: int, seed: int, profile: str | None) -> dict:
    """Runs in a child process: build the table, then time curate() and measure its peak memory."""
    from curator.curate import curate
    import sklearn.neighbors  # noqa: F401  imported before timing: a constant ~2 s, not a cost of the rows

    t0 = time.perf_counter()
    table = synth_table(n_rows, seed)
    build_s = time.perf_counter() - t0
    gc.collect()
    rss_before = _proc_status("VmRSS")
    reset = False
    try:  # Linux: writing 5 resets the peak-RSS high-water mark to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        pass
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t1 = time.perf_counter()
    res = curate(table, budget)
    seconds = time.perf_counter() - t1
    if prof:
        prof.disable()
        prof.dump_stats(profile)
    peak = _proc_status("VmHWM") if reset else None
    s = res.summary
    return {
        "rows": n_rows, "budget": budget, "seconds": round(seconds, 2), "build_s": round(build_s, 1),
        "rss_before_curate_mb": round(rss_before / 2**20) if rss_before else None,
        "peak_rss_during_curate_mb": round(peak / 2**20) if peak else None,
        "curate_extra_mb": round((peak - rss_before) / 2**20) if peak and rss_before else None,
        "target_faces": s["target_faces"], "candidates": s["candidates"],
        "near_duplicate_groups": s["near_duplicate_groups"], "near_duplicates_removed": s["near_duplicates_removed"],
        "selected": s["selected"], "pose_coverage_after": s["coverage_after"]["pose_coverage"],
    }


def run_scale(sizes: list[int], budget: int, seed: int, timeout: float, profile_dir: Path | None) -> list[dict]:
    out = []
    for n in sizes:
        log(f"scale: {n:,} rows ...")
        prof = str(profile_dir / f"curate_{n}.prof") if profile_dir else ""
        cmd = [sys.executable, __file__, "--_scale-worker", str(n), "--_budget", str(budget), "--_seed", str(seed)]
        if prof:
            cmd += ["--_profile", prof]
        with tempfile.TemporaryFile("w+") as fout:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=fout, stderr=subprocess.PIPE, text=True, cwd=REPO)
            try:
                _, status, ru = _wait4(proc, timeout)
            except TimeoutError:
                proc.kill()
                proc.wait()
                out.append({"rows": n, "error": f"timed out after {timeout:.0f} s"})
                log(f"scale: {n:,} rows timed out")
                continue
            wall = time.perf_counter() - t0
            err = proc.stderr.read() if proc.stderr else ""
            fout.seek(0)
            text = fout.read()
        if status != 0:
            out.append({"rows": n, "error": f"exit {status}: {err[-2000:]}"})
            log(f"scale: {n:,} rows failed: {err[-500:]}")
            continue
        rec = json.loads(text.strip().splitlines()[-1])
        rec["child_wall_s"] = round(wall, 1)
        rec["child_max_rss_mb"] = round(ru.ru_maxrss / 1024)  # KiB on Linux; includes building the table
        if prof:
            rec["profile"] = prof
        out.append(rec)
        log(f"scale: {n:,} rows: curate {rec['seconds']} s, peak {rec['peak_rss_during_curate_mb']} MB")
    return out


def _wait4(proc: subprocess.Popen, timeout: float):
    """os.wait4 with a timeout: the child's own rusage (ru_maxrss), not the maximum over all children."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, proc.returncode, ru
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.2)


# =============================================================================
# main
# =============================================================================

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "curate.json")
    ap.add_argument("--scale-rows", type=int, default=1_000_000)
    ap.add_argument("--scale-budget", type=int, default=5000)
    ap.add_argument("--scale-timeout", type=float, default=420.0)
    ap.add_argument("--profile-dir", type=Path, default=None, help="write a cProfile file per scale size here")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--_scale-worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_budget", type=int, default=5000, help=argparse.SUPPRESS)
    ap.add_argument("--_seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--_profile", type=str, default="", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._scale_worker:
        rec = scale_worker(args._scale_worker, args._budget, args._seed, args._profile or None)
        print(json.dumps(rec))
        return

    t_start = time.perf_counter()
    result: dict = {"benchmark": "curate", "machine": common.machine_info(), "git": common.git_rev(),
                    "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}
    if not args.skip_quality:
        result["quality"] = run_quality(args)
    if not args.skip_scale:
        sizes = sorted({100_000, 300_000, args.scale_rows})
        sizes = [s for s in sizes if s <= args.scale_rows]
        result["scale"] = {"budget": args.scale_budget, "runs": run_scale(sizes, args.scale_budget, args.seed,
                                                                         args.scale_timeout, args.profile_dir)}
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    result["targets"] = evaluate_targets(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    log(f"wrote {args.out} ({result['total_s']} s)")
    print(json.dumps(result["targets"], indent=1, default=_json_default))


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


if __name__ == "__main__":
    main()
