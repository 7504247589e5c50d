"""Shared helpers for curator's benchmarks: test data, long footage, machine info, timing.

Benchmarks read the shared, read-only test data beside the repository
(`../shared/testdata`, see its README.md) and never copy it into the repo.
Derived footage (segments of the shared clips played in order, one long video)
is built once into a cache folder outside the repository and reused by later runs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
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

# Bump when the frames a segment gives change, so stale cached footage is not reused.
FOOTAGE_VERSION = 3


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


def source_clips() -> list[str]:
    """Every shared clip, as its path under videos/ (how segments name it), sorted."""
    return sorted(p.relative_to(VIDEOS).as_posix() for p in VIDEOS.rglob("*.mp4"))


# --- footage ---------------------------------------------------------------------
# Every benchmark's footage is a list of segments of the shared clips, played in
# order: {"clip": path under videos/, "start_s": float, "end_s": float or None
# (the clip's end), and free-form labels such as "loop" or "person"}. Each clip is
# letterboxed to one FootageSpec and resampled to its fps on a time grid; the
# segments are encoded in one pass into one file (and files holding exactly its
# first frames), cached by what the frames depend on.

@dataclass(frozen=True)
class FootageSpec:
    width: int = 640
    height: int = 360
    fps: int = 25
    crf: int = 23
    preset: str = "veryfast"

    def tag(self) -> str:
        return f"{self.width}x{self.height}_{self.fps}fps_crf{self.crf}_{self.preset}"


def clip_duration(clip: str) -> float:
    """Seconds of a clip under videos/, from its container (decoded only where the container does not say)."""
    import av

    with av.open(str(VIDEOS / clip), metadata_errors="ignore") as c:
        s = c.streams.video[0]
        if s.duration and s.time_base:
            return float(s.duration * s.time_base)
        if c.duration:
            return c.duration / 1e6
        n = sum(1 for _ in c.decode(s))
        return n / float(s.average_rate or 25)


def letterbox(frame, spec: FootageSpec) -> np.ndarray:
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


def segment_frames(clip: str, spec: FootageSpec, start_s: float = 0.0, end_s: float | None = None) -> Iterator[np.ndarray]:
    """Letterboxed RGB frames of one clip on a spec.fps time grid from start_s to end_s (None: the clip's end).

    Each slot shows the latest frame presented by then (frames repeated or
    dropped), times counted from the clip's first frame; a frame is letterboxed
    only when a slot shows it.
    """
    import av

    container = av.open(str(VIDEOS / clip), metadata_errors="ignore")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = float(stream.average_rate or stream.guessed_rate or spec.fps)
    step = 1.0 / spec.fps
    end = math.inf if end_s is None else end_s
    shown, shown_t, img = None, 0.0, None  # latest frame, its time, its letterboxed picture once a slot needs it
    t0, k = None, 0  # k: next slot, at start_s + k * step
    try:
        for i, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else i / rate
            t0 = t if t0 is None else t0
            t -= t0
            while shown is not None and start_s + k * step < min(t, end) - 1e-6:
                img = letterbox(shown, spec) if img is None else img
                yield img
                k += 1
            if t >= end:
                return
            shown, shown_t, img = frame, t, None
        stop = min(end, shown_t + 1.0 / rate)  # the last frame lasts one frame period
        while shown is not None and start_s + k * step < stop - 1e-6:
            img = letterbox(shown, spec) if img is None else img
            yield img
            k += 1
    finally:
        container.close()


def build_footage(
    name: str,
    segments: list[dict],
    spec: FootageSpec = FootageSpec(),
    cache: Path | None = None,
    *,
    frames: int | None = None,
    prefixes: tuple[int, ...] = (),
    log: Callable[[str], None] = print,
) -> dict:
    """Build (or reuse) the footage of `segments`, stopping after `frames` frames if given.

    Each n in `prefixes` also gets a file holding exactly the first n frames,
    encoded in the same pass (same frames, same encoder, same settings), so it
    is frame for frame the footage's beginning. Files are named after `name`
    and a digest of what their frames depend on. Returns {"path",
    "prefix_paths": {n: path}, "frames", "seconds", "spec", "segments" (the
    segments played, each with its "start_frame" and "end_frame"), "build_s",
    "cached"}.
    """
    cache = Path(cache or default_cache())
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"{name}_v{FOOTAGE_VERSION}_{_footage_digest(segments, spec, frames)}_{spec.tag()}"
    path, table_path = cache / f"{stem}.mp4", cache / f"{stem}.json"
    prefix_paths = {n: cache / f"{stem}_first{n}f.mp4" for n in prefixes}
    have_footage = path.exists() and table_path.exists()
    targets = ([] if have_footage else [(path, frames or math.inf)])
    targets += [(p, n) for n, p in prefix_paths.items() if not p.exists()]
    built = None
    if targets:
        log(f"building {', '.join(p.name for p, _ in targets)} ({len(segments)} segments) into {cache} ...")
        t0 = time.monotonic()
        played = _encode(segments, spec, targets, cache)
        built = round(time.monotonic() - t0, 1)
        log(f"built in {built} s")
        if not have_footage:
            n = played[-1]["end_frame"] if played else 0
            table = {"frames": n, "seconds": n / spec.fps, "spec": spec.__dict__ | {"codec": "libx264"},
                     "segments": played, "build_s": built}
            _write_atomic(table_path, json.dumps(table, indent=1))
    info = json.loads(table_path.read_text())
    info.update({"path": str(path), "prefix_paths": {n: str(p) for n, p in prefix_paths.items()},
                 "cached": have_footage})
    if have_footage and built is not None:
        info["prefix_build_s"] = built
    return info


def _footage_digest(segments: list[dict], spec: FootageSpec, frames: int | None) -> str:
    """What the frames depend on: builder version, spec, segments, frame limit and each clip's size."""
    sizes = {c: (VIDEOS / c).stat().st_size for c in {s["clip"] for s in segments}}
    key = {"v": FOOTAGE_VERSION, "spec": spec.__dict__, "segments": segments, "frames": frames, "sizes": sizes}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _encode(segments: list[dict], spec: FootageSpec, targets: list[tuple[Path, float]], cache: Path) -> list[dict]:
    """Encode the segments' frames into each target path up to its frame limit, in one pass; the segments played.

    Each file is written under a temporary name and renamed once all are complete.
    """
    import av

    limit_all = max(limit for _, limit in targets)
    tmps = []
    try:
        outs = []
        try:
            for _, limit in targets:
                fd, tmp = tempfile.mkstemp(dir=cache, prefix=".building-", suffix=".mp4")
                os.close(fd)
                tmps.append(Path(tmp))
                out = av.open(tmp, "w")
                st = out.add_stream("libx264", rate=Fraction(spec.fps, 1))
                st.width, st.height, st.pix_fmt = spec.width, spec.height, "yuv420p"
                st.options = {"crf": str(spec.crf), "preset": spec.preset}
                outs.append((out, st, limit))
            played, n = [], 0
            for seg in segments:
                if n >= limit_all:
                    break
                start = n
                for img in segment_frames(seg["clip"], spec, seg["start_s"], seg["end_s"]):
                    vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                    for out, st, limit in outs:
                        if n < limit:
                            for pkt in st.encode(vf):
                                out.mux(pkt)
                    n += 1
                    if n >= limit_all:
                        break
                played.append({**seg, "start_frame": start, "end_frame": n})
            short = [(target, limit) for target, limit in targets if n < limit < math.inf]
            if short:
                raise RuntimeError(f"the segments give {n} frames, fewer than the {short[0][1]} of {short[0][0].name}")
            for out, st, _ in outs:
                for pkt in st.encode(None):
                    out.mux(pkt)
        finally:
            for out, _, _ in outs:
                out.close()
        for tmp, (target, _) in zip(tmps, targets):
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        return played
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".building-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


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


def loop_remux(src: str | Path, dst: str | Path, times: int) -> int:
    """`src` played `times` times back to back in `dst`, packets copied (no re-encode: every loop decodes to the same
    pixels, and building it costs nothing); returns the frames written."""
    import av

    frames = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ins = inp.streams.video[0]
        outs = out.add_stream_from_template(ins)
        packets = [p for p in inp.demux(ins) if p.dts is not None]
        step = max(p.pts + (p.duration or 0) for p in packets if p.pts is not None) - min(p.pts for p in packets)
        for k in range(times):
            for p in packets:
                copy = av.Packet(bytes(p))
                copy.pts, copy.dts, copy.duration = p.pts + k * step, p.dts + k * step, p.duration
                copy.is_keyframe = p.is_keyframe
                copy.stream, copy.time_base = outs, ins.time_base
                out.mux(copy)
            frames += len(packets)
    return frames


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

