"""Offline HTML reports: charts, thumbnails and the page, written whole.

A report is one HTML file with every image embedded as a base64 data URI and
no scripts, fonts or links, so it opens offline and can be mailed as it is.
The pieces: `heatmap_png` (a yaw x pitch grid of face counts, or of the mean
of a per-face value), `histograms_png`, `thumbnail`, `render_page` (a Jinja
template with the shared CSS), and `check_out` / `write_report` (refuse a bad
path before the work, then write the whole file or nothing). What a report
says is up to the command that makes it (audit, compare).
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__, outputs
from ..fs.atomic import atomic_path
from ..errors import CuratorError
from ..measure.metrics import PLAUSIBLE_PITCH, PLAUSIBLE_YAW, pose_counts, pose_grid, pose_means
from ..workspace import Workspace, read_crop

THUMB_PX = 72


class ReportError(CuratorError):
    """The report cannot be written where asked; the message says where and why."""


# --- pictures -----------------------------------------------------------------------

def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _cell_number(v: float) -> str:
    """A bin's mean in at most about five characters, so it fits its cell: 4123, 12, 0.023."""
    return f"{v:.0f}" if abs(v) >= 10 else f"{v:.2g}"


def heatmap_png(faces: pd.DataFrame, title: str, yaw_edges=None, pitch_edges=None, marks: pd.DataFrame | None = None,
                values=None, value_label: str = "mean per 10° bin") -> str:
    """Yaw x pitch face counts in 10 degree bins, empty bins grey; `marks` faces drawn as red crosses.

    With `values` (one number per face, aligned with `faces`): each bin shows the mean of
    its faces' finite values instead of a count, on a linear scale labelled `value_label`;
    bins without a value are grey.
    """
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if yaw_edges is None:
        yaw_edges, pitch_edges = pose_grid(faces)
    if values is None:
        grid = pose_counts(faces, yaw_edges, pitch_edges)
        top = max(int(grid.max()), 1)
        norm = LogNorm(vmin=1, vmax=top) if top >= 30 else Normalize(vmin=0, vmax=top)
        shown, label, words = np.ma.masked_equal(grid, 0), "faces per 10° bin", str
    else:
        grid = pose_means(faces, values, yaw_edges, pitch_edges)
        known = grid[np.isfinite(grid)]
        lo, hi = (float(known.min()), float(known.max())) if len(known) else (0.0, 1.0)
        norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)  # one value: still a valid scale
        shown, label, words = np.ma.masked_invalid(grid), value_label, _cell_number
    fig = Figure(figsize=(0.42 * len(yaw_edges) + 1.6, 0.42 * len(pitch_edges) + 1.0))
    ax = fig.add_subplot()
    ax.set_facecolor("#e6e6e6")
    mesh = ax.pcolormesh(yaw_edges, pitch_edges, shown, cmap="viridis", norm=norm,
                         edgecolors="white", linewidth=0.5)
    for pi, yi in zip(*np.nonzero(~np.ma.getmaskarray(shown))):
        c = grid[pi, yi]
        rgba = mesh.cmap(mesh.norm(c))
        ax.text((yaw_edges[yi] + yaw_edges[yi + 1]) / 2, (pitch_edges[pi] + pitch_edges[pi + 1]) / 2, words(c),
                ha="center", va="center", fontsize=6.5, color="white" if sum(rgba[:3]) < 1.6 else "black")
    if marks is not None and len(marks):
        ax.scatter(marks["yaw"], marks["pitch"], marker="x", s=22, linewidths=1.3, color="#e0201b", zorder=3)
    ax.add_patch(Rectangle((-PLAUSIBLE_YAW, -PLAUSIBLE_PITCH), 2 * PLAUSIBLE_YAW, 2 * PLAUSIBLE_PITCH, fill=False,
                           edgecolor="#888888", linestyle="--", linewidth=0.8))
    ax.set_xticks(yaw_edges[::2])
    ax.set_yticks(pitch_edges[::2])
    ax.tick_params(labelsize=7)
    ax.set_xlabel("yaw (°)   ← looking left  ·  looking right →", fontsize=8)
    ax.set_ylabel("pitch (°)   ↓ down  ·  up ↑", fontsize=8)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    cb = fig.colorbar(mesh, ax=ax, fraction=0.03, pad=0.02)
    cb.set_label(label, fontsize=7)
    cb.ax.tick_params(labelsize=6)
    return _png(fig)


def histograms_png(faces: pd.DataFrame, columns, edges: dict | None = None, log: tuple = (), titles: dict | None = None) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(columns), 2.3))
    for i, c in enumerate(columns):
        ax = fig.add_subplot(1, len(columns), i + 1)
        v = faces[c].to_numpy(float)
        v = v[np.isfinite(v)]
        if c in log:
            v = v[v > 0]
            bins = np.geomspace(max(v.min(), 1e-3), max(v.max(), v.min() * 1.01 + 1e-3), 30) if len(v) else 10
            ax.set_xscale("log")
        else:
            bins = 30
        if len(v):
            ax.hist(v, bins=bins, color="#3b6ea5")
        for e in (edges or {}).get(c, []):
            ax.axvline(e, color="#d62728", linestyle="--", linewidth=1)
        ax.set_title((titles or {}).get(c, c), fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_ylabel("faces", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def thumbnail(ws: Workspace, crop_path: str, px: int = THUMB_PX) -> str | None:
    import cv2

    img = read_crop(ws, crop_path)
    if img is None:
        return None
    ok, buf = cv2.imencode(".jpg", cv2.resize(img, (px, px), interpolation=cv2.INTER_AREA),
                           [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode() if ok else None


# --- HTML ---------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;font-size:12px} .nums{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.num{background:#f4f6f9;border-radius:6px;padding:8px 14px;min-width:90px} .num b{display:block;font-size:20px}
.num span{font-size:11px;color:#555;text-transform:uppercase;letter-spacing:.03em}
.big b{color:#b22} ul.holes li{margin:3px 0} .thin{color:#666}
table{border-collapse:collapse;font-size:12px} td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
.strip{display:flex;align-items:center;gap:4px;margin:3px 0} .strip .lab{width:250px;font-size:12px}
.strip img{width:72px;height:72px;border-radius:3px} figure{margin:6px 0} figcaption{font-size:11px;color:#666;max-width:72px}
.region{margin:12px 0;padding:8px 12px;background:#fafafa;border-left:4px solid #d62728}
.region.expression{border-color:#ff7f0e} .region.lighting{border-color:#bcbd22} .row{display:flex;gap:6px;flex-wrap:wrap}
.note{background:#fff8e1;padding:6px 10px;border-radius:4px;font-size:12px;margin:6px 0}
img.chart{max-width:100%} .pair{display:flex;gap:8px} .pair img{width:50%;min-width:0;object-fit:contain}
"""


def _env():
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.globals.update(
        na=lambda v: "–" if v is None else v,
        pct=lambda v: f"{100 * v:.0f}%",
        css=CSS, version=__version__,
        when=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    )
    return env


def render_page(template: str, **values) -> str:
    """The page from a Jinja template, which may use {{ css }}, {{ version }}, {{ when }}, na() and pct()."""
    return _env().from_string(template).render(**values)


def check_out(out: str | os.PathLike, command: str, keep: dict | None = None) -> Path:
    """The report file `out` of `curator COMMAND`, checked before any work is done (a full render takes seconds).

    It may replace only an earlier report of the same command (docs/security.md), and may not be one of `keep`
    (the workspace's inputs).
    """
    try:
        return outputs.check_file(out, command, force=True, keep=keep or {}, what="report",
                                  is_ours=lambda path: is_report(path, command))
    except outputs.OutputError as e:
        raise ReportError(f"cannot write the report: {e}") from None


def is_report(path: Path, command: str) -> bool:
    """An HTML report `curator COMMAND` wrote (its title says so; reports of every version carry it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    return head.lower().startswith("<!doctype html>") and f"<title>curator {command}" in head


def write_report(out: str | os.PathLike, text: str) -> Path:
    """Write the whole report or nothing: any failure leaves no partial or temporary file behind."""
    out = Path(out).expanduser().absolute()
    try:
        with atomic_path(out) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ReportError(f"cannot write the report to {out}: {e.strerror or e}") from None
    return out.resolve()


def public(d: dict) -> dict:
    """A summary without its private arrays (keys starting with _), for JSON."""
    return {k: v for k, v in d.items() if not k.startswith("_")}
