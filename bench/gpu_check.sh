#!/usr/bin/env bash
# The GPU check in one go, for a machine with a CUDA GPU (an H200) where CuPy, PyTorch and
# JAX are installed and nothing else can be: the GPU tests, then the GPU benchmark, in
# under 5 minutes. Everything it writes goes to $OUT (default: a new temporary folder):
#
#   info.txt         date, GPU, driver, `gpunet info`, versions
#   pytest_gpu.log   python -m pytest -m gpu
#   bench_gpu.log    the benchmark's table and progress
#   bench_gpu.json   its full report (rewritten after each config: a cut run keeps its results)
#   bench_gpu.md     the markdown table for bench/RESULTS.md
#   bench_gpu.png    samples/s against batch size (if matplotlib is installed)
#
#   OUT=/tmp/gpu bash bench/gpu_check.sh
set -u
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
# The checkout is used in place, without installing it.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# JAX would otherwise take 75 % of GPU memory at start, starving the other contenders.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PYTHON=${PYTHON:-python}

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    "$PYTHON" -m gpunet info
    "$PYTHON" - <<'PY'
import importlib.metadata as metadata
wanted = ("cupy", "torch", "triton", "jax", "numpy", "pytest", "matplotlib")
for dist in metadata.distributions():
    name = dist.metadata["Name"] or ""
    if name.lower().startswith(wanted):
        print(name, dist.version)
PY
} > "$OUT/info.txt" 2>&1

# Budget: 90 s for the tests, 190 s for the benchmark, the rest for start-up.
if "$PYTHON" -c "import pytest" 2>/dev/null; then
    timeout -k 5 90 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider > "$OUT/pytest_gpu.log" 2>&1
    echo "exit status $?" >> "$OUT/pytest_gpu.log"
else
    echo "pytest is not installed here: GPU tests not run" > "$OUT/pytest_gpu.log"
fi

timeout -k 5 190 "$PYTHON" -m gpunet bench --device gpu --config bench/gpu.toml \
    --json "$OUT/bench_gpu.json" --markdown "$OUT/bench_gpu.md" --plot "$OUT/bench_gpu.png" \
    > "$OUT/bench_gpu.log" 2>&1
status=$?
echo "exit status $status" >> "$OUT/bench_gpu.log"
echo "results in $OUT"
exit "$status"
