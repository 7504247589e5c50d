"""Extract on Ray against the local engine, and Ray from 1 to N workers, on the same footage.

    python bench/ray_engine.py                  # --minutes 4 --segment-seconds 30 --workers 1 2 --repeats 2
    python bench/ray_engine.py --pin --out bench/results/ray_engine_pinned.json   # node i on core i only

Footage: every shared clip in path order, letterboxed to 1280x720 at 25 fps
and looped to --minutes (bench/common.build_footage, as bench/extract.py
builds it), read in segments of --segment-seconds: the units of work.

Runs, each `curator extract` on a fresh workspace, timed from the command's
start to its end (wall seconds, as `time` would show):
- `local`: the local engine (its default: one analysis worker per core);
- `ray_start`: `--engine ray` without an address: Ray started on this machine
  by the run itself and stopped at its end (one worker per core);
- `ray_N`: `--engine ray --ray-address` on an N-node cluster started
  beforehand (`ray start`, one CPU per node, so N workers), the cluster start
  not counted.
The clusters run inside fresh network and PID namespaces (`unshare`, as in
tests/test_ray.py): loopback only, and every Ray process ends with them.

Figures: Ray's overhead (`ray_start` / `local`, and `ray_N` / `local` for N
= the cores), and scaling efficiency T(1) / (N x T(N)). Every run's table
is checked against the local one (same face ids).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")
ADDRESS = "127.0.0.1:6379"


def log(msg: str) -> None:
    print(f"[ray-bench] {msg}", file=sys.stderr, flush=True)


def footage(minutes: float, cache: Path | None) -> dict:
    spec = common.FootageSpec(1280, 720)  # 25 fps, as bench/extract.py
    clips = common.source_clips()
    total = int(round(minutes * 60 * spec.fps))
    loops = math.ceil(total / spec.fps / sum(map(common.clip_duration, clips))) + 1
    segments = [{"clip": c, "start_s": 0.0, "end_s": None, "loop": loop} for loop in range(loops) for c in clips]
    return common.build_footage("footage", segments, spec, cache, frames=total, log=log)


def extract_cmd(video: str, ws: Path, args, *extra: str) -> list[str]:
    return [sys.executable, "-m", "curator", "extract", video, "-w", str(ws), "-q", "--json",
            "--segment-seconds", str(args.segment_seconds), "--models", args.models, *extra]


def timed(cmd: list[str]) -> dict:
    wall, cpu, proc = common.run_timed(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "summary_s": summary["seconds"],
            "units": summary["units"], "faces": summary["faces"], "frames_analysed": summary["frames_analysed"],
            "load_before": common.loadavg()}


def inside(args) -> None:
    """In the namespaces: loopback up, the runs asked for, results as JSON on stdout."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    results = {}
    if args.inside == "start":
        for r in range(args.repeats):
            ws = Path(args.work) / f"ray_start_{r}"
            results.setdefault("ray_start", []).append(timed(extract_cmd(args.video, ws, args, "--engine", "ray")))
    else:
        n = int(args.inside)
        common_opts = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        # --pin: node i and every process it starts (its workers inherit the affinity) run on core i only, so
        # N one-CPU nodes have exactly N cores; without it a unit's decoder thread borrows a second core.
        pin = (lambda i: ["taskset", "-c", str(i % os.cpu_count())]) if args.pin else (lambda i: [])
        t0 = time.monotonic()
        subprocess.run([*pin(0), RAY, "start", "--head", "--port", ADDRESS.split(":")[1], "--temp-dir", args.ray_temp,
                        "--include-dashboard", "false", *common_opts], check=True, capture_output=True)
        for i in range(1, n):
            subprocess.run([*pin(i), RAY, "start", "--address", ADDRESS, *common_opts], check=True,
                           capture_output=True)
        results["cluster_start_s"] = round(time.monotonic() - t0, 1)
        for r in range(args.repeats):
            ws = Path(args.work) / f"ray_{n}_{r}"
            results.setdefault(f"ray_{n}", []).append(
                timed(extract_cmd(args.video, ws, args, "--engine", "ray", "--ray-address", ADDRESS)))
        subprocess.run([RAY, "stop", "--force"], capture_output=True)
    print(json.dumps(results))


def in_namespaces(args, what: str, video: str, work: Path) -> dict:
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must be short
    cmd = ["unshare", "--net", "--pid", "--fork", "--mount-proc", sys.executable, __file__, "--inside", what,
           "--video", video, "--work", str(work), "--ray-temp", temp, "--repeats", str(args.repeats),
           "--segment-seconds", str(args.segment_seconds), "--models", args.models, *(["--pin"] if args.pin else [])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
                                                                  "RAY_AUTH_MODE": "disabled"})  # as in tests/test_ray.py
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_table(a: Path, b: Path) -> bool:
    from curator.workspace import open_workspace, read_table

    ids = [read_table(open_workspace(ws), ["face_id"])["face_id"] for ws in (a, b)]
    return sorted(ids[0]) == sorted(ids[1])


def median_wall(runs: list[dict]) -> float:
    return common.median([r["wall_s"] for r in runs])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=4.0, help="length of the footage [4]")
    ap.add_argument("--segment-seconds", type=float, default=30.0, help="segment length: the units of work [30]")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="cluster sizes to time (1 CPU a node) [1 2]")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--pin", action="store_true", help="pin each cluster node to one core (taskset): N nodes, N cores")
    ap.add_argument("--models", default=os.environ.get("CURATOR_MODELS") or str(common.PACK_SMALL))
    ap.add_argument("--cache", default=None, help="where built footage is kept [CURATOR_BENCH_CACHE or ~/.cache/curator-bench]")
    ap.add_argument("--out", default=str(common.REPO / "bench" / "results" / "ray_engine.json"))
    ap.add_argument("--inside", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--video", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ray-temp", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inside:
        inside(args)
        return 0
    common.require_testdata()
    foot = footage(args.minutes, Path(args.cache) if args.cache else None)
    work = Path(tempfile.mkdtemp(prefix="curator-ray-bench-"))
    try:
        results = {"local": []}
        for r in range(args.repeats):
            results["local"].append(timed(extract_cmd(foot["path"], work / f"local_{r}", args)))
            log(f"local: {results['local'][-1]}")
        results.update(in_namespaces(args, "start", foot["path"], work))
        log(f"ray_start: {results['ray_start']}")
        clusters = {}
        for n in args.workers:
            got = in_namespaces(args, str(n), foot["path"], work)
            clusters[n] = got.pop("cluster_start_s")
            results.update(got)
            log(f"ray_{n}: {results[f'ray_{n}']}")
        checked = {name: all(same_table(work / "local_0", work / f"{name}_{r}") for r in range(args.repeats))
                   for name in results if name != "local"}
        local = median_wall(results["local"])
        t1 = median_wall(results[f"ray_{min(args.workers)}"])
        figures = {
            "local_wall_s": local,
            "ray_start_over_local": round(median_wall(results["ray_start"]) / local, 2),
            **{f"ray_{n}_over_local": round(median_wall(results[f"ray_{n}"]) / local, 2) for n in args.workers},
            **{f"efficiency_{n}": round(t1 * min(args.workers) / (n * median_wall(results[f"ray_{n}"])), 2)
               for n in args.workers if n != min(args.workers)},
        }
        out = {"machine": common.machine_info(), "git": common.git_rev(), "ray": _ray_version(),
               "footage": {k: foot[k] for k in ("path", "frames", "seconds")}, "minutes": args.minutes,
               "segment_seconds": args.segment_seconds, "repeats": args.repeats, "pinned": args.pin,
               "cluster_start_s": clusters,
               "runs": results, "same_face_ids_as_local": checked, "figures": figures}
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        log(f"figures: {figures}; tables match local: {checked}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _ray_version() -> str | None:
    try:
        import ray

        return ray.__version__
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(main())
