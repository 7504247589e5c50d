"""The trainer's options, defined once.

`Config` below is the whole list: one field per option, its default, and its
help text. Both command lines are generated from it (`argument_parser` for
`python -m trainer` and torchrun, `typer_command` for `curator train`), so an
option added here is an option of both, with the same help.

A field's name is its flag (`save_every` -> `--save-every`); its annotation is
its type (`int | None`, `Literal[...]` for choices, `bool` for a switch).
"""

from __future__ import annotations

import inspect
import os
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal

from . import TrainError


def option(default: Any, help: str, *, short: str | None = None, architecture: bool = False,
           per_invocation: bool = False, negatable: bool = False) -> Any:
    """A Config field: default, help, and what a command line needs to know about it.

    architecture: the value shapes the network, so a resume cannot change it.
    per_invocation: belongs to this invocation alone, never taken from a checkpoint.
    negatable: a switch with a --no- form, so a resume can turn off what the run had on.
    """
    return field(default=default, metadata={"help": help, "short": short, "architecture": architecture,
                                            "per_invocation": per_invocation, "negatable": negatable})


@dataclass
class Config:
    a: str = option("", "Export folder of identity A, the face to replace (faces/ + manifest.parquet; its train split).")
    b: str = option("", "Export folder of identity B, the face drawn instead.")
    out: str = option("", "Run folder: model.safetensors, state.pt, loss.jsonl, previews/, tb/.", short="-o")
    resolution: int = option(128, "Training resolution in px, 64-256, a multiple of 16; crops are resized to it.", architecture=True)
    width: int = option(64, "Base channel width: encoder W, 2W, 4W, 8W; decoders 4W, 2W, W, W/2.", architecture=True)
    latent: int = option(512, "Bottleneck size: small enough that identity cannot pass through.", architecture=True)
    batch: int = option(16, "Faces of EACH identity per step, summed over all processes.")
    lr: float = option(5e-5, "Adam learning rate, betas (0.5, 0.999).")
    steps: int | None = option(None, "Stop when this step is reached, counting earlier runs of the run folder.")
    time_limit: str | None = option(None, "Or stop after this long: 45m, 2h, 1h30m, or seconds (this invocation).", per_invocation=True)
    save_every: int = option(1000, "Checkpoint every N steps, and always at exit.")
    preview_every: int = option(250, "Preview grid into previews/ every N steps.")
    seed: int = option(0, "Random seed: the initial weights and every random draw derive from it.")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "Where to train: auto (a GPU if there is one), cpu or cuda.", per_invocation=True)
    pose_balance: bool = option(False, "Draw faces by inverse frequency of their 10-degree yaw x pitch bin.", negatable=True)
    for_weights: bool = option(False, "Draw a set curated with curator curate --for by the target faces each face stands "
                               "for (its manifest's target_faces; a tenth of draws stay even); a set without them as before.",
                               negatable=True)
    eyes_mouth_weight: float = option(1.0, "Extra loss weight on eyes and mouth (0 = none).")
    resume: bool = option(False, "Continue the run in the run folder exactly where its checkpoint stopped.", per_invocation=True)
    deterministic: bool = option(False, "GPU: no autotuning or TF32, so runs and resumes repeat bit for bit (slower).", per_invocation=True)
    sync_check: bool = option(False, "Every rank logs its weights' SHA-256 and the faces it drew, per step, to sync/.", per_invocation=True)
    quiet: bool = option(False, "No progress bar.", short="-q", per_invocation=True)


# These define the network: a checkpoint can only be resumed with the same values.
ARCHITECTURE = tuple(f.name for f in fields(Config) if f.metadata["architecture"])
# These belong to one invocation and are never taken from the checkpoint.
PER_INVOCATION = tuple(f.name for f in fields(Config) if f.metadata["per_invocation"])


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def names(f) -> list[str]:
    """A field's flag, and its short one if it has one."""
    return [flag(f.name)] + ([f.metadata["short"]] if f.metadata["short"] else [])


def value_type(f) -> Any:
    """The type a field's value has when given: int for `int | None`, the Literal itself for choices."""
    hint = typing.get_type_hints(Config)[f.name]
    args = [t for t in typing.get_args(hint) if t is not type(None)]
    return args[0] if typing.get_origin(hint) is not Literal and len(args) == 1 else hint


def help_text(f) -> str:
    default = f.default
    shown = default is not None and default != "" and not isinstance(default, bool)
    return f.metadata["help"] + (f" [default: {default}]" if shown else "")


def is_switch(f) -> bool:
    """A plain on-switch (--resume): off unless given, never turned off on the command line."""
    return value_type(f) is bool and not f.metadata["negatable"]


def given(values: dict) -> dict:
    """The options a command line was given: one left out parses to None, an on-switch left out to None or False.

    What is not given comes from the checkpoint (on --resume) or from Config.
    """
    return {k: v for k, v in values.items()
            if v is not None and not (v is False and is_switch(Config.__dataclass_fields__[k]))}


# ---- python -m trainer / torchrun


def argument_parser(prog: str, description: str):
    """An argparse parser with one option per Config field; options not given parse to None."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(Config):
        kind = value_type(f)
        kw: dict = {"dest": f.name, "default": None, "help": help_text(f).replace("%", "%%")}
        if is_switch(f):
            kw["action"] = "store_true"
        elif kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is Literal:
            kw["choices"] = typing.get_args(kind)
        else:
            kw["type"] = kind
        p.add_argument(*names(f), **kw)
    return p


# ---- curator train


def typer_command(run: Callable[..., None]) -> Callable[..., None]:
    """A typer command with one option per Config field, then `run`'s own options after its first parameter.

    The command calls run({option: value} for the options given, **run's own options).
    Typer reads a command's parameters from inspect.signature, so the wrapper
    carries a generated __signature__; `run`'s docstring is the command's help.
    """
    import typer

    params = []
    for f in fields(Config):
        decls, kind = names(f), value_type(f)
        if is_switch(f):
            default, annotation = typer.Option(False, *decls, help=help_text(f)), bool
        else:
            if kind is bool:
                decls[0] += "/" + flag("no_" + f.name)
            default = typer.Option(None, *decls, help=help_text(f), show_default=False)
            annotation = typing.Optional[kind]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    own = list(inspect.signature(run, eval_str=True).parameters.values())[1:]
    params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

    def command(**values) -> None:
        extra = {p.name: values.pop(p.name) for p in own}
        run(given(values), **extra)

    command.__signature__ = inspect.Signature(params, return_annotation=None)
    command.__doc__ = run.__doc__
    command.__name__ = run.__name__
    return command


# ---- values


def parse_duration(text: str) -> float:
    """'90' (seconds), '45m', '2h', '1h30m', '1d' -> seconds."""
    text = str(text).strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms]?)", text)
    if not parts or re.sub(r"\s+", "", text) != "".join(n + u for n, u in parts):
        raise TrainError(f"--time-limit {text!r}: use seconds or e.g. 45m, 2h, 1h30m")
    return sum(float(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}[u] for n, u in parts)


def typed(name: str, value: Any) -> Any:
    """`value` as the type of Config field `name`, for callers from Python (the command lines parse to it already)."""
    f = Config.__dataclass_fields__[name]
    kind = value_type(f)
    if typing.get_origin(kind) is Literal:
        if value in typing.get_args(kind):
            return value
    elif kind is str and isinstance(value, (str, os.PathLike)):
        return str(value)
    elif kind is bool and isinstance(value, bool):
        return value
    elif kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and (kind is float or float(value).is_integer()):
        return kind(value)
    want = ", ".join(typing.get_args(kind)) if typing.get_origin(kind) is Literal else kind.__name__
    raise TrainError(f"{flag(name)} {value!r}: must be {want}")


def resolve_config(overrides: dict) -> tuple[Config, dict | None]:
    """Config from the command line, or (with --resume) from the checkpoint plus what was given now."""
    from . import checkpoint  # here, not above: `curator --help` should not wait for torch

    known = {f.name for f in fields(Config)}
    unknown = set(overrides) - known
    if unknown:
        raise TrainError(f"unknown option(s): {', '.join(sorted(unknown))}")
    if not overrides.get("out"):
        raise TrainError("--out RUN is required")
    overrides = {k: typed(k, v) for k, v in overrides.items() if v is not None}  # None: not given
    run = Path(overrides["out"]).expanduser().resolve()
    state = None
    if overrides.get("resume"):
        if not checkpoint.exists(run):
            raise TrainError(f"{run}: no checkpoint to resume (model.safetensors + state.pt)")
        state = checkpoint.read_state(run)
        saved = {k: v for k, v in state["config"].items() if k in known and k not in PER_INVOCATION}
        for k in ARCHITECTURE:
            if k in overrides and k in saved and overrides[k] != saved[k]:
                raise TrainError(f"--{k.replace('_', '-')} {overrides[k]}: the run in {run} was built with "
                                 f"{saved[k]}; drop the option or start a new --out")
        values = {**saved, **overrides}
    else:
        if checkpoint.exists(run):
            raise TrainError(f"{run} already holds a run; pass --resume to continue it, or choose another --out")
        values = dict(overrides)
        for k in ("a", "b"):
            if not values.get(k):
                raise TrainError(f"--{k} is required (a curator export folder)")
    values["out"] = str(run)
    for k in ("a", "b"):
        values[k] = str(Path(values[k]).expanduser().resolve())
    cfg = Config(**values)
    for name in ("resolution", "width", "latent", "batch", "save_every", "preview_every"):
        if getattr(cfg, name) <= 0:
            raise TrainError(f"--{name.replace('_', '-')} must be positive")
    if cfg.resolution % 16 or not 64 <= cfg.resolution <= 256:
        raise TrainError(f"--resolution must be a multiple of 16 from 64 to 256, not {cfg.resolution}")
    if cfg.steps is not None and cfg.steps <= 0:
        raise TrainError("--steps must be positive")
    if not (cfg.lr > 0 and cfg.eyes_mouth_weight >= 0):
        raise TrainError("--lr must be positive and --eyes-mouth-weight not negative")
    if cfg.time_limit is not None:
        parse_duration(cfg.time_limit)
    return cfg, state
