"""The face models' runtimes and batches (issue 16), on the CPU that CI has.

`--runtime torch` runs the pack's ONNX graphs converted to PyTorch modules; `--runtime onnxruntime` runs them as
they are. On the same footage both must find the same faces, with boxes, keypoints, poses and embeddings within the
tolerances below, and so must `--batch 8` against `--batch 1`. The tolerances are what float32 arithmetic in a
different order gives (measured: boxes and keypoints within 1e-4 px of InsightFace's own SCRFD code, embeddings
within 4e-4 per component); they are far below anything curate uses (pose bins of 10°, 4° dedupe units, cosine
thresholds of 0.3-0.95). GPU runs in float16 are measured on a GPU (docs/benchmarks.md), not here.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import PACK, clip, curator_json, has_table, one_line_error, curator
from curator.models import faces
from curator import media
from curator.workspace import open_workspace, read_embeddings, read_meta, read_table

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

CLIPS = ("face_1.mp4", "short_hamilton_clip.mp4")  # one face per frame; a stage with several people
# px for boxes and keypoints, degrees for pose, per component for embeddings. The PnP pose fit amplifies the
# keypoints' 1e-4 px: 0.0015° was measured on the stage clip's small faces.
PX, DEG, EMB = 1e-3, 1e-2, 1e-3


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime")
    runs = {}
    for name, args in {"ort_b1": ["--runtime", "onnxruntime", "--batch", "1"],
                       "ort_b8": ["--runtime", "onnxruntime", "--batch", "8"],
                       "torch_b4": ["--runtime", "torch", "--batch", "4"]}.items():
        ws = root / name
        summary = curator_json("extract", *map(clip, CLIPS), "-w", ws, "--device", "cpu", "--fps", "4", "-q", *args)
        runs[name] = (ws, summary)
    return runs


def load(ws):
    w = open_workspace(ws)
    t = read_table(w).sort_values("face_id").reset_index(drop=True)
    e = read_embeddings(w, len(read_table(w, columns=["face_id"])))
    order = read_table(w, columns=["face_id"])["face_id"].argsort().to_numpy()
    return t, np.asarray(e)[order]


def assert_same_faces(a, b):
    ta, ea = load(a)
    tb, eb = load(b)
    assert len(ta) > 20 and list(ta["face_id"]) == list(tb["face_id"])  # the same faces in the same frames
    for col, tol in (("bbox", PX), ("kps", PX)):
        diff = np.abs(np.stack(ta[col].to_numpy()) - np.stack(tb[col].to_numpy())).max()
        assert diff <= tol, (col, diff)
    for col in ("yaw", "pitch", "roll"):
        assert np.nanmax(np.abs(ta[col].to_numpy() - tb[col].to_numpy())) <= DEG, col
    assert np.abs(ea - eb).max() <= EMB and (np.sum(ea * eb, axis=1) > 0.9999).all()


def test_torch_runtime_finds_the_same_faces_as_onnxruntime(extracted):
    assert extracted["torch_b4"][1]["runtime"] == "torch/cpu"
    assert extracted["ort_b1"][1]["runtime"] == "onnxruntime/cpu"
    assert_same_faces(extracted["ort_b1"][0], extracted["torch_b4"][0])


def test_a_batch_of_frames_gives_the_table_of_one_frame_at_a_time(extracted):
    assert extracted["ort_b8"][1]["batch"] == 8 and extracted["ort_b1"][1]["batch"] == 1
    assert_same_faces(extracted["ort_b1"][0], extracted["ort_b8"][0])


def test_the_runtime_and_stage_times_are_recorded(extracted):
    ws, summary = extracted["torch_b4"]
    assert {"decode", "detect", "embed", "describe", "write"} <= set(summary["stage_seconds"])
    assert all(v >= 0 for v in summary["stage_seconds"].values())
    sources = read_meta(open_workspace(ws))["sources"].values()
    assert {s["runtime"] for s in sources} == {"torch/cpu"}


def test_the_detector_graph_takes_a_batch_in_both_runtimes():
    """A batch of 4 different frames through one graph call gives each frame's single-call detections."""
    images = [sf.image for sf in media.sample_video(clip("short_hamilton_clip.mp4"), fps=1.0, static_threshold=-1)][:4]
    assert len(images) == 4
    for rt in ("onnxruntime", "torch"):
        fm = faces.load_models(str(PACK), runtime=rt, device="cpu")
        together = faces.detect_batch(fm, images)
        assert sum(len(b) for b, _ in together) >= 8  # several people in these frames
        for image, (boxes, kps) in zip(images, together):
            alone_boxes, alone_kps = faces.detect(fm, image)
            assert boxes.shape == alone_boxes.shape
            assert np.abs(boxes - alone_boxes).max() <= PX and np.abs(kps - alone_kps).max() <= PX


@pytest.mark.parametrize("args", [["--device", "cuda"], ["--runtime", "torch", "--device", "cuda"],
                                  ["--runtime", "onnxruntime", "--device", "cuda"]])
def test_asking_for_cuda_without_one_is_one_clear_line(tmp_path, args):
    proc = curator("extract", clip("face_1.mp4"), "-w", tmp_path / "ws", *args, "-q")
    line = one_line_error(proc, "cuda")
    assert "--device cpu" in line or "onnxruntime-gpu" in line or "--runtime torch" in line
    assert not has_table(tmp_path / "ws")


def test_unknown_runtime_is_a_usage_error(tmp_path):
    one_line_error(curator("extract", clip("face_1.mp4"), "-w", tmp_path / "ws", "--runtime", "tensorrt", "-q"),
                   "--runtime", "onnxruntime, torch")


def test_auto_finds_no_gpu_without_importing_torch_where_none_can_be():
    """Choosing the runtime on a machine that cannot have CUDA must not import PyTorch (a second per command); and
    wherever the cheap check says "no CUDA", PyTorch itself must agree."""
    import subprocess
    import sys

    probe = ("import sys; from curator.models import runtime as r; rt = r.choose(); "
             "print(r.cannot_have_cuda(), 'torch' in sys.modules, rt.name, rt.device)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    import torch

    if out[0] == "True":
        assert not torch.cuda.is_available()
        assert out[1:] == ["False", "onnxruntime", "cpu"]
    elif out[2] == "torch":  # a GPU device node and a CUDA build: the answer was left to PyTorch, which saw one
        assert torch.cuda.is_available() and out[3] == "cuda"
