"""Figures for docs/reliability.md: `curator extract`'s peak memory at 4K, and resuming near the end of a long file.

    python bench/real_footage.py [memory] [resume] [--repo DIR] [--minutes 30] [--budgets 1024,512]
                                 [--out bench/results/real_footage.json]

memory  driving_d12 (fast head turns: motion frames and back-fill) letterboxed
        to 3840x2160 at 25 fps (bench/common.build_footage, cached). `curator
        extract` runs once per --budgets value (--frame-memory, MiB) in its own
        child process: peak RSS (ru_maxrss from os.wait4), wall time, the
        summary's frames_held_peak_mb. Each run is repeated with --det-size
        1280, a detector about 4x slower, as a heavier model pack is: analysis
        then falls behind decoding and the read-ahead fills up.
resume  source_s18 (1280x720, a keyframe every 9.4 s) remuxed back to back
        (bench/common.loop_remux) to --minutes. `curator extract
        --checkpoint-every 20` is killed (SIGKILL) once its staged progress
        passes 90% of the frames; then `curator extract` again, timed: wall
        time and frames decoded.

--repo runs another checkout's curator (the code before a change, say) for
'before' figures: its `python -m curator`, with the same Python. Models:
../shared/testdata/models/pack-small.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

sys.path.insert(0, str(common.REPO))
from curator.workspace import open_workspace, staged_progress  # noqa: E402


def curator_cmd(repo: Path, *args) -> tuple[list[str], dict]:
    env = {**os.environ, "PYTHONPATH": str(repo), "CURATOR_MODELS": os.environ.get("CURATOR_MODELS", str(common.PACK_SMALL))}
    return [sys.executable, "-m", "curator", *map(str, args)], env


def run_measured(repo: Path, *args) -> dict:
    """One `curator ... --json -q` in a child process: its summary, wall time and peak RSS (os.wait4's, this child's)."""
    cmd, env = curator_cmd(repo, *args, "--json", "-q")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read()[-2000:]}")
        summary = json.loads(out.read())
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024), **{
        k: summary.get(k) for k in ("frames_decoded", "frames_analysed", "frames_backfilled", "faces",
                                    "frames_held_peak_mb", "resumed_files")}}


def memory(repo: Path, budgets: list[int], cache: Path, work: Path) -> dict:
    spec = common.FootageSpec(width=3840, height=2160, fps=25, crf=23, preset="ultrafast")
    footage = common.build_footage("uhd_d12", [{"clip": "liveportrait/driving_d12.mp4", "start_s": 0.0, "end_s": None}],
                                   spec, cache)
    runs = []
    for det_size in (None, 1280):
        for budget in budgets:
            args = ["extract", footage["path"], "-w", work / f"ws_{budget}_{det_size}"]
            args += ["--frame-memory", budget] if budget else []
            args += ["--det-size", det_size] if det_size else []
            run = {"frame_memory_mb": budget, "det_size": det_size or 640, **run_measured(repo, *args)}
            print(json.dumps(run), flush=True)
            runs.append(run)
    return {"footage": {k: footage[k] for k in ("frames", "seconds", "spec")}, "runs": runs}


def resume(repo: Path, minutes: float, cache: Path, work: Path) -> dict:
    src = common.VIDEOS / "liveportrait" / "source_s18.mp4"  # 9.4 s, 282 frames
    loops = max(1, round(minutes * 60 / 9.4))
    long = cache / f"s18_x{loops}.mp4"
    if not long.exists():
        common.loop_remux(src, long.with_name(".building-" + long.name), loops)
        os.replace(long.with_name(".building-" + long.name), long)
    frames = 282 * loops
    ws = work / "ws_resume"
    cmd, env = curator_cmd(repo, "extract", long, "-w", ws, "-q", "--checkpoint-every", "20")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    stopped = None
    while proc.poll() is None:
        if (ws / "workspace.json").exists():
            progress = [p for p in staged_progress(open_workspace(ws)).values() if not p.get("complete")]
            if progress and progress[0]["last_frame"] >= 0.9 * frames:
                os.killpg(proc.pid, signal.SIGKILL)
                stopped = progress[0]["last_frame"]
                break
        time.sleep(0.5)
    proc.wait()
    first_s = time.perf_counter() - t0
    if stopped is None:
        raise SystemExit("the first run ended before 90% of the file")
    again = run_measured(repo, "extract", long, "-w", ws)
    return {"file": {"minutes": round(frames / 30 / 60, 1), "frames": frames, "loops": loops, "keyframe_every_s": 9.4,
                     "resolution": "1280x720", "size_mb": round(long.stat().st_size / 1e6)},
            "killed_after_s": round(first_s, 1), "stopped_at_frame": stopped, "resume": again}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="*", default=["memory", "resume"], choices=["memory", "resume"])
    ap.add_argument("--repo", default=str(common.REPO), help="the checkout whose curator runs [this one]")
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the long file [30]")
    ap.add_argument("--budgets", default="1024,512", help="--frame-memory values in MiB; 0: not given [1024,512]")
    ap.add_argument("--cache", default=None, help="where built footage is kept [CURATOR_BENCH_CACHE or ~/.cache/curator-bench]")
    ap.add_argument("--out", default=str(common.REPO / "bench" / "results" / "real_footage.json"))
    args = ap.parse_args(argv)
    common.require_testdata()
    repo, cache = Path(args.repo).resolve(), Path(args.cache or common.default_cache())
    cache.mkdir(parents=True, exist_ok=True)
    result = {"machine": common.machine_info(), "repo": str(repo), "loadavg_before": common.loadavg()}
    with tempfile.TemporaryDirectory(prefix="curator-real-footage-") as tmp:
        if "memory" in args.what:
            result["memory_4k"] = memory(repo, [int(b) for b in args.budgets.split(",")], cache, Path(tmp))
        if "resume" in args.what:
            result["resume_long_file"] = resume(repo, args.minutes, cache, Path(tmp))
            print(json.dumps(result["resume_long_file"]), flush=True)
    result["loadavg_after"] = common.loadavg()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
