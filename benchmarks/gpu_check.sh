#!/usr/bin/env bash
# Issue 6's GPU check in one command, for a machine with a CUDA GPU, torch and triton already installed
# (nothing is installed or downloaded): the CUDA tests, then the benchmark. Writes its logs and the
# benchmark's JSON under $OUT (default: gpu-check/) and exits non-zero if either step failed.
#
#   bash benchmarks/gpu_check.sh     # not yet run on a GPU: allow it up to 10 minutes the first time
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu.txt"
"$python" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  2>&1 | tee -a "$out/gpu.txt"

"$python" -m pytest -q -p no:cacheprovider -rs tests/test_triton.py tests/test_torch_*.py 2>&1 \
  | tee "$out/tests.log"
tests=$?
"$python" benchmarks/gpu_dropout.py --json "$out/gpu_dropout.json" 2>&1 | tee "$out/bench.log"
bench=$?
echo "tests exit $tests, benchmark exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
