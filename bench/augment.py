"""Benchmark the trainer's batch making: ops per step and time per step, at several resolutions.

    python bench/augment.py [--resolutions 64,128,256] [--batch 16] [--repeats 15] [--device cpu]
                            [--threads 1] [--before REV] [--out bench/results/augment_cpu.json]

What is measured is one training step's data work, as the trainer does it:
draw `--batch` faces of A and of B and augment them (trainer.data.batch; for
a revision without it, two `sample` and two `augment` calls, as the trainer
did then). Per resolution:

- ops: the ATen ops of one step's batch, counted with torch.profiler:
  `aten_calls` (what Python calls into ATen) and `kernel_ops` (the ops that
  do the work themselves rather than through ops they call, i.e. about one
  kernel launch each on a GPU; views, allocations and no-op conversions left
  out); on CUDA also `cuda_kernels`, the kernels the profiler saw run.
- time: the median over `--repeats` calls in this one process, after a
  warm-up call: `total_ms` of wall time and `cpu_ms` of this thread's CPU
  time (on a CPU with one torch thread, all the work; unlike wall time it
  hardly moves when other jobs share the machine). On CUDA, `total_ms` waits
  for the GPU (synchronize before and after) and `issue_ms` is the wall time
  to launch it all, which is what the GPU waits on when it is idle.

The faces are random pixels (64 per set): the ops and their cost do not
depend on what the pixels show, and no test data or export is needed.

`--before REV` also measures the trainer of git revision REV (its trainer/
package, taken with `git archive` into a temporary folder, run in a
subprocess) and reports the ratios before/after.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FACES_PER_SET = 64
# ATen ops that launch no kernel: views, allocations, and conversions that are no-ops here.
NO_KERNEL = {"aten::" + n for n in (
    "empty", "empty_strided", "empty_like", "view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided",
    "slice", "select", "expand", "unsqueeze", "squeeze", "permute", "transpose", "t", "mT", "numpy_T", "detach",
    "alias", "resize_", "unbind", "split", "split_with_sizes", "chunk", "narrow", "lift_fresh", "resolve_conj",
    "resolve_neg", "contiguous", "to", "flatten", "view_as", "result_type", "_local_scalar_dense", "detach_",
    "as_strided_", "unsqueeze_", "squeeze_", "transpose_", "t_")}
# ATen ops that copy their bias into the output (an op of its own, counted) and then compute themselves.
WITH_BIAS = {"aten::addmm", "aten::baddbmm", "aten::addbmm", "aten::addmv"}


def step_batch(data, faces_a, faces_b, count, mask, weight, gen):
    """One step's batch, the way the trainer of this revision makes it."""
    if hasattr(data, "batch"):
        return data.batch(faces_a, faces_b, count, None, None, mask, weight, gen)
    ia = data.sample(len(faces_a), count, None, gen, faces_a.device)  # before trainer.data.batch
    ib = data.sample(len(faces_b), count, None, gen, faces_b.device)
    return ia, ib, data.augment(faces_a[ia], mask, weight, gen), data.augment(faces_b[ib], mask, weight, gen)


def count_ops(call, cuda: bool) -> dict:
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        call()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    aten = [e for e in events if e.name.startswith("aten::")]
    top = [e for e in aten if not (e.cpu_parent and e.cpu_parent.name.startswith("aten::"))]

    def computes(e) -> bool:  # this op or one inside it does work
        return e.name not in NO_KERNEL or any(computes(c) for c in e.cpu_children if c.name.startswith("aten::"))

    # An op that does work and leaves none of it to ops inside it (on a GPU: one kernel launch).
    kernels = [e.name for e in aten if e.name not in NO_KERNEL and (e.name in WITH_BIAS or not any(
        computes(c) for c in e.cpu_children if c.name.startswith("aten::")))]
    counts = {"aten_calls": len(top), "kernel_ops": len(kernels), "kernel_op_names": sorted(kernels)}
    if cuda:
        counts["cuda_kernels"] = sum(1 for e in events if e.device_type == DeviceType.CUDA
                                     and "Memcpy" not in e.name and "Memset" not in e.name)
    return counts


def measure(resolutions: list[int], batch: int, repeats: int, device: str) -> list[dict]:
    import torch

    from trainer import data

    cuda = device == "cuda"
    results = []
    for r in resolutions:
        g = torch.Generator().manual_seed(r)
        faces_a, faces_b = (torch.randint(0, 256, (FACES_PER_SET, 3, r, r), dtype=torch.uint8, generator=g).to(device)
                            for _ in range(2))
        mask = torch.from_numpy(data.face_mask(r, 0.3)).to(device)
        weight = mask * (1 + torch.from_numpy(data.eyes_mouth_mask(r, 0.3)).to(device))

        seeds = itertools.count()

        def call():  # a fresh generator per step, as the trainer makes one
            gen = torch.Generator(device=device).manual_seed(next(seeds))
            return step_batch(data, faces_a, faces_b, batch, mask, weight, gen)

        call()  # warm-up: first-call allocations, cached constants
        if cuda:
            torch.cuda.synchronize()
        issue, total, cpu = [], [], []
        for _ in range(repeats):
            c0, t0 = time.thread_time(), time.perf_counter()
            call()
            t1 = time.perf_counter()
            if cuda:
                torch.cuda.synchronize()
            t2, c2 = time.perf_counter(), time.thread_time()
            issue.append((t1 - t0) * 1000)
            total.append((t2 - t0) * 1000)
            cpu.append((c2 - c0) * 1000)
        row = {"resolution": r, "total_ms": round(common.median(total), 3), "cpu_ms": round(common.median(cpu), 3),
               "loadavg_1min": common.loadavg()[0], **count_ops(call, cuda)}
        if cuda:
            row["issue_ms"] = round(common.median(issue), 3)
        results.append(row)
        log(f"{r} px: {row['total_ms']:.2f} ms ({row['cpu_ms']:.2f} ms CPU), {row['kernel_ops']} kernel ops, "
            f"{row['aten_calls']} ATen calls"
            + (f", {row['cuda_kernels']} CUDA kernels, issued in {row['issue_ms']:.2f} ms" if cuda else ""))
    return results


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def measure_revision(rev: str, argv: list[str]) -> dict:
    """Run this script on git revision REV's trainer package (the current curator beside it) and read its JSON."""
    with tempfile.TemporaryDirectory(prefix="augment-before-") as tmp:
        archive = subprocess.run(["git", "-C", str(common.REPO), "archive", rev, "trainer"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        out = Path(tmp) / "before.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, str(common.REPO), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, __file__, *argv, "--out", str(out), "--label", rev], env=env, check=True)
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolutions", default="64,128,256")
    ap.add_argument("--batch", type=int, default=16, help="faces of each identity per step (the trainer's --batch)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads on CPU (0: PyTorch's default)")
    ap.add_argument("--before", default="", help="git revision to compare with (e.g. the commit before a change)")
    ap.add_argument("--label", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON report [default: bench/results/augment_cpu.json, or augment_cuda.json on CUDA]")
    args = ap.parse_args()
    out = args.out or common.REPO / "bench" / "results" / f"augment_{args.device}.json"

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import trainer

    log(f"trainer from {Path(trainer.__file__).parent}" + (f" ({args.label})" if args.label else ""))
    resolutions = [int(r) for r in args.resolutions.split(",")]
    results = measure(resolutions, args.batch, args.repeats, args.device)
    report = {"benchmark": "trainer batch making", "git": args.label or common.git_rev(),
              "machine": {**common.machine_info(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                          "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
                          "loadavg": common.loadavg()},
              "settings": {"device": args.device, "batch_per_identity": args.batch, "repeats": args.repeats},
              "results": results, "command": "python bench/augment.py " + " ".join(sys.argv[1:])}
    if args.before:
        same = ["--resolutions", args.resolutions, "--batch", str(args.batch), "--repeats", str(args.repeats),
                "--device", args.device, "--threads", str(args.threads)]
        before = measure_revision(args.before, same)
        report["before"] = {"git": args.before, "results": before["results"]}
        report["ratios"] = [{"resolution": a["resolution"],
                             "time_before_over_after": round(b["total_ms"] / a["total_ms"], 2),
                             "cpu_time_before_over_after": round(b["cpu_ms"] / a["cpu_ms"], 2),
                             "kernel_ops_before_over_after": round(b["kernel_ops"] / a["kernel_ops"], 2),
                             **({"cuda_kernels_before_over_after": round(b["cuda_kernels"] / a["cuda_kernels"], 2),
                                 "issue_before_over_after": round(b["issue_ms"] / a["issue_ms"], 2)}
                                if "cuda_kernels" in a else {})}
                            for a, b in zip(results, before["results"])]
    out.parent.mkdir(parents=True, exist_ok=True)
    from curator.fs.atomic import write_json

    write_json(out, report)
    if args.before:
        print("| resolution | ms before | ms after | ratio | CPU ms before | after | ratio | kernel ops before | after |")
        print("|---|---|---|---|---|---|---|---|---|")
        for a, b in zip(results, report["before"]["results"]):
            print(f"| {a['resolution']} px | {b['total_ms']:.1f} | {a['total_ms']:.1f} | "
                  f"{b['total_ms'] / a['total_ms']:.1f}x | {b['cpu_ms']:.1f} | {a['cpu_ms']:.1f} | "
                  f"{b['cpu_ms'] / a['cpu_ms']:.1f}x | {b['kernel_ops']} | {a['kernel_ops']} |")


if __name__ == "__main__":
    main()
