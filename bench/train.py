"""Benchmark the face-swap trainer: images/s and the share of step time spent making batches.

    python bench/train.py [--resolutions 64,128] [--repeats 3] [--steps 6] [--warmup 2]
                          [--batch 16] [--width 64] [--latent 512] [--device cpu]
                          [--sets A_DIR,B_DIR | --synthetic DIR] [--resume-check N]
                          [--out bench/results/train.json]

Data: two single-person exports built once from the shared clips
(3ddfa/obama.mp4 and video_retalking/face_2.mp4, `curator run
--size 128 --fps 10`) into the bench cache (CURATOR_BENCH_CACHE, else
~/.cache/curator-bench) and reused. Where there is no test data or no
`curator run` (a GPU machine without PyAV or insightface), `--sets` takes two
existing exports, and `--synthetic DIR` generates two export folders of
drawn 128 px crops into DIR (once, reused): step time does not depend on
what the pixels show or on how many faces a set has (a batch is an index
into a tensor on the device), so these time the trainer as well as real
faces do; only the losses mean nothing.

Each repeat runs the real trainer in a fresh process (`python -m trainer`,
default network width, no previews or checkpoints inside the timed steps) for
warmup + steps steps and reads its loss.jsonl, where every step records
images/s (A + B faces per second of wall time, all ranks) and data_fraction
(time making the next step's batch, i.e. sampling + augmenting it, / time
of the whole step; CUDA events on a GPU, so what is timed is the GPU's time
on the batch's kernels or waiting for them to be launched; the clock on a
CPU). Per repeat: the median over the timed steps;
reported: the median over repeats. The first `warmup` steps (allocator,
cuDNN autotuning) are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

CLIPS = {"A": "3ddfa/obama.mp4", "B": "video_retalking/face_2.mp4"}
SETS_VERSION = 2
TARGETS = {"data_fraction_max": 0.05}


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def build_sets(cache: Path) -> dict:
    """The two exports (cached). Returns {"A": path, "B": path, "faces": {...}}."""
    return with_counts({name: common.cached_export(cache, f"train-sets-v{SETS_VERSION}", name, rel, log)
                        for name, rel in CLIPS.items()})


def given_sets(spec: str) -> dict:
    a, b = (Path(p) for p in spec.split(","))
    return with_counts({"A": a, "B": b})


def synthetic_sets(folder: Path, faces: int = 32, size: int = 128) -> dict:
    """Two export folders of drawn crops in folder/A and folder/B (made once): what `curator export` writes.

    Each crop: a smooth random background and, where the trainer's face mask
    is, a skin-coloured face with noise, a different tone per identity; yaw
    and pitch spread over +-30 and +-15 degrees, so --pose-balance has bins.
    """
    import cv2
    import numpy as np
    import pandas as pd

    from curator.measure.align import DEFAULT_MARGIN
    from trainer.data import face_mask

    mask = face_mask(size, DEFAULT_MARGIN)[:, :, None]
    rng = np.random.default_rng(0)
    for name, skin in (("A", (120, 150, 200)), ("B", (90, 110, 160))):  # BGR
        target = folder / name
        if (target / "manifest.parquet").is_file():
            continue
        work = folder / f".{name}.partial"
        (work / "faces").mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(faces):
            background = cv2.resize(rng.integers(0, 256, (4, 4, 3)).astype(np.uint8), (size, size),
                                    interpolation=cv2.INTER_CUBIC).astype(float)
            face = np.array(skin) + rng.integers(-20, 21, 3) + rng.normal(0, 8, (size, size, 3))
            img = np.clip(background * (1 - mask) + face * mask, 0, 255).astype(np.uint8)
            rel = f"faces/{name}_{i:04d}.png"
            cv2.imwrite(str(work / rel), img)
            rows.append({"file": rel, "split": "train", "yaw": rng.uniform(-30, 30), "pitch": rng.uniform(-15, 15)})
        pd.DataFrame(rows).to_parquet(work / "manifest.parquet")
        (work / "provenance.json").write_text(json.dumps({"settings": {"margin": DEFAULT_MARGIN, "size": size},
                                                          "synthetic": True}))
        os.replace(work, target)
    return with_counts({"A": folder / "A", "B": folder / "B"})


def with_counts(sets: dict) -> dict:
    import pandas as pd

    sets["faces"] = {k: int((pd.read_parquet(sets[k] / "manifest.parquet")["split"] == "train").sum()) for k in CLIPS}
    return sets


def trainer(args, *options) -> None:
    """`python -m trainer OPTIONS` in a fresh process; a failure ends the benchmark with the trainer's stderr."""
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run([sys.executable, "-m", "trainer", *map(str, options)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        sys.exit(f"bench: trainer failed: {' '.join(map(str, options))}\n{proc.stderr}")


def new_run(sets: dict, resolution: int, args) -> list:
    """The options of a fresh run: the network and batch of the benchmark, no previews or checkpoints on the way."""
    return ["--a", sets["A"], "--b", sets["B"], "--resolution", resolution, "--batch", args.batch,
            "--width", args.width, "--latent", args.latent, "--device", args.device,
            "--save-every", 10**9, "--preview-every", 10**9, "--quiet"]


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "loss.jsonl").read_text().splitlines()]


def one_run(sets: dict, resolution: int, args, workdir: Path) -> dict:
    run = Path(tempfile.mkdtemp(prefix=f"run{resolution}-", dir=workdir)) / "run"
    total = args.warmup + args.steps
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    trainer(args, *new_run(sets, resolution, args), "--out", run, "--steps", total)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines()]
    timed = rows[args.warmup:]
    shutil.rmtree(run.parent, ignore_errors=True)
    return {
        "images_per_s": common.median([r["images_per_s"] for r in timed]),
        "data_fraction": common.median([r["data_fraction"] for r in timed]),
        "step_s": common.median([2 * args.batch / r["images_per_s"] for r in timed]),
        "process_wall_s": round(wall, 2),
        "loss_first": rows[0]["loss"], "loss_last": rows[-1]["loss"],
        "loadavg_1min_before": round(load_before, 2), "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }


def resume_check(sets: dict, args, workdir: Path) -> dict:
    """N steps against N/2 steps + a resume to N, both --deterministic: the same loss at every step?

    Each step's batch is made while the step before it finishes; a resumed run
    must still draw exactly the batches of an uninterrupted one.
    """
    resolution, steps = int(args.resolutions.split(",")[0]), args.resume_check
    full, halves = workdir / "resume-full", workdir / "resume-halves"
    trainer(args, *new_run(sets, resolution, args), "--out", full, "--steps", steps, "--deterministic")
    trainer(args, *new_run(sets, resolution, args), "--out", halves, "--steps", steps // 2, "--deterministic")
    trainer(args, "--out", halves, "--resume", "--steps", steps, "--device", args.device, "--deterministic", "--quiet")
    a, b = losses(full), losses(halves)
    check = {"resolution": resolution, "steps": steps, "resumed_at": steps // 2, "same_losses": a == b,
             "max_abs_difference": max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else None}
    log(f"resume check at {resolution} px: {steps} steps {'==' if a == b else '!='} "
        f"{steps // 2} + resume to {steps} (--deterministic)")
    return check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolutions", default="64,128")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per repeat")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--latent", type=int, default=512)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the trainer (0: PyTorch's default)")
    ap.add_argument("--resume-check", type=int, default=0, metavar="N",
                    help="also train N steps, and N/2 steps then --resume to N, both --deterministic, at the first "
                    "resolution, and report whether the losses are the same (0: no check)")
    ap.add_argument("--out", type=Path, default=common.REPO / "bench" / "results" / "train.json")
    data = ap.add_mutually_exclusive_group()
    data.add_argument("--sets", default="", help="A_DIR,B_DIR: existing exports to train on instead of building "
                      "them from the shared clips (e.g. on a GPU machine that has no copy of the test data)")
    data.add_argument("--synthetic", type=Path, default=None, metavar="DIR",
                      help="train on two generated export folders, made in DIR once (no test data needed)")
    args = ap.parse_args()

    import torch

    if args.sets:
        sets = given_sets(args.sets)
        source = {"exports": [str(sets["A"]), str(sets["B"])]}
    elif args.synthetic:
        sets = synthetic_sets(args.synthetic)
        source = {"synthetic": str(args.synthetic)}
    else:
        common.require_testdata()
        cache = common.default_cache()
        cache.mkdir(parents=True, exist_ok=True)
        sets = build_sets(cache)
        source = dict(CLIPS)
    log(f"sets: A {sets['faces']['A']} faces, B {sets['faces']['B']} faces (train split)")
    results = []
    with tempfile.TemporaryDirectory(prefix="curator-bench-train-") as tmp:
        for res in [int(r) for r in args.resolutions.split(",")]:
            runs = []
            for i in range(args.repeats):
                r = one_run(sets, res, args, Path(tmp))
                log(f"{res} px repeat {i + 1}: {r['images_per_s']:.2f} img/s, data {r['data_fraction']:.2%}, "
                    f"load {r['loadavg_1min_before']}")
                runs.append(r)
            results.append({
                "resolution": res,
                "images_per_s": common.median([r["images_per_s"] for r in runs]),
                "step_s": common.median([r["step_s"] for r in runs]),
                "data_fraction": common.median([r["data_fraction"] for r in runs]),
                "data_fraction_ok": common.median([r["data_fraction"] for r in runs]) < TARGETS["data_fraction_max"],
                "runs": runs,
            })
        resumed = resume_check(sets, args, Path(tmp)) if args.resume_check else None
    info = common.machine_info()
    info.update({"torch": torch.__version__, "torch_threads_default": torch.get_num_threads(),
                 "omp_num_threads": args.threads or os.environ.get("OMP_NUM_THREADS") or "default",
                 "cuda_available": torch.cuda.is_available(),
                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None})
    report = {
        "benchmark": "trainer", "git": common.git_rev(), "machine": info,
        "settings": {"device": args.device, "batch_per_identity": args.batch, "width": args.width,
                     "latent": args.latent, "steps_timed": args.steps, "warmup": args.warmup,
                     "repeats": args.repeats, "sets": source, "faces": sets["faces"]},
        "targets": TARGETS,
        # Timings on a shared machine mean little without the load they ran under (per run: loadavg_*).
        "notes": ([] if torch.cuda.is_available() else
                  ["no GPU on this machine (none was lent for this run): CPU figures only; "
                   "the bf16/NCCL path is not measured here"]),
        "results": results,
        **({"resume_check": resumed} if resumed else {}),
        "command": "python bench/train.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from curator.fs.atomic import write_json

    write_json(args.out, report)
    print("| resolution | images/s | step (s) | data share | runs |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['resolution']} px | {r['images_per_s']:.2f} | {r['step_s']:.2f} | {r['data_fraction']:.2%} | "
              f"{len(r['runs'])} |")


if __name__ == "__main__":
    main()
