#!/usr/bin/env bash
# The GPU benchmarks in one go, as run on a lent GPU machine (docs/benchmarks.md, "On a GPU").
#
#   bash bench/gpu_run.sh OUT_DIR [extract|train|thesis ...]
#
# That machine has PyTorch with CUDA but no test data and no network: what it needs
# travels in .device/ (ignored by git): whl/ (av, insightface, onnx2torch wheels for
# its Python), pack-small/ (the shared model pack) and footage/ (720p and 1080p H.264
# built here by `python bench/extract.py --gpu-footage .device/footage`) and, for
# thesis, thesis/: a folder prepared here by `python bench/thesis.py --stage prepare
# --work .device/thesis` (its ws_a, ws_target and b.workspace folders can be deleted
# before the copy: the run stage reads only prepared.json, sets/, evaluation/ and b/). Every result
# is written to OUT_DIR as it is measured, so a run cut short keeps what it finished.
set -uo pipefail
out=${1:?usage: bench/gpu_run.sh OUT_DIR [extract|train|thesis ...]}
shift
parts=${*:-extract train}
mkdir -p "$out"
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl \
  || { echo "wheel install failed" >&2; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 CURATOR_MODELS=$PWD/.device/pack-small
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; nproc; free -g | head -2;
  python3 -c "import torch, av, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| av', av.__version__, '| onnxruntime', onnxruntime.__version__)"; } \
  > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
for part in $parts; do
  case $part in
    extract)
      timeout 330 python3 bench/extract.py --gpu .device/footage/footage_720p.mp4 .device/footage/footage_1080p.mp4 \
        --gpu-loops 12 --repeats 2 --gpu-batches 32 64 --models .device/pack-small --out "$out/extract_gpu.json" \
        2>&1 | tee "$out/extract_gpu.log" | grep -v "UserWarning\|pos_axes_slices" ;;
    train)
      timeout 200 python3 bench/train.py --device cuda --resolutions 64,128,256 --batch 64 --steps 20 --warmup 5 \
        --repeats 2 --synthetic /tmp/train-sets --resume-check 30 --out "$out/train_gpu.json" 2>&1 | tail -20
      timeout 60 python3 bench/augment.py --device cuda --out "$out/augment_cuda.json" 2>&1 | tail -5 ;;
    thesis)
      # 128 px, one repeat's runs at a time (resumable: THESIS_RUNS keeps finished runs across calls);
      # then the report of every run finished so far.
      runs=${THESIS_RUNS:-$out/thesis-runs}
      timeout ${THESIS_TIMEOUT:-480} python3 bench/thesis.py --stage run --size 128 --device cuda --work .device/thesis \
        --runs "$runs" --models .device/pack-small --max-runs ${THESIS_MAX_RUNS:-0} 2>&1 | tee "$out/thesis_gpu.log" | tail -30
      python3 bench/thesis.py --stage report --size 128 --device cuda --work .device/thesis --runs "$runs" \
        --out "$out/thesis_gpu.json" --markdown "$out/thesis_gpu.md" 2>&1 | tail -30 ;;
  esac
done
ls -la "$out"
