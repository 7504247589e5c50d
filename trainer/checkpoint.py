"""Checkpoints: RUN/model.safetensors (weights) + RUN/state.pt (everything else to resume exactly).

- Weights are safetensors: a flat header + raw tensors, nothing executable,
  safe to load from anyone and readable without this code.
- state.pt holds the step, the optimiser state, the RNG states and the
  config. It is read with `torch.load(..., weights_only=True)`, which accepts
  only tensors and plain containers and refuses any other pickle (a pickle can
  run code when loaded). Still, only load state.pt files this trainer wrote.
- Both files are written atomically (temporary file, fsync, rename), weights
  first. state.pt records the SHA-256 of the weights file it belongs to, so
  a crash between the two renames is detected at resume instead of silently
  pairing new weights with old optimiser moments.

Every way a checkpoint can be wrong (truncated, random bytes, another
program's file, another model's weights) ends in one TrainError line.
"""

from __future__ import annotations

import json
import random
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from curator.fs.atomic import atomic_path
from curator.fs.hash import sha256_file

from . import TrainError

WEIGHTS, STATE = "model.safetensors", "state.pt"
FORMAT = "curator-faceswap"
VERSION = 1


def exists(run: Path) -> bool:
    return (run / WEIGHTS).exists() or (run / STATE).exists()


def rng_states(device: torch.device) -> dict:
    """Python, NumPy, torch (and CUDA) global RNG states, as tensors and plain values weights_only can load."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def set_rng_states(states: dict, device: torch.device) -> None:
    version, mt, gauss = states["python"]
    random.setstate((version, tuple(int(v) for v in mt.tolist()), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states.get("cuda") is not None:
        torch.cuda.set_rng_state(states["cuda"], device)


def save(run: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, config: dict,
         extra: dict, device: torch.device) -> None:
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": str(VERSION), "step": str(step), "config": json.dumps(config)}
    with atomic_path(run / WEIGHTS) as tmp:
        save_file(weights, str(tmp), metadata=meta)
    state = {"format": FORMAT, "version": VERSION, "step": step, "config": config,
             "optimizer": optimizer.state_dict(), "rng": rng_states(device),
             "weights_sha256": sha256_file(run / WEIGHTS), **extra}
    with atomic_path(run / STATE) as tmp:
        torch.save(state, tmp)


def read_state(run: Path) -> dict:
    """state.pt as a dict, checked to be ours; TrainError otherwise."""
    path = run / STATE
    if not path.is_file():
        raise TrainError(f"{path}: missing; nothing to resume (or the run was interrupted before its first save)")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip; anything else (raw pickles too) is not ours
        raise TrainError(f"{path}: not a trainer state file (not the zip archive torch.save writes; "
                         "truncated, damaged or foreign)")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; our error says enough
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (refused content), RuntimeError (damaged zip), EOFError, ...
        # torch's message is paragraphs of advice around one line with the reason; keep that line.
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
        reason = next((line for line in lines if not line.startswith(advice)), lines[0] if lines else type(e).__name__)[:160]
        raise TrainError(f"{path}: not a trainer state file (damaged, or holds more than tensors and plain "
                         f"values; refused to load it: {reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainError(f"{path}: not a curator face-swap trainer state file")
    if state.get("version") != VERSION:
        raise TrainError(f"{path}: state format version {state.get('version')}, this trainer reads {VERSION}")
    missing = [k for k in ("step", "config", "optimizer", "rng", "weights_sha256") if k not in state]
    if missing:
        raise TrainError(f"{path}: incomplete trainer state (missing {', '.join(missing)})")
    return state


def load_weights(run: Path, model: torch.nn.Module, state: dict) -> None:
    """Load RUN/model.safetensors into `model` after checking it is this run's file for this model."""
    path = run / WEIGHTS
    if not path.is_file():
        raise TrainError(f"{path}: missing")
    weights = _checked_weights(path, model)
    if sha256_file(path) != state["weights_sha256"]:
        raise TrainError(f"{path}: does not belong to {run / STATE} (saved by another step or run; "
                         "interrupted while saving?)")
    model.load_state_dict(weights, strict=True)


def _checked_weights(path: Path, model: torch.nn.Module) -> dict:
    """The tensors of `path`, checked to be exactly `model`'s (names, shapes, dtypes)."""
    try:
        weights = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise TrainError(f"{path}: not a readable safetensors file (truncated or foreign: {e})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        what = (f"missing {len(missing)} tensor(s), e.g. {missing[0]}" if missing else "") + \
               ("; " if missing and unexpected else "") + \
               (f"{len(unexpected)} unknown tensor(s), e.g. {unexpected[0]}" if unexpected else "")
        raise TrainError(f"{path}: not weights of this model ({what})")
    for k, v in expected.items():
        if weights[k].shape != v.shape or weights[k].dtype != v.dtype:
            raise TrainError(f"{path}: tensor {k} is {tuple(weights[k].shape)} {weights[k].dtype}, "
                             f"this model needs {tuple(v.shape)} {v.dtype}")
    return weights


def load_optimizer(run: Path, optimizer: torch.optim.Optimizer, state: dict) -> None:
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise TrainError(f"{run / STATE}: optimiser state does not fit this model ({e})") from None


def read_config(run: Path) -> dict | None:
    """The training config a run's weights file records in its metadata (no tensor is read), or None."""
    from safetensors import safe_open

    try:
        with safe_open(str(Path(run) / WEIGHTS), framework="pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta["config"]) if meta.get("format") == FORMAT else None
    except (SafetensorError, OSError, ValueError, KeyError, TypeError):
        return None


def load_for_inference(run: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict, dict]:
    """RUN's network for inference: (model in eval mode on `device`, training config, info).

    Reads model.safetensors alone (its metadata carries the config), so no
    pickle is ever read and a run copied without state.pt still converts.
    info: {"step", "weights_sha256"}. Every problem is one TrainError line.
    """
    from safetensors import safe_open

    from .model import FaceSwap

    run = Path(run)
    path = run / WEIGHTS
    if not run.is_dir():
        raise TrainError(f"{run}: no such run folder")
    if not path.is_file():
        raise TrainError(f"{run}: no {WEIGHTS} (not a `curator train` run folder, or stopped before its first checkpoint)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise TrainError(f"{path}: not a readable safetensors file (truncated or foreign: {e})") from None
    if meta.get("format") != FORMAT:
        raise TrainError(f"{path}: not a curator face-swap checkpoint (no format={FORMAT} in its metadata)")
    if meta.get("version") != str(VERSION):
        raise TrainError(f"{path}: checkpoint format version {meta.get('version')}, this code reads {VERSION}")
    try:
        config = json.loads(meta["config"])
        shape = {k: int(config[k]) for k in ("resolution", "width", "latent")}
        step = int(meta["step"])
    except (KeyError, ValueError, TypeError) as e:
        raise TrainError(f"{path}: checkpoint metadata without a usable config ({type(e).__name__}: {e})") from None
    try:
        model = FaceSwap(**shape)
    except ValueError as e:
        raise TrainError(f"{path}: {e}") from None
    model.load_state_dict(_checked_weights(path, model), strict=True)
    return model.to(device).eval(), config, {"step": step, "weights_sha256": sha256_file(path)}
