#!/usr/bin/env bash
# Install curator and its test tools into ./.venv on a fresh machine.
# Idempotent; safe to re-run. Used by README's commands and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip_q() { python -m pip install -q --disable-pip-version-check "$@"; }
pip_q --upgrade pip wheel setuptools
# torch first and pinned: installing the project without it lets pip resolve
# `torch` to the multi-GB CUDA build. 2.13.0 is the CPU wheel on these machines.
python -c "import torch" 2>/dev/null || pip_q "torch==${CURATOR_TORCH_VERSION:-2.13.0}"
# [dlib]: the 68-point landmarks the faceswap/DFL export tests run on (docs/dependencies.md).
# [ray]: the Ray engine, which tests/test_ray.py runs on a two-node Ray cluster on this machine.
pip_q -e '.[test,dlib,ray]'
# [torch-runtime] without its dependencies: onnx2torch declares torchvision, and
# pip would answer it with a CUDA build of torch; the torch installed above is enough
# (curator/models/runtime.py imports onnx2torch without torchvision).
pip_q --no-deps "onnx2torch>=1.5.15"
# insightface depends on opencv-python and fiftyone on opencv-python-headless;
# both unpack into the same cv2/ folder and the second install leaves a mix.
# Keep exactly one: the headless build (no GUI libraries needed on servers).
headless=$(python -m pip show opencv-python-headless 2>/dev/null | sed -n 's/^Version: //p')
if python -m pip show opencv-python >/dev/null 2>&1; then
  python -m pip uninstall -y -q opencv-python
  pip_q --force-reinstall --no-deps "opencv-python-headless==${headless}"
fi
# Headless Chromium: tests/test_audit.py renders `curator audit` reports with it.
# CI runs as root on Debian; elsewhere say what to install rather than fail the install.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium
  else
    echo "note: install Chromium for tests/test_audit.py (e.g. sudo apt-get install chromium)" >&2
  fi
fi
# `ip` (iproute2) and `unshare` (util-linux): tests/test_ray.py brings up loopback in a network namespace of its own.
if ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq iproute2 util-linux
  else
    echo "note: install iproute2 and util-linux for tests/test_ray.py (e.g. sudo apt-get install iproute2)" >&2
  fi
fi
# `strace`: tests/test_faults.py kills commands at a chosen system call (tests/fault_tools.py); `unshare`
# (util-linux, above) also gives its full-disk tests a tmpfs of their own.
if ! command -v strace >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq strace
  else
    echo "note: install strace for tests/test_faults.py (e.g. sudo apt-get install strace)" >&2
  fi
fi
python -c "import cv2, av, insightface, onnxruntime, fiftyone, torch, sklearn, pyarrow, dlib, ray; from curator.models import dlib68, runtime; dlib68.model_path(); runtime.import_onnx2torch(); print('curator install ok: cv2', cv2.__version__, '| torch', torch.__version__, 'CUDA', torch.version.cuda)"
