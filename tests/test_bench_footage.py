"""The benchmarks' footage builder (bench/common.build_footage) on real shared clips."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

_spec = importlib.util.spec_from_file_location("bench_common", ROOT / "bench" / "common.py")
common = sys.modules["bench_common"] = importlib.util.module_from_spec(_spec)  # bench/ is scripts, not a package
_spec.loader.exec_module(common)

SPEC = common.FootageSpec(width=320, height=180)
SEGMENTS = [
    # 25 fps, 1280x720: one second from 0.5 s
    {"clip": "3ddfa/obama.mp4", "start_s": 0.5, "end_s": 1.5, "person": "obama"},
    # 30 fps, 512x512, 16 frames (0.533 s) to its end: 14 slots of 0.04 s
    {"clip": "liveportrait/driving_d1.mp4", "start_s": 0.0, "end_s": None, "person": "d1"},
]


def decoded(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    cache = tmp_path_factory.mktemp("footage")
    return cache, common.build_footage("test", SEGMENTS, SPEC, cache, prefixes=(30,), log=lambda _: None)


def test_segments_are_resampled_on_the_time_grid_with_their_frame_ranges(footage):
    _, info = footage
    assert [(s["start_frame"], s["end_frame"], s["person"]) for s in info["segments"]] == [(0, 25, "obama"), (25, 39, "d1")]
    frames = decoded(info["path"])
    assert info["frames"] == len(frames) == 39
    assert frames[0].shape == (180, 320, 3)
    # letterboxed: the 16:9 clip fills the frame, the square one has black bars left and right
    assert frames[0][:, :20].mean() > 20 and frames[30][:, :20].max() < 20


def test_a_prefix_file_holds_the_footage_beginning(footage):
    _, info = footage
    whole, prefix = decoded(info["path"]), decoded(info["prefix_paths"][30])
    assert len(prefix) == 30
    diff = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(prefix, whole)]
    assert max(diff) < 3  # the same frames, encoded on their own
    # the check can fail: the two clips differ far more than that where they meet
    assert np.abs(whole[24].astype(int) - whole[25].astype(int)).mean() > 10


def test_footage_is_reused_and_a_short_plan_is_refused(footage):
    cache, info = footage
    mtime = (cache / info["path"]).stat().st_mtime_ns
    again = common.build_footage("test", SEGMENTS, SPEC, cache, prefixes=(30,), log=lambda _: None)
    assert again["cached"] and again["path"] == info["path"] and again["segments"] == info["segments"]
    assert (cache / info["path"]).stat().st_mtime_ns == mtime
    with pytest.raises(RuntimeError, match="give 39 frames"):
        common.build_footage("test", SEGMENTS, SPEC, cache, frames=100, log=lambda _: None)
    assert not [p for p in cache.iterdir() if p.name.startswith(".building-")]
