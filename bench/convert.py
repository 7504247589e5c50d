"""Benchmark `curator convert`: frames per second converted, against decoding alone.

    python bench/convert.py [--clip video_retalking/face_1.mp4] [--devices auto,cpu] [--repeats 3]
                            [--batch 16] [--sets A_DIR,B_DIR] [--out bench/results/convert.json]

Model: the trainer's default network (128 px, width 64, latent 512) trained
for `--train-steps` steps on two single-person exports (A = face_1, B =
face_2, `curator run --size 128 --fps 10`, built once into the bench cache, or
given with --sets). Speed does not depend on how well the model is trained,
only on its size, so a few steps are enough.

Per device and repeat, `curator.convert.convert` runs in this process on the
whole clip; `load_s` is the time until it reports the frame total (run, face
models and identity loaded), `convert_fps` = frames / the rest (decode,
detect, swap, blend, encode, audio copy, hashing). `decode_fps` is PyAV
decoding the same clip to BGR, the floor every frame pays. Reported: medians
over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

CLIPS = {"A": "video_retalking/face_1.mp4", "B": "video_retalking/face_2.mp4"}
SETS_VERSION = 1


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def build_sets(cache: Path) -> tuple[Path, Path]:
    return tuple(common.cached_export(cache, f"convert-sets-v{SETS_VERSION}", name, rel, log)
                 for name, rel in CLIPS.items())


def train(a: Path, b: Path, run: Path, steps: int) -> None:
    cmd = [sys.executable, "-m", "trainer", "--a", str(a), "--b", str(b), "--out", str(run), "--resolution", "128",
           "--batch", "4", "--steps", str(steps), "--preview-every", str(10**9), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench: training failed:\n{proc.stderr}")


def decode_fps(clip: Path) -> float:
    import av

    from curator.media import to_bgr

    t0 = time.perf_counter()
    with av.open(str(clip)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        n = sum(1 for frame in c.decode(stream) if to_bgr(frame) is not None)
    return n / (time.perf_counter() - t0)


def one_convert(clip: Path, run: Path, device: str, batch: int, workdir: Path) -> dict:
    from curator.swap.convert import ConvertSettings, convert

    marks = {"start": time.perf_counter()}
    out = workdir / f"out_{device}.mp4"
    summary = convert(clip, run, out, device=device, force=True, settings=ConvertSettings(batch=batch),
                      on_total=lambda total: marks.setdefault("loaded", time.perf_counter()))
    end = time.perf_counter()
    return {"frames": summary["frames"], "frames_swapped": summary["frames_swapped"], "device": summary["device"],
            "load_s": round(marks["loaded"] - marks["start"], 3),
            "convert_fps": round(summary["frames"] / (end - marks["loaded"]), 3),
            "wall_s": round(end - marks["start"], 3), "loadavg_1min": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", default="video_retalking/face_1.mp4", help="clip under the shared videos/ folder")
    ap.add_argument("--devices", default="auto,cpu", help="torch devices for the swap network, in order")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--sets", default="", help="A_DIR,B_DIR: existing 128 px exports instead of building them")
    ap.add_argument("--out", type=Path, default=common.REPO / "bench" / "results" / "convert.json")
    args = ap.parse_args()
    common.require_testdata()
    os.environ.setdefault("CURATOR_MODELS", str(common.PACK_SMALL))

    import torch

    clip = common.VIDEOS / args.clip
    if args.sets:
        a, b = (Path(p).resolve() for p in args.sets.split(","))
    else:
        cache = common.default_cache()
        cache.mkdir(parents=True, exist_ok=True)
        a, b = build_sets(cache)
    results = []
    with tempfile.TemporaryDirectory(prefix="curator-bench-convert-") as tmp:
        run = Path(tmp) / "run"
        train(a, b, run, args.train_steps)
        decode = [decode_fps(clip) for _ in range(args.repeats)]
        log(f"decode only: {common.median(decode):.1f} frames/s")
        for device in args.devices.split(","):
            runs = []
            for i in range(args.repeats):
                r = one_convert(clip, run, device, args.batch, Path(tmp))
                log(f"{device} repeat {i + 1}: {r['convert_fps']:.2f} frames/s, load {r['load_s']:.1f} s, "
                    f"loadavg {r['loadavg_1min']}")
                runs.append(r)
            results.append({"device": runs[0]["device"], "asked": device,
                            "convert_fps": common.median([r["convert_fps"] for r in runs]),
                            "load_s": common.median([r["load_s"] for r in runs]), "runs": runs})
    info = common.machine_info()
    info.update({"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None})
    import av

    with av.open(str(clip)) as c:
        v = c.streams.video[0]
        clip_info = {"path": args.clip, "width": v.codec_context.width, "height": v.codec_context.height,
                     "fps": float(v.average_rate)}
    report = {
        "benchmark": "convert", "git": common.git_rev(), "machine": info,
        "settings": {"clip": clip_info, "batch": args.batch, "network": "128 px, width 64, latent 512",
                     "repeats": args.repeats, "face_models": "pack-small (SCRFD-500M, MobileFaceNet)",
                     "encoder": "libx264 crf 18 preset medium"},
        "decode_fps": round(common.median(decode), 2),
        "results": results,
        "command": "python bench/convert.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from curator.fs.atomic import write_json

    write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("decode_fps",)}))
    print("| device | frames/s | share of decode-only speed | load (s) | runs |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['device']} | {r['convert_fps']:.1f} | {r['convert_fps'] / report['decode_fps']:.1%} | "
              f"{r['load_s']:.1f} | {len(r['runs'])} |")


if __name__ == "__main__":
    main()
