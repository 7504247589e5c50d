"""What the tests share besides fixtures: paths to the real test data, running the real command line, reading a
workspace, headless Chromium. Test modules import from here (`from helpers import clip, curator`); fixtures live in
conftest.py.

Nothing here is mocked. The shared test data (../shared/testdata, or CURATOR_TESTDATA) is needed by every test not
marked `pure`; conftest.py fails such a test loudly when it is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("CURATOR_TESTDATA", ROOT.parent / "shared" / "testdata"))


def testdata_missing() -> str | None:
    """Why the shared test data cannot be used, or None when it can."""
    if (TESTDATA / "README.md").is_file():
        return None
    return (f"test data not found at {TESTDATA}: the tests need ../shared/testdata beside the repository "
            "(or CURATOR_TESTDATA pointing at it)")


PACK = TESTDATA / "models" / "pack-small"
VIDEOS = TESTDATA / "videos"
IMAGES = TESTDATA / "images"

def load_script(relative: str, name: str):
    """A script of the repository that is not in a package (bench/*.py, .ci/*.py) as module `name`, loaded once."""
    import importlib.util

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / relative)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def _bench_common():
    """bench/common.py: its footage helpers serve the tests too."""
    return load_script("bench/common.py", "bench_common")


loop_video = _bench_common().loop_remux  # a clip remuxed N times back to back: long footage in seconds
letterbox = _bench_common().letterbox  # a decoded frame scaled to fit a size, centred on black


def clip(name: str) -> Path:
    if why := testdata_missing():
        raise FileNotFoundError(why)
    matches = sorted(VIDEOS.rglob(name))
    if not matches:
        raise FileNotFoundError(f"{name} not found under {VIDEOS}")
    return matches[0]


def curator(*args: str, check: bool = False, **kw) -> subprocess.CompletedProcess:
    """Run the real `curator` command line in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "curator", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"curator {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def ctrl_c_enabled() -> None:
    """Popen preexec_fn for children the test stops with SIGINT (as Ctrl-C would).

    A shell starts background jobs with SIGINT ignored, children inherit that,
    and Python then never raises KeyboardInterrupt: correct for `nohup curator
    ... &`, but a test run from such a job (CI scripts can be) would see its
    Ctrl-C ignored. The child gets the default disposition back.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """A usage or workspace error: exit code 2 and exactly one stderr line, naming each of `words`."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("curator: error:"), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def table(ws: Path):
    from curator.workspace import open_workspace, read_table

    return read_table(open_workspace(ws))


def table_files(ws: Path) -> dict[str, bytes]:
    """Every file of a workspace's table (shards, their embeddings, column groups) with its bytes."""
    return {p.relative_to(ws).as_posix(): p.read_bytes() for folder in ("faces", "embeddings", "columns")
            if (ws / folder).is_dir() for p in sorted((ws / folder).iterdir())}


def has_table(ws: Path) -> bool:
    """Whether any row was committed to the workspace's table."""
    return any((Path(ws) / "faces").glob("*.parquet")) or (Path(ws) / "faces.parquet").exists()


def lmk68_in_box(row, margin: float):
    """A table row's lmk68 as (68, 2), checked finite and inside its detector box grown by `margin` of its size."""
    import numpy as np

    lmk = np.asarray(row["lmk68"], np.float64)
    assert lmk.shape == (136,) and np.isfinite(lmk).all(), row["face_id"]
    lmk = lmk.reshape(68, 2)
    x1, y1, x2, y2 = row["bbox"]
    w, h = x2 - x1, y2 - y1
    assert (lmk[:, 0] > x1 - margin * w).all() and (lmk[:, 0] < x2 + margin * w).all(), (row["face_id"], lmk, row["bbox"])
    assert (lmk[:, 1] > y1 - margin * h).all() and (lmk[:, 1] < y2 + margin * h).all(), (row["face_id"], lmk, row["bbox"])
    return lmk


def curator_json(*args: str) -> dict:
    proc = curator(*args, "--json", check=True)
    return json.loads(proc.stdout)


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--disable-component-update", "--disable-sync")


def find_chromium(purpose: str) -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail(f"headless Chromium is needed to check that {purpose} renders, and none was found "
                "(install it: `apt-get install -y chromium`; .ci/install.sh does)")


def chromium_screenshot(url: str, shot: Path, profile: Path, window: str, *extra: str,
                        purpose: str) -> subprocess.CompletedProcess:
    """A real headless Chromium, with the flags that work on these machines, saving a screenshot of `url`."""
    return subprocess.run([find_chromium(purpose), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                           f"--window-size={window}", *extra, url], capture_output=True, text=True, timeout=120)


def save_frame(video: Path, index: int, out: Path) -> Path:
    """Frame `index` of `video` (every frame decoded, none skipped) written as an image to `out`."""
    from curator import media

    for sf in media.sample_video(video, fps=None, every=1, static_threshold=-1.0):
        if sf.index == index:
            cv2.imwrite(str(out), sf.image)
            return out
    raise AssertionError(f"{video} has no frame {index}")

