"""curator audit and curator compare on real footage.

The frontal set is three video_retalking talking heads (yaw about -9..+14 degrees
with the pack's 5-point pose); the head-turn clip is LivePortrait's driving_d12,
the driving clip with the widest yaw turn (to about -22 degrees, toward the
image's left, and back). Extraction runs through `curator extract`.
"""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import chromium_screenshot, clip, curator, curator_json, one_line_error, table
from curator.reports import audit, compare, page as report
from curator.measure import metrics
from curator.workspace import open_workspace, read_table, write_table

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

FRONTAL = ("face_1.mp4", "face_4.mp4", "face_5.mp4")
TURNS = "driving_d12.mp4"


@pytest.fixture(scope="module")
def frontal_ws(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("audit") / "frontal"
    curator("extract", *[clip(c) for c in FRONTAL], "-w", ws, "-q", check=True)
    return ws


@pytest.fixture(scope="module")
def turns_ws(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("audit") / "turns"
    # 10 fps: the turn to the left lasts about a second; 2 fps would catch one or two frames of it
    curator("extract", clip(TURNS), "-w", ws, "--fps", "10", "-q", check=True)
    return ws


@pytest.fixture(scope="module")
def curated_ws(turns_ws, tmp_path_factory) -> tuple[Path, dict]:
    ws = tmp_path_factory.mktemp("audit") / "curated"
    shutil.copytree(turns_ws, ws)
    return ws, curator_json("curate", "-w", ws, "--budget", "12")  # runs identify too


@pytest.fixture(scope="module")
def empty_ws(tmp_path_factory) -> Path:
    """A real workspace with no faces: a night crowd seen from above."""
    ws = tmp_path_factory.mktemp("audit") / "empty"
    curator("extract", clip("MOT20-05-raw_even_shorter.mp4"), "-w", ws, "-q", check=True)
    assert len(read_table(open_workspace(ws))) == 0
    return ws


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# --- audit: numbers ---------------------------------------------------------------

def test_audit_json_numbers_match_the_table(frontal_ws, tmp_path):
    out = tmp_path / "report.html"
    s = curator_json("audit", "-w", frontal_ws, "--out", out)
    t = table(frontal_ws)
    assert s["report"] == str(out) and out.is_file()
    # not identified or curated: the report covers every face, and says so
    assert (s["set"], s["faces"], s["report_faces"]) == ("all", len(t), len(t))
    assert s["target_faces"] is None and s["identities"] is None and s["selected"] is None and s["coverage"] is None
    assert s["sources"] == len(FRONTAL)

    # the heatmap's table: recount 10 degree bins, [edge, edge + 10), straight from the Parquet file
    expect = (t.assign(y=np.floor(t.yaw / 10).astype(int) * 10, p=np.floor(t.pitch / 10).astype(int) * 10)
              .groupby(["y", "p"]).size().to_dict())
    got = {(b["yaw_from"], b["pitch_from"]): b["faces"] for b in s["pose_bins"]}
    assert got == expect
    assert s["pose_bins_occupied"] == len(expect)
    for b in s["pose_bins"]:
        assert b["bin"] == f"y{b['yaw_from']:+d}p{b['pitch_from']:+d}"  # curate's pose_cluster labels

    # expression and lighting: low / mid / high against tertiles of the faces (curate's cells)
    for group, cols in (("expression", ("mouth_open", "eyes_open", "smile")), ("lighting", ("lum", "light_lr", "contrast"))):
        for c in cols:
            lo, hi = np.quantile(t[c].dropna(), [1 / 3, 2 / 3])
            got = s[group]["columns"][c]
            assert (got["low"], got["mid"], got["high"]) == (int((t[c] < lo).sum()), int(((t[c] >= lo) & (t[c] < hi)).sum()),
                                                             int((t[c] >= hi).sum())), (group, c)
    assert s["quality"]["face_px"]["median"] == pytest.approx(t.face_px.median(), rel=1e-3)


def test_audit_holes_are_true_statements_about_the_table(frontal_ws, tmp_path):
    s = curator_json("audit", "-w", frontal_ws, "--out", tmp_path / "a.html")
    t = table(frontal_ws)
    beyond = {h["direction"]: h["beyond_deg"] for h in s["holes"] if h["kind"] == "beyond"}
    # the frontal clips span about -9..+14 yaw: the report must say so for both sides, with true limits
    assert {"left", "right", "up", "down"} <= set(beyond)
    how_far = {"left": -t.yaw, "right": t.yaw, "up": t.pitch, "down": -t.pitch}
    for d, deg in beyond.items():
        parts = d.split("-")
        # "no faces looking up-left beyond 15°" = none more than 15° up and 15° left at once
        farthest = np.minimum.reduce([how_far[x].to_numpy() for x in parts])
        assert not (farthest > deg).any(), (d, deg)
        # ...and the limit is tight: within 5° rounding of the farthest face (or 5° when none turn that way)
        assert deg - 5 <= max(farthest.max(), 0) or deg == 5
    assert beyond["left"] <= 15 and beyond["right"] <= 20  # nothing near a profile in talking heads
    words = [h["words"] for h in s["holes"]]
    assert f"no faces looking left beyond {beyond['left']}°" in words
    # thin bins are the occupied bins with fewer than 3 faces
    thin = {h["bin"] for h in s["holes"] if h["kind"] == "thin"}
    assert thin == {b["bin"] for b in s["pose_bins"] if b["faces"] < 3}


def test_audit_of_a_curated_workspace_reports_target_and_selection(curated_ws):
    ws, cur = curated_ws
    t = table(ws)
    s = curator_json("audit", "-w", ws)  # default: target faces, report in WS/audit.html
    assert s["set"] == "target" and s["report_faces"] == int(t.is_target.sum())
    assert s["report"] == str((ws / "audit.html").resolve()) and (ws / "audit.html").is_file()
    assert s["identities"] == t.loc[t.identity_cluster >= 0, "identity_cluster"].nunique()
    assert s["selected"] == int(t.selected.sum()) == cur["selected"] == 12
    # the coverage numbers are curate's own
    assert s["coverage"] == cur["coverage_after"]

    sel = curator_json("audit", "-w", ws, "--selected", "--out", ws / "selected.html")
    assert sel["set"] == "selected" and sel["report_faces"] == 12
    assert sum(b["faces"] for b in sel["pose_bins"]) == 12
    assert sel["coverage"] == cur["coverage_after"]
    # human output: one summary line, the holes, the report path
    human = curator("audit", "-w", ws, "--selected", "--out", ws / "selected.html", check=True).stdout
    assert human.startswith("12 selected faces in") and "report: " in human


# --- audit: the report as a person sees it -------------------------------------------

def test_audit_report_is_self_contained_and_renders_in_chromium(frontal_ws, tmp_path):
    out = tmp_path / "audit.html"
    curator("audit", "-w", frontal_ws, "--out", out, check=True)
    html = out.read_text()
    # opens offline: every image is embedded, nothing is fetched
    srcs = re.findall(r'src="([^"]*)"', html)
    t = table(frontal_ws)
    per_bin = t.groupby([np.floor(t.yaw / 10), np.floor(t.pitch / 10)]).size()
    assert len(srcs) == 4 + int(np.minimum(per_bin, 6).sum())  # 4 charts, then up to 6 thumbnails per pose bin
    assert all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in srcs)
    assert not re.search(r"https?://|<script|<link|@import|url\(", html)

    shot = tmp_path / "shot.png"
    proc = chromium_screenshot(out.resolve().as_uri(), shot, tmp_path / "profile", "1280,2000",
                               purpose="the audit report")
    assert shot.is_file(), proc.stderr[-2000:]
    img = cv2.imread(str(shot))[:, :, ::-1].astype(np.int16)  # RGB
    assert img.shape[:2] == (2000, 1280)
    # not blank: many colours (charts, thumbnails, antialiased text)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 800  # a blank page has a handful
    # the heatmap is there: a good area of pixels on the viridis colormap (cells and colour bar), spanning it
    from matplotlib import colormaps
    lut = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.int16)
    px = img.reshape(-1, 3)
    px = px[(px.max(1) - px.min(1)) > 40]  # coloured pixels only: greys and white are page and axes
    d = np.abs(px[:, None, :] - lut[None]).sum(-1)
    near = d.min(1) <= 12
    hit = d.argmin(1)[near]
    assert near.sum() > 3000, near.sum()
    assert hit.max() - hit.min() > 150  # from the dark purple end to the yellow end


def test_heatmap_of_a_per_bin_value(frontal_ws):
    # what `curator evaluate` draws: the mean of a per-face value in each 10° bin instead of a count
    t = table(frontal_ws)
    values = t["sharpness"].to_numpy(float).copy()
    values[::4] = np.nan  # faces without a value are left out of their bin's mean
    ye, pe = metrics.pose_grid(t)
    means = metrics.pose_means(t, values, ye, pe)
    expect = t.assign(v=values).groupby([np.floor(t.pitch / 10) * 10, np.floor(t.yaw / 10) * 10]).v.mean().dropna()
    got = {(float(pe[i]), float(ye[j])): means[i, j] for i, j in zip(*np.nonzero(np.isfinite(means)))}
    assert set(got) == set(expect.index) and len(got) >= 3
    for key, v in expect.items():
        assert got[key] == pytest.approx(v)

    def decode(uri: str) -> np.ndarray:
        assert uri.startswith("data:image/png;base64,")
        return cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)

    by_value = decode(report.heatmap_png(t, "sharpness", values=values, value_label="mean sharpness per 10° bin"))
    by_count = decode(report.heatmap_png(t, "sharpness"))
    assert by_value.shape[0] > 200 and by_value.shape[1] > 200
    assert by_value.shape != by_count.shape or (by_value != by_count).any()


# --- compare ----------------------------------------------------------------------

def test_compare_finds_the_head_turn_the_frontal_set_lacks(frontal_ws, turns_ws, tmp_path):
    out = tmp_path / "compare.html"
    c = curator_json("compare", frontal_ws, turns_ws, "--out", out)
    src, tgt = table(frontal_ws), table(turns_ws)
    assert out.is_file() and c["report"] == str(out)
    assert (c["source"]["set"], c["source"]["faces"], c["target"]["faces"]) == ("all", len(src), len(tgt))

    # independently of curator: a target face more than 5° past the source's yaw range
    # has no source face within ±5°, so it must be a pose gap
    lo = src.yaw.min()
    left = tgt[(tgt.yaw < lo - 5) & (tgt.pitch.abs() < 0.4 * tgt.yaw.abs())]  # turned left, more than up or down
    assert len(left) >= 3, f"premise: {TURNS} should turn further left than the frontal clips (yaw < {lo - 5:.0f})"
    pose = [g for g in c["regions"] if g["kind"] == "pose"]
    on = lambda side: {f for g in pose if side in g["key"].split("-") for f in g["face_ids"]}
    # yaw < 0 is the nose toward the image's left (docs/workspace.md): those gaps must be called "left"
    assert set(left.face_id) <= on("left")
    assert not set(left.face_id) & on("right")
    assert len(on("left")) > len(on("right"))  # the side the turn goes
    assert any(l.startswith("find footage of the person looking left beyond") for l in c["look_for"])

    # the pose numbers match a brute-force recount: nearest source face by max(|dyaw|, |dpitch|)
    dist = np.abs(tgt[["yaw", "pitch"]].to_numpy()[:, None] - src[["yaw", "pitch"]].to_numpy()[None]).max(-1).min(1)
    assert c["pose_gap_faces"] == int((dist > 5).sum()) == sum(g["faces"] for g in pose)
    pose_only = np.clip((dist / 5 - 1) / 2, 0, 1).mean()  # docs/audit.md: 0 at 5°, full at 15°
    assert pose_only > 0.02
    assert pose_only - 1e-4 <= c["gap_score"] <= 1
    assert c["expression_compared"] is True and not c["notes"]
    for g in c["regions"]:
        assert 1 <= len(g["examples"]) <= 6 and set(g["examples"]) <= set(g["face_ids"])
    # the report shows example target frames of each gap
    assert out.read_text().count("data:image/jpeg;base64,") >= sum(len(g["examples"]) for g in c["regions"])


def test_compare_a_set_with_itself_has_no_gaps(frontal_ws):
    ws = open_workspace(frontal_ws)
    c = compare.compare_sets(audit.load_faces(ws, "source"), audit.load_faces(ws))
    assert c["gap_score"] == 0 and c["regions"] == [] and c["look_for"] == []


def test_compare_skips_expression_when_methods_differ(frontal_ws, turns_ws, tmp_path):
    # the same faces, as if measured with 68 landmarks: mouth_open etc. are on another scale
    other = tmp_path / "lmk68"
    shutil.copytree(turns_ws, other)
    ws = open_workspace(other)
    t = read_table(ws)
    # the other method of the two (the default landmarks give lmk68 wherever dlib is installed)
    t["expression_method"] = "kps5_appearance" if (t["expression_method"] == "lmk68").all() else "lmk68"
    write_table(ws, t)
    source = audit.load_faces(open_workspace(frontal_ws), "source")
    same = compare.compare_sets(source, audit.load_faces(open_workspace(turns_ws)))
    diff = compare.compare_sets(source, audit.load_faces(ws))
    assert same["expression_compared"] and same["expression_gap_faces"] > 0  # different people, different mouths
    assert not diff["expression_compared"] and diff["expression_gap_faces"] == 0
    assert not [g for g in diff["regions"] if g["kind"] == "expression"]
    assert any("expression not compared" in n and "lmk68" in n for n in diff["notes"])
    assert diff["pose_gap_faces"] == same["pose_gap_faces"]  # pose is compared either way


def test_compare_uses_the_selection_of_a_curated_source(curated_ws, frontal_ws):
    ws, cur = curated_ws
    source = audit.load_faces(open_workspace(ws), "source")
    assert source.name == "selected" and len(source.faces) == cur["selected"]
    target = audit.load_faces(open_workspace(ws))  # the target side is never cut down to the selection
    assert target.name == "target" and len(target.faces) == cur["target_faces"]


# --- bad input ----------------------------------------------------------------------

def test_empty_workspace_is_refused_without_a_report(empty_ws, frontal_ws, tmp_path):
    one_line_error(curator("audit", "-w", empty_ws), "no faces")
    assert not (empty_ws / "audit.html").exists()
    for args in ((empty_ws, frontal_ws), (frontal_ws, empty_ws)):
        out = tmp_path / "compare.html"
        one_line_error(curator("compare", *args, "--out", out), "no faces", str(empty_ws.resolve()))
        assert not out.exists() and not leftovers(tmp_path)
    one_line_error(curator("audit", "-w", tmp_path / "nowhere"), "no workspace")


def test_selected_without_selection_is_refused_without_a_report(frontal_ws, curated_ws, tmp_path):
    out = tmp_path / "sel.html"
    one_line_error(curator("audit", "-w", frontal_ws, "--selected", "--out", out), "not been curated", "curator curate")
    assert not out.exists()
    none = tmp_path / "none"
    shutil.copytree(curated_ws[0], none)
    assert curator_json("curate", "-w", none, "--budget", "0")["selected"] == 0
    one_line_error(curator("audit", "-w", none, "--selected", "--out", out), "no faces are selected")
    assert not out.exists() and not leftovers(tmp_path)


def test_unwritable_output_leaves_nothing_behind(frontal_ws, tmp_path):
    # a folder where the report should go: the report is written in full beside it, then the
    # rename fails; the temporary file must be gone and the folder untouched
    folder = tmp_path / "report.html"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    one_line_error(curator("audit", "-w", frontal_ws, "--out", folder), "cannot write the report", str(folder))
    assert [p.name for p in folder.iterdir()] == ["keep.txt"] and not leftovers(tmp_path)
    # a file where a folder should be
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    one_line_error(curator("compare", frontal_ws, frontal_ws, "--out", blocker / "compare.html"),
                   "cannot write the report", "is a file, not a folder")
    assert blocker.read_text() == "x" and not leftovers(tmp_path)
