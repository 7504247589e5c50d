"""`curator audit`: what a face set covers, and its holes in plain words.

One workspace -> a self-contained HTML report (pose heatmap, expression,
lighting and quality distributions, example faces per pose bin, holes in
plain words) and the same numbers as a dict for `--json`. Also what
`curator compare` (curator/reports/compare.py) builds on: which faces a report is
about, and pose directions in words.

Everything here reads workspaces and never writes them (no lock is taken, so
an audit can run while another command works); the only file written is the
report, whole, through `curator.report.write_report`.

Directions are as seen in the image (docs/workspace.md): yaw > 0 = the nose
points to the image's right = "looking right"; pitch > 0 = "looking up".
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..measure import metrics
from ..errors import CuratorError
from ..measure.metrics import PLAUSIBLE_PITCH, PLAUSIBLE_YAW, known_pose, pose_counts
from .page import check_out, heatmap_png, histograms_png, public, render_page, thumbnail, write_report
from ..workspace import Workspace, inputs_of, report_path, read_table, table_columns
from .state_words import state_summary

WIDE_COLUMNS = ("lmk68", "kps", "bbox", "appearance", "align_matrix")

FRONTAL_DEG = 10.0  # a pose component smaller than this is not named ("near frontal")
THUMBS_PER_STRIP = 6


class AuditError(CuratorError):
    """A problem with the input the user can act on; the message says what."""


# --- which faces ----------------------------------------------------------------

@dataclass
class FaceSet:
    ws: Workspace
    table: pd.DataFrame  # the whole table
    faces: pd.DataFrame  # the faces this report is about
    name: str  # "selected", "target" or "all"
    reference: pd.DataFrame  # curate's candidates (target, not rejected, big enough), or the target's faces

    @property
    def curated(self) -> bool:
        return bool(_flag(self.table, "selected").any())


def _flag(table: pd.DataFrame, column: str) -> np.ndarray:
    return table[column].fillna(False).to_numpy(bool) if column in table else np.zeros(len(table), bool)


def load_faces(ws: Workspace, which: str = "default") -> FaceSet:
    """The faces to report on. which: "default" (the target's faces if identify has run, else all),
    "selected" (only selected), or "source" (selected if curated, else default minus faces rejected in review)."""
    # Every column but the wide per-face vectors (landmarks, keypoints, appearance), which a report never
    # shows: they are most of a large table's bytes.
    table = read_table(ws, [c for c in table_columns(ws) if c not in WIDE_COLUMNS])
    if not len(table):
        raise AuditError(f"{ws.root} has no faces: run `curator extract FOOTAGE -w {ws.root}` on footage with faces first")

    identified = "is_target" in table
    target = _flag(table, "is_target") if identified else np.ones(len(table), bool)
    rejected, selected = _flag(table, "rejected"), _flag(table, "selected")
    # curate's candidate pool, so that coverage numbers here equal `curate --json`'s
    pool = target & ~rejected & (table["face_px"].to_numpy(float) >= metrics.MIN_FACE_PX)
    ref = table[pool] if pool.any() else table[target]
    if which == "selected" or (which == "source" and selected.any()):
        if "selected" not in table:
            raise AuditError(f"{ws.root} has not been curated, so no faces are selected: "
                             f"run `curator curate -w {ws.root} --budget N` first, or leave out --selected")
        if not selected.any():
            raise AuditError(f"no faces are selected in {ws.root}: re-run `curator curate` with a budget, or leave out --selected")
        return FaceSet(ws, table, table[selected & ~rejected], "selected", ref)
    if not target.any():
        raise AuditError(f"{ws.root} has no faces of the target identity (see `curator identities`)")
    # a source set leaves out faces a person rejected in review; an audit shows the footage as it is
    keep = target & ~rejected if which == "source" else target
    return FaceSet(ws, table, table[keep], "target" if identified else "all", ref)


# --- pose: bins, directions, holes --------------------------------------------------

def direction(yaw, pitch) -> np.ndarray:
    """Plain-words direction of each pose as seen in the image: "left", "up-right", ... or "frontal".

    A component is named when it is at least FRONTAL_DEG and more than tan(22.5°)
    of the other one, so (yaw 12, pitch -8) is "right" and (12, -16) "down-right".
    """
    y, p = np.atleast_1d(np.asarray(yaw, float)), np.atleast_1d(np.asarray(pitch, float))
    ratio = math.tan(math.radians(22.5))
    with np.errstate(invalid="ignore"):
        horiz = np.where((np.abs(y) >= FRONTAL_DEG) & (np.abs(y) >= ratio * np.abs(p)), np.where(y < 0, "left", "right"), "")
        vert = np.where((np.abs(p) >= FRONTAL_DEG) & (np.abs(p) >= ratio * np.abs(y)), np.where(p < 0, "down", "up"), "")
    return np.array([f"{v}-{h}" if v and h else (v or h or "frontal") for v, h in zip(vert, horiz)], dtype=object)


# Signs that turn (yaw, pitch) into "how far that way": left = -yaw, up = +pitch, ...
AXES = {"left": (-1, 0), "right": (1, 0), "up": (0, 1), "down": (0, -1)}
AXIS_LIMIT = {"left": PLAUSIBLE_YAW, "right": PLAUSIBLE_YAW, "up": PLAUSIBLE_PITCH, "down": PLAUSIBLE_PITCH}
DIAGONALS = (("up", "left"), ("up", "right"), ("down", "left"), ("down", "right"))


def how_far(faces: pd.DataFrame, d: str) -> np.ndarray:
    """Degrees each face is turned toward axis direction d (negative: the other way)."""
    sy, sp = AXES[d]
    return sy * faces["yaw"].to_numpy(float) + sp * faces["pitch"].to_numpy(float)


def pose_bin_table(faces: pd.DataFrame) -> pd.DataFrame:
    """Occupied 10 degree bins: label (curate's `pose_cluster` form), yaw and pitch ranges, faces, direction."""
    cols = ["bin", "yaw_from", "yaw_to", "pitch_from", "pitch_to", "faces", "direction"]
    k = known_pose(faces)
    if not len(k):
        return pd.DataFrame(columns=cols)
    size = metrics.POSE_BIN
    y0 = np.floor(k["yaw"].to_numpy(float) / size) * size
    p0 = np.floor(k["pitch"].to_numpy(float) / size) * size
    t = pd.DataFrame({"yaw_from": y0, "pitch_from": p0}).value_counts().rename("faces").reset_index()
    t["yaw_to"], t["pitch_to"] = t["yaw_from"] + size, t["pitch_from"] + size
    t["bin"] = [metrics.pose_label(y, p) for y, p in zip(t["yaw_from"], t["pitch_from"])]
    t["direction"] = direction(t["yaw_from"] + size / 2, t["pitch_from"] + size / 2)
    t = t.sort_values(["pitch_from", "yaw_from"], ascending=[False, True]).reset_index(drop=True)
    for c in ("yaw_from", "yaw_to", "pitch_from", "pitch_to", "faces"):
        t[c] = t[c].astype(int)
    return t[cols]


def _deg(v: float) -> str:
    return f"{v:+.0f}°" if v else "0°"


def bin_words(yaw_from: float, pitch_from: float, size: float = metrics.POSE_BIN) -> str:
    d = direction(yaw_from + size / 2, pitch_from + size / 2)[0]
    where = "near frontal" if d == "frontal" else f"looking {d}"
    return f"{where} (yaw {_deg(yaw_from)} to {_deg(yaw_from + size)}, pitch {_deg(pitch_from)} to {_deg(pitch_from + size)})"


def _round_up(v: float, step: float = 5.0) -> int:
    return int(math.ceil(v / step - 1e-9) * step)


def pose_holes(faces: pd.DataFrame) -> list[dict]:
    """Where in the plausible pose range the set has no or few faces, in plain words.

    - "beyond": "no faces looking left beyond 25°" = no face has yaw < -25
      (right: yaw > 25, up: pitch > 25, down: pitch < -25), for each direction
      whose plausible range (|yaw| <= 90, |pitch| <= 60) goes on; "no faces
      looking up-left beyond 15°" = no face is more than 15° up and 15° left at
      once, said only when that corner is at least a bin emptier than both its
      sides (otherwise the sides already say it);
    - "frontal": no face within 10° of frontal in both yaw and pitch;
    - "inner": empty 10° bins between occupied bins of the same row or column;
    - "thin": occupied bins with fewer than max(3, 0.5% of the faces).
    """
    k = known_pose(faces)
    n = len(k)
    holes: list[dict] = []
    if not ((k["yaw"].abs() < FRONTAL_DEG) & (k["pitch"].abs() < FRONTAL_DEG)).any():
        holes.append({"kind": "frontal", "direction": "frontal", "beyond_deg": None,
                      "words": f"no near-frontal faces (yaw and pitch both within ±{FRONTAL_DEG:.0f}°)"})
    extent = {d: max(float(how_far(k, d).max()) if n else 0.0, 0.0) for d in AXES}
    for d in AXES:
        if extent[d] < AXIS_LIMIT[d] - metrics.POSE_BIN / 2:
            edge = max(_round_up(extent[d]), 5)
            holes.append({"kind": "beyond", "direction": d, "beyond_deg": edge,
                          "words": f"no faces looking {d} beyond {edge}°"
                                   + (" (none turned that way)" if extent[d] < FRONTAL_DEG / 2 else "")})
    for v, h in DIAGONALS:
        e = max(float(np.minimum(how_far(k, v), how_far(k, h)).max()) if n else 0.0, 0.0)
        if e < min(extent[v], extent[h]) - metrics.POSE_BIN:
            edge = max(_round_up(e), 5)
            holes.append({"kind": "beyond", "direction": f"{v}-{h}", "beyond_deg": edge,
                          "words": f"no faces looking {v}-{h} beyond {edge}° (more than {edge}° {v} and {h} at once), "
                                   f"although some faces look {extent[h]:.0f}° {h} and some {extent[v]:.0f}° {v}"})
    if not n:
        return holes
    size = metrics.POSE_BIN
    yaw_edges = np.arange(-PLAUSIBLE_YAW, PLAUSIBLE_YAW + 1e-9, size)
    pitch_edges = np.arange(-PLAUSIBLE_PITCH, PLAUSIBLE_PITCH + 1e-9, size)
    occ = pose_counts(k, yaw_edges, pitch_edges) > 0
    # an empty bin is "inner" when its row, or its column, has occupied bins on both sides of it
    left, right = np.maximum.accumulate(occ, axis=1), np.maximum.accumulate(occ[:, ::-1], axis=1)[:, ::-1]
    below, above = np.maximum.accumulate(occ, axis=0), np.maximum.accumulate(occ[::-1], axis=0)[::-1]
    inner = ~occ & ((left & right) | (below & above))
    for pi, yi in sorted(zip(*np.nonzero(inner)), key=lambda t: (-t[0], t[1])):
        y0, p0 = float(yaw_edges[yi]), float(pitch_edges[pi])
        holes.append({"kind": "inner", "direction": direction(y0 + size / 2, p0 + size / 2)[0], "beyond_deg": None,
                      "bin": metrics.pose_label(y0, p0), "words": f"no faces {bin_words(y0, p0)}, between poses that have faces"})
    few = metrics.thin_bin_faces(n)
    bins = pose_bin_table(k)
    for _, b in bins[bins["faces"] < few].sort_values(["faces", "bin"]).iterrows():
        holes.append({"kind": "thin", "direction": b["direction"], "beyond_deg": None, "bin": b["bin"],
                      "faces": int(b["faces"]),
                      "words": f"only {int(b['faces'])} face{'s' if b['faces'] != 1 else ''} "
                               f"{bin_words(b['yaw_from'], b['pitch_from'])}"})
    return holes


# --- expression, lighting, quality ----------------------------------------------------

def tertile_summary(faces: pd.DataFrame, reference: pd.DataFrame, columns) -> dict:
    """Per descriptor: the reference's tertile edges (curate's cells) and how many faces fall low / mid / high."""
    edges = metrics.tertile_edges(reference, columns)
    out = {}
    for c in columns:
        v = faces[c].to_numpy(float)
        ok = np.isfinite(v)
        idx = np.searchsorted(edges[c], v[ok], side="right")
        out[c] = {"edges": [round(float(e), 4) for e in edges[c]],
                  "low": int((idx == 0).sum()), "mid": int((idx == 1).sum()), "high": int((idx == 2).sum()),
                  "unknown": int((~ok).sum())}
    return {"columns": out, "cells_occupied": int(metrics.tertile_cells(faces, edges).nunique()), "cells": 27}


QUALITY_COLUMNS = ("sharpness", "face_px", "det_score")


def quality_summary(faces: pd.DataFrame) -> dict:
    out = {}
    for c in QUALITY_COLUMNS:
        v = faces[c].to_numpy(float)
        v = v[np.isfinite(v)]
        q = np.quantile(v, [0, 0.1, 0.5, 0.9, 1]) if len(v) else [np.nan] * 5
        out[c] = dict(zip(("min", "p10", "median", "p90", "max"), (float(f"{x:.4g}") for x in q)))
    return out


# --- audit ------------------------------------------------------------------------

def audit_summary(fs: FaceSet) -> dict:
    """Headline numbers and the tables behind the report (what `curator audit --json` prints)."""
    table, faces = fs.table, fs.faces
    clusters = table["identity_cluster"].to_numpy() if "identity_cluster" in table else None
    known = known_pose(faces)
    return {
        "workspace": str(fs.ws.root),
        "set": fs.name,
        "faces": int(len(table)),
        "target_faces": int(_flag(table, "is_target").sum()) if "is_target" in table else None,
        "identities": int(len(set(clusters[clusters >= 0]))) if clusters is not None else None,
        "selected": int(_flag(table, "selected").sum()) if "selected" in table else None,
        "report_faces": int(len(faces)),
        "sources": int(faces["source_sha256"].nunique()),
        "pose_unknown": int(len(faces) - len(known)),
        "pose_bins_occupied": int(metrics.pose_bins(known).nunique()),
        # coverage as curate defines it: the selection against the target's candidate faces
        "coverage": metrics.coverage(table[_flag(table, "selected")], fs.reference) if fs.curated else None,
        "pose_method": sorted(faces["pose_method"].dropna().unique().tolist()),
        "expression_method": sorted(faces["expression_method"].dropna().unique().tolist()),
        "pose_bins": pose_bin_table(faces).to_dict("records"),
        "expression": tertile_summary(faces, fs.reference, metrics.EXPRESSION_COLUMNS),
        "lighting": tertile_summary(faces, fs.reference, metrics.LIGHT_COLUMNS),
        "quality": quality_summary(faces),
        "holes": pose_holes(faces),
        "states": state_summary(faces),
    }


# --- the report ------------------------------------------------------------------------

def face_thumb(ws: Workspace, f) -> dict | None:
    """A face's thumbnail and caption (file, time, pose), or None when its crop cannot be read."""
    src = thumbnail(ws, f["crop_path"])
    if not src:
        return None
    return {"src": src, "title": f"{Path(str(f['source'])).name} t={f['time_s']:.1f}s "
                                 f"yaw {f['yaw']:.0f} pitch {f['pitch']:.0f}"}


def _examples_per_bin(faces: pd.DataFrame, k: int = THUMBS_PER_STRIP) -> dict[str, list]:
    """Per pose bin: up to k faces, best quality first, taking turns between sources so a strip shows variety."""

    f = known_pose(faces).copy()
    if not len(f):
        return {}
    f["_q"] = metrics.quality_score(f)
    f["_bin"] = [metrics.pose_label(y, p) for y, p in zip(f["yaw"], f["pitch"])]
    f["_rank"] = f.groupby(["_bin", "source_sha256"])["_q"].rank(ascending=False, method="first")
    f = f.sort_values(["_bin", "_rank", "_q"], ascending=[True, True, False])
    return {b: g.head(k).to_dict("records") for b, g in f.groupby("_bin", sort=False)}


AUDIT_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>curator audit: {{ s.workspace }}</title>
<style>{{ css }}</style></head><body>
<h1>Face set audit</h1>
<div class="sub">{{ s.workspace }} · {{ set_words }} · curator {{ version }} · {{ when }}</div>
<div class="nums">
 <div class="num"><b>{{ s.report_faces }}</b><span>faces in this report</span></div>
 <div class="num"><b>{{ s.faces }}</b><span>faces in workspace</span></div>
 <div class="num"><b>{{ na(s.target_faces) }}</b><span>target faces</span></div>
 <div class="num"><b>{{ na(s.identities) }}</b><span>identities</span></div>
 <div class="num"><b>{{ na(s.selected) }}</b><span>selected</span></div>
 <div class="num"><b>{{ s.pose_bins_occupied }}</b><span>pose bins occupied</span></div>
 {% if s.coverage %}
 <div class="num"><b>{{ pct(s.coverage.pose_coverage) }}</b><span>pose coverage</span></div>
 <div class="num"><b>{{ pct(s.coverage.expression_coverage) }}</b><span>expression coverage</span></div>
 <div class="num"><b>{{ pct(s.coverage.light_coverage) }}</b><span>lighting coverage</span></div>
 {% endif %}
</div>
{% if s.coverage %}<div class="sub">Coverage: of the 10° pose bins, expression cells and lighting cells that the target's
candidate faces occupy, the share the selected faces occupy (the same numbers as <code>curator curate --json</code>).</div>{% endif %}

<h2>Head pose</h2>
<img class="chart" alt="yaw x pitch heatmap" src="{{ heatmap }}">
<div class="sub">Left and right as seen in the picture: “looking left” = nose toward the image's left (yaw &lt; 0);
pitch &gt; 0 = looking up. Dashed box: the plausible range (|yaw| ≤ {{ py }}°, |pitch| ≤ {{ pp }}°).
{% if s.pose_unknown %}{{ s.pose_unknown }} face(s) have no pose estimate.{% endif %}</div>

<h2>Holes</h2>
{% if holes %}<ul class="holes">
{% for h in holes %}<li class="{{ 'thin' if h.kind == 'thin' else '' }}">{{ h.words }}</li>
{% endfor %}</ul>{% else %}<p>No holes in the plausible pose range.</p>{% endif %}

{% if s.get('for_target') %}{% set f = s.for_target %}
<h2>For the target</h2>
<div class="sub">{{ f.target['for'] | join(', ') }}: {{ f.target.faces }} faces, the person chosen by {{ f.target.identity }}
(workspace {{ f.target.workspace }}). A target face is served by its nearest {{ f.set }} face within ±{{ f.tolerance.yaw|int }}°
of yaw and pitch (docs/curation.md, "For a target").</div>
<div class="nums">
 <div class="num big"><b>{{ '%.3f' % f.gap_score.selected }}</b><span>gap score ({{ '%.3f' % f.gap_score.all_candidates }} with every candidate)</span></div>
 <div class="num"><b>{{ f.faces_serving }}</b><span>of {{ f.faces }} {{ f.set }} faces serve it</span></div>
 <div class="num"><b>{{ pct(f.uncovered_share.selected) }}</b><span>of its faces served by none</span></div>
 {% if f.taken_for_target is not none %}<div class="num"><b>{{ f.taken_for_target }}</b><span>selected for it (curate --for)</span></div>{% endif %}
</div>
<img class="chart" alt="target heatmap" src="{{ ft.heatmap }}">
<h3>Its poses, most faces first</h3>
<ul>{% for n in f.needs %}<li>{{ n.words }}: {{ n.target_faces }} target face(s), {{ n.served }} served by {{ n.selected_faces }} {{ f.set }} face(s)</li>
{% endfor %}</ul>
<h3>What to look for</h3>
{% if f.look_for %}<ul>{% for l in f.look_for %}<li>{{ l }}</li>{% endfor %}</ul>
{% else %}<p>Nothing: the footage has faces near every target face's pose{{ ', expression' if f.expression_compared else '' }} and lighting.</p>{% endif %}
{% for n in f.notes %}<div class="note">{{ n }}</div>{% endfor %}
<h3>The {{ f.set }} faces standing for most of it</h3>
<div class="row">{% for t in ft.thumbs %}<figure><img src="{{ t.src }}" alt="{{ t.title }}" width="72" height="72">
<figcaption>{{ t.title }}</figcaption></figure>{% endfor %}</div>
{% endif %}

<h2>Expression</h2>
<img class="chart" alt="expression histograms" src="{{ expression }}">
<div class="sub">Method {{ s.expression_method | join(', ') }} (the scale depends on it). Dashed lines: tertile edges
(curate's expression cells); {{ s.expression.cells_occupied }} of 27 cells occupied.
{{ tertiles(s.expression) }}</div>
{% if s.states %}<div class="sub">Eyes, mouth and covered faces:
{% for st in s.states %}{{ st.words }}{% if st.examples %} (e.g. {{ st.examples | join(', ') }}){% endif %}{% if not loop.last %}; {% endif %}{% endfor %}.</div>{% endif %}

<h2>Lighting</h2>
<img class="chart" alt="lighting histograms" src="{{ lighting }}">
<div class="sub">lum: mean L* of the face (0–100); light_lr: right half minus left half of the face in L*
(&gt; 0 lit from the image's right); contrast: std of L*. {{ s.lighting.cells_occupied }} of 27 lighting cells occupied.
{{ tertiles(s.lighting) }}</div>

<h2>Quality</h2>
<img class="chart" alt="quality histograms" src="{{ quality }}">
<div class="sub">{% for c, q in s.quality.items() %}{{ c }}: median {{ q.median }}, 10–90% {{ q.p10 }}–{{ q.p90 }}.
{% endfor %}</div>

<h2>Examples per pose bin</h2>
<div class="sub">Up to {{ per }} faces per bin, best quality first, taking turns between source files.</div>
{% for b in strips %}<div class="strip"><div class="lab"><b>{{ b.bin }}</b> · {{ b.faces }} face(s)<br>
<span class="sub">{{ b.words }}</span></div>
{% for t in b.thumbs %}<img src="{{ t.src }}" title="{{ t.title }}" alt="{{ t.title }}">{% endfor %}</div>
{% endfor %}
</body></html>
"""


def _tertile_words(t: dict) -> str:
    return " ".join(f"{c}: {v['low']} low / {v['mid']} mid / {v['high']} high." for c, v in t["columns"].items())


def render_audit(fs: FaceSet, summary: dict, target=None, section=None) -> str:
    faces = fs.faces
    ft = {}
    if target is not None:  # `audit --for`: curator/target.py (the `section` handed in) says what it shows
        ft = section.audit_pictures(fs, target, summary["for_target"])
    exp_edges = {c: v["edges"] for c, v in summary["expression"]["columns"].items()}
    light_edges = {c: v["edges"] for c, v in summary["lighting"]["columns"].items()}
    examples = _examples_per_bin(faces)
    strips = []
    for b in summary["pose_bins"]:
        thumbs = [t for f in examples.get(b["bin"], []) if (t := face_thumb(fs.ws, f))]
        strips.append({**b, "words": bin_words(b["yaw_from"], b["pitch_from"]), "thumbs": thumbs})
    set_words = {"selected": "selected faces only", "target": "the target identity's faces",
                 "all": "all faces (no target identity chosen yet)"}[fs.name]
    return render_page(
        AUDIT_TEMPLATE, s=summary, set_words=set_words, holes=summary["holes"], strips=strips,
        heatmap=heatmap_png(faces, f"{len(faces)} faces by head pose (10° bins)"),
        expression=histograms_png(faces, metrics.EXPRESSION_COLUMNS, exp_edges),
        lighting=histograms_png(faces, metrics.LIGHT_COLUMNS, light_edges),
        quality=histograms_png(faces, QUALITY_COLUMNS, log=("sharpness",),
                               titles={"sharpness": "sharpness (log)", "face_px": "face_px (source pixels)",
                                       "det_score": "det_score"}),
        tertiles=_tertile_words, py=int(PLAUSIBLE_YAW), pp=int(PLAUSIBLE_PITCH), per=THUMBS_PER_STRIP, ft=ft,
    )


# --- the command's body (the CLI stays thin) -------------------------------------------

def audit(ws: Workspace, *, selected: bool = False, out: str | os.PathLike | None = None, target=None,
          section=None) -> dict:
    """`target`: a curator.target.Target (`audit --for`), with `section`, the module that draws its part
    (curator.target, handed in by the caller: it sits above the reports)."""
    out = check_out(out or report_path(ws, "audit.html"), "audit", inputs_of(ws))
    fs = load_faces(ws, "selected" if selected else "default")
    summary = audit_summary(fs)
    if target is not None:
        summary["for_target"] = section.audit_part(fs, target)
    summary["report"] = str(write_report(out, render_audit(fs, summary, target, section)))
    if target is not None:
        summary["for_target"] = public(summary["for_target"])
        summary["for_target"]["line"] = section.audit_line(summary["for_target"])
    return summary


def audit_line(s: dict) -> str:
    cov = s["coverage"]
    holes = [h["words"] for h in s["holes"] if h["kind"] != "thin"]
    return (f"{s['report_faces']} {s['set']} faces in {s['pose_bins_occupied']} pose bins"
            + (f"; selection covers {cov['pose_coverage']:.0%} of pose bins, {cov['expression_coverage']:.0%} of "
               f"expression and {cov['light_coverage']:.0%} of lighting cells" if cov else "")
            + "".join(f"\n  {h}" for h in holes[:8])
            + "".join(f"\n  {st['words']}" for st in s.get("states", []))
            + (f"\n{s['for_target']['line']}" if s.get("for_target") else "") + f"\nreport: {s['report']}")
