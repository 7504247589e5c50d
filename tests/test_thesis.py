"""bench/thesis.py's pieces that decide what its figures mean: the leak check, the paired intervals, the pose
groups, and the baselines' choices (bench/baselines.py) on small tables. No training, no footage."""

from __future__ import annotations

import importlib.util
import math
import pickle
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = sys.modules[name] = importlib.util.module_from_spec(spec)  # bench/ is scripts, not a package
    spec.loader.exec_module(mod)
    return mod


baselines = _load("baselines")
thesis = _load("thesis")


# --- leak check ---------------------------------------------------------------------------------

def test_nearest_training_face_is_per_source_and_both_sides_in_time():
    eval_src = np.array(["a", "a", "a", "b"])
    eval_t = np.array([0.0, 25.0, 40.0, 3.0])
    train_src = np.array(["a", "a", "c", "a"])  # unsorted times on purpose
    train_t = np.array([30.0, 12.0, 3.0, 52.0])
    d = thesis.nearest_training_s(eval_src, eval_t, train_src, train_t)
    assert d[:3].tolist() == [12.0, 5.0, 10.0]  # 0 -> 12 (after); 25 -> 30 (after); 40 -> 30 (before)
    assert math.isinf(d[3])  # no training face of source b: footage no set saw


def test_leak_check_refuses_closer_than_the_gap_and_accepts_the_gap():
    thesis.leak_check("ok", np.array([10.0, np.inf, 30.0]), min_gap=10.0)
    with pytest.raises(thesis.LeakError, match="1 evaluation faces within 10 s.*9.50 s"):
        thesis.leak_check("bad", np.array([10.0, 9.5, np.inf]), min_gap=10.0)


def test_leak_check_catches_a_set_drawn_next_to_the_evaluation_faces():
    # One source, evaluation faces at 50-60 s; a set with a face at 45 s leaks, one ending at 39 s does not.
    ev_t = np.arange(50.0, 60.0, 0.5)
    ev_s = np.full(len(ev_t), "clip")
    near = thesis.nearest_training_s(ev_s, ev_t, np.array(["clip"] * 3), np.array([1.0, 20.0, 45.0]))
    with pytest.raises(thesis.LeakError):
        thesis.leak_check("near", near)
    thesis.leak_check("far", thesis.nearest_training_s(ev_s, ev_t, np.array(["clip"] * 2), np.array([1.0, 39.0])))


# --- statistics ---------------------------------------------------------------------------------

def test_paired_ci_is_the_student_t_interval():
    d = [0.001, 0.002, 0.003, 0.004, 0.005]
    ci = thesis.paired_ci(d)
    sd = math.sqrt(sum((x - 0.003) ** 2 for x in d) / 4)
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t(0.975, 4 degrees of freedom), from tables
    assert ci["n"] == 5 and ci["wins"] == 5
    assert ci["mean"] == pytest.approx(0.003)
    assert ci["lo"] == pytest.approx(0.003 - half) and ci["hi"] == pytest.approx(0.003 + half)


def test_paired_ci_crosses_zero_when_the_sign_changes_and_has_no_interval_from_one_pair():
    ci = thesis.paired_ci([-0.0002, 0.0023, 0.0064])  # the old DFL-best differences: not significant
    assert ci["lo"] < 0 < ci["hi"] and ci["wins"] == 2
    one = thesis.paired_ci([0.01, None, float("nan")])
    assert one["n"] == 1 and one["lo"] is None and one["hi"] is None


def test_small_pose_bins_are_merged_and_figures_follow():
    bins = np.array(["y0p0"] * 6 + ["y10p0"] * 5 + ["y20p0"] * 2 + ["unknown"] * 1 + ["y30p0"] * 1, object)
    g = thesis.bin_groups(bins, min_faces=5)
    assert set(g[:6]) == {"y0p0"} and set(g[6:11]) == {"y10p0"}
    assert len(set(g[11:])) == 1 and g[11].startswith("merged")
    l1 = np.array([0.1] * 6 + [0.2] * 5 + [0.9] * 4)
    f = thesis.run_figures(l1, g)
    assert f["face_mean"] == pytest.approx(l1.mean())
    assert f["bin_mean"] == pytest.approx((0.1 + 0.2 + 0.9) / 3)  # every group counts once
    assert f["worst_decile"] == pytest.approx(0.9)  # ceil(15 / 10) = 2 worst faces


def test_repeat_windows_differ_and_stay_inside_the_footage():
    w = thesis.windows(100, 5, 0.6)
    assert len(w) == 5 and len({s for s, _ in w}) == 5
    assert all(e - s == 60 and 0 <= s and e <= 100 for s, e in w)
    assert w[0][0] == 0 and w[-1][1] == 100


# --- baselines ------------------------------------------------------------------------------------

def test_uniform_and_random_take_n_distinct_faces():
    u = baselines.pick_uniform(100, 10)
    assert u.tolist() == list(range(5, 100, 10))
    r1, r2 = baselines.pick_random(100, 10, 1), baselines.pick_random(100, 10, 2)
    assert len(set(r1)) == 10 and r1.tolist() != r2.tolist()


def _yaw_table(n_bins: int, per_bin: int, seed: int = 0):
    """Faces in n_bins of DFL's yaw bins (about 1.07 degrees each), per_bin in each."""
    rng = np.random.default_rng(seed)
    centres = np.linspace(-1.2, 1.2, 128)[:n_bins] + 0.005
    yaw = np.repeat(-centres, per_bin)  # DFL bins -yaw
    pitch = rng.uniform(-0.3, 0.3, len(yaw))
    sharp = rng.uniform(0, 1, len(yaw))
    hist = rng.uniform(0, 1, (len(yaw), 256)).astype(np.float32)
    return yaw, pitch, sharp, hist


def test_dfl_sort_best_returns_nothing_below_64_and_one_per_yaw_bin_at_100():
    yaw, pitch, sharp, hist = _yaw_table(30, 4)
    assert baselines.dfl_sort_best(yaw, pitch, sharp, hist, 20) == []
    assert baselines.dfl_sort_best(yaw, pitch, sharp, hist, 64) == []  # Python's round(0.5) is 0, as in DFL
    got = baselines.dfl_sort_best(yaw, pitch, sharp, hist, 100)
    ybin = np.searchsorted(np.linspace(-1.2, 1.2, 128), -yaw, side="right")
    assert len(got) == 30 and len(set(ybin[got])) == 30


def test_dfl_keeps_the_most_dissimilar_of_the_ten_sharpest_in_a_bin():
    yaw = np.zeros(12)
    pitch = np.zeros(12)
    sharp = np.arange(12, dtype=float)[::-1].copy()  # face 0 sharpest, faces 10 and 11 the blurriest
    hist = np.zeros((12, 256), np.float32)
    hist[:, 100] = 1
    hist[11, 100], hist[11, 200] = 0, 1  # the most dissimilar face is too blurry to be kept
    hist[4, 100], hist[4, 150] = 0.5, 0.5  # the most dissimilar of the ten sharpest
    assert baselines.dfl_sort_best(yaw, pitch, sharp, hist, 100) == [4]


def test_dfl_at_budget_raises_the_target_until_it_returns_n_and_cuts_evenly():
    yaw, pitch, sharp, hist = _yaw_table(40, 3)
    chosen, info = baselines.dfl_at_budget(yaw, pitch, sharp, hist, 20)
    assert len(chosen) == 20 and len(set(chosen)) == 20
    # target 20: round(20 / 128) = 0 faces a bin, nothing; 84: round(0.66) = 1 a bin, one from each of 40 bins
    assert info == {"dfl_target_count": 84, "dfl_kept": 40}
    ybin = np.searchsorted(np.linspace(-1.2, 1.2, 128), -yaw[chosen], side="right")
    assert ybin.max() - ybin.min() >= 30  # the even cut keeps the yaw range, not its first 20 bins


def test_dfl_pitch_yaw_recovers_a_known_head_turn():
    import insightface

    mean = np.asarray(pickle.load(open(Path(insightface.__file__).parent / "data/objects/meanshape_68.pkl", "rb")),
                      np.float64) * np.array([1.0, 1.0, -1.0])
    size = 256
    cam = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], np.float64)
    angles = {}
    for deg in (-25, 0, 25):
        rvec = np.array([0.0, math.radians(deg), 0.0])
        pts, _ = cv2.projectPoints(mean * 60, rvec, np.array([0.0, 0.0, 400.0]), cam, np.zeros(4))
        pitch, yaw = baselines.dfl_pitch_yaw(pts.reshape(-1, 2), size, mean)
        angles[deg] = (math.degrees(pitch), math.degrees(yaw))
    assert abs(angles[0][1]) < 1 and abs(angles[0][0]) < 1
    assert angles[25][1] == pytest.approx(25, abs=1) and angles[-25][1] == pytest.approx(-25, abs=1)


def test_cpbd_falls_as_the_same_picture_is_blurred_more():
    # Blocks of random grey, slightly blurred (a perfect step has two equal gradient maxima, which the
    # thinning drops, so CPBD needs some transition), then blurred more.
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 255, (16, 16), np.uint8), (128, 128), interpolation=cv2.INTER_NEAREST)
    scores = [baselines.cpbd(cv2.GaussianBlur(img, (0, 0), s)) for s in (0.7, 1.0, 3.0)]
    assert 0 < scores[0] <= 1
    assert scores[0] > scores[1] >= scores[2]


def test_faceswap_chain_groups_look_alikes_and_takes_the_sharpest_of_each_first():
    hist = np.zeros((6, 256), np.float32)
    hist[[0, 1, 2], 50] = 1  # three look-alikes
    hist[[3, 4], 200] = 1    # two others
    hist[5, 120] = 1         # one alone
    blur = np.array([0.5, 0.9, 0.1, 0.3, 0.2, 0.05])
    groups = baselines.faceswap_hist_groups(np.argsort(-blur, kind="stable"), hist)
    assert [sorted(g) for g in groups] == [[0, 1, 2], [3, 4], [5]]
    chosen, info = baselines.faceswap_chain(blur, hist, 4)
    assert info["faceswap_groups"] == 3
    assert chosen.tolist() == [1, 3, 5, 0]  # each group's sharpest in group order, then the next round


def test_image_embeddings_separate_different_pictures_more_than_near_copies():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (64, 64, 3), np.uint8)
    b = rng.integers(0, 255, (64, 64, 3), np.uint8)
    near = np.clip(a.astype(int) + rng.integers(-5, 6, a.shape), 0, 255).astype(np.uint8)
    c = rng.integers(0, 255, (64, 64, 3), np.uint8)
    e = baselines.image_embeddings(np.stack([a, near, b, c]), dims=3)
    assert e.shape == (4, 3)
    assert e[0] @ e[1] > e[0] @ e[2]


def test_time_windows_pick_faces_of_their_own_file_only():
    path, lo, hi = thesis.parse_spec("liveportrait/driving_d6.mp4@24-")  # a shared clip by name, open-ended window
    assert Path(path).is_file() and path.endswith("driving_d6.mp4") and lo == 24.0 and math.isinf(hi)
    assert thesis.parse_spec("liveportrait/driving_d6.mp4@2.5-7")[1:] == (2.5, 7.0)
    import pandas as pd

    table = pd.DataFrame({"source_path": [path, path, path, "/elsewhere.mp4"], "time_s": [10.0, 23.9, 30.0, 30.0]})
    assert thesis.in_specs(table, [(path, lo, hi)]).tolist() == [False, False, True, False]
    with pytest.raises(SystemExit):
        thesis.parse_spec("liveportrait/driving_d6.mp4@late-")


def test_report_pairs_each_baseline_with_curator_in_the_same_repeat(tmp_path):
    """Repeats differ a lot (0.1 to 0.9), the baseline is worse by 0.018-0.022 within each: only a paired
    difference sees it. The report must find +0.02 with an interval above zero, from the runs' files alone."""
    import argparse
    import json

    ev_ids = [f"e{i}" for i in range(20)]
    info = {"evaluation": {"faces": 20, "face_id": ev_ids, "yaw": [0.0] * 10 + [25.0] * 10, "pitch": [0.0] * 20},
            "footage": [], "target": [], "for_target": [], "b": [], "refs": [], "extract_fps": None,
            "crop_size": 128, "candidates": 100,
            "repeats": {str(r): {"sets": {"n20_curator": {}, "n20_uniform": {}, "all": {}}} for r in range(3)}}
    args = argparse.Namespace(budgets=[20], methods=["curator", "uniform"], repeats=3, size=64, width=16, latent=256,
                              batch=8, lr=1e-3, steps=10, pool_chunks=2, device="cpu")
    base, delta = [0.1, 0.5, 0.9], [0.018, 0.020, 0.022]
    for r in range(3):
        for name, v in (("n20_curator", base[r]), ("n20_uniform", base[r] + delta[r])):
            rec = {"key": f"r{r}_{name}", "repeat": r, "set": name, "seed": r, "steps": 10, "train_s": 1.0,
                   "evaluate_s": 1.0, "loss_a": 0.1, "convergence": None, "converged": None, "run_id": "x", "git": "x",
                   "config": thesis.training_config(args), "machine": {"cpu_model": "test", "date": "today"},
                   "per_face": {"face_id": ev_ids[::-1], "l1": [v] * 20, "ssim": [0.5] * 20}}
            (tmp_path / f"r{r}_{name}.json").write_text(json.dumps(rec))
    res = thesis.report(args, info, tmp_path)
    row = res["table"]["N=20"]["uniform"]
    assert row["repeats"] == [0, 1, 2]
    for fig in thesis.FIGURES:
        d = row[fig]["minus_curator"]
        assert d["n"] == 3 and d["wins"] == 3
        assert d["mean"] == pytest.approx(0.02, abs=1e-5) and 0 < d["lo"] < 0.02 < d["hi"]
    assert res["table"]["N=20"]["all"]["repeats"] == []  # the whole pool has no run yet: reported as missing
    assert res["status"] == {"runs_done": 6, "runs_planned": 9, "repeats_with_runs": [0, 1, 2]}
    assert "| uniform | 3 |" in thesis.render_markdown(res)


def test_a_run_is_claimed_by_one_process_and_a_dead_holder_releases_it(tmp_path):
    assert thesis.claim(tmp_path, "r0_n20_curator")
    assert not thesis.claim(tmp_path, "r0_n20_curator")  # this process holds it, alive
    (tmp_path / ".r1_n20_curator.lock").write_text("2147483647")  # no such process
    assert thesis.claim(tmp_path, "r1_n20_curator")
    (tmp_path / ".r2_n20_curator.lock").write_text("")  # a holder that died before writing its pid
    assert thesis.claim(tmp_path, "r2_n20_curator")


def test_the_control_takes_the_pools_first_faces_in_time():
    pool = np.array([40, 41, 42, 43, 44, 45])  # candidates in time order, as prepare gives them
    rows, extra = thesis.sel_consecutive(None, pool, 4, 0)
    assert rows.tolist() == [40, 41, 42, 43] and extra["control"]


def test_a_runs_folder_takes_new_methods_but_not_other_training(tmp_path):
    import json

    cfg = {"training": {"size": 64, "steps": 2000}, "budgets": [20, 50], "methods": ["curator", "random"]}
    assert thesis.runs_config(tmp_path, cfg) == cfg
    grown = thesis.runs_config(tmp_path, {**cfg, "methods": ["curator", "consecutive"]})
    assert grown["methods"] == ["curator", "random", "consecutive"]  # the folder's methods, then the new one
    assert json.loads((tmp_path / "config.json").read_text()) == grown
    for other in ({**cfg, "training": {"size": 128, "steps": 2000}}, {**cfg, "budgets": [20, 100]}):
        with pytest.raises(SystemExit, match="another configuration"):
            thesis.runs_config(tmp_path, other)
