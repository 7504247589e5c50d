"""Extract's settings: the options, their defaults, and what a workspace fixes once it has faces."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable


from ..models import faces
from ..measure.align import DEFAULT_MARGIN
from ..errors import UsageError
from ..workspace import WorkspaceError


@dataclass
class ExtractSettings:
    fps: float = 2.0  # frames analysed per second of video
    every: int | None = None  # or: every Nth decoded frame (overrides fps)
    size: int = 256  # side of the aligned crops written to crops/
    margin: float = DEFAULT_MARGIN
    det_size: int = 640  # detector input, long side
    det_thresh: float = 0.6  # SCRFD scores 0.5-0.6 were non-faces or faces too dim to train on in our footage
    static_threshold: float = 1.5  # mean grey-level change below which a due frame is a near-duplicate
    # Pose coverage between the fps clock's frames (docs/benchmarks.md, "pose-bin retention"):
    motion_threshold: float = 50.0  # also analyse a frame whose picture changed this much (worst block); 0: off
    backfill_bins: int = 2  # analyse frames in between where a face's 10-degree yaw or pitch bin jumped this far; 0: off
    # 68-point landmarks: "auto" (the pack's 3D-68 model if it has one, else none), "dlib" or "none";
    # workspace.json records what auto resolved to ("3d68" or "none"), and a workspace keeps one method.
    landmarks: str = "auto"
    # Decoded frames held at once for pose back-fill and read-ahead, in MiB (media.hold_plan): below 4K all 16 frames
    # a stretch are kept under the default; 4K keeps 7 (12 MB a frame), 10-bit 4K 3.
    frame_memory_mb: int = 1024
    # A video longer than this is read in segments split at the keyframes nearest to every segment_seconds, each
    # sampled afresh (media.segments): the units of work that several workers can share (--engine ray).
    segment_seconds: float = 300.0
    jpeg_quality: int = 95
    checkpoint_frames: int = 200
    checkpoint_seconds: float = 60.0

    # Settings that, once a workspace has crops, every later run must share.
    FIXED = ("size", "margin")


@dataclass
class ExtractSummary:
    workspace: str
    files: int = 0
    new_files: int = 0
    already_in_workspace: int = 0
    resumed_files: int = 0
    failed: int = 0
    frames_decoded: int = 0
    frames_analysed: int = 0
    frames_skipped_static: int = 0
    frames_held_peak_mb: float = 0.0  # the most decoded frames and images held at once, in MiB (frame_memory_mb bounds it)
    frames_motion: int = 0  # of frames_analysed: chosen for a large picture change
    frames_backfilled: int = 0  # of frames_analysed: chosen to fill a pose jump between two analysed frames
    faces: int = 0
    rows_total: int = 0
    seconds: float = 0.0
    runtime: str = ""  # where the face models ran (curator/models/runtime.py), e.g. "onnxruntime/cpu" or "torch/cuda/fp16"
    batch: int = 1  # frames per detector call
    engine: str = "local"  # "local" or "ray" (curator/extract/ray.py)
    units: int = 0  # units of work done by this run (video segments and runs of photos)
    units_resumed: int = 0  # of those: started by an earlier run or an earlier attempt (a lost worker), resumed
    stage_seconds: dict = field(default_factory=dict)  # seconds per stage, summed over threads (StageTimes)
    problems: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def add(self, unit: dict) -> None:
        """Add a unit's counts (`run_unit`'s "summary", made here or on a worker): sums, and the highest peak."""
        for name in UNIT_SUMMARY:
            setattr(self, name, getattr(self, name) + unit.get(name, 0))
        self.frames_held_peak_mb = max(self.frames_held_peak_mb, unit.get("frames_held_peak_mb", 0.0))


# The counts a unit of work reports back (besides frames_held_peak_mb).
UNIT_SUMMARY = ("frames_decoded", "frames_analysed", "frames_skipped_static", "frames_motion", "frames_backfilled",
                "faces", "units", "units_resumed")


Reporter = Callable[[str, str], None]  # (path, reason)


def extract_settings(*, fps: float | None = None, every: int | None = None, size: int | None = None,
                     det_size: int | None = None, det_thresh: float | None = None,
                     checkpoint_every: int | None = None, pose_fill: bool | None = None,
                     landmarks: str | None = None, frame_memory: int | None = None,
                     segment_seconds: float | None = None) -> tuple[ExtractSettings, set[str]]:
    """The settings for the options a user gave (None: not given), and the names of those given on purpose.

    Options not given are taken from the workspace when it has them (see
    `extract`), so re-running with fewer options continues the same way.
    """
    given = {"fps": fps, "every": every, "size": size, "det_size": det_size, "det_thresh": det_thresh,
             "checkpoint_frames": checkpoint_every, "frame_memory_mb": frame_memory,
             "segment_seconds": segment_seconds}
    options = {"checkpoint_frames": "checkpoint-every", "frame_memory_mb": "frame-memory"}
    for name, value in given.items():
        if value is not None and value <= 0:
            option = options.get(name, name.replace("_", "-"))
            raise UsageError(f"--{option} must be positive")
    if landmarks is not None and landmarks not in faces.LANDMARK_OPTIONS:
        raise UsageError(f"--landmarks must be one of {', '.join(faces.LANDMARK_OPTIONS)}, not {landmarks!r}")
    given["landmarks"] = landmarks
    if pose_fill is not None:
        defaults = ExtractSettings()
        given["motion_threshold"] = defaults.motion_threshold if pose_fill else 0.0
        given["backfill_bins"] = defaults.backfill_bins if pose_fill else 0
    given = {k: v for k, v in given.items() if v is not None}
    return ExtractSettings(**given), set(given)


def effective_settings(meta: dict, requested: ExtractSettings, explicit: set[str]) -> ExtractSettings:
    stored = meta.get("settings") or {}
    values = asdict(requested)
    for key, value in stored.items():
        if key not in values:
            continue
        if key in explicit and key in ExtractSettings.FIXED and meta.get("rows") and value != values[key]:
            raise WorkspaceError(
                f"this workspace's crops were made with --{key} {value}; a different --{key} would mix crop "
                "geometries (use a new workspace)"
            )
        if key not in explicit:
            values[key] = value
    recorded = _recorded_landmarks(meta)
    if recorded and meta.get("rows"):
        if "landmarks" in explicit:
            asked = faces.resolve_landmarks(values["landmarks"], _pack_has_3d68(meta))
            if asked != recorded:
                raise WorkspaceError(
                    f"this workspace's faces have {LANDMARK_NAMES[recorded]}; --landmarks {values['landmarks']} would "
                    f"give {LANDMARK_NAMES[asked]}, and expressions measured on different landmarks do not compare "
                    "(use a new workspace)")
        values["landmarks"] = recorded
    return ExtractSettings(**values)


LANDMARK_NAMES = {"3d68": "the model pack's 3D-68 landmarks", "dlib": "dlib's 68-point landmarks",
                  "none": "no 68-point landmarks (5 keypoints only)"}


def _pack_has_3d68(meta: dict) -> bool:
    return bool(((meta.get("models") or {}).get("tasks") or {}).get("landmark_3d_68"))


def _recorded_landmarks(meta: dict) -> str | None:
    """The landmark method of the workspace's faces; for workspaces from before settings.landmarks, what auto gave
    then (auto did not use dlib before settings.landmarks existed)."""
    recorded = (meta.get("settings") or {}).get("landmarks")
    if recorded or not meta.get("models"):
        return recorded
    return faces.resolve_landmarks("auto", _pack_has_3d68(meta), dlib_installed=False)


def check_models(meta: dict, fm: faces.FaceModels) -> None:
    recorded = meta.get("models")
    if not recorded:
        return
    landmark_model = recorded.get("landmark_model")
    if landmark_model and fm.landmark_model and landmark_model["sha256"] != fm.landmark_model["sha256"]:
        raise faces.ModelError(
            f"this workspace's landmarks came from {landmark_model['file']} and the one installed now differs "
            f"({fm.landmark_model['file']}); landmarks from different models do not compare. Use a new workspace")
    if recorded.get("files") != fm.files:
        changed = sorted(set(recorded.get("files", {}).items()) ^ set(fm.files.items()))
        raise faces.ModelError(
            f"this workspace was extracted with model pack {recorded.get('pack')} and the models now loaded differ "
            f"({', '.join(name for name, _ in changed[:4])}); embeddings from different models cannot be compared. "
            f"Use --models {recorded.get('path')} or a new workspace"
        )
