"""Faults that land where a test says they do, and the evidence that they did.

Two tools for tests/test_faults.py:

- `kill_at(...)`: run a real `curator` command under strace, which sends the
  process SIGKILL on entry to one chosen system call, so it dies at that exact
  point, e.g. with a file written under its temporary name and not yet renamed
  into place. The call is chosen by what it does (a rename into `workspace.json`,
  the swap of an export folder), found by tracing the same command once without
  the fault; strace's log of the killed run then says where it died.
- `on_small_disk(...)`: run commands on a tmpfs of a given size, mounted in a
  mount namespace of its own (`unshare --mount`), so writes past that size fail
  with ENOSPC as on a full disk; the filesystem can then be grown and the
  command run again, and what is on it is copied out for the test to compare.
  Run as a script (`python tests/fault_tools.py PLAN.json`), this file is the
  part that runs inside the namespace.

Both need Linux tools that CI installs (.ci/install.sh): strace and unshare
(util-linux). Where they are missing the tests fail; they do not skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The calls that change what a folder holds: renames (commits) and removals (clean-up).
TRACED = ("rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir")
_CALL = re.compile(r"^(\d+)\s+(" + "|".join(TRACED) + r"|execve)\((.*?)(?: <unfinished \.\.\.>|\)\s+=\s+(.*))$")
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>.*\)\s+=\s+(.*)$")
_KILLED = re.compile(r"^(\d+)\s+\+\+\+ killed by SIGKILL")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass
class Call:
    syscall: str
    paths: tuple[str, ...]  # the path arguments, in order
    result: str | None  # "0", "-1 ENOSPC (...)", or "?" when the process died inside the call
    ordinal: int  # 1 for the main thread's first call of this syscall, 2 for its second, ...


@dataclass
class Trace:
    main_tid: int
    calls: list[Call]  # the main thread's renames and removals, in order
    killed: bool  # the main process was killed by SIGKILL


def read_trace(log: Path) -> Trace:
    """The main thread's renames and removals from an strace log (`-f -o LOG`, execve traced so its first line names it)."""
    main, calls, killed, open_call, counts = None, [], False, None, {}
    for line in log.read_text(errors="replace").splitlines():
        m = _CALL.match(line)
        if m:
            tid, name, args, result = int(m[1]), m[2], m[3], m[4]
            if main is None and name == "execve":
                main = tid
            if tid != main or name == "execve":
                continue
            counts[name] = counts.get(name, 0) + 1
            call = Call(name, tuple(_STRING.findall(args)), result, counts[name])
            calls.append(call)
            open_call = call if result is None else None
            continue
        m = _RESUMED.match(line)
        if m and int(m[1]) == main and open_call is not None:
            open_call.result = m[3]
            open_call = None
            continue
        m = _KILLED.match(line)
        if m and int(m[1]) == main:
            killed = True
    if main is None:
        raise AssertionError(f"{log}: no execve in the strace log")
    return Trace(main, calls, killed)


def strace(log: Path, inject: Call | None = None) -> list[str]:
    cmd = ["strace", "-f", "-qq", "-o", str(log), "-e", "trace=execve," + ",".join(TRACED)]
    if inject is not None:
        cmd += ["-e", f"inject={inject.syscall}:signal=SIGKILL:when={inject.ordinal}"]
    return cmd


def curator_argv(args: list) -> list[str]:
    return [sys.executable, "-m", "curator", *map(str, args)]


def trace_calls(args: list, log: Path) -> Trace:
    """Run `curator ARGS` to the end under strace; its main thread's renames and removals."""
    proc = subprocess.run(strace(log) + curator_argv(args), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_trace(log)


def kill_at(args: list, call: Call, log: Path) -> tuple[int, Call]:
    """Run `curator ARGS` under strace, killed with SIGKILL on entry to `call` (its syscall's n-th call in the
    main thread). Returns the exit status and the call it died in, read back from strace's log; fails unless
    the process did die there."""
    proc = subprocess.run(strace(log, inject=call) + curator_argv(args), capture_output=True, text=True)
    trace = read_trace(log)
    assert trace.killed, f"the process was not killed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
    last = trace.calls[-1] if trace.calls else None
    assert last is not None and last.result == "?" and (last.syscall, last.ordinal) == (call.syscall, call.ordinal), (
        f"killed elsewhere than at {call}: {last}")
    return proc.returncode, last


def find_call(trace: Trace, matches, which: str = "first") -> Call:
    """The first (or last) of the traced calls for which `matches(call)` holds."""
    found = [c for c in trace.calls if matches(c)]
    assert found, f"no such call among {trace.calls}"
    return found[0] if which == "first" else found[-1]


# --- a small disk -------------------------------------------------------------------------------------------

def on_small_disk(mount: Path, size: int, steps: list[dict], work: Path) -> list[dict]:
    """Run `steps` with a tmpfs of `size` bytes mounted at `mount` (in a mount namespace of its own: nothing
    outside sees it). Steps: {"copy_in": [src, name]} copies a folder onto the disk; {"run": argv} runs a
    command there; {"resize": bytes} grows (or shrinks) the disk; {"copy_out": dst} copies the whole disk to
    dst. Returns, for each step, its outcome (for "run": rc, stdout, stderr) and the disk's size and use after
    it."""
    work.mkdir(parents=True, exist_ok=True)
    plan, result = work / "small_disk_plan.json", work / "small_disk_result.json"
    plan.write_text(json.dumps({"mount": str(mount), "size": size, "steps": steps, "result": str(result)}))
    namespace = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        namespace.insert(1, "--map-root-user")
    proc = subprocess.run([*namespace, sys.executable, __file__, str(plan)], capture_output=True, text=True)
    assert proc.returncode == 0, f"small-disk driver failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(result.read_text())


def _usage(mount: Path) -> dict:
    st = os.statvfs(mount)
    return {"disk_bytes": st.f_blocks * st.f_frsize, "used_bytes": (st.f_blocks - st.f_bfree) * st.f_frsize}


def _driver(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    mount = Path(plan["mount"])
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={plan['size']}", "tmpfs", str(mount)], check=True)
    out = []
    for step in plan["steps"]:
        rec: dict = {"step": next(iter(step))}
        if "copy_in" in step:
            src, name = step["copy_in"]
            shutil.copytree(src, mount / name, symlinks=True)
        elif "run" in step:
            proc = subprocess.run(step["run"], capture_output=True, text=True)
            rec.update(rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
        elif "resize" in step:
            subprocess.run(["mount", "-o", f"remount,size={step['resize']}", str(mount)], check=True)
        elif "copy_out" in step:
            shutil.copytree(mount, step["copy_out"], symlinks=True)
        rec.update(_usage(mount))
        out.append(rec)
    Path(plan["result"]).write_text(json.dumps(out))


def disk_bytes(folder: Path, page: int = 4096) -> int:
    """What `folder`'s files take on a tmpfs: each file's size rounded up to whole pages."""
    return sum(-(-p.stat().st_size // page) * page for p in Path(folder).rglob("*") if p.is_file())


def killed_by_sigkill(rc: int) -> bool:
    return rc == -signal.SIGKILL


if __name__ == "__main__":
    _driver(sys.argv[1])
