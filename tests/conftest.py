"""Fixtures: real workspaces, exports and runs built once per session, and the rules every test runs under.

Helpers that are not fixtures are in helpers.py. Nothing here is mocked.
Extraction is the slow part, so what several modules read is built once per
session; a test that writes copies it first (`copy_of`).

Markers (pyproject.toml): `pure` tests need no shared test data (every other
test fails loudly without it); `slow` tests are left out of the daily tier,
`python -m pytest -q -m "not slow"`. CI runs everything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PACK, TESTDATA, clip, curator, testdata_missing

# Every curator command started by the tests loads the shared pack.
os.environ["CURATOR_MODELS"] = str(PACK)


def pytest_runtest_setup(item):
    if item.get_closest_marker("pure") is None and (why := testdata_missing()):
        pytest.fail(why, pytrace=False)


def copy_of(folder: Path, tmp_path: Path) -> Path:
    """A private copy of a session-built folder, for a test that changes it."""
    dst = tmp_path / folder.name
    shutil.copytree(folder, dst)
    return dst


@pytest.fixture(scope="session")
def testdata() -> Path:
    return TESTDATA


@pytest.fixture(scope="session")
def ab_exports(tmp_path_factory) -> tuple[Path, Path]:
    """Two single-person exports of two different people, 64 px crops: A (face_1.mp4) and B (face_2.mp4).

    The one builder of the A/B sets that the trainer, convert and evaluate tests train on; read-only.
    """
    root = tmp_path_factory.mktemp("ab")
    for name, video in (("A", "face_1.mp4"), ("B", "face_2.mp4")):
        curator("run", clip(video), "--out", root / name, "--budget", "40", "--size", "64", "--fps", "4", "-q",
                check=True)
    return root / "A", root / "B"


@pytest.fixture(scope="session")
def tiny_run(ab_exports) -> Path:
    """A `curator train` run folder beside the A/B exports (`ab_exports`), a tiny model trained 20 steps on them. Far too small to draw a convincing face; enough to convert with."""
    root = ab_exports[0].parent
    proc = subprocess.run([sys.executable, "-m", "curator", "train", "--a", str(root / "A"), "--b", str(root / "B"),
                           "--out", str(root / "run"), "--resolution", "64", "--width", "8", "--latent", "64",
                           "--lr", "1e-3", "--batch", "4", "--steps", "20", "--quiet"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return root / "run"


