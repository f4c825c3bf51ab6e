#!/usr/bin/env bash
# One device call on a lent GPU machine (see docs/PERFORMANCE.md, section GPU): install the
# wheels the image lacks, run the CUDA tests, the GPU benchmark, then fine-tune the default
# model from the shipped weights for whatever time is left.
#
#   bash scripts/gpu_session.sh DATA OUT SECONDS [INIT]
#
# DATA: folder of training audio (carried into a git-ignored folder); OUT: where results go
# ($OUT of the device tool); SECONDS: the whole script's budget; INIT: the checkpoint the
# training starts from (default: the shipped model). Environment: BENCH_ARGS adds options
# to the benchmark, CONFIG replaces the training configuration, PROFILE=1 runs
# benchmarks/profile_gpu.py first. Needs .whl/ holding Python 3.12 manylinux wheels of
# soundfile, cffi, pycparser and soxr (the image has torch, numpy, scipy, safetensors, tqdm,
# matplotlib, click, pyyaml and pytest). Session 4 ran it twice on an H100 (docs/PERFORMANCE.md):
# the full model's benchmark takes ~4 min, so give SECONDS >= 420 to leave time for training.
set -uo pipefail
DATA=$1 OUT=$2 BUDGET=${3:-420} INIT=${4:-simdps/assets/default_model} CONFIG=${CONFIG:-scripts/gpu_default_model.json}
T0=$SECONDS
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
# The package layout maps simdps.{indexer,retrieval,diffusion,cli} onto top-level folders.
mkdir -p /tmp/pkg/simdps && cp -r simdps/. /tmp/pkg/simdps/ || exit 3
for d in indexer retrieval diffusion cli; do ln -sfn "$PWD/$d" "/tmp/pkg/simdps/$d"; done
export PYTHONPATH=/tmp/pkg:/tmp/site
# -P: never import the repository's own simdps/ folder (it lacks the mapped subpackages).
PY="python3 -P"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc;
  $PY -c "import torch, soundfile, soxr, simdps.diffusion.train; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
  2>&1 | tee "$OUT/env.txt"
$PY -c "import simdps.diffusion.train" || exit 4

echo "== CUDA tests"; timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_cqt.py -k cuda 2>&1 | tee "$OUT/tests.log"
if [ -n "${PROFILE:-}" ]; then  # PROFILE=1: where the full model's evaluation time goes, first
  echo "== profile"; timeout 300 $PY benchmarks/profile_gpu.py --out "$OUT/profile" --repeats 3 \
      --variants fp32,bf16,channels_last,compile 2>&1 | tee "$OUT/profile.log"
  gzip -f "$OUT/profile/trace-guided.json" 2>/dev/null
fi
echo "== benchmark"; timeout 200 $PY benchmarks/bench_gpu.py ${BENCH_ARGS:-} --json "$OUT/gpu.json" 2>&1 | tee "$OUT/bench.log"

left=$((BUDGET - (SECONDS - T0) - 30))
echo "== training for ${left} s"
if [ "$left" -gt 30 ]; then
  $PY -m simdps.cli.train "$DATA" --out /tmp/gpurun --init "$INIT" \
      --config "$CONFIG" --device cuda --no-progress \
      --time-limit "$($PY -c "print($left / 60)")" 2>&1 | tee "$OUT/train.log"
  tar czf "$OUT/gpurun.tgz" -C /tmp/gpurun config.json ema.safetensors loss.csv loss.png train_state/state.json
fi
echo "== total $((SECONDS - T0)) s"
