"""Shared helpers for curator's benchmarks: test data, long footage, machine info, timing.

Benchmarks read the shared, read-only test data beside the repository
(`../shared/testdata`, see its README.md) and never copy it into the repo.
Derived footage (long videos concatenated from the shared clips) is built once
into a cache folder outside the repository and reused by later runs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TESTDATA = Path(os.environ.get("CURATOR_TESTDATA", REPO.parent / "shared" / "testdata"))
VIDEOS = TESTDATA / "videos"
PACK_SMALL = TESTDATA / "models" / "pack-small"

# Bump when the way footage is built changes, so stale cached files are not reused.
FOOTAGE_VERSION = 1


def require_testdata() -> None:
    """Fail with a clear message (never skip) when the shared test data is missing."""
    if not VIDEOS.is_dir() or not PACK_SMALL.is_dir():
        sys.exit(
            f"bench: shared test data not found at {TESTDATA} (expected videos/ and models/pack-small/); "
            "the repository's root must sit beside shared/ (see shared/testdata/README.md)"
        )


def default_cache() -> Path:
    base = os.environ.get("CURATOR_BENCH_CACHE") or os.environ.get("XDG_CACHE_HOME")
    if base:
        root = Path(base) if os.environ.get("CURATOR_BENCH_CACHE") else Path(base) / "curator-bench"
    else:
        root = Path.home() / ".cache" / "curator-bench"
    return root


def source_clips() -> list[Path]:
    """Every shared clip, in sorted order of its path under videos/."""
    return sorted(VIDEOS.rglob("*.mp4"), key=lambda p: p.relative_to(VIDEOS).as_posix())


# --- long footage ---------------------------------------------------------------

@dataclass(frozen=True)
class FootageSpec:
    width: int = 640
    height: int = 360
    fps: int = 25
    crf: int = 23
    preset: str = "veryfast"

    def tag(self) -> str:
        return f"{self.width}x{self.height}_{self.fps}fps_crf{self.crf}_{self.preset}"


def _clips_key(clips: list[Path]) -> str:
    h = hashlib.sha256()
    for p in clips:
        h.update(f"{p.relative_to(VIDEOS).as_posix()}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()[:12]


def _letterbox(frame, spec: FootageSpec) -> np.ndarray:
    """RGB frame scaled to fit spec's size (aspect kept), centred on black; display rotation applied."""
    import cv2

    img = frame.to_ndarray(format="rgb24")
    rotation = int(getattr(frame, "rotation", 0) or 0) % 360
    if rotation:
        img = np.ascontiguousarray(np.rot90(img, k=rotation // 90))
    h, w = img.shape[:2]
    scale = min(spec.width / w, spec.height / h)
    nw, nh = max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)
    nw, nh = min(nw, spec.width), min(nh, spec.height)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    canvas = np.zeros((spec.height, spec.width, 3), np.uint8)
    y0, x0 = (spec.height - nh) // 2, (spec.width - nw) // 2
    canvas[y0:y0 + nh, x0:x0 + nw] = small
    return canvas


def _resampled_frames(path: Path, spec: FootageSpec) -> Iterator[np.ndarray]:
    """One clip's frames resampled to spec.fps by presentation time (frames repeated or dropped)."""
    import av

    container = av.open(str(path), metadata_errors="ignore")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = float(stream.average_rate or stream.guessed_rate or spec.fps)
    step = 1.0 / spec.fps
    prev_img, prev_t, t0 = None, 0.0, None
    k = 0  # next output slot, at time k * step from the clip's first frame
    try:
        for i, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else i / rate
            if t0 is None:
                t0 = t
            t -= t0
            if prev_img is not None:
                while k * step < t - 1e-6:
                    yield prev_img
                    k += 1
            prev_img, prev_t = _letterbox(frame, spec), t
        if prev_img is not None:
            end = prev_t + 1.0 / rate
            while k * step < end - 1e-6:
                yield prev_img
                k += 1
    finally:
        container.close()


def footage_frames(clips: list[Path], spec: FootageSpec, total_frames: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(loop, clip index, frame) for the clips in order, looped until total_frames frames."""
    n = 0
    loop = 0
    while n < total_frames:
        produced = n
        for ci, clip in enumerate(clips):
            for img in _resampled_frames(clip, spec):
                yield loop, ci, img
                n += 1
                if n >= total_frames:
                    return
        if n == produced:
            raise RuntimeError("no decodable frames in the source clips")
        loop += 1


def build_footage(
    minutes: float,
    subset_minutes: float | None,
    spec: FootageSpec = FootageSpec(),
    cache: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Build (or reuse) the long footage and, optionally, a file holding exactly its first subset_minutes.

    Both files are encoded in one pass from the same frames, so the subset is
    frame-for-frame the beginning of the long footage (same encoder, same
    settings). Returns {"path", "subset_path", "frames", "subset_frames",
    "clip_table", "build_s", "cached"}.
    """
    import av

    clips = source_clips()
    if not clips:
        sys.exit(f"bench: no .mp4 clips under {VIDEOS}")
    cache = Path(cache or default_cache())
    cache.mkdir(parents=True, exist_ok=True)
    total = int(round(minutes * 60 * spec.fps))
    sub_total = int(round(subset_minutes * 60 * spec.fps)) if subset_minutes else 0
    sub_total = min(sub_total, total)
    stem = f"footage_v{FOOTAGE_VERSION}_{_clips_key(clips)}_{spec.tag()}"
    path = cache / f"{stem}_{total}f.mp4"
    sub_path = cache / f"{stem}_{sub_total}f.mp4" if sub_total else None
    table_path = cache / f"{stem}_{total}f.json"
    have_long = path.exists() and table_path.exists()
    if have_long and (sub_path is None or sub_path.exists()):
        info = json.loads(table_path.read_text())
        info["subset_frames"] = sub_total
        info.update({"path": str(path), "subset_path": str(sub_path) if sub_path else None, "cached": True})
        return info

    targets = ([] if have_long else [(path, total)]) + ([(sub_path, sub_total)] if sub_path and not sub_path.exists() else [])
    limit_all = max(limit for _, limit in targets)
    log(f"building {', '.join(f'{lim / spec.fps / 60:g} min' for _, lim in targets)} of {spec.width}x{spec.height} "
        f"footage from {len(clips)} clips into {cache} ...")
    t0 = time.monotonic()
    outs, tmp_paths = [], []
    clip_table: list[dict] = []  # where each clip instance starts in the long footage
    n = 0
    try:
        for target, limit in targets:
            fd, tmp = tempfile.mkstemp(dir=cache, prefix=".building-", suffix=".mp4")
            os.close(fd)
            tmp_paths.append((Path(tmp), target))
            out = av.open(tmp, "w")
            st = out.add_stream("libx264", rate=Fraction(spec.fps, 1))
            st.width, st.height, st.pix_fmt = spec.width, spec.height, "yuv420p"
            st.options = {"crf": str(spec.crf), "preset": spec.preset}
            outs.append((out, st, limit))
        last = (-1, -1)
        try:
            for loop, ci, img in footage_frames(clips, spec, limit_all):
                if (loop, ci) != last:
                    clip_table.append({"start_frame": n, "loop": loop, "clip": clips[ci].relative_to(VIDEOS).as_posix()})
                    last = (loop, ci)
                vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                for out, st, limit in outs:
                    if n < limit:
                        for pkt in st.encode(vf):
                            out.mux(pkt)
                n += 1
            for out, st, _ in outs:
                for pkt in st.encode(None):
                    out.mux(pkt)
        finally:
            for out, _, _ in outs:
                out.close()
        for tmp, target in tmp_paths:
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
    finally:
        for tmp, _ in tmp_paths:
            tmp.unlink(missing_ok=True)
    if have_long:
        info = json.loads(table_path.read_text())
        info["subset_frames"] = sub_total
        info.update({"path": str(path), "subset_path": str(sub_path) if sub_path else None, "cached": True,
                     "subset_build_s": round(time.monotonic() - t0, 1)})
        log(f"built the {sub_total}-frame subset in {info['subset_build_s']} s")
        return info
    info = {
        "frames": n,
        "subset_frames": sub_total,
        "spec": spec.__dict__ | {"codec": "libx264"},
        "clips": len(clips),
        "loops": (clip_table[-1]["loop"] + 1) if clip_table else 0,
        "clip_table": clip_table,
        "build_s": round(time.monotonic() - t0, 1),
    }
    table_path.write_text(json.dumps(info, indent=1))
    info.update({"path": str(path), "subset_path": str(sub_path) if sub_path else None, "cached": False})
    log(f"built {n} frames in {info['build_s']} s")
    return info


def decode_only(path: str | Path) -> tuple[float, int, float]:
    """The baseline: PyAV sequential decode of every frame, frame threading on, no conversion.

    Returns (wall seconds, frames, CPU seconds of this process, all threads)."""
    import av

    c0 = time.process_time()
    t0 = time.perf_counter()
    container = av.open(str(path))
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    n = 0
    for packet in container.demux(stream):
        for _ in packet.decode():
            n += 1
    container.close()
    return time.perf_counter() - t0, n, time.process_time() - c0


def run_timed(cmd: list[str]) -> tuple[float, float, "subprocess.CompletedProcess"]:
    """Run a command; (wall seconds, CPU seconds user+sys of the child and its threads, result)."""
    import resource
    import subprocess

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu, proc


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# --- reporting ------------------------------------------------------------------

def machine_info() -> dict:
    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:  # the trainer's benchmark also runs where PyAV is not installed (a GPU machine with only torch)
        import av

        info["pyav"] = av.__version__
        info["libavcodec"] = ".".join(map(str, av.library_versions.get("libavcodec", ())))
    except ImportError:
        info["pyav"] = None
    for mod in ("onnxruntime", "insightface", "numpy", "cv2"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover - informational only
            info[mod] = None
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except Exception:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def git_rev() -> str | None:
    head = REPO / ".git"
    try:
        import subprocess

        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "curator"], capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if rev.returncode == 0 else None
    except (OSError, Exception):
        return None if not head.exists() else "unknown"


def cached_export(cache: Path, folder: str, name: str, clip_rel: str, log: Callable[[str], None]) -> Path:
    """`curator run CLIP --size 128 --fps 10` into cache/folder/name once (a single-person face set), reused after."""
    import shutil
    import subprocess

    target = cache / folder / name
    if not (target / "manifest.parquet").is_file():
        log(f"building export {name} from {clip_rel} ...")
        work = Path(tempfile.mkdtemp(prefix=f"{folder}-", dir=cache))
        cmd = [sys.executable, "-m", "curator", "run", str(VIDEOS / clip_rel), "--out", str(work / name),
               "--budget", "2000", "--size", "128", "--fps", "10", "-q", "--models", str(PACK_SMALL)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"bench: building export {name} failed:\n{proc.stderr}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(work / name, target)
        shutil.rmtree(work, ignore_errors=True)
    return target

