"""`curator compare`: a SOURCE set against a TARGET, and what the source lacks.

SOURCE is the faces a model learns from, TARGET the video to convert: where
the target has faces that the source lacks, in pose first, in expression and
lighting where comparable, with one gap score, what footage to look for, and
a self-contained HTML report (heatmaps of both sets, example target frames of
each gap). Which faces, and pose directions in words, come from
curator/reports/audit.py; like audit, compare only reads workspaces and writes the
report alone.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from ..measure import metrics
from .state_words import missing_states
from .audit import THUMBS_PER_STRIP, FaceSet, direction, face_thumb, how_far, load_faces
from ..measure.metrics import known_pose, pose_grid
from .page import check_out, heatmap_png, public, render_page, write_report
from ..workspace import Workspace, inputs_of, report_path

# compare: a target face is covered in pose when the source has a face inside the
# 10 x 10 degree box centred on it: the size of a curate pose bin, without bin edges.
POSE_TOLERANCE_DEG = metrics.POSE_BIN / 2
# Gap weights: a pose the model never saw fails worst (it cannot invent an unseen
# side of the head); an expression out of range degrades more gracefully; lighting
# least, since swap pipelines colour-match their output.
GAP_WEIGHTS = {"pose": 1.0, "expression": 0.5, "lighting": 0.25}

# column: {side: (what the target has that the source lacks, "find footage of the person ...")}
DESCRIPTOR_WORDS = {
    "mouth_open": {"low": ("mouth more closed", "with the mouth closed"),
                   "high": ("mouth open wider", "with the mouth wide open")},
    "eyes_open": {"low": ("eyes more closed", "with the eyes closed or narrowed"),
                  "high": ("eyes opened wider", "with the eyes wide open")},
    "smile": {"low": ("mouth narrower (pursed or tense)", "with pursed or tense lips"),
              "high": ("wider smile", "smiling broadly")},
    "lum": {"low": ("darker face", "in darker light"), "high": ("brighter face", "in brighter light")},
    "light_lr": {"low": ("lit more strongly from the image's left", "lit from the image's left"),
                 "high": ("lit more strongly from the image's right", "lit from the image's right")},
    "contrast": {"low": ("flatter, softer light", "in flat, soft light"),
                 "high": ("harder, more contrasty light", "in hard, contrasty light")},
}
# compare's tolerance around the source's range, in each descriptor's units: lighting
# uses curate's just-noticeable differences; expression half the source's robust std
# (curate's unit too, because expression scales depend on the method).
LIGHT_TOLERANCE = {"lum": 3.0, "light_lr": 3.0, "contrast": 2.0}
EXPRESSION_TOLERANCE_STD = 0.5
# A miss of one tolerance is the edge of a gap; at three it counts in full (15 degrees for pose).
FULL_GAP_UNITS = 3.0


def pose_miss(source: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
    """For each target face: degrees to the nearest source face, the larger of the yaw and pitch
    differences (Chebyshev). 0 for target faces of unknown pose (nothing can be said about them);
    inf when the source has no face of known pose."""
    from sklearn.neighbors import KDTree

    s = known_pose(source)[["yaw", "pitch"]].to_numpy(float)
    t = target[["yaw", "pitch"]].to_numpy(float)
    ok = np.isfinite(t).all(axis=1)
    miss = np.zeros(len(t))
    if not len(s):
        miss[ok] = np.inf
    elif ok.any():
        miss[ok] = KDTree(s, metric="chebyshev").query(t[ok], k=1)[0][:, 0]
    return miss


def descriptor_miss(source: pd.DataFrame, target: pd.DataFrame, columns, tolerance: dict) -> dict[str, np.ndarray]:
    """Per (column, side): how far each target face lies outside the source's range [min, max],
    in units of the column's tolerance (0 inside). {"mouth_open:high": array over the target, ...}"""
    out = {}
    for c in columns:
        s = source[c].to_numpy(float)
        s = s[np.isfinite(s)]
        if not len(s):
            continue
        t = target[c].to_numpy(float)
        out[f"{c}:low"] = np.nan_to_num((s.min() - t) / tolerance[c], nan=0.0).clip(0)
        out[f"{c}:high"] = np.nan_to_num((t - s.max()) / tolerance[c], nan=0.0).clip(0)
    return out


def gap_weight(miss_units: np.ndarray) -> np.ndarray:
    """0 up to one tolerance (covered), rising linearly to 1 at three tolerances (clearly missing)."""
    return ((np.asarray(miss_units, float) - 1.0) / (FULL_GAP_UNITS - 1.0)).clip(0, 1)


def expression_tolerance(source: pd.DataFrame) -> dict:
    tol = {}
    for c in metrics.EXPRESSION_COLUMNS:
        v = source[c].to_numpy(float)
        v = v[np.isfinite(v)]
        iqr = float(np.subtract(*np.percentile(v, [75, 25]))) if len(v) else 0.0
        tol[c] = max(iqr / 1.349 * EXPRESSION_TOLERANCE_STD, 1e-3)
    return tol


def _methods(faces: pd.DataFrame, column: str) -> list[str]:
    return sorted(faces[column].dropna().unique().tolist()) if column in faces else []


def _round_down(v: float, step: float = 5.0) -> int:
    return int(math.floor(v / step + 1e-9) * step)


def _span(v: np.ndarray) -> str:
    lo, hi = float(np.min(v)), float(np.max(v))
    return f"{lo:.0f}°" if round(lo) == round(hi) else f"{lo:.0f}° to {hi:.0f}°"


def pose_region_words(d: str, sub: pd.DataFrame) -> tuple[str, str]:
    """(what the region is, what to look for) for target faces of one direction."""
    if d == "frontal":
        where = f"yaw {_span(sub['yaw'])}, pitch {_span(sub['pitch'])}"
        return f"near frontal ({where})", f"facing the camera ({where})"
    parts = d.split("-")
    if len(parts) == 1:
        other = "pitch" if d in ("left", "right") else "yaw"
        return (f"looking {d} {_span(how_far(sub, d))} ({other} {_span(sub[other])})",
                f"looking {d} beyond {max(_round_down(how_far(sub, d).min()), 5)}°")
    v, h = parts
    amounts = {x: max(_round_down(how_far(sub, x).min()), 5) for x in parts}
    return (f"looking {d}: {_span(how_far(sub, h))} {h}, {_span(how_far(sub, v))} {v}",
            f"looking {d}, more than {amounts[h]}° {h} and {amounts[v]}° {v}")


def compare_sets(source: FaceSet, target: FaceSet) -> dict:
    """Gaps of the source against the target, as regions with counts, examples and words."""
    S, T = source.faces, target.faces.reset_index(drop=True)
    n = len(T)
    s_expr, t_expr = _methods(S, "expression_method"), _methods(T, "expression_method")
    expression_comparable = bool(s_expr) and s_expr == t_expr
    notes = []
    if not expression_comparable:
        notes.append(f"expression not compared: the source's expression_method is {', '.join(s_expr) or 'unknown'} "
                     f"and the target's {', '.join(t_expr) or 'unknown'}, and their scales differ (docs/workspace.md)")
    s_pose, t_pose = _methods(S, "pose_method"), _methods(T, "pose_method")
    if s_pose != t_pose:
        notes.append(f"pose estimated differently (source {', '.join(s_pose)}, target {', '.join(t_pose)}): "
                     "small pose differences may be estimator bias")

    pose_units = pose_miss(S, T) / POSE_TOLERANCE_DEG
    expr = descriptor_miss(S, T, metrics.EXPRESSION_COLUMNS, expression_tolerance(S)) if expression_comparable else {}
    light = descriptor_miss(S, T, metrics.LIGHT_COLUMNS, LIGHT_TOLERANCE)
    zero = np.zeros(n)
    expr_units = np.maximum.reduce([zero, *expr.values()])
    light_units = np.maximum.reduce([zero, *light.values()])
    pose_gap, expr_gap, light_gap = pose_units > 1, expr_units > 1, light_units > 1
    weight = np.maximum.reduce([GAP_WEIGHTS["pose"] * gap_weight(pose_units),
                                GAP_WEIGHTS["expression"] * gap_weight(expr_units),
                                GAP_WEIGHTS["lighting"] * gap_weight(light_units)])
    expr = {k: v > 1 for k, v in expr.items()}
    light = {k: v > 1 for k, v in light.items()}

    aspect_weight = {"pose": GAP_WEIGHTS["pose"] * gap_weight(pose_units),
                     "expression": GAP_WEIGHTS["expression"] * gap_weight(expr_units),
                     "lighting": GAP_WEIGHTS["lighting"] * gap_weight(light_units)}
    regions = []
    d = direction(T["yaw"], T["pitch"])
    for name in dict.fromkeys(d[pose_gap]):
        m = pose_gap & (d == name)
        words, look = pose_region_words(name, T[m])
        # name the expression the region's faces share when it is itself a gap
        also = [DESCRIPTOR_WORDS[key.split(":")[0]][key.split(":")[1]][1] for key, g in expr.items() if g[m].mean() >= 0.5]
        regions.append(_region("pose", name, m, T, words, ", ".join([look, *also]),
                               nearest_source_deg=[round(float(pose_units[m].min() * POSE_TOLERANCE_DEG), 1),
                                                   round(float(pose_units[m].max() * POSE_TOLERANCE_DEG), 1)]))
    for kind, gaps in (("expression", expr), ("lighting", light)):
        for key, m in gaps.items():
            if m.any():
                col, side = key.split(":")
                what, look = DESCRIPTOR_WORDS[col][side]
                regions.append(_region(kind, key, m, T, f"{what} than anywhere in the source ({col})", look))
    for g in regions:
        # what the region's faces weigh in the gap score: the order to go looking in
        m = T["face_id"].isin(g["face_ids"]).to_numpy()
        g["weight"] = round(float(aspect_weight[g["kind"]][m].sum() / n), 4)
    # pose first (it is what a model cannot make up), then by weight
    regions.sort(key=lambda g: (-GAP_WEIGHTS[g["kind"]], -g["weight"], -g["faces"], g["key"]))
    return {
        "source": {"workspace": str(source.ws.root), "set": source.name, "faces": int(len(S)),
                   "pose_method": s_pose, "expression_method": s_expr},
        "target": {"workspace": str(target.ws.root), "set": target.name, "faces": int(n),
                   "pose_method": t_pose, "expression_method": t_expr},
        "gap_score": round(float(weight.mean()), 4) if n else 0.0,
        "pose_gap_faces": int(pose_gap.sum()),
        "expression_gap_faces": int(expr_gap.sum()),
        "lighting_gap_faces": int(light_gap.sum()),
        "expression_compared": expression_comparable,
        "pose_tolerance_deg": POSE_TOLERANCE_DEG,
        "full_gap_tolerances": FULL_GAP_UNITS,
        "weights": GAP_WEIGHTS,
        "notes": notes,
        "missing_states": missing_states(S, T),
        "regions": regions,
        "look_for": [f"find footage of the person {g['look_for']} ({g['faces']} target face{'s' if g['faces'] != 1 else ''})"
                     for g in regions],
        "_gap_masks": {"pose": pose_gap, "expression": expr_gap, "lighting": light_gap},
    }


def _region(kind: str, key: str, mask: np.ndarray, T: pd.DataFrame, words: str, look: str, **extra) -> dict:
    sub = T[mask]
    return {"kind": kind, "key": key, "faces": int(mask.sum()), "share": round(float(mask.mean()), 4),
            "words": words, "look_for": look, **extra,
            "yaw_range": [round(float(sub["yaw"].min()), 1), round(float(sub["yaw"].max()), 1)],
            "pitch_range": [round(float(sub["pitch"].min()), 1), round(float(sub["pitch"].max()), 1)],
            "examples": _spread(sub).tolist(), "face_ids": sub["face_id"].tolist()}


def _spread(sub: pd.DataFrame, k: int = THUMBS_PER_STRIP) -> np.ndarray:
    """face_ids of up to k faces spread evenly over the region in source and time order."""
    ordered = sub.sort_values(["source", "time_s", "face_index"])
    if not len(ordered):
        return np.array([], dtype=object)
    idx = np.unique(np.linspace(0, len(ordered) - 1, min(k, len(ordered))).round().astype(int))
    return ordered["face_id"].to_numpy()[idx]


# --- the report ------------------------------------------------------------------------

COMPARE_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>curator compare</title><style>{{ css }}</style></head><body>
<h1>Source vs target</h1>
<div class="sub">source {{ c.source.workspace }} ({{ c.source.set }} faces) · target {{ c.target.workspace }}
({{ c.target.set }} faces) · curator {{ version }} · {{ when }}</div>
<div class="nums">
 <div class="num big"><b>{{ '%.3f' % c.gap_score }}</b><span>gap score (0 = no gaps)</span></div>
 <div class="num"><b>{{ c.source.faces }}</b><span>source faces</span></div>
 <div class="num"><b>{{ c.target.faces }}</b><span>target faces</span></div>
 <div class="num"><b>{{ c.pose_gap_faces }}</b><span>target faces in pose gaps</span></div>
 <div class="num"><b>{{ c.expression_gap_faces if c.expression_compared else 'n/a' }}</b><span>expression gaps</span></div>
 <div class="num"><b>{{ c.lighting_gap_faces }}</b><span>lighting gaps</span></div>
</div>
<div class="sub">Gap score: the mean over target faces of each face's gap. A face misses the source in pose by the
distance to the nearest source face (the larger of the yaw and pitch differences), and in expression and lighting by how far
it lies outside the source's range; a miss of more than one tolerance (±{{ c.pose_tolerance_deg|int }}° for pose) is a gap,
counting from 0 there up to full at {{ c.full_gap_tolerances|int }} tolerances. A face's gap is the largest of pose × {{ c.weights.pose }},
expression × {{ c.weights.expression }} and lighting × {{ c.weights.lighting }}. 0 = no gaps; 1 = every target face is at
least {{ (c.pose_tolerance_deg * c.full_gap_tolerances)|int }}° from any source pose. See docs/audit.md.</div>
{% for n in c.notes %}<div class="note">{{ n }}</div>{% endfor %}
{% if c.expression_compared %}<div class="sub">Expression compared: both sets use {{ c.source.expression_method|join(', ') }}.
Lighting is always compared (measured the same way by every extract).</div>{% endif %}

<h2>What to look for</h2>
{% if c.look_for %}<ul>{% for l in c.look_for %}<li>{{ l }}</li>{% endfor %}</ul>
{% else %}<p>Nothing: the source has faces near every target face's pose{{ ', expression' if c.expression_compared else '' }} and lighting.</p>{% endif %}

<h2>Head pose</h2>
<div class="pair"><img alt="source heatmap" src="{{ source_map }}"><img alt="target heatmap" src="{{ target_map }}"></div>
<div class="sub">Red ×: target faces with no source face within ±{{ c.pose_tolerance_deg|int }}° of both their yaw and pitch.
“Looking left” = nose toward the image's left (yaw &lt; 0); pitch &gt; 0 = looking up.</div>

<h2>Gaps</h2>
{% for g in regions %}<div class="region {{ g.kind }}"><b>{{ g.kind }}: {{ g.words }}</b> · weight {{ '%.3f' % g.weight }} · {{ g.faces }} target face(s),
{{ pct(g.share) }} · yaw {{ g.yaw_range[0] }}° to {{ g.yaw_range[1] }}°, pitch {{ g.pitch_range[0] }}° to {{ g.pitch_range[1] }}°{% if g.get('nearest_source_deg') %}
· nearest source pose {{ g.nearest_source_deg[0] }}° to {{ g.nearest_source_deg[1] }}° away{% endif %}
<div class="row">{% for t in g.thumbs %}<figure><img src="{{ t.src }}" alt="{{ t.title }}" width="72" height="72">
<figcaption>{{ t.title }}</figcaption></figure>{% endfor %}</div></div>
{% else %}<p>No gaps.</p>{% endfor %}
</body></html>
"""


def render_compare(source: FaceSet, target: FaceSet, c: dict) -> str:
    T = target.faces.reset_index(drop=True)
    by_id = T.set_index("face_id")
    regions = []
    for g in c["regions"]:
        thumbs = [t for fid in g["examples"] if (t := face_thumb(target.ws, by_id.loc[fid]))]
        regions.append({**g, "thumbs": thumbs})
    ye, pe = pose_grid(source.faces, T)
    gaps = T[c["_gap_masks"]["pose"]]  # the faces themselves: coverage is a box around each face, not a bin
    return render_page(
        COMPARE_TEMPLATE, c=c, regions=regions,
        source_map=heatmap_png(source.faces, f"source: {len(source.faces)} faces", ye, pe),
        target_map=heatmap_png(T, f"target: {len(T)} faces (red ×: no source face within ±{POSE_TOLERANCE_DEG:.0f}°)", ye, pe, marks=gaps),
    )


# --- the command's body (the CLI stays thin) -------------------------------------------

def compare(source_ws: Workspace, target_ws: Workspace, *, out: str | os.PathLike | None = None) -> dict:
    out = check_out(out or report_path(target_ws, "compare.html"), "compare", {**inputs_of(source_ws), **inputs_of(target_ws)})
    source, target = load_faces(source_ws, "source"), load_faces(target_ws, "default")
    result = compare_sets(source, target)
    result["report"] = str(write_report(out, render_compare(source, target, result)))
    return public(result)


def compare_line(c: dict) -> str:
    return (f"gap score {c['gap_score']:.3f}: {c['pose_gap_faces']} of {c['target']['faces']} target faces in pose gaps, "
            f"{c['expression_gap_faces'] if c['expression_compared'] else 'n/a'} in expression gaps, "
            f"{c['lighting_gap_faces']} in lighting gaps"
            + "".join(f"\n  {x}" for x in c["look_for"])
            + "".join(f"\n  {m['words']}" for m in c.get("missing_states", []))
            + "".join(f"\nnote: {n}" for n in c["notes"])
            + f"\nreport: {c['report']}")

