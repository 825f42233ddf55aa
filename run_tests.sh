#!/usr/bin/env bash
# The test command: set up .venv if needed (same set-up as run_all.sh), check the code style, run the
# unit tests and, beside them, re-execute the ci-profile notebooks under nbval (the cells that state the
# paper's claims must print the same verdicts) and check that their numbers reproduce the references.
set -euo pipefail
cd "$(dirname "$0")"
# The read-along page's test opens it in a real browser: Debian's chromium and its driver (a browser
# build cannot be downloaded here; the distribution's package can). CI runs as root on a clean machine.
# apt works beside the set-up (about a minute each way, mostly waiting on downloads); its lines go to a log
# shown only if it fails.
apt_pid="" apt_log=$(mktemp)
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo -n)
  echo "installing chromium and chromium-driver for the page test (apt-get, beside the set-up)..." >&2
  (
    export DEBIAN_FRONTEND=noninteractive
    ${sudo[@]+"${sudo[@]}"} apt-get update -qq &&
      ${sudo[@]+"${sudo[@]}"} apt-get install -y -q --no-install-recommends chromium chromium-driver
  ) >"$apt_log" 2>&1 </dev/null &
  apt_pid=$!
fi
./run_all.sh --setup-only
if [ -n "$apt_pid" ] && ! wait "$apt_pid"; then
  tail -20 "$apt_log" >&2
  echo "warning: could not install chromium; the page test will fail: apt-get install chromium chromium-driver" >&2
fi
rm -f "$apt_log"
PY=${SPARSEPROBE_PYTHON:-.venv/bin/python}
export MPLBACKEND=agg PYTHONHASHSEED=0
"$PY" -m ruff check .
"$PY" -m ruff format --check .
# The nbval step runs beside the unit tests: alone it keeps one of the two cores busy (its kernels start,
# import and load models one after the other; 3 min 56 s of CPU in 4 min 1 s on the 2-core Intel machine),
# the unit tests keep both about 85 % busy. Its torch and BLAS run one thread (busy-waiting OpenMP threads on
# cores already taken would slow everything down, see tests/conftest.py) and its units run in the kernel
# (SPARSEPROBE_JOBS=1), so the two steps share the cores. Its output follows the unit tests'.
out=$(mktemp -d) nbval_log=$(mktemp) nbval_pid=""
# If the unit tests fail (or the command is interrupted) the nbval step is stopped; its kernels follow it (each
# polls its parent), so the output folder goes once they are gone.
stop_nbval() {
  [ -n "$nbval_pid" ] || return 0
  kill "$nbval_pid" 2>/dev/null || true
  wait "$nbval_pid" 2>/dev/null || true
  echo "run_tests.sh: the nbval step was stopped (if it had not finished); the end of its output:" >&2
  tail -5 "$nbval_log" >&2
  sleep 2
}
trap 'stop_nbval; rm -rf "$out" "$nbval_log"' EXIT
echo "re-executing the ci notebooks under nbval beside the unit tests (its output follows theirs)..." >&2
SPARSEPROBE_OUT_DIR="$out" SPARSEPROBE_NBVAL_OUT="$out" OMP_NUM_THREADS=1 SPARSEPROBE_JOBS=1 "$PY" -m pytest \
  --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval/sanitize.cfg -p no:cacheprovider \
  tests/nbval/*.ipynb tests/nbval/*/*.ipynb tests/nbval/check_reproduction.py >"$nbval_log" 2>&1 &
nbval_pid=$!
# Two worker processes (whole test files each, so a file's loaded models and run_all.sh runs stay in one
# process), the longest files first (tests/conftest.py orders them; xdist would deal files by their number of
# tests).
"$PY" -m pytest -n 2 --dist loadfile --no-loadscope-reorder tests "$@"
nbval_rc=0
wait "$nbval_pid" || nbval_rc=$?
nbval_pid=""
cat "$nbval_log"
exit "$nbval_rc"
