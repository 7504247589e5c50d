"""Train a face swap between two curator exports, on one device or many (DDP).

One device (no process group):

    python -m trainer --a faces_a --b faces_b --out run --steps 20000
    curator train --a faces_a --b faces_b --out run --time-limit 2h

Several GPUs or processes (NCCL on GPUs, gloo on CPU), one machine or several:

    torchrun --nproc-per-node 4 -m trainer --a faces_a --b faces_b --out run --steps 20000

--batch is the number of faces of EACH identity per step, over all processes;
each rank draws its own batch // world_size faces from its own per-step random
stream, so the ranks see different faces and DDP averages their gradients.

Everything the loop does is in `train()` below, top to bottom: set up
(distributed, device, config, data, model), then the step loop (forward,
loss, backward, step, the next step's batch, log, preview, save), then clean up.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext, contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from curator.fs.atomic import write_json

from . import TrainError, checkpoint
from .config import argument_parser, given, parse_duration, resolve_config
from .data import batch, eyes_mouth_mask, face_mask, load_set, plain, pose_weights, target_weights
from .loss import face_loss
from .model import FaceSwap


def parse_args(argv: list[str] | None = None) -> dict:
    """Command line -> {option: value} for the options actually given (the rest come from Config or the checkpoint)."""
    return given(vars(argument_parser("python -m trainer", __doc__).parse_args(argv)))


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of one rank's random draws at one step.

    Derived, not carried: a resumed run (or one with another world size)
    draws exactly what an uninterrupted run would, with no generator state
    to save per rank, and no two ranks or steps share a stream.
    """
    return int.from_bytes(hashlib.blake2b(f"{seed}/{step}/{rank}".encode(), digest_size=8).digest(), "little")


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"--device cuda: no CUDA device available to this PyTorch ({torch.__version__})")
        if local_rank >= torch.cuda.device_count():  # NCCL cannot run two ranks on one GPU
            raise TrainError(f"local rank {local_rank} but only {torch.cuda.device_count()} GPU(s) on this machine: "
                             "use at most one process per GPU (--nproc-per-node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return device
    if name == "cpu":
        return torch.device("cpu")
    raise TrainError(f"--device must be auto, cpu or cuda, not {name!r}")


def preview_grid(model: FaceSwap, show_a: torch.Tensor, show_b: torch.Tensor) -> torch.Tensor:
    """[3, 4R, 2kR] in [0, 1]. Rows A->A, A->B, B->B, B->A; each row is k (input, output) pairs.

    Outputs are blended into their input through the predicted mask, as a
    swap would be, so the grid shows the mask's edge as well as the face.
    """
    rows = []
    for x, to in ((show_a, "a"), (show_a, "b"), (show_b, "b"), (show_b, "a")):
        face, mask = model.swap(x, to)
        out = face.float() * mask.float() + x * (1 - mask.float())
        pairs = torch.stack([x, out], 1).flatten(0, 1)  # in1, out1, in2, out2, ...
        rows.append(torch.cat(list(pairs), dim=2))  # side by side
    return torch.cat(rows, dim=1).clamp(0, 1)


def weights_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def check_run_folder(overrides: dict) -> None:
    """Before anything is written: --out is a new or empty folder or a run folder, never an input (docs/security.md).

    Training never deletes, but files mixed into someone's footage folder, a
    workspace or an export are as bad: a folder holding other files is refused.
    """
    from curator import outputs

    out = overrides.get("out")
    if not out:
        return
    run = Path(out).expanduser().resolve()
    keep = {Path(overrides[k]): f"identity {k.upper()}'s export" for k in ("a", "b") if overrides.get(k)}
    try:
        outputs.refuse_overlap(run, keep)
    except outputs.OutputError as e:
        raise TrainError(str(e)) from None
    if run.exists() and not run.is_dir():
        raise TrainError(f"{run}: is a file; give a folder for the run")
    others = run.is_dir() and [p for p in run.iterdir() if p.name != ".lock"]
    if others and not checkpoint.exists(run) and (outputs.read_marker(run) or {}).get("command") != "train":
        raise TrainError(f"{run}: exists and is not a training run folder (it holds {others[0].name}, ...); "
                         "choose a new or empty --out")


def mark_run_folder(run: Path) -> None:
    """Say that `curator train` made this folder: other commands refuse to write into or replace it."""
    from curator import outputs

    if outputs.read_marker(run) is None:
        write_json(run / outputs.MARKER, {"tool": "curator", "command": "train", "files": []})


@contextmanager
def _run_lock(out, master: bool):
    """One training run per folder: rank 0 holds the folder's lock (curator.fs.lock, as a workspace does)."""
    from curator.fs.lock import exclusive

    if not (master and out):
        yield
        return
    folder = Path(out).resolve()
    existed = folder.exists()
    with exclusive(folder / ".lock", "curator train", f"run folder {folder}", error=TrainError):
        try:
            yield
        finally:
            # A run that never started leaves no folder behind (only our lock would be in it). Only the holder
            # cleans up: a refused second trainer never touches the folder of the run that holds it.
            if not existed and [p.name for p in folder.iterdir()] == [".lock"]:
                (folder / ".lock").unlink()
                folder.rmdir()


def draws(s: dict, cfg, name: str, note, device) -> torch.Tensor | None:
    """How a set's faces are drawn: by its target weights (--for-weights, a set curated `--for` a video), else by
    inverse pose-bin frequency (--pose-balance), else uniformly (None)."""
    if cfg.for_weights:
        w = target_weights(s["target_faces"])
        if w is not None:
            return torch.from_numpy(w).float().to(device)
        note(f"{name} carries no target weights (not curated with --for, or none of its training faces serves the "
             "target); its faces are drawn " + ("by pose" if cfg.pose_balance else "evenly"))
    if cfg.pose_balance:
        return torch.from_numpy(pose_weights(s["yaw"], s["pitch"])).float().to(device)
    return None


def train(overrides: dict) -> dict:
    """Train with these options and return a JSON-ready summary (the dict at the end of `_train`).

    overrides: {Config field: value}, e.g. {"a": A, "b": B, "out": RUN, "steps": 1000}; an option left out
    (or None) takes Config's default or, with "resume", the checkpoint's value. Paths may be Path objects.
    Problems the user can fix raise TrainError. The command lines call this through `run`.
    """
    # ---- distributed setup. torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; a plain run has none.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    ddp = world > 1
    device = pick_device(overrides.get("device") or "auto", local_rank)
    if ddp:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    master = rank == 0  # rank 0 alone logs, previews and saves
    try:
        check_run_folder(overrides)
        with _run_lock(overrides.get("out"), master):
            return _train(overrides, device, rank, world, ddp, master)
    finally:
        if ddp:
            dist.destroy_process_group()


def _train(overrides: dict, device: torch.device, rank: int, world: int, ddp: bool, master: bool) -> dict:
    started = time.perf_counter()
    cfg, state = resolve_config(overrides)
    run = Path(cfg.out)
    if cfg.batch % world:
        raise TrainError(f"--batch {cfg.batch} is not divisible by the {world} processes")
    local_batch = cfg.batch // world
    if device.type == "cuda" and cfg.deterministic:
        # cuDNN's autotuner and atomics-based kernels make two identical GPU runs
        # drift apart within tens of steps; this trades speed for repeatability.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS first starts, below
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels once
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # bf16 autocast where the GPU has it (Ampere and newer): ~2x throughput, and
    # unlike fp16 it needs no loss scaling. CPU runs stay fp32 (exact resume).
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()

    def note(msg: str) -> None:
        if master:
            print(f"trainer: {msg}", file=sys.stderr, flush=True)

    # ---- model and optimiser, first: a bad checkpoint should fail before minutes of JPEG decoding.
    # Same seed on every rank; DDP also broadcasts rank 0's weights.
    R = cfg.resolution
    torch.manual_seed(cfg.seed)
    model = FaceSwap(R, cfg.width, cfg.latent).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    step = 0
    if state is not None:
        checkpoint.load_weights(run, model, state)
        checkpoint.load_optimizer(run, optimizer, state)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr  # an explicit --lr on resume wins over the saved one
        checkpoint.set_rng_states(state["rng"], device)
        step = int(state["step"])
    first_step = step

    # ---- data: both sets decoded once, kept on the device as uint8.
    set_a, set_b = load_set(cfg.a, R), load_set(cfg.b, R)
    if abs(set_a["margin"] - set_b["margin"]) > 1e-6:
        raise TrainError(f"A and B were aligned with different margins ({set_a['margin']} vs {set_b['margin']}); "
                         "a swap needs both framed alike: export them with the same settings")
    for name, s in (("A", set_a), ("B", set_b)):
        if not s["has_provenance"]:
            note(f"{name} has no provenance.json; assuming the default alignment margin {s['margin']}")
        if s["size"] < R:
            note(f"{name}'s crops are {s['size']} px, upscaled to --resolution {R} (soft targets)")
    faces_a, faces_b = set_a["faces"].to(device), set_b["faces"].to(device)
    mask = torch.from_numpy(face_mask(R, set_a["margin"])).to(device)
    weight = mask * (1 + cfg.eyes_mouth_weight * torch.from_numpy(eyes_mouth_mask(R, set_a["margin"])).to(device))
    if cfg.for_weights and all(target_weights(s["target_faces"]) is None for s in (set_a, set_b)):
        raise TrainError("--for-weights: neither export carries target weights (manifest column target_faces, written "
                         "by `curator curate --for VIDEO`); curate a set for the video you will convert, or leave it out")
    draw_a, draw_b = (draws(s, cfg, name, note, device) for name, s in (("A", set_a), ("B", set_b)))
    k = min(4, len(faces_a), len(faces_b))  # preview: the same few faces every time, spread over each set
    show_a = plain(faces_a[torch.linspace(0, len(faces_a) - 1, k).long()])
    show_b = plain(faces_b[torch.linspace(0, len(faces_b) - 1, k).long()])
    note(f"A: {len(faces_a)} faces, B: {len(faces_b)} faces at {R} px on {device}"
         + (f", {world} processes" if ddp else "") + (", bf16" if bf16 else "")
         + (f"; resuming at step {step}" if state is not None else ""))

    raw = model
    if ddp:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    config = asdict(cfg)

    # ---- outputs (rank 0): the loss log, TensorBoard, previews.
    log = writer = bar = None
    if master:
        run.mkdir(parents=True, exist_ok=True)
        mark_run_folder(run)
        (run / "previews").mkdir(exist_ok=True)
        log_path = run / "loss.jsonl"
        if state is not None and log_path.exists():
            # Steps logged after the checkpoint (a crash, kill -9) are redone now; drop them.
            kept = [line for line in log_path.read_text().splitlines(keepends=True) if _logged_step(line) <= step]
            from curator.fs.atomic import write_bytes
            write_bytes(log_path, "".join(kept).encode())
        log = open(log_path, "a")
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run / "tb"), purge_step=step + 1)
        if not cfg.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                           console=Console(stderr=True, highlight=False))
            bar.start()
            task = bar.add_task("train", total=cfg.steps, completed=step, stats="")
    if cfg.sync_check:
        (run / "sync").mkdir(parents=True, exist_ok=True)
        sync_log = open(run / "sync" / f"rank{rank}.txt", "a")

    def save() -> None:
        if master:
            extra = {"world_size": world}
            checkpoint.save(run, raw, optimizer, step, config, extra, device)

    def preview() -> None:  # rank 0 only
        with autocast:
            grid = preview_grid(raw, show_a, show_b).float()
        _write_png(run / "previews" / f"step_{step:08d}.png", grid)
        writer.add_image("preview", grid, step)

    # ---- stop requests: Ctrl-C / SIGTERM finish the current step, save, and exit.
    signalled: list[int] = []

    def on_signal(signum, frame):
        if signalled:  # a second Ctrl-C: stop now, without saving
            raise KeyboardInterrupt
        signalled.append(signum)

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    deadline = time.monotonic() + parse_duration(cfg.time_limit) if cfg.time_limit else math.inf

    def timer():
        # CUDA events time the GPU work itself without a sync per phase; the CPU has only a clock.
        if device.type == "cuda":
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def seconds(t0, t1) -> float:
        return t0.elapsed_time(t1) / 1000 if device.type == "cuda" else t1 - t0

    def make_batch(step: int):
        """This rank's batch for `step`: a function of (seed, step, rank) alone, so a resumed run draws what an
        uninterrupted one would, whenever the batch is made."""
        gen = torch.Generator(device=device).manual_seed(step_seed(cfg.seed, step, rank))
        return batch(faces_a, faces_b, local_batch, draw_a, draw_b, mask, weight, gen)

    def more(step: int) -> bool:
        return cfg.steps is None or step < cfg.steps

    if not more(step):
        note(f"already at step {step}; raise --steps to train further")
    last_saved = step
    stopped_by = None
    la = lb = None  # the last step's losses
    loop_started = time.perf_counter()
    try:
        # ---- the loop
        next_batch = make_batch(step) if more(step) else None
        while more(step):
            wall0 = time.perf_counter()
            t0 = timer()
            ia, ib, (in_a, target_a, mask_a, weight_a), (in_b, target_b, mask_b, weight_b) = next_batch
            with autocast:
                face_a, pred_mask_a, face_b, pred_mask_b = model(in_a, in_b)
            loss_a, parts_a = face_loss(face_a, pred_mask_a, target_a, mask_a, weight_a)
            loss_b, parts_b = face_loss(face_b, pred_mask_b, target_b, mask_b, weight_b)
            loss = loss_a + loss_b
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP all-reduces (averages) the gradients here
            optimizer.step()
            step += 1
            t1 = timer()
            # The next step's batch, made now: on a GPU its kernels queue behind this step's, so the CPU launches
            # them while the GPU is still busy, and the next step starts with its batch ready. (On a signal or
            # the time limit it is made in vain: a few milliseconds.)
            next_batch = make_batch(step) if more(step) else None
            t2 = timer()

            # One small all-reduce: the ranks' mean losses, and whether anyone must stop
            # (a rank got a signal, or rank 0's clock passed the time limit).
            stop_now = bool(signalled) or (master and time.monotonic() >= deadline)
            stats = torch.stack([loss_a.detach().float(), loss_b.detach().float(),
                                 torch.tensor(float(stop_now), device=device)])
            if ddp:
                dist.all_reduce(stats)
            la, lb, stop_votes = (stats / torch.tensor([world, world, 1.0], device=device)).tolist()
            if not math.isfinite(la + lb):
                raise TrainError(f"loss became {la + lb} at step {step}; stopped without saving (the checkpoint "
                                 f"at step {last_saved} is intact); try a lower --lr")
            if cfg.sync_check:
                # The faces this rank drew ride along, to show the ranks' shards differ.
                sync_log.write(f"{step} {weights_hash(raw)} a={ia.tolist()} b={ib.tolist()}\n")
                sync_log.flush()

            if master:
                step_s = time.perf_counter() - wall0
                data_frac = seconds(t1, t2) / max(seconds(t0, t2), 1e-9)  # making a batch, over the whole step
                images_s = 2 * cfg.batch / max(step_s, 1e-9)  # A and B faces, all ranks
                log.write(json.dumps({"step": step, "loss": la + lb, "loss_a": la, "loss_b": lb,
                                      "images_per_s": round(images_s, 3), "data_fraction": round(data_frac, 5)}) + "\n")
                log.flush()
                writer.add_scalar("loss/total", la + lb, step)
                writer.add_scalar("loss/a", la, step)
                writer.add_scalar("loss/b", lb, step)
                for name in ("l1", "dssim", "mask"):
                    writer.add_scalar(f"parts_a/{name}", parts_a[name].item(), step)
                    writer.add_scalar(f"parts_b/{name}", parts_b[name].item(), step)
                writer.add_scalar("speed/images_per_s", images_s, step)
                writer.add_scalar("speed/data_fraction", data_frac, step)
                if bar is not None:
                    bar.update(task, completed=step, stats=f"{images_s:7.1f} img/s  loss {la + lb:.4f}")
                if step % cfg.preview_every == 0:
                    preview()
                if step % cfg.save_every == 0:
                    save()
            if step % cfg.save_every == 0:
                last_saved = step
            if stop_votes > 0:
                stopped_by = signalled[0] if signalled else "time_limit" if time.monotonic() >= deadline else "peer"
                break
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        if bar is not None:
            bar.stop()
    loop_seconds = time.perf_counter() - loop_started
    # ---- clean exit (steps reached, time limit, or a signal): the last step always gets a checkpoint and a
    # preview, whatever --save-every and --preview-every say (a 30-step run would otherwise show nothing).
    if step > last_saved:
        save()
    if master and step > first_step and step % cfg.preview_every:
        preview()
    if master:
        log.close()
        writer.close()
    if cfg.sync_check:
        sync_log.close()
    if isinstance(stopped_by, int):
        note(f"stopped by {signal.Signals(stopped_by).name} at step {step}; saved {run} (continue with --resume)")
    else:
        why = {"time_limit": " (time limit)", "peer": " (another rank was interrupted)"}.get(stopped_by, "")
        note(f"step {step}: checkpoint in {run}{why}")
    images = 2 * cfg.batch * (step - first_step)  # A and B faces, all ranks
    return {
        "run": str(run),
        "step": step,  # reached, counting earlier runs of RUN
        "steps_this_invocation": step - first_step,
        "seconds": round(time.perf_counter() - started, 3),
        "device": str(device),
        "world_size": world,
        "loss": None if la is None else la + lb,  # the last step's, as in loss.jsonl
        "loss_a": la,
        "loss_b": lb,
        "images_per_s": round(images / loop_seconds, 3) if images else None,
        "stopped_by": signal.Signals(stopped_by).name if isinstance(stopped_by, int) else stopped_by or "steps",
        "checkpoint": {"weights": str(run / checkpoint.WEIGHTS), "state": str(run / checkpoint.STATE)},
        "loss_log": str(run / "loss.jsonl"),
        "exit_code": 128 + stopped_by if isinstance(stopped_by, int) else 0,
    }


def _logged_step(line: str) -> float:
    """The step of a loss.jsonl line; a line cut short by a crash counts as after every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _write_png(path: Path, grid: torch.Tensor) -> None:
    import cv2

    from curator.fs.atomic import write_bytes

    rgb = (grid.permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype("uint8")
    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    if ok:
        write_bytes(path, buf.tobytes())


def run(overrides: dict, prog: str = "trainer") -> int:
    """Train and return the exit code; problems the user can fix are one line on stderr and exit code 2."""
    try:
        summary = train(overrides)
    except TrainError as e:
        where = f" [rank {os.environ['RANK']}]" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        print(f"{prog}: error{where}: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        # Only a second Ctrl-C (or one before training started) gets here: nothing new was saved.
        print(f"{prog}: interrupted; not saved (an earlier checkpoint, if any, is intact)", file=sys.stderr, flush=True)
        return 130
    return summary["exit_code"]


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(parse_args(argv)))


if __name__ == "__main__":
    main()
