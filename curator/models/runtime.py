"""Where the face models run: onnxruntime or PyTorch, on the CPU or a CUDA GPU, a batch at a time.

A model pack is a folder of ONNX graphs (curator/models/faces.py loads it through
InsightFace, which knows what each graph is). Each graph runs in one of two
runtimes, chosen with `--runtime`:

- `onnxruntime`: the graph as it is, with onnxruntime's CUDA provider when
  `onnxruntime-gpu` is installed, else on the CPU;
- `torch`: the graph converted to a PyTorch module at load time (onnx2torch),
  on CUDA in half precision where accuracy holds (the detector and the
  landmark model; the recogniser stays in float32, see `HALF_SAFE`), or on
  the CPU. One CUDA stack, PyTorch's, for extract, train and convert: no
  onnxruntime-gpu / CUDA / cuDNN versions to match;
- `auto`: onnxruntime with CUDA if it has it, else torch on CUDA if PyTorch
  sees a GPU, else onnxruntime on the CPU. Where no GPU can be (a CPU build
  of PyTorch, macOS, Linux without a GPU device node) PyTorch is not even
  imported to ask (`cannot_have_cuda`): that import was a second or two of
  every `curator extract` on a CPU machine.

Batches. InsightFace's SCRFD graphs declare batch 1 (`input.1: [1, 3, ?, ?]`)
and flatten each output over the anchors of the whole batch
(`Transpose(perm=[2, 3, 0, 1])` then `Reshape([-1, k])`: rows are ordered
height, width, image, anchor). `batchable` frees the batch dimension of the
graph's input and outputs so onnxruntime accepts a batch; the per-image rows
are recovered in curator/models/faces.py (`per_image`). The converted torch module
needs no edit.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CuratorError

RUNTIMES = ("auto", "onnxruntime", "torch")
DEVICES = ("auto", "cpu", "cuda")
# Tasks whose outputs stay within the tolerances of tests/test_runtime.py in float16 on a GPU. The recogniser's
# embeddings feed cosine thresholds at 0.95 (curate's same-picture rule): it stays float32.
HALF_SAFE = ("detection", "landmark_3d_68")


class RuntimeChoiceError(CuratorError):
    """A runtime or device that cannot be had here; the message says what is missing and what to install."""


@dataclass(frozen=True)
class Runtime:
    """How the face models run: `name` (onnxruntime | torch) on `device` (cpu | cuda)."""

    name: str
    device: str
    half: bool = False  # torch on CUDA: float16 for the tasks in HALF_SAFE

    def describe(self) -> str:
        return f"{self.name}/{self.device}" + ("/fp16" if self.half else "")


def ort_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def torch_has_cuda() -> bool:
    if cannot_have_cuda():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# Where a CUDA (or ROCm, which PyTorch also reports as CUDA) GPU shows up on Linux: NVIDIA's device nodes, WSL2's
# GPU bridge, AMD's compute node, a Jetson's integrated GPU.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd", "/dev/nvhost-ctrl-gpu")


def cannot_have_cuda() -> bool:
    """True when PyTorch certainly sees no CUDA GPU, found without importing it (importing torch takes about a
    second, every `curator` command that loads the face models would pay it on a CPU machine): PyTorch not
    installed, a CPU build (a `+cpu` version), macOS, or Linux without any GPU device node."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return True
    try:
        if importlib.metadata.version("torch").endswith("+cpu"):
            return True
    except importlib.metadata.PackageNotFoundError:
        pass
    if sys.platform == "darwin":
        return True
    return sys.platform.startswith("linux") and not any(os.path.exists(p) for p in GPU_DEVICE_NODES)


def check_names(runtime: str, device: str) -> str:
    """`runtime`, once it and `device` are names `choose` knows (RuntimeChoiceError otherwise): what a Ray driver
    checks before its workers choose on their own machines."""
    if runtime not in RUNTIMES:
        raise RuntimeChoiceError(f"--runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if device not in DEVICES:
        raise RuntimeChoiceError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    return runtime


@dataclass(frozen=True)
class Request:
    """What the user asked for (`--runtime`, `--device`), names checked; `choose()` resolves it where the models run.

    The local engine chooses once, in `curator.api`, and passes the Runtime
    on; a Ray run passes the Request to its workers, each choosing on its own
    machine (a driver without a GPU may drive workers with one).
    """

    runtime: str = "auto"
    device: str = "auto"

    def choose(self) -> Runtime:
        return choose(self.runtime, self.device)


def request(runtime: str = "auto", device: str = "auto") -> Request:
    check_names(runtime, device)
    return Request(runtime, device)


def choose(runtime: str = "auto", device: str = "auto") -> Runtime:
    """The runtime for `--runtime` and `--device`, or RuntimeChoiceError saying why it cannot run here."""
    check_names(runtime, device)
    if runtime == "auto":
        if device != "cpu" and ort_has_cuda():
            return Runtime("onnxruntime", "cuda")
        if device != "cpu" and torch_has_cuda():
            return Runtime("torch", "cuda", half=True)
        if device == "cuda":
            raise RuntimeChoiceError("--device cuda asked for, but neither onnxruntime (no CUDA provider) nor PyTorch "
                                     "sees a CUDA GPU here; install a CUDA build of PyTorch (and onnx2torch) or "
                                     "onnxruntime-gpu, or use --device cpu")
        return Runtime("onnxruntime", "cpu")
    if runtime == "onnxruntime":
        if device == "cuda" and not ort_has_cuda():
            raise RuntimeChoiceError("--runtime onnxruntime --device cuda: this onnxruntime has no CUDA provider "
                                     "(pip install onnxruntime-gpu, or use --runtime torch)")
        return Runtime("onnxruntime", "cuda" if device != "cpu" and ort_has_cuda() else "cpu")
    cuda = torch_has_cuda()
    if device == "cuda" and not cuda:
        raise RuntimeChoiceError("--runtime torch --device cuda: PyTorch sees no CUDA GPU here "
                                 "(a CPU build of PyTorch, or no driver); use --device cpu")
    on_gpu = device != "cpu" and cuda
    return Runtime("torch", "cuda" if on_gpu else "cpu", half=on_gpu)


# --- one graph ----------------------------------------------------------------------------------

def batchable(model) -> None:
    """Free the batch dimension (dim 0) of an ONNX model's input and output declarations, in place."""
    for value in [*model.graph.input[:1], *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"


def import_onnx2torch():
    """onnx2torch, which imports torchvision at import time for two converters (NonMaxSuppression, RoiAlign)
    that face models do not use. Where torchvision is missing (CPU-only PyTorch has no matching build), a
    placeholder stands in during the import and is removed after; a graph that needed those ops would fail."""
    try:
        import onnx2torch
        return onnx2torch
    except ModuleNotFoundError as e:
        if e.name == "onnx2torch":
            raise RuntimeChoiceError("--runtime torch needs onnx2torch (pip install 'curator-faces[torch-runtime]'; "
                                     "docs/dependencies.md)") from None
        if e.name != "torchvision":
            raise

    def missing(*args, **kwargs):
        raise RuntimeError("this ONNX graph needs torchvision, which is not installed")

    placeholder, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
    ops.nms = ops.roi_align = ops.box_convert = missing
    placeholder.ops = ops
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = placeholder, ops
    try:
        import onnx2torch
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.ops"]
    return onnx2torch


class Graph:
    """One ONNX graph loaded into a runtime; `graph(batch)` runs it: float32 NCHW in, list of outputs out.

    With onnxruntime, inputs and outputs are NumPy arrays; with torch, torch
    tensors on the runtime's device (NumPy arrays are accepted and moved).
    """

    def __init__(self, path: str | os.PathLike, rt: Runtime, task: str, session_options=None):
        import onnx

        self.path, self.rt, self.task = Path(path), rt, task
        model = onnx.load(str(path))
        batchable(model)
        self.input_name = model.graph.input[0].name
        if rt.name == "onnxruntime":
            import onnxruntime as ort

            providers = (["CUDAExecutionProvider"] if rt.device == "cuda" else []) + ["CPUExecutionProvider"]
            self.session = ort.InferenceSession(model.SerializeToString(), sess_options=session_options,
                                                providers=providers)
            self.module = None
        else:
            import torch

            self.session = None
            if rt.device == "cuda":
                torch.backends.cudnn.benchmark = True  # one input size per video: let cuDNN pick its kernels once
            module = import_onnx2torch().convert(model).eval()
            self.dtype = torch.float16 if rt.half and task in HALF_SAFE else torch.float32
            self.module = module.to(device=rt.device, dtype=self.dtype)

    def __call__(self, batch) -> list:
        if self.session is not None:
            return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        import torch

        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch, np.float32))
        n = x.shape[0]
        # Faces per batch vary from call to call, and cuDNN tunes its kernels anew for every input shape it
        # meets: batch-first graphs get their batch padded to a power of two, so a run meets a handful of shapes.
        # (The detector's outputs interleave frames, and its batches have one size anyway.)
        padded = self.rt.device == "cuda" and self.task != "detection" and n & (n - 1)
        if padded:
            x = torch.cat([x, x.new_zeros((1 << n.bit_length()) - n, *x.shape[1:])])
        with torch.inference_mode():
            out = self.module(x.to(self.rt.device, self.dtype, non_blocking=True))
        out = out if isinstance(out, (list, tuple)) else [out]
        return [o[:n].float() if padded else o.float() for o in out]
