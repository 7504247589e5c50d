"""Figures for docs/benchmarks.md and docs/curation.md: what `curate --for TARGET` buys against the same budget without it.

    python bench/for_target.py [--budgets 20,40] [--shares 0.25,0.5,0.75,1] [--out bench/results/for_target.json]

Sources (A, the face drawn): one person's talking-head footage each,
  rdj  pc_avs/Audio_Source_00104 + Pose_Source_741400163 (one man, two 224 px interviews), 8 fps;
  d6   liveportrait/driving_d6 (one man, 34 s in a studio, mostly facing the camera), 8 fps.
Targets (B, the video converted): other people's clips with head turns, 4 fps:
  liveportrait/driving_d12, driving_d9, driving_d3, tpsmm/driving, pc_avs/Input_00098, liveportrait/source_s20.

Each source is identified (its largest identity) and each target's faces are
its largest identity, as `curate --for` does. For every (source, target,
budget), curate runs on the source's table (curator.curate.curate, what
`curator curate` calls) without a target and with it at each --shares
value, and records:

- gap score: compare's (curator/reports/compare.py) of the selection against the target;
- pose distance: mean over the target's faces of the distance sqrt(dyaw² + dpitch²) in degrees to the
  nearest selected face;
- uncovered: the target's faces with no selected face within 5° of yaw and pitch;
- pose bins kept: of the 10° pose bins the selection without --for covers, the share the one with --for
  still covers (issue 24 asks for at least 80%);
- seconds: curate without and with the target (median of 3, the same process, one after the other).

"all candidates" is every near-duplicate group's leader: what any selection
from this footage can draw on. Workspaces are extracted once with the shared
pack-small into the benchmark cache (CURATOR_BENCH_CACHE or
~/.cache/curator-bench) and reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

sys.path.insert(0, str(common.REPO))

SOURCES = {
    "rdj": {"clips": ["pc_avs/Audio_Source_00104.mp4", "pc_avs/Pose_Source_741400163.mp4"], "fps": 8.0,
            "what": "one man, two 224 px interviews (pc_avs)"},
    "d6": {"clips": ["liveportrait/driving_d6.mp4"], "fps": 8.0, "what": "one man, 34 s in a studio (liveportrait)"},
}
TARGETS = ["liveportrait/driving_d12.mp4", "liveportrait/driving_d9.mp4", "liveportrait/driving_d3.mp4",
           "tpsmm/driving.mp4", "pc_avs/Input_00098.mp4", "liveportrait/source_s20.mp4"]
TARGET_FPS = 4.0
CACHE_VERSION = 1  # bump when what a cached workspace holds changes


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def workspace(name: str, clips: list[str], fps: float, cache: Path) -> Path:
    """A workspace of `clips` at `fps`, extracted once (re-running finds every file already in it)."""
    from curator import api

    ws = cache / f"for_target_v{CACHE_VERSION}" / name
    s = api.extract([common.VIDEOS / c for c in clips], ws, models=str(common.PACK_SMALL), fps=fps)
    if s["new_files"]:
        log(f"extracted {name}: {s['rows_total']} faces")
    return ws


def source_table(ws: Path):
    from curator import api
    from curator.curate import COLUMNS, OPTIONAL_COLUMNS
    from curator.target import SOURCE_COLUMNS
    from curator.workspace import open_workspace, read_embeddings, read_table, read_vectors, table_columns

    w = open_workspace(ws)
    if "is_target" not in table_columns(w):
        api.identify(ws)
    have = set(table_columns(w))
    table = read_table(w, [c for c in COLUMNS + OPTIONAL_COLUMNS + SOURCE_COLUMNS if c in have],
                       categories=("source_sha256",))
    return table, read_embeddings(w, len(table), random_access=True), read_vectors(w, "appearance")


def bins_kept(plain, with_for) -> float:
    """Of the 10° pose bins the selection without --for covers, the share the one with --for covers too."""
    before, after = set(plain), set(with_for)
    return len(before & after) / len(before) if before else 1.0


def timed(fn, repeats: int = 3):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def measure(name: str, table, emb, appearance, target_name: str, target, budget: int, shares: list[float]) -> dict:
    from curator.curate import curate
    from curator.target import ForTarget

    plain, t_plain = timed(lambda: curate(table, budget, emb=emb, appearance=appearance))
    plain_bins = plain.columns.loc[plain.columns["selected"], "pose_cluster"].astype(str)
    row = {"source": name, "target": target_name, "target_faces": len(target), "budget": budget,
           "candidates": plain.summary["near_duplicate_groups"], "seconds_without_for": round(t_plain, 3),
           "pose_bins_without_for": int(plain_bins.nunique()), "shares": {}}
    for share in shares:
        res, t_for = timed(lambda: curate(table, budget, emb=emb, appearance=appearance, for_target=ForTarget(target, share)))
        ft = res.summary["for_target"]
        bins = res.columns.loc[res.columns["selected"], "pose_cluster"].astype(str)
        row["shares"][str(share)] = {
            "gap_score": ft["gap_score"], "pose_distance_deg": ft["pose_distance_deg"],
            "uncovered_share": ft["uncovered_share"], "covered_share": ft["covered_share"],
            "pose_bins_kept": round(bins_kept(plain_bins, bins), 4), "picks": ft["picks"],
            "selected_for_target": ft["selected_for_target"], "seconds_with_for": round(t_for, 3),
            "look_for": ft["look_for"],
        }
    return row


def summarise(rows: list[dict], share: str) -> dict:
    """Across (source, target) pairs at one budget and share: how often --for lowered each figure, and medians."""
    got = [r["shares"][share] for r in rows]
    dg = [g["gap_score"]["with_for"] - g["gap_score"]["without_for"] for g in got]
    dd = [g["pose_distance_deg"]["with_for"] - g["pose_distance_deg"]["without_for"] for g in got]
    return {
        "pairs": len(got),
        "gap_lower": sum(x < 0 for x in dg), "gap_same": sum(x == 0 for x in dg), "gap_higher": sum(x > 0 for x in dg),
        "distance_lower": sum(x < 0 for x in dd), "distance_same": sum(x == 0 for x in dd),
        "distance_higher": sum(x > 0 for x in dd),
        "median_gap_without_for": round(statistics.median(g["gap_score"]["without_for"] for g in got), 4),
        "median_gap_with_for": round(statistics.median(g["gap_score"]["with_for"] for g in got), 4),
        "median_gap_change": round(statistics.median(dg), 4), "largest_gap_rise": round(max(dg), 4),
        "median_distance_without_for": round(statistics.median(g["pose_distance_deg"]["without_for"] for g in got), 2),
        "median_distance_with_for": round(statistics.median(g["pose_distance_deg"]["with_for"] for g in got), 2),
        "median_distance_change": round(statistics.median(dd), 3), "largest_distance_rise": round(max(dd), 3),
        "min_pose_bins_kept": min(g["pose_bins_kept"] for g in got),
        "median_uncovered_without_for": round(statistics.median(g["uncovered_share"]["without_for"] for g in got), 4),
        "median_uncovered_with_for": round(statistics.median(g["uncovered_share"]["with_for"] for g in got), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="20,40")
    ap.add_argument("--shares", default="0.25,0.5,0.75,1")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--out", default=str(common.REPO / "bench" / "results" / "for_target.json"))
    args = ap.parse_args()
    common.require_testdata()
    from curator import target as targeting

    cache = Path(args.cache or common.default_cache())
    budgets = [int(x) for x in args.budgets.split(",")]
    shares = [float(x) for x in args.shares.split(",")]
    result = {"machine": common.machine_info(), "code": common.git_rev(), "loadavg_before": common.loadavg(),
              "sources": SOURCES, "targets": TARGETS, "target_fps": TARGET_FPS, "budgets": budgets, "shares": shares,
              "default_share": targeting.SHARE, "rows": []}
    targets = {}
    for clip in TARGETS:
        ws = workspace(Path(clip).stem, [clip], TARGET_FPS, cache)
        targets[clip] = targeting.load_target([str(ws)], default=ws, source_ws=cache).faces  # its largest identity
    for name, src in SOURCES.items():
        table, emb, appearance = source_table(workspace(name, src["clips"], src["fps"], cache))
        for clip, faces in targets.items():
            for budget in budgets:
                row = measure(name, table, emb, appearance, clip, faces, budget, shares)
                g = row["shares"][str(targeting.SHARE)]
                log(f"{name} -> {clip} budget {budget}: gap {g['gap_score']['without_for']:.3f} -> "
                    f"{g['gap_score']['with_for']:.3f}, distance {g['pose_distance_deg']['without_for']:.2f} -> "
                    f"{g['pose_distance_deg']['with_for']:.2f}, bins kept {g['pose_bins_kept']:.0%}")
                result["rows"].append(row)
    result["summary"] = {str(b): {str(s): summarise([r for r in result["rows"] if r["budget"] == b], str(s))
                                  for s in shares} for b in budgets}
    result["loadavg_after"] = common.loadavg()
    Path(args.out).write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
