#!/usr/bin/env bash
# The checks that need a GPU, in one script that runs unchanged on a GPU machine:
#   1. the identity and equivalence tests with the models on the GPU (pytest --device cuda);
#   2. the activation benchmark on the GPU, float32 and bfloat16 (tokens/s, peak GPU memory);
#   3. the activation store on the GPU: 2,000 and 20,000 texts at 3 layers (tokens/s, peak memory);
#   4. the ci profile with the model on the GPU (float32), its numbers checked against the CPU reference
#      (tests/nbval/MANIFEST.json) with the tolerances of sparseprobe_core/manifest.py.
# Without a GPU it says so and exits 0 having checked nothing. Everything it writes goes to a temporary
# folder (activation store included); nothing in the repository changes.
#
#   benchmarks/device_check.sh            # with .venv, or SPARSEPROBE_PYTHON=/path/to/python
#   DEVICE=cuda:1 benchmarks/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${SPARSEPROBE_PYTHON:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "device_check.sh: NO GPU: torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null) sees no CUDA device;" \
       "nothing was checked. Run this script unchanged on a machine with an NVIDIA GPU and a CUDA build of torch." >&2
  exit 0
fi
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, CUDA {torch.version.cuda}')"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export SPARSEPROBE_CACHE="$work/activations" MPLBACKEND=agg PYTHONHASHSEED=0 TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
failed=()
step() {  # step NAME COMMAND...: run, time, remember a failure, go on with the next step
  local name=$1 start=$SECONDS
  shift
  echo "== $name"
  if "$@"; then echo "   $name: ok ($((SECONDS - start)) s)"; else echo "   $name: FAILED ($((SECONDS - start)) s)"; failed+=("$name"); fi
}

step "identity and equivalence tests on $DEVICE" \
  "$PY" -m pytest tests/test_devices.py tests/test_models_activations.py tests/test_reduction_real.py -m model --device "$DEVICE" -q -p no:cacheprovider
step "activation benchmark, float32" "$PY" benchmarks/bench_activations.py --device "$DEVICE" --dtype float32
step "activation benchmark, bfloat16" "$PY" benchmarks/bench_activations.py --device "$DEVICE" --dtype bfloat16
step "activation store, 2,000 and 20,000 texts" \
  "$PY" benchmarks/bench_store.py --device "$DEVICE" --dtype bfloat16 --ns 2000,20000 --layers 7,15,22
step "ci profile on $DEVICE" "$PY" -m sparseprobe_core execute --stage "$work/stage" --notebooks-to "$work/notebooks" \
  --figures-to "$work/figures" -p profile ci -p device "$DEVICE" notebooks/[0-9][0-9]_*.ipynb
step "ci numbers on $DEVICE reproduce the CPU reference" env SPARSEPROBE_NBVAL_OUT="$work/stage/figures" \
  "$PY" -m pytest tests/nbval/check_reproduction.py -q -p no:cacheprovider

if [ ${#failed[@]} -gt 0 ]; then
  echo "device_check.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "device_check.sh: every check passed on $DEVICE"
