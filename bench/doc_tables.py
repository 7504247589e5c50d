"""The benchmark tables of docs/benchmarks.md, docs/bench_curate.md and docs/reliability.md, made from bench/results.

    python bench/doc_tables.py            # print every table, doc by doc, to paste after a new run
    python bench/doc_tables.py --check    # exit 1 if a doc lacks a table or has a figure table not made here

Each figure table in those docs is made here from the results file named
beside it in the doc, so a number in them can only come from a run that
wrote its results. tests/test_bench_docs.py runs the check (no shared data,
no models: only this file, the results and the docs). Tables that hold no
measured figures (the index of benchmarks, the fault scenarios) are listed
in PLAIN by their header row.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
DOCS = REPO / "docs"


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def med(values) -> float:
    return statistics.median(values)


# --- extract -------------------------------------------------------------------------------------------------

def extract_latest(d: dict) -> str:
    """The latest extract run: medians of its repeats, with each repeat."""
    m, reps, pc, v = d["median"], d["repeats"], d["pose_coverage"], d["verdict"]
    minutes = d["settings"]["footage"]["minutes"]
    sub_min = d["settings"]["footage"]["subset_minutes"]
    ours = [r["ours"] for r in reps]

    def each(values, fmt="{:.1f}", unit=""):
        return " / ".join(fmt.format(x) for x in values) + unit

    def met(key):
        return "**met**" if v[key]["met"] else "**missed**"

    fa, faces = int(med([o["frames_analysed"] for o in ours])), int(med([o["faces"] for o in ours]))
    return table(["measure (median of %d repeats)" % len(reps), "value", "per repeat", "target"], [
        [f"decode-only, {minutes:g} min", f"{m['decode_only_s']:.1f} s ({m['decode_only_frames_per_s']:,.0f} frames/s)",
         each([r["decode_only"]["wall_s"] for r in reps], unit=" s"), ""],
        [f"ours (pose fill), {minutes:g} min", f"{m['ours_s']:.1f} s: {fa:,} frames analysed, {faces:,} faces, "
         f"{m['ours_frames_analysed_per_s']:.0f} frames analysed/s, {m['ours_realtime_factor']:.0f}x real time",
         each([o["wall_s"] for o in ours], unit=" s"), ""],
        ["**ours / decode-only**", f"**{m['ratio_ours_decode']:.2f}x** (CPU time {m['ratio_ours_decode_cpu']:.1f}x)",
         each([r["ours"]["wall_s"] / r["decode_only"]["wall_s"] for r in reps], "{:.2f}"),
         f"<= {d['targets']['ratio_ours_decode_max']:g}: {met('ratio_ours_decode')}"],
        ["ours `--no-pose-fill` / decode-only", f"{m['ratio_ours_no_pose_fill_decode']:.2f}x",
         each([r["ours_no_pose_fill"]["wall_s"] for r in reps], unit=" s"), ""],
        [f"**naive / ours, same {sub_min:g} min**", f"**{m['speedup_naive_ours']:.1f}x** ({m['subset_naive_s']:.1f} against "
         f"{m['subset_ours_s']:.1f} s; CPU time {m['speedup_naive_ours_cpu']:.1f}x)", "",
         f">= {d['targets']['speedup_naive_ours_min']:g}: {met('speedup_naive_ours')}"],
        ["**pose-bin retention**", f"**{pct(pc['retention'])}**: {pc['bins_common']} of {pc['bins_naive']}", "",
         f">= {pct(d['targets']['pose_bin_retention_min'])}: {met('pose_bin_retention')}"],
    ])


def extract_retention(d: dict) -> str:
    """Which of the naive loop's pose bins ours keeps, by how often the naive loop saw them; the missed ones."""
    b = d["missed_bins_analysis"]["retention_breakdown"]
    pc = d["pose_coverage"]
    missed = d["missed_bins_analysis"]["missed"]
    kinds = d["missed_bins_analysis"]["kinds"]
    one_clip: dict[str, int] = {}
    for m in missed:
        for c in m["clips"]:
            one_clip[c] = one_clip.get(c, 0) + 1
    clip, n = max(one_clip.items(), key=lambda kv: kv[1])
    rows = [["every bin (naive faces with detector score >= 0.6)", f"{pc['bins_common']} of {pc['bins_naive']} ({pct(pc['retention'])})"]]
    for key, what in (("plausible", "plausible (\\|pitch\\| <= 60°)"), ("seen_in_3+_frames", "seen in >= 3 naive frames"),
                      ("seen_in_13+_frames", "seen in >= 13 naive frames (one sampling period)"),
                      ("plausible_and_3+_frames", "plausible and seen in >= 3 frames")):
        r = b[key]
        rows.append([what, f"{r['bins_common']} of {r['bins_naive']} ({pct(r['retention'])})"])
    rows.append(["missed: singletons (<= 2 frames) / transients (shorter than a sampling period) / sustained",
                 f"{kinds.get('singleton', 0)} / {kinds.get('transient', 0)} / {kinds.get('sustained', 0)}"])
    rows.append([f"missed bins seen in `{clip}`", f"{n} of {len(missed)}"])
    rows.append(["missed bins with \\|pitch\\| > 60° (5-point fits failing on profiles)",
                 f"{sum(not m['plausible'] for m in missed)} of {len(missed)}"])
    return table([f"pose bins of the naive loop ({d['settings']['footage']['subset_minutes']:g}-min subset)", "kept by ours"], rows)


def extract_rules(d: dict) -> str:
    """The sampling rules replayed on the subset's frames (`sampler_simulation`)."""
    rows = []
    for name, r in d["sampler_simulation"]["rules"].items():
        rows.append([name, f"{r['frames_analysed']:,} ({r['cost_vs_default']:g}x)", pct(r["retention"]),
                     pct(r["retention_plausible"]), pct(r["retention_plausible_3plus_frames"])])
    return table(["rule (replayed)", "frames analysed (x clock)", "retention: all bins", "plausible", "plausible, >= 3 frames"], rows)


EXTRACT_RUNS = ["extract_ba673d7.json", "extract_af8daf9.json", "extract_f1c8dac.json", "extract_256c4b5.json",
                "extract.json"]


def extract_runs(runs: dict[str, dict]) -> str:
    """Every extract run kept, oldest first: the headline ratios."""
    rows = []
    for name, d in runs.items():
        m, pc = d["median"], d["pose_coverage"]
        nopf = m.get("ratio_ours_no_pose_fill_decode")
        rows.append([d["machine"]["date"][:16].replace("T", " "), f"`{d['git']}`", f"{m['ratio_ours_decode']:.2f}x",
                     f"{nopf:.2f}x" if nopf else "", f"{m['speedup_naive_ours']:.1f}x",
                     f"{pct(pc['retention'])} ({pc['bins_common']} of {pc['bins_naive']})", f"`{name}`"])
    return table(["date in the JSON (UTC)", "code", "ours / decode-only", "`--no-pose-fill` / decode-only", "naive / ours",
                  "pose-bin retention", "results"], rows)


def cpu_runtimes(d: dict) -> str:
    runs = d["files"]["footage_720p"]["runs"][0]
    dec = runs["decode_only"]
    rows = [["decode-only", f"{dec['fps']:.0f} frames/s", f"{dec['wall_s']:.2f}", "1", ""]]
    for key, what in (("onnxruntime_every_frame", "onnxruntime, every frame"), ("torch_every_frame", "torch, every frame"),
                      ("onnxruntime_default", "onnxruntime, default sampling"), ("torch_default", "torch, default sampling")):
        r = runs[key]
        st = r["stage_seconds"]
        rows.append([f"{what} ({r['frames_analysed']} analysed, {r['faces']} faces)", f"{r['analysed_per_s']:.1f}",
                     f"{r['extract_s']:.1f}", f"{r['ratio_to_decode_only']:.1f}", f"{st['detect']:.1f} / {st['embed']:.1f}"])
    return table(["", "analysed/s", "seconds", "x decode-only", "detect / embed, summed over workers (s)"], rows)


RAY_RUNS = {"ray_engine_4a710ab.json": "4 min, unpinned", "ray_engine.json": "4 min, unpinned",
            "ray_engine_pinned.json": "4 min, one core per node", "ray_engine_pinned_8min.json": "8 min, one core per node"}
# Runs left out of the medians, and why (said in the doc): on a loaded machine a run with more processes wins more
# of the CPU from the other jobs, which makes Ray look faster than the local engine.
RAY_LOADED = {"ray_engine_4a710ab.json"}


def _load_range(d: dict) -> str:
    loads = [r["load_before"][0] for runs in d["runs"].values() for r in runs]
    return f"{min(loads):.0f}-{max(loads):.0f}"


def ray_runs(runs: dict[str, dict]) -> str:
    """Each Ray run against the local engine (medians of its repeats), and the median over the runs on a machine
    without other jobs."""
    rows, over = [], {"ray_start_over_local": [], "ray_2_over_local": []}
    for name, d in runs.items():
        f = d["figures"]
        walls = {k: med([r["wall_s"] for r in v]) for k, v in d["runs"].items()}
        if name not in RAY_LOADED:
            for k in over:
                over[k].append(f[k])
        rows.append([f"{RAY_RUNS[name]} (`{d['git']}`)" + (", other jobs running" if name in RAY_LOADED else ""),
                     f"`{name}`", _load_range(d), f"{walls['local']:.1f} s", f"{f['ray_start_over_local']:.2f}x",
                     f"{f['ray_1_over_local']:.2f}x", f"{f['ray_2_over_local']:.2f}x", f"{f['efficiency_2']:.2f}"])
    rows.append([f"**median of the {len(over['ray_2_over_local'])} runs without other jobs**", "", "", "",
                 f"**{med(over['ray_start_over_local']):.2f}x**", "", f"**{med(over['ray_2_over_local']):.2f}x**", ""])
    return table(["run", "results", "load average (1 min) before each run", "local engine, wall",
                  "Ray started by the run", "1-node cluster", "2-node cluster", "efficiency 1 -> 2 nodes"], rows)


def ray_walls(runs: dict[str, dict]) -> str:
    """Each run's wall times: median (each repeat) per configuration."""
    names = {"local": "local engine", "ray_start": "`--engine ray`, Ray started by the run",
             "ray_1": "`--engine ray`, 1-node cluster (1 worker)", "ray_2": "`--engine ray`, 2-node cluster (2 workers)"}
    rows = []
    for key, what in names.items():
        cells = []
        for d in runs.values():
            walls = [r["wall_s"] for r in d["runs"][key]]
            cells.append(f"{med(walls):.1f} s ({', '.join(f'{w:.1f}' for w in walls)})")
        rows.append([what, *cells])
    return table(["run", *(f"`{n}`" for n in runs)], rows)


def ray_overhead(runs: dict[str, dict]) -> str:
    """The sentence that states Ray's overhead: the median over the runs, with each run's figure."""
    quiet = [d for n, d in runs.items() if n not in RAY_LOADED]
    two = [d["figures"]["ray_2_over_local"] for d in quiet]
    start = [d["figures"]["ray_start_over_local"] for d in quiet]
    every = [d["figures"]["ray_2_over_local"] for d in runs.values()]
    return (f"{pct(med(two) - 1)} on a running cluster with as many workers as cores (the median of {len(two)} runs: "
            f"{', '.join(f'{x:.2f}' for x in two)}x the local engine), {pct(med(start) - 1)} when the run starts and "
            f"stops Ray itself ({', '.join(f'{x:.2f}' for x in start)}x); with the run on the loaded machine as well, "
            f"the median on a running cluster is {med(every):.2f}x")


def ray_8min_vs_4min(four: dict, eight: dict) -> str:
    """How much slower per frame each configuration ran in the 8-minute run than in the 4-minute one (both pinned)."""
    per = {k: (med([r["wall_s"] for r in eight["runs"][k]]) / eight["footage"]["frames"])
           / (med([r["wall_s"] for r in four["runs"][k]]) / four["footage"]["frames"]) for k in four["runs"]}
    return (f"per frame, the 1-node runs took {per['ray_1']:.2f}x the time of the 4-minute run's, the local engine "
            f"{per['local']:.2f}x and the 2-node cluster {per['ray_2']:.2f}x")


def ray_pairs(d: dict) -> str:
    """Efficiency 1 -> 2 nodes over every pair of a 1-node and a 2-node run."""
    e = [a["wall_s"] / (2 * b["wall_s"]) for a in d["runs"]["ray_1"] for b in d["runs"]["ray_2"]]
    return f"{min(e):.2f} to {max(e):.2f} over the pairs of runs"


# --- curate ----------------------------------------------------------------------------------------------------

def curate_summary(d: dict) -> str:
    """Per scenario and budget: ours, and the best other method on the same target pool for each metric."""
    rows = []
    for key, sc in d["quality"]["scenarios"].items():
        res = sc["results"]
        for lab in sc["budgets"]:
            o = res["ours"][lab]
            others = {m: res[m][lab] for m in ("uniform@target", "dfl_best@target", "fo_unique@target")}

            def best(metric, low=False):
                pick = (min if low else max)(others.items(), key=lambda kv: kv[1][metric])
                return f"{pick[1][metric]:.2f} ({pick[0].split('@')[0]})"

            rows.append([f"{key} {lab}", f"{o['identity_purity']:.2f}", f"{o['pose_coverage']:.2f} / {best('pose_coverage')}",
                         f"{o['expression_coverage']:.2f} / {best('expression_coverage')}",
                         f"{o['light_coverage']:.2f} / {best('light_coverage')}",
                         f"{o['near_duplicate_rate']:.2f} / {best('near_duplicate_rate', low=True)}",
                         f"{max(res[m][lab]['identity_purity'] for m in ('uniform', 'dfl_best', 'fo_unique', 'fo_uniqueness')):.2f}"])
    return table(["scenario, budget", "ours: purity", "pose: ours / best other", "expression: ours / best other",
                  "lighting: ours / best other", "near-dup (SSIM): ours / lowest other", "best purity of a baseline on all faces"],
                 rows)


def curate_trails(d: dict) -> str:
    """Every cell where ours does worse than another method on the same target pool (a Markdown list)."""
    out = []
    for key, sc in d["quality"]["scenarios"].items():
        res = sc["results"]
        for lab in sc["budgets"]:
            o = res["ours@target"][lab]
            for metric, what, low in (("pose_coverage", "pose", False), ("expression_coverage", "expression", False),
                                      ("light_coverage", "lighting", False), ("near_duplicate_rate", "near-duplicates", True)):
                worse = [(m.split("@")[0], r[lab][metric]) for m, r in res.items()
                         if m.endswith("@target") and m != "ours@target"
                         and (r[lab][metric] < o[metric] if low else r[lab][metric] > o[metric])]
                if worse:
                    out.append(f"- {what} at {key} {lab}: {o[metric]:.2f} against "
                               + ", ".join(f"{v:.2f} ({m})" for m, v in worse))
    return "\n".join(out) or "- nowhere"


def curate_scale(d: dict) -> str:
    rows = []
    for r in d["scale"]["runs"]:
        rows.append([f"{r['rows']:,}", f"{r['candidates']:,}", f"{r['near_duplicate_groups']:,}", f"{r['seconds']:.1f}",
                     f"{r['cpu_s']:.1f} ({r['cpu_self_s']:.1f} + {r['cpu_workers_s']:.1f})",
                     f"{r['peak_rss_mb'] / 1024:.2f} / {r['peak_tree_rss_mb'] / 1024:.2f} GiB", f"{r['disk_gb']:.2f} GB"])
    return table(["rows", "candidates", "near-dup groups", "`curate()` wall s", "CPU s (main + workers)",
                  "peak memory (process / tree)", "workspace on disk"], rows)


def curate_scale_format1(d: dict) -> str:
    rows = [[f"{r['rows']:,}", f"{r['seconds']:.1f}", f"{r['cpu_s']:.1f}",
             f"{r['peak_rss_during_curate_mb'] / 1024:.2f} GiB" if "peak_rss_during_curate_mb" in r else ""]
            for r in d["scale"]["runs"]]
    return table(["rows", "`curate()` wall s", "CPU s", "peak memory"], rows)


# --- reliability -------------------------------------------------------------------------------------------

def memory_4k(now: dict, before: dict) -> str:
    def run(d, budget, det):
        for r in d["memory_4k"]["runs"]:
            if r["frame_memory_mb"] == budget and r["det_size"] == det:
                held = f" (frames held at most {r['frames_held_peak_mb']:.0f} MiB)" if r["frames_held_peak_mb"] else ""
                return f"{r['peak_rss_mb']} MB{held}"
        return ""

    return table(["code", "`--frame-memory`", "detector input 640", "detector input 1280"], [
        ["before (`real_footage_before.json`)", "none", run(before, 0, 640), run(before, 0, 1280)],
        ["now (`real_footage.json`)", "1024 (default)", run(now, 1024, 640), run(now, 1024, 1280)],
        ["now", "512", run(now, 512, 640), run(now, 512, 1280)],
    ])


def resume_long(now: dict, before: dict) -> str:
    rows = []
    for what, d in (("before", before), ("now", now)):
        r = d["resume_long_file"]["resume"]
        rows.append([what, f"{r['wall_s']:.1f} s", f"{r['frames_decoded']:,}"])
    return table(["code", "resume run (decode, analyse and stage the rest)", "frames decoded"], rows)


LANDMARK_FACES = {"breakingbad": "head turned, glasses", "einstein": "head turned and down, old photo",
                  "takeo": "small, frontal"}


def landmarks_nme(d: dict) -> str:
    per, mean = d["nme"]["per_image"], d["nme"]["mean"]
    rows = []
    for name, r in per.items():
        rows.append([f"{name} ({LANDMARK_FACES[name]})" if name in LANDMARK_FACES else name, f"{r['iod_px']:.0f} px", f"{r['dlib']:.3f}", f"{r['scrfd_box_as_is']:.3f}",
                     f"{r['hog_box']:.3f}" if "hog_box" in r else "not found"])
    n = len(per)
    rows.append(["**mean**", "", f"**{mean['dlib']['mean']:.3f}** ({mean['dlib']['faces']} of {n})",
                 f"{mean['scrfd_box_as_is']['mean']:.3f}", f"{mean['hog_box']['mean']:.3f} ({mean['hog_box']['faces']} of {n})"])
    return table(["face", "eye-corner distance", "NME, curator (`--landmarks dlib`)", "SCRFD's box as it is",
                  "dlib's own HOG box"], rows)


def fault_figures(d: dict) -> str:
    kinds: dict[str, int] = {}
    for f in d["faults"]:
        kinds[f["test"]] = kinds.get(f["test"], 0) + 1
    rows = [[f"faults that landed: `{t}`", n] for t, n in kinds.items()]
    rows += [["**fault points that landed, in all**", f"**{d['fault_points']}**"],
             ["damaged or awkward inputs tried in this file", d["inputs_tried"]],
             ["rows compared after recovery", f"{d['rows_compared']:,}"],
             ["rows lost", f"**{d['rows_lost']}**"], ["rows duplicated", f"**{d['rows_duplicated']}**"]]
    return table(["figure", "value"], rows)


def public_row(dl: dict, kp: dict, key: str, name: str, data: str, positive: str) -> list:
    """One row of states_auc for a public eyes or mouth set: faces found (of them positive; images without a face)."""
    r = dl[key]
    return [name, data, f"{r['faces']} ({r[positive]} {positive}; no face in {sum(r['no_face'].values())})",
            f"**{r['auc']:.2f}**", f"{kp[key]['auc']:.2f}", "0.95"]


def states_auc(d: dict) -> str:
    """bench/states.py's ROC AUC per state column, for the default method (dlib) and 5 keypoints."""
    dl, kp = d["methods"]["dlib"], d["methods"]["none"]
    eyes, mouth, smile, cov = (dl[k] for k in ("eyes_closed_per_frame", "mouth_open", "smile", "covered_lower_face"))
    per_clip = ", ".join(f"{v:.2f}" for v in eyes["per_clip"].values())
    rows = [
        ["eyes closed, per video frame (`eyes_closed`)", "hand-labelled frames of 3 shared clips (below)",
         f"{eyes['frames']} ({eyes['closed']} closed)", f"**{eyes['auc']:.3f}** (per clip {per_clip})",
         f"{kp['eyes_closed_per_frame']['auc']:.2f}", "0.95"],
        ["mouth open (`mouth_open`)", "the same frames", f"{mouth['frames']} ({mouth['open']} open)",
         f"**{mouth['auc']:.2f}**", f"{kp['mouth_open']['auc']:.2f}", "0.95"],
        public_row(dl, kp, "eyes_closed_cew_utkface", "eyes closed, public (`eyes_closed`)",
                   "CEW closed faces vs UTKFace faces (open by presumption; below)", "closed"),
        public_row(dl, kp, "mouth_open_yawn", "mouth open, public (`mouth_open`)",
                   "yawn vs no yawn, in-car frames (Kaggle drowsiness set; below)", "open"),
        ["smiling (`smile`)", "SMILEsmileD, held-out half", smile["faces"], f"**{smile['auc']:.2f}**",
         f"{kp['smile']['auc']:.2f}", "0.90"],
        ["covered lower face (`occluded_mouth`)", "Face-Mask-Detection, held-out half", cov["faces"],
         f"**{cov['auc']:.2f}** (`occlusion`: {cov['auc_occlusion']:.2f})", f"{kp['covered_lower_face']['auc']:.2f}", "0.90"],
    ]
    if "sunglasses_occluded_eyes" in dl:
        sg, sk = dl["sunglasses_occluded_eyes"], kp["sunglasses_occluded_eyes"]
        held = ", held-out half" if sg.get("fold") == 1 else ""

        def cell(r: dict, bold: bool) -> str:
            a = f"**{r['auc']:.2f}**" if bold else f"{r['auc']:.2f}"
            before = f"before {r['auc_before']:.2f}; " if "auc_before" in r else ""
            return f"{a} ({before}`occlusion`: {r['auc_occlusion']:.2f})"

        rows.append(["sunglasses (`occluded_eyes`)", f"selfies with sunglasses vs Face-Mask-Detection bare faces{held} (below)",
                     f"{sg['faces']} ({sg['sunglasses']} sunglasses; no face in {sum(sg['no_face'].values())})",
                     cell(sg, True), cell(sk, False), "0.90"])
    return table(["state (column)", "data", "faces", "`dlib` (the default on a pack without 3D-68)",
                  "`none` (5 keypoints)", "target"], rows)


def states_thresholds(fit: dict) -> str:
    """bench/states.py --fit-thresholds: the eye and mouth thresholds before and as chosen, and the shares called
    right at the 0.5 point on the held-out half of the public set and on the shared frames."""
    rows = []
    for name, what, pos, neg in (("EAR_CLOSED", "eyes (CEW closed / UTKFace open)", "closed", "open"),
                                 ("MOUTH_GAP_OPEN", "mouth (yawn / no yawn)", "open", "closed")):
        r = fit["THRESHOLDS"][name]
        h = r["held_out"]

        def share(where: str, side: str) -> str:
            return f"{h[where]['before'][side]:.0%} → **{h[where]['chosen'][side]:.0%}**"

        ba = r["mean_balanced_accuracy_fold0"]
        rows.append([f"`{name}`", what, f"{r['before']:.3f}", f"**{r['chosen']:.3f}**",
                     f"{ba['before']:.3f} → {ba['chosen']:.3f}",
                     f"{pos}: {share('public_fold1', 'positive')}; {neg}: {share('public_fold1', 'negative')} "
                     f"({h['public_fold1']['chosen']['n_positive']} / {h['public_fold1']['chosen']['n_negative']})",
                     f"{pos}: {share('frames', 'positive')}; {neg}: {share('frames', 'negative')} "
                     f"({h['frames']['chosen']['n_positive']} / {h['frames']['chosen']['n_negative']})"])
    return table(["threshold", "state (public set)", "before (frames alone)", "chosen",
                  "balanced accuracy, mean over the fitting sets", "called right at 0.5, public held-out half",
                  "called right at 0.5, shared frames"], rows)


def _sign(x: float, digits: int) -> str:
    return f"{x:+.{digits}f}"


def for_target_pairs(d: dict, budget: int = 20) -> str:
    """bench/for_target.py: each source/target pair at one budget and the default share."""
    share = str(d["default_share"])
    rows = []
    for r in d["rows"]:
        if r["budget"] != budget:
            continue
        x = r["shares"][share]
        g, dist, unc = x["gap_score"], x["pose_distance_deg"], x["uncovered_share"]
        rows.append([r["source"], f"`{Path(r['target']).name}`", r["target_faces"], f"{g['without_for']:.3f}",
                     f"**{g['with_for']:.3f}**", f"{g['all_candidates']:.3f}", f"{dist['without_for']:.2f}",
                     f"**{dist['with_for']:.2f}**", f"{dist['all_candidates']:.2f}",
                     f"{unc['without_for']:.0%} → {unc['with_for']:.0%} ({unc['all_candidates']:.0%})",
                     f"{x['pose_bins_kept']:.0%}"])
    return table(["A", "target (B)", "B faces", "gap without", "gap with `--for`", "gap, all", "distance without (°)",
                  "distance with `--for`", "distance, all", "B faces with nothing within 5°", "pose bins kept"], rows)


def for_target_summary(d: dict) -> str:
    """bench/for_target.py: medians over the pairs, per budget and share."""
    rows = []
    for budget, by_share in d["summary"].items():
        for share, m in by_share.items():
            mark = f"**{share}**" if float(share) == float(d["default_share"]) else share
            rows.append([budget, mark, f"{m['median_gap_without_for']:.3f} → {m['median_gap_with_for']:.3f}",
                         f"{m['gap_lower']} / {m['gap_same']} / {m['gap_higher']}", _sign(m["largest_gap_rise"], 3),
                         f"{m['median_distance_without_for']:.2f} → {m['median_distance_with_for']:.2f}",
                         f"{m['distance_lower']} / {m['distance_same']} / {m['distance_higher']}",
                         _sign(m["largest_distance_rise"], 2), f"{m['min_pose_bins_kept']:.0%}"])
    return table(["budget", "share", "gap score", "pairs lower / same / higher", "largest rise", "pose distance (°)",
                  "pairs lower / same / higher", "largest rise", "pose bins kept, least"], rows)


# --- which doc holds what --------------------------------------------------------------------------------------

def curate_markdown(d: dict) -> str:
    sys.path.insert(0, str(BENCH))
    import curate  # noqa: E402  (bench/curate.py imports only numpy and pandas at the top)

    return curate.render_markdown(d)


def thesis_tables(d: dict) -> list[str]:
    sys.path.insert(0, str(BENCH))
    import thesis  # noqa: E402

    return tables_in(thesis.render_markdown(d))


def review_tables(d: dict) -> list[str]:
    sys.path.insert(0, str(BENCH))
    import review  # noqa: E402  (bench/review.py imports only the standard library at the top)

    return tables_in(review.render_markdown(d))


def expected() -> dict[str, list[tuple[str, str]]]:
    """Per doc: (what, text) for every block of figures it must hold, made from the results."""
    extract = load("extract.json")
    rays = {name: load(name) for name in RAY_RUNS}
    curate = load("curate.json")
    rf_now, rf_before = load("real_footage.json"), load("real_footage_before.json")
    return {
        "benchmarks.md": [
            ("extract: latest run", extract_latest(extract)),
            ("extract: pose bins kept", extract_retention(extract)),
            ("extract: sampling rules replayed", extract_rules(extract)),
            ("extract: every run", extract_runs({n: load(n) for n in EXTRACT_RUNS})),
            ("extract: both runtimes on the CPU", cpu_runtimes(load("extract_cpu_runtimes.json"))),
            ("ray: every run", ray_runs(rays)),
            ("ray: wall times", ray_walls(rays)),
            ("ray: overhead", ray_overhead(rays)),
            ("ray: 8 against 4 minutes", ray_8min_vs_4min(rays["ray_engine_pinned.json"], rays["ray_engine_pinned_8min.json"])),
            ("ray: pinned pairs", ray_pairs(rays["ray_engine_pinned.json"])),
            ("curate: summary", curate_summary(curate)),
            ("curate: where ours trails on the same pool", curate_trails(curate)),
            ("curate: scale", curate_scale(curate)),
            ("curate: scale, format 1", curate_scale_format1(load("curate_scale_format1.json"))),
            ("states: ROC AUC per state", states_auc(load("states.json"))),
            ("states: eye and mouth thresholds", states_thresholds(load("states_fit.json"))),
            ("for target: each pair at 20 faces", for_target_pairs(load("for_target.json"))),
            ("for target: budgets and shares", for_target_summary(load("for_target.json"))),
            *((f"review: table {i + 1}", t) for i, t in enumerate(review_tables(load("review.json")))),
            *((f"thesis: table {i + 1}", t) for i, t in enumerate(thesis_tables(load("thesis.json")))),
        ],
        "bench_curate.md": [("the whole page", curate_markdown(curate))],
        "reliability.md": [
            ("4K memory", memory_4k(rf_now, rf_before)),
            ("resume on a long file", resume_long(rf_now, rf_before)),
            ("fault figures", fault_figures(load("reliability.json"))),
            ("landmark accuracy", landmarks_nme(load("landmarks.json"))),
        ],
    }


# Tables without measured figures, by their header row.
PLAIN = {
    "| benchmark | script | results | details |",
    "| scenario | how | what must hold |",
    "| footage | how the test makes it | what happens | what must hold |",
}


def tables_in(text: str) -> list[str]:
    """Every Markdown table of `text` (runs of lines that start with '|')."""
    return [m.group(0).strip("\n") for m in re.finditer(r"(?m)(?:^\|.*\n?)+", text)]


def problems() -> list[str]:
    out = []
    for doc, blocks in expected().items():
        text = (DOCS / doc).read_text()
        made = set()
        for what, block in blocks:
            if block.strip() not in text:
                out.append(f"docs/{doc}: lacks {what} as the results make it (python bench/doc_tables.py)")
            made.update(tables_in(block))
        for t in tables_in(text):
            if t not in made and t.splitlines()[0] not in PLAIN:
                out.append(f"docs/{doc}: a table no results file makes: {t.splitlines()[0]}")
    return out


def main() -> None:
    if "--check" in sys.argv[1:]:
        found = problems()
        print("\n".join(found) or "every benchmark table matches bench/results")
        sys.exit(1 if found else 0)
    for doc, blocks in expected().items():
        for what, block in blocks:
            print(f"<!-- docs/{doc}: {what} -->\n{block}\n")


if __name__ == "__main__":
    main()
