"""A two-node Ray cluster on this machine and the `curator extract --engine ray` runs that tests/test_ray.py checks.

Run by tests/test_ray.py inside fresh network and PID namespaces
(`unshare --net --pid --fork --mount-proc`): loopback is the only network, so
every connection stays on 127.0.0.1 (outside one, Ray registers the machine's
own address even when given 127.0.0.1), and every process started here ends
when this script does. Usage: python tests/ray_cluster.py PLAN.json; the plan
names the output folder, the inputs and the runs; each run's results go to
OUT/results.json, which the tests read.

Runs: `same` and `segments` (plain runs), `worker_killed` (one worker process
killed with SIGKILL while both nodes are inside a unit that has staged rows),
`driver_killed` (the `curator` process killed with SIGKILL once a unit is
done and another has staged rows, then extract run again).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curator.workspace import open_workspace, staged_units  # noqa: E402

PORT = 6379
ADDRESS = f"127.0.0.1:{PORT}"
RAY = [str(Path(sys.executable).parent / "ray")]  # the venv's `ray` command


def start_cluster(temp: Path) -> float:
    """Head and worker node, one CPU each; returns the seconds it took."""
    t0 = time.monotonic()
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    for cmd in ([*RAY, "start", "--head", "--port", str(PORT), "--temp-dir", str(temp), "--include-dashboard", "false",
                 *common], [*RAY, "start", "--address", ADDRESS, *common]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.monotonic() - t0


def curator(*args) -> list[str]:
    return [sys.executable, "-m", "curator", *map(str, args)]


def extract_args(ws: Path, inputs: list[str], extra: list[str]) -> list[str]:
    return curator("extract", *inputs, "-w", ws, "--engine", "ray", "--ray-address", ADDRESS, "-q", "--json", *extra)


def outcome(rc: int, out: str, err: str) -> dict:
    try:
        summary = json.loads(out)
    except ValueError:
        summary = None
    return {"rc": rc, "summary": summary, "stdout": out[-3000:] if summary is None else "", "stderr": err[-3000:]}


def run(ws: Path, inputs: list[str], extra: list[str]) -> dict:
    proc = subprocess.run(extract_args(ws, inputs, extra), capture_output=True, text=True)
    return outcome(proc.returncode, proc.stdout, proc.stderr)


def partial_units(ws: Path) -> dict:
    """Units with staged rows that are not finished: {key: last staged frame}."""
    if not (ws / "workspace.json").exists():
        return {}
    units = staged_units(open_workspace(ws))
    return {k: r["last_frame"] for k, r in units.items()
            if not r.get("complete") and r.get("last_frame", -1) > (r.get("unit") or {}).get("start", 0)}


def complete_units(ws: Path) -> list[str]:
    if not (ws / "workspace.json").exists():
        return []
    return [k for k, r in staged_units(open_workspace(ws)).items() if r.get("complete")]


def unit_workers() -> list[int]:
    """Worker processes running a unit now (Ray titles a busy worker `ray::<task name>`)."""
    out = subprocess.run(["pgrep", "-f", "^ray::unit_task"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def wait_for(condition, timeout: float = 120.0, proc: subprocess.Popen | None = None):
    """condition()'s first true answer, or None after `timeout` seconds or once `proc` has ended. Generous: on a
    loaded machine, Ray's workers take minutes to start and load the models."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    return None


def worker_killed(ws: Path, inputs: list[str], extra: list[str]) -> dict:
    """SIGKILL one worker process while both nodes' units have staged rows; Ray runs its unit again."""
    proc = subprocess.Popen(extract_args(ws, inputs, extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    both = wait_for(lambda: (len(partial_units(ws)) >= 2 and len(unit_workers()) >= 2) and partial_units(ws),
                    timeout=900, proc=proc)
    victim = unit_workers()[0] if both else None
    if victim:
        os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=1200)
    return {**outcome(proc.returncode, out, err), "killed_pid": victim, "partial_at_kill": both}


def driver_killed(ws: Path, inputs: list[str], extra: list[str]) -> dict:
    """SIGKILL the driver once a unit is done and another has staged rows; then extract again."""
    proc = subprocess.Popen(extract_args(ws, inputs, extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    moment = wait_for(lambda: complete_units(ws) and partial_units(ws) and
                      {"complete": complete_units(ws), "partial": partial_units(ws)}, timeout=900, proc=proc)
    if moment:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone = wait_for(lambda: not unit_workers(), timeout=60) is not None  # Ray ends a dead driver's tasks
    again = run(ws, inputs, extra)
    return {**again, "killed_rc": proc.returncode, "state_at_kill": moment, "tasks_ended": gone}


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    out = Path(plan["out"])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    results = {"cluster_seconds": start_cluster(Path(plan["ray_temp"]))}
    kinds = {"run": run, "worker_killed": worker_killed, "driver_killed": driver_killed}
    try:
        for name, spec in plan["runs"].items():
            t0 = time.monotonic()
            results[name] = kinds[spec["kind"]](out / name, spec["inputs"], spec["extra"])
            results[name]["seconds"] = round(time.monotonic() - t0, 1)
    finally:
        (out / "results.json").write_text(json.dumps(results, indent=2))
        subprocess.run([*RAY, "stop", "--force"], capture_output=True)  # only this namespace's processes


if __name__ == "__main__":
    main(sys.argv[1])
