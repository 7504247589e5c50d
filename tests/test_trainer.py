"""The face-swap trainer (issue 7): real exports of two people, real training runs on CPU.

Tiny networks at 64 px keep every run to seconds. Subprocesses run with one
OpenMP thread each: on a small machine shared with other work, PyTorch's
default (one thread per core) makes its threads wait on each other and a
tiny model runs ~20x slower, and two DDP ranks would fight over the cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file


from curator.measure.align import template
from trainer import TrainError
from trainer.config import Config
from trainer.data import augment, eyes_mouth_mask, face_mask, pose_weights, sample
from trainer.train import run as run_training
from trainer.train import train

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
TINY = ["--resolution", "64", "--width", "8", "--latent", "64", "--lr", "1e-3", "--quiet"]
# The run that test_resume_* and test_ctrl_c_* must reproduce exactly.
SHORT = [*TINY, "--batch", "4", "--seed", "3", "--save-every", "4", "--preview-every", "5"]
STEPS = 16


def trainer(*args, module: str = "trainer", timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m trainer ...` (or `-m curator train ...` with module='curator')."""
    cmd = [sys.executable, "-m", module, *(["train"] if module == "curator" else []), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    return [r["loss"] for r in rows]


def weights(run: Path) -> dict:
    return load_file(str(run / "model.safetensors"))


def weights_sha256(run: Path) -> str:
    """The checkpoint's weights hashed as trainer.train.weights_hash hashes a model's."""
    h = hashlib.sha256()
    for name, t in sorted(weights(run).items()):
        h.update(name.encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def assert_one_error_line(text: str, *needles: str) -> str:
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if ": error" in line]
    assert len(errors) == 1, text
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def sets(ab_exports) -> tuple[Path, Path]:
    """Two single-person exports of two different people, 64 px crops (conftest.ab_exports); read-only."""
    return ab_exports


@pytest.fixture(scope="module")
def full_run(sets, tmp_path_factory) -> Path:
    """STEPS uninterrupted steps through `curator train` (the typer command)."""
    run = tmp_path_factory.mktemp("full") / "run"
    a, b = sets
    proc = trainer("--a", a, "--b", b, "--out", run, *SHORT, "--steps", STEPS, module="curator")
    assert proc.returncode == 0, proc.stderr
    return run


def test_two_process_ddp_keeps_ranks_identical_and_learns(sets, tmp_path):
    a, b = sets
    run = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "trainer", "--a", str(a), "--b", str(b), "--out", str(run), *TINY, "--batch", "8",
         "--steps", "40", "--device", "cpu", "--sync-check", "--preview-every", "1000"],
        capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "2 processes" in proc.stderr  # really distributed, not two independent runs

    curve = losses(run)
    assert len(curve) == 40
    assert np.mean(curve[-10:]) < 0.7 * np.mean(curve[:5]), curve

    # Every step, both ranks hold bit-identical weights...
    rank0 = [line.split() for line in (run / "sync" / "rank0.txt").read_text().splitlines()]
    rank1 = [line.split() for line in (run / "sync" / "rank1.txt").read_text().splitlines()]
    assert [r[:2] for r in rank0] == [r[:2] for r in rank1]
    assert [int(r[0]) for r in rank0] == list(range(1, 41))
    assert len({r[1] for r in rank0}) == 40  # ...and they change every step
    # ...while each rank trains on its own faces.
    differ = sum(r0[2:] != r1[2:] for r0, r1 in zip(rank0, rank1))
    assert differ >= 38, differ

    # The checkpoint holds those weights (same hash as trainer.train.weights_hash).
    assert weights_sha256(run) == rank0[-1][1]


def test_resume_continues_exactly(sets, full_run, tmp_path):
    a, b = sets
    run = tmp_path / "run"
    first = trainer("--a", a, "--b", b, "--out", run, *SHORT, "--steps", 10)
    assert first.returncode == 0, first.stderr
    assert torch.load(run / "state.pt", weights_only=True)["step"] == 10  # the save at exit (save-every is 4)
    second = trainer("--out", run, "--resume", "--steps", STEPS, "--quiet")
    assert second.returncode == 0, second.stderr
    assert "resuming at step 10" in second.stderr

    assert losses(run) == losses(full_run)  # bit for bit on CPU
    w_resumed, w_full = weights(run), weights(full_run)
    assert w_resumed.keys() == w_full.keys()
    assert all(torch.equal(w_resumed[k], w_full[k]) for k in w_full)


def test_ctrl_c_saves_and_resume_continues_exactly(sets, full_run, tmp_path):
    a, b = sets
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainer", "--a", str(a), "--b", str(b), "--out", str(run), *SHORT,
           "--steps", str(STEPS)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    log = run / "loss.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    stopped = torch.load(run / "state.pt", weights_only=True)["step"]
    assert 2 <= stopped < STEPS, err  # stopped early, at a step that was not a --save-every step...
    assert len(losses(run)) == stopped  # ...and saved exactly there

    proc = trainer("--out", run, "--resume", "--quiet")  # --steps comes from the checkpoint's config
    assert proc.returncode == 0, proc.stderr
    assert losses(run) == losses(full_run)
    assert all(torch.equal(v, weights(full_run)[k]) for k, v in weights(run).items())


def test_time_limit_stops_and_saves(sets, tmp_path):
    a, b = sets
    run = tmp_path / "run"
    proc = trainer("--a", a, "--b", b, "--out", run, *TINY, "--batch", "4", "--steps", 100000, "--time-limit", "2s")
    assert proc.returncode == 0, proc.stderr
    assert "(time limit)" in proc.stderr
    done = len(losses(run))
    assert 1 <= done < 100000
    assert torch.load(run / "state.pt", weights_only=True)["step"] == done


def test_previews_and_tensorboard_are_written(full_run):
    previews = sorted((full_run / "previews").glob("*.png"))
    # every --preview-every 5 steps, and the last step (16) whatever --preview-every says
    assert [p.name for p in previews] == ["step_00000005.png", "step_00000010.png", "step_00000015.png",
                                          "step_00000016.png"]
    first, last = (cv2.imread(str(p)) for p in (previews[0], previews[-1]))
    assert first.shape == (4 * 64, 2 * 4 * 64, 3)  # rows A->A, A->B, B->B, B->A; 4 (input, output) pairs
    assert np.abs(first.astype(int) - last.astype(int)).mean() > 1  # the model's drawing changed
    inputs, outputs = last[:, :64], last[:, 64:128]
    assert np.abs(inputs.astype(int) - outputs.astype(int)).mean() > 1  # outputs are not the inputs

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((full_run / "tb").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(full_run / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = acc.Scalars("loss/total")
    assert [s.step for s in scalars] == list(range(1, STEPS + 1))
    assert np.allclose([s.value for s in scalars], losses(full_run), rtol=1e-6)
    assert [i.step for i in acc.Images("preview")] == [5, 10, 15, 16]


def test_the_last_step_always_leaves_a_preview_and_a_checkpoint(sets, tmp_path):
    """Issue 15: a short run (30 steps) with the default --preview-every 250 and --save-every 1000 used to leave
    no preview; the last step writes both, and nothing in between."""
    a, b = sets
    run = tmp_path / "short"
    proc = trainer("--a", a, "--b", b, "--out", run, *TINY, "--batch", "4", "--steps", "30")
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (run / "previews").glob("*.png")] == ["step_00000030.png"]
    assert torch.load(run / "state.pt", weights_only=True)["step"] == 30


# --- data: masks, augmentation, pose balance --------------------------------------


@pytest.mark.parametrize("size, margin", [(64, 0.3), (256, 0.3), (128, 0.15)])
def test_masks_follow_the_alignment_template(size, margin):
    pts = np.round(template(size, margin)).astype(int)  # eyes, nose, mouth corners in the crop
    face, em = face_mask(size, margin), eyes_mouth_mask(size, margin)
    assert all(face[y, x] == 1 for x, y in pts)  # the whole inner face is fully in
    assert face[0, 0] == face[0, -1] == face[-1, 0] == face[-1, -1] == 0  # background corners out
    assert ((face > 0.05) & (face < 0.95)).mean() > 0.02  # a feathered rim, not a hard edge
    eyes, nose, mouth = pts[:2], pts[2], pts[3:].mean(0).astype(int)
    assert all(em[y, x] == 1 for x, y in [*eyes, mouth])
    assert em[nose[1], nose[0]] == 0 and (em <= face + 1e-6).all()  # eyes and mouth only, inside the face


def test_augmentation_moves_face_and_mask_together(sets):
    # A "face" that is the mask itself: after augmentation, the target must still sit on the target mask.
    size = 64
    mask = torch.from_numpy(face_mask(size, 0.3))
    faces = (mask * 255).round().to(torch.uint8).expand(8, 3, size, size).contiguous()
    gen = torch.Generator().manual_seed(0)
    inp, target, target_mask, weight = augment(faces, mask, mask, gen)
    assert inp.shape == target.shape == (8, 3, size, size) and target_mask.shape == weight.shape == (8, 1, size, size)
    for t, m, x in zip(target, target_mask, inp):
        grey = t.mean(0).flatten()
        assert np.corrcoef(grey, m.flatten())[0, 1] > 0.97  # same geometry (colour jitter aside)
        assert (t - x).abs().mean() > 0.002  # the input is additionally warped
    moved = (target_mask[:, 0] - mask).abs().mean((1, 2))
    assert (moved > 0.005).all()  # every sample got its own random transform
    again = augment(faces, mask, mask, torch.Generator().manual_seed(0))
    assert all(torch.equal(u, v) for u, v in zip(again, (inp, target, target_mask, weight)))  # seeded


def _augment_step_by_step(faces, mask, weight, gen):
    """The augmentation as docs/trainer.md describes it, one operation at a time, from augment's random draws."""
    import math

    import torch.nn.functional as F

    from trainer.data import PARAMETERS, WARP_GRID, WARP_STD

    b, _, r, _ = faces.shape
    u = torch.rand(b, len(PARAMETERS), generator=gen) * 2 - 1
    hue, rot, sat, con, bri, scale, sx, sy = (u[:, i] * v for i, v in enumerate(PARAMETERS.values()))
    offsets = WARP_STD * torch.randn(b, 2, WARP_GRID * WARP_GRID, generator=gen)
    x = faces.double() / 255
    k = torch.full((3,), 1 / math.sqrt(3), dtype=torch.float64)  # hue: Rodrigues rotation about the grey axis
    kx = k[0] * torch.tensor([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=torch.float64)
    cos, sin = hue.double().cos()[:, None, None], hue.double().sin()[:, None, None]
    rotation = cos * torch.eye(3, dtype=torch.float64) + sin * kx + (1 - cos) * torch.outer(k, k)
    x = torch.einsum("bij,bjhw->bihw", rotation, x)
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * (1 + sat.double()[:, None, None, None])
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * (1 + con.double()[:, None, None, None]) + bri.double()[:, None, None, None]
    x = x.clamp(0, 1)
    s, a = 1 + scale.double(), rot.double()
    theta = torch.stack([torch.stack([s * a.cos(), -s * a.sin(), sx.double()], 1),
                         torch.stack([s * a.sin(), s * a.cos(), sy.double()], 1)], 1)
    grid = F.affine_grid(theta, [b, 3, r, r], align_corners=False)
    target = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    maps = F.grid_sample(torch.stack([mask, weight])[None].expand(b, -1, -1, -1).double(), grid, align_corners=False)
    coarse = offsets.double().view(b, 2, WARP_GRID, WARP_GRID)
    fine = F.interpolate(coarse, size=(r, r), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    inp = F.grid_sample(x, grid + fine, padding_mode="border", align_corners=False)
    return inp, target, maps[:, :1], maps[:, 1:]


@pytest.mark.parametrize("size", [64, 128])
def test_augmentation_is_the_documented_one(sets, size):
    """augment's folded colour matrix and one-matmul grids equal the step-by-step augmentation, draw for draw."""
    a, _ = sets
    from trainer.data import load_set

    faces = load_set(a, size)["faces"][:6]
    mask = torch.from_numpy(face_mask(size, 0.3))
    weight = mask * (1 + torch.from_numpy(eyes_mouth_mask(size, 0.3)))
    fast = augment(faces, mask, weight, torch.Generator().manual_seed(5))
    slow = _augment_step_by_step(faces, mask, weight, torch.Generator().manual_seed(5))
    for name, f, s in zip(("input", "target", "mask", "weight"), fast, slow):
        assert f.shape == s.shape and f.dtype == torch.float32, name
        assert (f.double() - s).abs().max() < 2e-5, (name, (f.double() - s).abs().max())  # float32 rounding
    assert (fast[0] - fast[1]).abs().mean() > 0.002 and (slow[1] - faces / 255).abs().mean() > 0.01  # it did augment


def test_pose_balance_draws_every_pose_bin_equally(sets):
    a, _ = sets
    table = pd.read_parquet(a / "manifest.parquet").query("split == 'train'")
    w = pose_weights(table["yaw"].to_numpy(), table["pitch"].to_numpy())
    bins = [f"{int(np.floor(y / 10))}:{int(np.floor(p / 10))}" for y, p in zip(table["yaw"], table["pitch"])]
    per_bin = pd.Series(w).groupby(bins).sum()
    assert len(per_bin) >= 2 and pd.Series(bins).value_counts().nunique() >= 2  # bins of unequal size...
    assert np.allclose(per_bin, 1 / len(per_bin))  # ...drawn equally often
    draws = sample(len(w), 20000, torch.from_numpy(w).float(), torch.Generator().manual_seed(0), "cpu").numpy()
    drawn = pd.Series(np.array(bins)[draws]).value_counts(normalize=True)
    assert np.allclose(drawn, 1 / len(per_bin), atol=0.02)


# --- clear errors -------------------------------------------------------------------


class Payload:
    """A pickle that creates a folder when unpickled: the classic code-execution pickle."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def _bad_state_random(run: Path) -> None:
    (run / "state.pt").write_bytes(os.urandom(4096))


def _bad_state_truncated(run: Path) -> None:
    data = (run / "state.pt").read_bytes()
    (run / "state.pt").write_bytes(data[: len(data) // 2])


def _bad_state_pickle(run: Path) -> None:
    (run / "state.pt").write_bytes(pickle.dumps({"step": 3, "optimizer": {}}))


def _bad_state_foreign_torch(run: Path) -> None:
    torch.save({"epoch": 3, "model": {"w": torch.zeros(2)}}, run / "state.pt")


def _bad_weights_random(run: Path) -> None:
    (run / "model.safetensors").write_bytes(os.urandom(4096))


def _bad_weights_truncated(run: Path) -> None:
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])


def _bad_weights_keys(run: Path) -> None:
    save_file({"conv.weight": torch.zeros(3, 3)}, str(run / "model.safetensors"))


def _bad_weights_shape(run: Path) -> None:
    w = weights(run)
    w["encoder.to_latent.weight"] = torch.zeros(7, 7)
    save_file(w, str(run / "model.safetensors"))


def _bad_weights_other_step(run: Path) -> None:
    # Right keys and shapes, but not the weights state.pt was saved with (a crash between the two renames).
    w = weights(run)
    w["encoder.to_latent.bias"] = w["encoder.to_latent.bias"] + 1
    save_file(w, str(run / "model.safetensors"))


@pytest.mark.parametrize("damage, needle", [
    (_bad_state_random, "state.pt: not a trainer state file (not the zip archive"),
    (_bad_state_truncated, "state.pt: not a trainer state file (not the zip archive"),
    (_bad_state_pickle, "state.pt: not a trainer state file (not the zip archive"),
    (_bad_state_foreign_torch, "state.pt: not a curator face-swap trainer state file"),
    (_bad_weights_random, "model.safetensors: not a readable safetensors file"),
    (_bad_weights_truncated, "model.safetensors: not a readable safetensors file"),
    (_bad_weights_keys, "model.safetensors: not weights of this model"),
    (_bad_weights_shape, "tensor encoder.to_latent.weight is (7, 7)"),
    (_bad_weights_other_step, "does not belong to"),
])
def test_damaged_or_foreign_checkpoint_is_one_clear_error(full_run, tmp_path, capsys, damage, needle):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    damage(run)
    assert run_training({"out": str(run), "resume": True, "quiet": True}) == 2
    assert_one_error_line(capsys.readouterr().err, needle)


def test_code_in_a_pickled_state_is_never_run(full_run, tmp_path, capsys):
    # A state.pt shaped exactly like a real one (torch.save's zip), whose pickle runs code when unpickled.
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    marker = tmp_path / "pwned"
    real = run / "state.pt"
    with zipfile.ZipFile(real) as src:
        members = {info: src.read(info) for info in src.infolist()}
    with zipfile.ZipFile(real, "w") as dst:
        for info, data in members.items():
            evil = info.filename.endswith("/data.pkl")
            dst.writestr(info, pickle.dumps(Payload(marker), protocol=2) if evil else data)
    assert any(i.filename.endswith("/data.pkl") for i in members)
    assert run_training({"out": str(run), "resume": True, "quiet": True}) == 2
    assert_one_error_line(capsys.readouterr().err, "state.pt", "refused to load it", "posix.mkdir")
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(marker), protocol=2))  # the payload is live: plain unpickling runs it
    assert marker.is_dir()


def test_truncated_checkpoint_through_the_command_line(full_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    _bad_weights_truncated(run)
    proc = trainer("--out", run, "--resume", module="curator")
    assert proc.returncode == 2
    line = assert_one_error_line(proc.stderr, "model.safetensors")
    assert line.startswith("curator: error:")


def test_resume_and_fresh_run_mixups_are_refused(sets, full_run, tmp_path, capsys):
    a, b = sets
    assert run_training({"a": str(a), "b": str(b), "out": str(full_run), "quiet": True}) == 2
    assert_one_error_line(capsys.readouterr().err, "already holds a run", "--resume")
    assert run_training({"out": str(tmp_path / "nothing"), "resume": True}) == 2
    assert_one_error_line(capsys.readouterr().err, "no checkpoint to resume")
    assert run_training({"out": str(full_run), "resume": True, "resolution": 128}) == 2
    assert_one_error_line(capsys.readouterr().err, "--resolution 128", "built with 64")


def _copy_export(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_export_without_training_faces_is_a_clear_error(sets, tmp_path, capsys):
    a, b = sets
    empty = _copy_export(a, tmp_path / "empty")
    table = pd.read_parquet(empty / "manifest.parquet")
    table[table["split"] != "train"].to_parquet(empty / "manifest.parquet")
    args = {"b": str(b), "out": str(tmp_path / "run"), "resolution": 64, "quiet": True}
    assert run_training({"a": str(empty), **args}) == 2
    assert_one_error_line(capsys.readouterr().err, "empty", "no training faces")

    bare = tmp_path / "bare"
    (bare / "faces").mkdir(parents=True)
    assert run_training({"a": str(bare), **args}) == 2
    assert_one_error_line(capsys.readouterr().err, "not a curator export folder")
    assert not (tmp_path / "run").exists()  # nothing written for a run that never started


def test_export_with_mixed_crop_sizes_is_a_clear_error(sets, tmp_path):
    a, b = sets
    mixed = _copy_export(b, tmp_path / "mixed")
    files = pd.read_parquet(mixed / "manifest.parquet").query("split == 'train'")["file"]
    one = mixed / files.iloc[0]
    cv2.imwrite(str(one), cv2.resize(cv2.imread(str(one)), (80, 80)))
    proc = trainer("--a", a, "--b", mixed, "--out", tmp_path / "run", *TINY, "--steps", 1)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "mixed sizes", "80 px: 1")


@pytest.mark.parametrize("after_steps", [3, 5, 9])
def test_kill_9_then_resume_continues_exactly(sets, full_run, tmp_path, after_steps):
    """SIGKILL (no chance to save) at several points, checkpoint writes included: resume gives the same run."""
    a, b = sets
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainer", "--a", str(a), "--b", str(b), "--out", str(run), *SHORT, "--save-every", "2",
           "--steps", str(STEPS)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    log = run / "loss.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= after_steps):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    resumed = trainer("--out", run, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(run) == losses(full_run)
    assert all(torch.equal(v, weights(full_run)[k]) for k, v in weights(run).items())


def test_second_trainer_on_one_run_folder_is_refused(sets, tmp_path):
    from curator.workspace import Workspace, locked

    a, b = sets
    run = tmp_path / "run"
    with locked(Workspace(run), "curator train (test holder)"):
        proc = trainer("--a", a, "--b", b, "--out", run, *SHORT, "--steps", 2)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "run folder", "in use by `curator train (test holder)`")
    assert not (run / "model.safetensors").exists()


# --- the options, defined once (trainer/config.py) ----------------------------------


def test_every_option_is_on_both_command_lines():
    """Config is the one list of options: each field is an option of `python -m trainer` and of `curator train`."""
    flags = {"--" + f.name.replace("_", "-"): f.metadata["help"] for f in fields(Config)}
    assert {"--sync-check", "--time-limit", "--pose-balance", "--eyes-mouth-weight"} <= set(flags)
    for module in ("trainer", "curator"):
        proc = trainer("--help", module=module)
        assert proc.returncode == 0, proc.stderr
        text = " ".join(proc.stdout.split())
        missing = [flag for flag in flags if not re.search(rf"(?<![\w-]){flag}(?![\w-])", text)]
        assert not missing, (module, missing)
        for flag, help in flags.items():
            assert help[:40] in text, (module, flag, help)  # the same help text on both
        assert "--no-pose-balance" in text and re.search(r"--quiet,? +-q\b", text), module
    assert "--json" in text and "-o" in text and "Examples" in text  # curator's own


def test_sync_check_through_curator_train(sets, tmp_path):
    a, b = sets
    run = tmp_path / "run"
    loud = [arg for arg in TINY if arg != "--quiet"]
    proc = trainer("--a", a, "--b", b, "--out", run, *loud, "--batch", "4", "--steps", 3, "--sync-check", module="curator")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # without --json, nothing on stdout...
    assert "img/s" in proc.stderr  # ...and the progress bar on stderr
    rows = [line.split() for line in (run / "sync" / "rank0.txt").read_text().splitlines()]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    assert len({r[1] for r in rows}) == 3 and rows[-1][1] == weights_sha256(run)


def test_curator_train_json_prints_a_summary_that_agrees_with_the_loss_log(sets, tmp_path):
    a, b = sets
    run = tmp_path / "run"
    loud = [arg for arg in TINY if arg != "--quiet"]  # --json alone must turn the progress bar off
    proc = trainer("--a", a, "--b", b, "--out", run, *loud, "--batch", "4", "--steps", 3, "--json", module="curator")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # stdout is the summary and nothing else
    assert "img/s" not in proc.stderr  # no progress bar (test_sync_check_... sees one without --json)
    rows = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines()]
    assert summary["step"] == rows[-1]["step"] == 3 and summary["steps_this_invocation"] == 3
    assert (summary["loss"], summary["loss_a"], summary["loss_b"]) == (rows[-1]["loss"], rows[-1]["loss_a"], rows[-1]["loss_b"])
    assert summary["stopped_by"] == "steps" and summary["exit_code"] == 0
    assert summary["run"] == str(run.resolve()) and summary["device"] == "cpu" and summary["world_size"] == 1
    assert Path(summary["checkpoint"]["weights"]) == run.resolve() / "model.safetensors"
    assert torch.load(summary["checkpoint"]["state"], weights_only=True)["step"] == 3
    assert summary["images_per_s"] > 0 and summary["seconds"] > 0

    resumed = trainer("--out", run, "--resume", "--steps", 5, "--json", module="curator")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    rows = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines()]
    assert summary["step"] == rows[-1]["step"] == 5 and summary["steps_this_invocation"] == 2
    assert summary["loss"] == rows[-1]["loss"]


def test_train_from_python_returns_the_summary(sets, tmp_path):
    a, b = sets
    run = tmp_path / "run"
    tiny = {"resolution": 64, "width": 8, "latent": 64, "lr": 1e-3, "batch": 4, "quiet": True, "device": "cpu"}
    with pytest.raises(TrainError, match="--resolution '64': must be int"):
        train({"a": a, "b": b, "out": run, **tiny, "resolution": "64"})
    assert not run.exists()
    summary = train({"a": a, "b": b, "out": run, **tiny, "steps": 100000, "time_limit": "1s", "pose_balance": None})
    assert summary["stopped_by"] == "time_limit" and summary["exit_code"] == 0
    assert 1 <= summary["step"] == summary["steps_this_invocation"] == len(losses(run)) < 100000
    assert summary["loss"] == losses(run)[-1]
    assert json.loads(json.dumps(summary)) == summary  # JSON-ready as it is
