"""A compact face-swap trainer for curator exports (issue 7).

One shared encoder, one decoder per identity (A and B); each decoder draws the
face and a mask. Reads two `curator export` folders, trains on one device or on
several with torchrun + DistributedDataParallel. The loop is in `train.py`;
`model.py`, `data.py`, `loss.py` and `checkpoint.py` hold the pieces it uses,
`config.py` its options (both command lines are generated from them).

    python -m trainer --a SET_A --b SET_B --out RUN --steps 10000
    torchrun --nproc-per-node 4 -m trainer --a SET_A --b SET_B --out RUN --time-limit 8h
"""

from curator.errors import CuratorError


class TrainError(CuratorError):
    """A problem the user can fix (bad input folder, foreign checkpoint, bad option): printed as one line."""
